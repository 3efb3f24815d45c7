//! Stored quality reports (issue 6, item 8): the `quality` job stores a report, the API and
//! the pages serve it with its age, new judgments and a lead's actions mark it stale and queue
//! one refresh (debounced), and a large project with nothing stored says "being computed"
//! instead of computing per request.

use axum::http::StatusCode;
use backflip::{
    jobs::{Runner, WorkerConfig},
    quality::{report, store},
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    common::{TestApp, app},
    quality::{page, session},
};

async fn quality_jobs(app: &TestApp, status: &str) -> i64 {
    sqlx::query_scalar("select count(*) from jobs where kind = 'quality' and status = $1")
        .bind(status)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Run the queued quality jobs; how many ran.
async fn run_jobs(app: &TestApp) -> usize {
    Runner::new(
        app.pool.clone(),
        store::handlers(),
        WorkerConfig::new(1, 30.0),
    )
    .drain()
    .await
    .unwrap()
}

async fn api(app: &TestApp, lead: &str) -> (StatusCode, Value) {
    let res = app.get("/api/v1/projects/s/quality", lead).await;
    (res.status, res.json())
}

/// Equal JSON, numbers to 1e-9 (a float read back from jsonb through serde_json's default
/// parser may differ in the last digit).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-9
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

async fn set(app: &TestApp, sql: &'static str) {
    sqlx::query(sql).execute(&app.pool).await.unwrap();
}

async fn html(app: &TestApp, cookie: &str, uri: &str) -> String {
    let res = page(app, cookie, uri).await;
    assert_eq!(res.status, StatusCode::OK, "{uri}: {}", res.text());
    res.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_report_is_served_goes_stale_and_is_refreshed_once() {
    let app = app().await;
    let lead = app.project("s", json!({"overlap": 2})).await;
    app.import_text_pairs("s", &lead, 6).await;
    let r1 = app.annotator("s", &lead, "r1").await;
    let r2 = app.annotator("s", &lead, "r2").await;
    let judge = |token: &str| {
        let token = token.to_owned();
        let app = &app;
        async move {
            let res = app.judge_next("s", &token, json!({"choice": "left"})).await;
            assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        }
    };
    for _ in 0..2 {
        judge(&r1).await;
        judge(&r2).await;
    }
    let project: Uuid = sqlx::query_scalar("select id from projects where slug = 's'")
        .fetch_one(&app.pool)
        .await
        .unwrap();

    // A small project with nothing stored: computed per request, and no job.
    let (status, q) = api(&app, &lead).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(q["freshness"]["source"], "live");
    assert_eq!(q["judgments"], 4);
    assert_eq!(quality_jobs(&app, "queued").await, 0);

    // Above the live limit with nothing stored: no figures, "being computed", one job queued
    // however often it is asked.
    set(
        &app,
        "update projects set quality_live_limit = 3, quality_every = 2",
    )
    .await;
    for _ in 0..2 {
        let (status, q) = api(&app, &lead).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{q}");
        assert_eq!(q["freshness"]["source"], "computing");
        assert!(q.get("judgments").is_none(), "no figures while computing");
    }
    assert_eq!(quality_jobs(&app, "queued").await, 1);
    let (c, _) = session(&app, "lead-s").await;
    let text = html(&app, &c, "/projects/s/quality").await;
    assert!(text.contains("id=\"computing\""), "{text}");

    // The job stores the report; the API serves it, equal to the report computed now.
    assert_eq!(run_jobs(&app).await, 1);
    assert_eq!(quality_jobs(&app, "done").await, 1);
    let (status, q) = api(&app, &lead).await;
    assert_eq!(status, StatusCode::OK);
    let f = &q["freshness"];
    assert_eq!(f["source"], "stored", "{f}");
    assert_eq!(f["covers_judgments"], 4);
    assert_eq!(
        (f["stale"].clone(), f["new_judgments"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(f["refreshing"], false);
    let now = serde_json::to_value(report::report(&app.pool, project).await.unwrap()).unwrap();
    let mut served = q.clone();
    served.as_object_mut().unwrap().remove("freshness");
    assert!(
        same(&served, &now),
        "the stored report is the report:\n{served}\n{now}"
    );
    // Stored rows are what is served: change one and the API shows it.
    set(
        &app,
        "update quality_results set summary = jsonb_set(summary, '{judgments}', '99')",
    )
    .await;
    assert_eq!(api(&app, &lead).await.1["judgments"], 99);
    let rater = app.get("/api/v1/projects/s/quality/raters/r1", &lead).await;
    assert_eq!(rater.status, StatusCode::OK, "{}", rater.text());
    assert_eq!(rater.json()["freshness"]["source"], "stored");
    assert_eq!(rater.json()["days"][0]["judgments"], 2);
    for uri in [
        "/projects/s/quality",
        "/projects/s/quality/errors",
        "/projects/s/quality/raters/r1",
    ] {
        let text = html(&app, &c, uri).await;
        assert!(text.contains("covers 4 judgments"), "{uri}: {text}");
        assert!(!text.contains("STALE"), "{uri}");
    }

    // One new judgment: stale at once, with the count; the judgment path queues nothing yet
    // (quality_every is 2), reading the stale report queues the refresh.
    judge(&r1).await;
    assert_eq!(quality_jobs(&app, "queued").await, 0);
    let (_, q) = api(&app, &lead).await;
    let f = &q["freshness"];
    assert_eq!(
        (f["stale"].clone(), f["new_judgments"].clone()),
        (json!(true), json!(1)),
        "{f}"
    );
    assert_eq!(f["refreshing"], true);
    assert_eq!(quality_jobs(&app, "queued").await, 1);
    let text = html(&app, &c, "/projects/s/quality").await;
    assert!(text.contains("1 newer judgments not included") && text.contains("STALE"));
    assert!(text.contains("refreshing…"));
    // Debounce: more judgments and reads, still one queued job.
    judge(&r2).await;
    judge(&r1).await;
    api(&app, &lead).await;
    assert_eq!(quality_jobs(&app, "queued").await, 1);
    assert_eq!(run_jobs(&app).await, 1);
    let f = api(&app, &lead).await.1["freshness"].clone();
    assert_eq!(
        (f["stale"].clone(), f["covers_judgments"].clone()),
        (json!(false), json!(7))
    );

    // The judgment path: `quality_every` judgments after the last job's start queue one.
    judge(&r2).await;
    assert_eq!(quality_jobs(&app, "queued").await, 0);
    judge(&r1).await;
    assert_eq!(quality_jobs(&app, "queued").await, 1);
    assert_eq!(run_jobs(&app).await, 1);

    // A lead's action marks it stale (changed since) in the action's transaction.
    let res = app
        .post(
            "/api/v1/projects/s/raters/r2/pause",
            &lead,
            json!({"paused": true}),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let f = api(&app, &lead).await.1["freshness"].clone();
    assert_eq!(
        (f["stale"].clone(), f["changed_since"].clone()),
        (json!(true), json!(true))
    );
    run_jobs(&app).await;
    let (_, q) = api(&app, &lead).await;
    assert_eq!(q["freshness"]["stale"], false);
    let r2 = q["raters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "r2")
        .unwrap();
    assert_eq!(r2["paused"], true);

    // Small again: a stale stored report is not served, the figures are computed per request.
    set(&app, "update projects set quality_live_limit = 1000").await;
    let tok = app.annotator("s", &lead, "r3").await;
    judge(&tok).await;
    let (_, q) = api(&app, &lead).await;
    assert_eq!(q["freshness"]["source"], "live");
    assert_eq!(q["judgments"], 10);
}

fn median_max(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() - 1])
}

/// The scale benchmark of docs/benchmarks.md: 1,000,000 judgments by 1,000 raters (seeded as
/// `bench export` seeds them), the background computation step by step, then the pages and
/// the API from the stored report, `QUALITY_BENCH_REQUESTS` (default 10) requests each.
/// Prints figures, asserts none. Run: `cargo test --test spine quality_store::scale --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: minutes"]
async fn scale() {
    let judgments: i64 =
        std::env::var("QUALITY_BENCH_JUDGMENTS").map_or(1_000_000, |v| v.parse().unwrap());
    let requests: usize =
        std::env::var("QUALITY_BENCH_REQUESTS").map_or(10, |v| v.parse().unwrap());
    let app = app().await;
    let admin = app.user("bench-admin", backflip::auth::Role::Admin).await;
    let t = std::time::Instant::now();
    backflip::bench::export::seed(&app.pool, judgments, 1000)
        .await
        .unwrap();
    println!(
        "seeded {judgments} judgments, 1000 raters in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let project: Uuid = sqlx::query_scalar("select id from projects where slug = 'bench-export'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let slug = "bench-export";
    let t = std::time::Instant::now();
    let res = app
        .get(&format!("/api/v1/projects/{slug}/quality"), &admin)
        .await;
    println!(
        "nothing stored: GET quality -> {} in {:.0} ms",
        res.status,
        t.elapsed().as_secs_f64() * 1000.0
    );

    let t = std::time::Instant::now();
    let snap = store::snapshot(&app.pool, project).await.unwrap();
    let load = snap.seconds;
    let t1 = std::time::Instant::now();
    let computed = tokio::task::spawn_blocking(move || store::compute(snap))
        .await
        .unwrap();
    let cpu = t1.elapsed().as_secs_f64();
    let t2 = std::time::Instant::now();
    store::save(&app.pool, project, &computed).await.unwrap();
    let save = t2.elapsed().as_secs_f64();
    println!(
        "background computation: {:.1} s in all = load {load:.1} s + compute {cpu:.1} s + store {save:.1} s \
         ({} raters, {} rater pairs, {} split pairs)",
        t.elapsed().as_secs_f64(),
        computed.report.raters.len(),
        computed.report.rater_pairs.len(),
        computed.report.split_pairs.len()
    );
    let sizes: (i32, i32, i32) = sqlx::query_as(
        "select pg_column_size(summary), pg_column_size(split_pairs), pg_column_size(rater_days)
         from quality_results",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    println!(
        "stored sizes (bytes, compressed): summary {}, split pairs {}, rater days {}",
        sizes.0, sizes.1, sizes.2
    );

    // A reward model for the error dashboard's check, trained on a small simulated text project
    // (it reads hashed text features, so it scores the bench project's texts too) and made the
    // bench project's current model: the dashboard then scores the stored majority pairs.
    let opts = backflip::simulate::SimOpts {
        task: backflip::simulate::TaskKind::Text,
        pairs: 40,
        raters: 2,
        overlap: 1,
        train: true,
        steps: Some(20),
        temperature: 1.0,
        seed: 1,
    };
    backflip::simulate::project::run(&app.pool, &app.state.clips, &opts)
        .await
        .unwrap();
    sqlx::query(
        "update projects set current_model = (select current_model from projects
                                              where slug = 'sim-text')
         where id = $1",
    )
    .bind(project)
    .execute(&app.pool)
    .await
    .unwrap();
    println!(
        "with a reward model: the error dashboard checks {} stored majority pairs",
        computed.report.majority_pairs.len()
    );

    let (c, _) = session(&app, "bench-admin").await;
    let rater = computed.report.raters[0].name.clone();
    println!("| request | median ms | max ms | bytes |");
    println!("|---|---|---|---|");
    for uri in [
        format!("/projects/{slug}/quality"),
        format!("/projects/{slug}/quality/errors"),
        format!("/projects/{slug}/quality/raters/{rater}"),
        format!("/api/v1/projects/{slug}/quality/raters/{rater}"),
        format!("/api/v1/projects/{slug}/quality"),
    ] {
        let mut ms = vec![];
        let mut bytes = 0;
        for _ in 0..requests {
            let t = std::time::Instant::now();
            let res = match uri.starts_with("/api") {
                true => app.get(&uri, &admin).await,
                false => page(&app, &c, &uri).await,
            };
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(res.status, StatusCode::OK, "{uri}");
            assert!(
                res.text().contains("covers"),
                "{uri} serves the stored report"
            );
            bytes = res.body.len();
        }
        let (med, max) = median_max(ms);
        println!("| GET {uri} | {med:.0} | {max:.0} | {bytes} |");
    }
}
