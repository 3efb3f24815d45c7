//! Rater quality end to end: gold and swapped repeats in the queue, coverage, pausing,
//! exclusion with its audit trail, the quality API and pages on a hand-built dataset, and the
//! position-bias detector on the simulated always-left rater.

use std::collections::BTreeSet;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use backflip::{auth::Role, clips::ClipStore, quality::report, simulate};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{Res, TestApp, app};

/// Pair ids of project `slug` in import order.
async fn pair_ids(app: &TestApp, slug: &str) -> Vec<Uuid> {
    sqlx::query_scalar(
        "select c.id from comparisons c join projects p on p.id = c.project_id
         where p.slug = $1 order by c.seq",
    )
    .bind(slug)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

async fn settings(app: &TestApp, slug: &str, lead: &str, gold: f32, repeat: f32) {
    let res = app
        .call(
            axum::http::Method::PUT,
            &format!("/api/v1/projects/{slug}/quality/settings"),
            Some(lead),
            Some(json!({"gold_rate": gold, "repeat_rate": repeat, "reliability_weighting": false})),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
}

async fn set_gold(app: &TestApp, slug: &str, lead: &str, pair: Uuid, answer: &str) {
    let res = app
        .call(
            axum::http::Method::PUT,
            &format!("/api/v1/projects/{slug}/pairs/{pair}/gold"),
            Some(lead),
            Some(json!({"answer": answer})),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
}

/// The shape of a JSON value: its object keys, recursively.
fn shape(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if let Value::Object(m) = v {
        for (k, inner) in m {
            out.insert(k.clone());
            out.extend(shape(inner).into_iter().map(|s| format!("{k}.{s}")));
        }
    }
    out
}

/// Answer the pair shown so that the canonical answer is `want` (a or b): the texts say which
/// rollout is which ("answer A3" is rollout a).
fn press_for(pair: &Value, want: &str) -> &'static str {
    let left_is_a = pair["left"]["text"]
        .as_str()
        .unwrap()
        .starts_with("answer A");
    match (want, left_is_a) {
        ("a", true) | ("b", false) => "left",
        ("a", false) | ("b", true) => "right",
        (other, _) => panic!("{other}"),
    }
}

#[tokio::test]
async fn gold_is_mixed_in_at_its_rate_looks_the_same_and_never_counts_for_coverage() {
    let app = app().await;
    let lead = app.project("g", json!({"overlap": 1})).await;
    app.import_text_pairs("g", &lead, 200).await;
    let ids = pair_ids(&app, "g").await;
    // The last 40 pairs are gold; 80 regular draws in queue order never reach them.
    for &id in &ids[160..] {
        set_gold(&app, "g", &lead, id, "a").await;
    }
    settings(&app, "g", &lead, 0.25, 0.0).await;
    let rater = app.annotator("g", &lead, "ann").await;
    let (mut gold, mut regular) = (vec![], vec![]);
    for _ in 0..80 {
        let res = app.get("/api/v1/projects/g/next", &rater).await;
        assert_eq!(res.status, StatusCode::OK);
        let pair = res.json();
        let id = pair["assignment_id"].as_str().unwrap().to_owned();
        let kind: String = sqlx::query_scalar("select kind from assignments where id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        let res = app
            .post(
                &format!("/api/v1/assignments/{id}/judgment"),
                &rater,
                json!({"choice": "left", "duration_ms": 2000}),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        match kind.as_str() {
            "gold" => gold.push(pair),
            _ => regular.push(pair),
        }
    }
    // Binomial(80, 0.25): mean 20, sd 3.9; 8..=34 is beyond 3 sd either way.
    assert!((8..=34).contains(&gold.len()), "{} gold of 80", gold.len());
    // Indistinguishable: the same fields, the same kinds of values.
    let shapes: BTreeSet<_> = gold.iter().chain(&regular).map(shape).collect();
    assert_eq!(shapes.len(), 1, "{shapes:?}");
    // Coverage counts only regular judgments; no gold pair was counted or over-assigned.
    assert_eq!(
        app.count("select coalesce(sum(judged_count), 0)::bigint from pair_counts")
            .await,
        regular.len() as i64
    );
    assert_eq!(
        app.count("select count(*) from comparisons c join pair_counts n on n.id = c.id where c.gold is not null and n.judged_count > 0")
            .await,
        0
    );
    assert_eq!(
        app.count("select count(*) from judgments where kind = 'gold'")
            .await,
        gold.len() as i64
    );
    // A gold pair is never shown to the same rater twice.
    assert_eq!(
        app.count(
            "select count(*) from (select comparison_id from assignments
             group by comparison_id, rater_id having count(*) > 1) d"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn repeats_come_back_with_the_sides_swapped_and_count_once() {
    let app = app().await;
    let lead = app.project("r", json!({"overlap": 1})).await;
    app.import_text_pairs("r", &lead, 40).await;
    settings(&app, "r", &lead, 0.0, 0.5).await;
    let rater = app.annotator("r", &lead, "ann").await;
    let mut served = 0;
    while app.get("/api/v1/projects/r/next", &rater).await.status == StatusCode::OK {
        // The pair just leased: answer it.
        let id: Uuid = sqlx::query_scalar(
            "select id from assignments where state = 'leased' order by created_at limit 1",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let res = app
            .post(
                &format!("/api/v1/assignments/{id}/judgment"),
                &rater,
                json!({"choice": "left"}),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        served += 1;
        assert!(served < 200, "the queue must run out");
    }
    let repeats = app
        .count("select count(*) from assignments where kind = 'repeat'")
        .await;
    assert!(repeats >= 5, "{repeats} repeats in {served} pairs");
    // Each repeat shows the same pair as the assignment it repeats, sides swapped.
    assert_eq!(
        app.count(
            "select count(*) from assignments r join assignments o on o.id = r.repeat_of
             where r.kind = 'repeat' and (r.comparison_id <> o.comparison_id
                or r.left_is_a = o.left_is_a or r.rater_id <> o.rater_id)"
        )
        .await,
        0
    );
    // Every pair judged exactly once towards coverage, though some were judged twice.
    assert_eq!(
        app.count("select count(*) from pair_counts where judged_count <> 1")
            .await,
        0
    );
    assert_eq!(
        app.count("select count(*) from judgments").await,
        40 + repeats
    );
    // Always pressing left on both showings is inconsistent in canonical terms.
    let lead_q = app.get("/api/v1/projects/r/quality", &lead).await.json();
    assert_eq!(lead_q["self_consistency"]["n"], repeats);
    assert_eq!(lead_q["self_consistency"]["k"], 0);
    assert_eq!(lead_q["judgments"], 40);
}

#[tokio::test]
async fn a_paused_rater_gets_no_pairs_until_resumed() {
    let app = app().await;
    let lead = app.project("pz", json!({})).await;
    app.import_text_pairs("pz", &lead, 5).await;
    let rater = app.annotator("pz", &lead, "ann").await;
    let pause = |on: bool| {
        app.post(
            "/api/v1/projects/pz/raters/ann/pause",
            &lead,
            json!({"paused": on}),
        )
    };
    assert_eq!(pause(true).await.status, StatusCode::OK);
    let res = app.get("/api/v1/projects/pz/next", &rater).await;
    assert_eq!(res.status, StatusCode::CONFLICT);
    assert_eq!(res.code(), "paused");
    assert_eq!(app.count("select count(*) from assignments").await, 0);
    assert_eq!(pause(false).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/projects/pz/next", &rater).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.count("select count(*) from audit_log where action in ('pause_rater', 'resume_rater')")
            .await,
        2
    );
}

#[tokio::test]
async fn exclusion_is_previewed_audited_requeues_and_reverses() {
    let app = app().await;
    let lead = app.project("x", json!({"overlap": 1})).await;
    app.import_text_pairs("x", &lead, 4).await;
    let bad = app.annotator("x", &lead, "bad").await;
    let good = app.annotator("x", &lead, "good").await;
    for _ in 0..3 {
        let res = app.judge_next("x", &bad, json!({"choice": "left"})).await;
        assert_eq!(res.status, StatusCode::CREATED);
    }
    let preview = app
        .get("/api/v1/projects/x/raters/bad/exclusion", &lead)
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text());
    assert_eq!(preview.json()["excluded_now"], false);
    assert_eq!(preview.json()["judgments"], 3);
    let exclude = |on: bool| {
        app.post(
            "/api/v1/projects/x/raters/bad/exclusion",
            &lead,
            json!({"excluded": on}),
        )
    };
    let res = exclude(true).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["pairs_requeued"], 3);
    // Again: nothing changes twice.
    assert_eq!(exclude(true).await.json()["pairs_requeued"], 0);
    let (actor, detail): (String, Value) = sqlx::query_as(
        "select u.name, a.detail from audit_log a join users u on u.id = a.actor_id
         where a.action = 'exclude_rater'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(actor, "lead-x");
    assert_eq!(detail["rater"], "bad");
    // An excluded rater who goes on labeling covers nothing: pair 4 stays open.
    let res = app.judge_next("x", &bad, json!({"choice": "left"})).await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(
        app.count("select coalesce(sum(judged_count), 0)::bigint from pair_counts")
            .await,
        0
    );
    assert_eq!(app.miscounted_pairs().await, 0);
    // The pairs the excluded rater covered go back to the queue: the other rater gets all 4.
    for _ in 0..4 {
        let res = app.judge_next("x", &good, json!({"choice": "right"})).await;
        assert_eq!(res.status, StatusCode::CREATED);
    }
    assert_eq!(
        app.get("/api/v1/projects/x/next", &good).await.status,
        StatusCode::NO_CONTENT
    );
    // Training leaves the excluded judgments out.
    let project: Uuid = sqlx::query_scalar("select id from projects where slug = 'x'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let rows = backflip::reward::data::judgments(&app.pool, project)
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    // Reversible: the judgments count again.
    let res = exclude(false).await;
    assert_eq!(res.json()["pairs_requeued"], 4);
    assert_eq!(
        backflip::reward::data::judgments(&app.pool, project)
            .await
            .unwrap()
            .len(),
        8
    );
    assert_eq!(
        app.count("select coalesce(sum(judged_count), 0)::bigint from pair_counts")
            .await,
        8
    );
    assert_eq!(app.miscounted_pairs().await, 0);
    assert_eq!(
        app.count(
            "select count(*) from audit_log where action = 'include_rater' and actor_id is not null"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("select count(*) from judgments").await,
        8,
        "nothing deleted"
    );
}

/// A browser session for a user, straight from the session table: (cookie, csrf).
pub(crate) async fn session(app: &TestApp, name: &str) -> (String, String) {
    let user: Uuid = sqlx::query_scalar("select id from users where name = $1")
        .bind(name)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let id = backflip::auth::create_session(&app.pool, user)
        .await
        .unwrap();
    let csrf: String = sqlx::query_scalar(
        "select csrf_token from sessions where user_id = $1 order by created_at desc limit 1",
    )
    .bind(user)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (format!("backflip_session={id}"), csrf)
}

pub(crate) async fn page(app: &TestApp, cookie: &str, uri: &str) -> Res {
    app.send(
        Request::get(uri)
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn dashboards_show_the_numbers_of_a_hand_built_dataset() {
    let app = app().await;
    let lead = app.project("d", json!({"overlap": 3})).await;
    app.import_text_pairs("d", &lead, 4).await;
    let ids = pair_ids(&app, "d").await;
    set_gold(&app, "d", &lead, ids[3], "a").await;
    // Each pair's answers in canonical terms, by rater (as in the report's unit test, without
    // the repeat): P1 a a b · P2 b b b · P3 a tie a · P4 (gold a) cant_tell a b.
    let answers = [
        ("r1", ["a", "b", "a", "cant_tell"]),
        ("r2", ["a", "b", "tie", "a"]),
        ("r3", ["b", "b", "a", "b"]),
    ];
    for (name, choices) in answers {
        let token = app.annotator("d", &lead, name).await;
        for _ in 0..4 {
            let pair = app.get("/api/v1/projects/d/next", &token).await.json();
            let n: usize = pair["prompt"].as_str().unwrap()[9..].parse().unwrap();
            let press = match choices[n] {
                c @ ("a" | "b") => press_for(&pair, c),
                other => other,
            };
            let id = pair["assignment_id"].as_str().unwrap();
            let res = app
                .post(
                    &format!("/api/v1/assignments/{id}/judgment"),
                    &token,
                    json!({"choice": press, "duration_ms": if name == "r1" { 500 } else { 3000 }}),
                )
                .await;
            assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        }
    }
    let q = app.get("/api/v1/projects/d/quality", &lead).await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text());
    let q = q.json();
    assert_eq!(q["judgments"], 12);
    assert_eq!(q["agreement"]["percent"], 0.5);
    assert_eq!(q["gold_accuracy"]["k"], 1);
    assert_eq!(q["gold_accuracy"]["n"], 2);
    assert_eq!(q["split_pairs"].as_array().unwrap().len(), 3);
    assert_eq!(q["gold_failures"][0]["rater"], "r3");
    let r1 = q["raters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "r1")
        .unwrap();
    assert_eq!(r1["flags"][0]["code"], "too_fast");
    assert_eq!(r1["timing"]["median_ms"], 500.0);
    let r2 = app
        .get("/api/v1/projects/d/quality/raters/r2", &lead)
        .await
        .json();
    assert_eq!(r2["majority_agreement"]["k"], 1);
    assert_eq!(r2["majority_agreement"]["n"], 3);
    assert_eq!(r2["days"][0]["judgments"], 4);

    let (cookie, csrf) = session(&app, "lead-d").await;
    let overview = page(&app, &cookie, "/projects/d/quality").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.text());
    let html = overview.text();
    assert!(html.contains("0.500"), "percent agreement");
    assert!(html.contains("data-flag=\"too_fast\""));
    assert!(
        html.contains("kappa of rater pairs") && html.contains("<svg"),
        "the heatmap"
    );
    assert!(html.contains("id=\"ds-definition\""));
    assert!(html.contains("/static/sortable.js") && !html.contains("<script>"));
    let errors = page(&app, &cookie, "/projects/d/quality/errors")
        .await
        .text();
    assert!(errors.contains("id=\"gold-failures\"") && errors.contains("id=\"split-pairs\""));
    assert!(errors.contains("No reward model yet"));
    // The gold failure links to the pair as r3 saw it.
    let at = errors
        .find("?assignment=")
        .expect("a link to the pair as seen");
    let link_start = errors[..at].rfind("href=\"").unwrap() + 6;
    let link = &errors[link_start..at + 12 + 36];
    let seen = page(&app, &cookie, link).await;
    assert_eq!(seen.status, StatusCode::OK, "{link}");
    assert!(
        seen.text()
            .contains("As <a href=\"/projects/d/quality/raters/r3\">r3</a> saw it")
    );
    let rater = page(&app, &cookie, "/projects/d/quality/raters/r1")
        .await
        .text();
    assert!(rater.contains("<svg") && rater.contains("id=\"preview\""));

    // Every figure links to the judgments behind it: the project's and each rater's.
    assert!(html.contains("href=\"/projects/d/quality/judgments?show=gold\""));
    assert!(html.contains("href=\"/projects/d/quality/judgments?rater=r1&amp;show=fast\""));
    assert!(rater.contains("href=\"/projects/d/quality/judgments?rater=r1&amp;show=left\""));
    let behind = |query: &'static str| {
        let cookie = cookie.clone();
        let app = &app;
        async move {
            let res = page(
                app,
                &cookie,
                &format!("/projects/d/quality/judgments?{query}"),
            )
            .await;
            let html = res.text();
            let count = html
                .split("id=\"behind-count\">")
                .nth(1)
                .and_then(|t| t.split('<').next())
                .map(str::to_string);
            (res.status, count, html)
        }
    };
    // Gold pair P4: r2 a (right), r3 b (wrong); r1's can't-tell is no answer.
    for (query, want) in [
        ("show=first", "12"),
        // Agreement's answers leave r1's can't-tell out.
        ("show=answers", "11"),
        ("rater=r1&show=answers", "3"),
        ("show=repeats", "0"),
        // "answer A1" and "answer B1" are as long as each other: no answer counts for length.
        ("show=longer", "0"),
        ("show=gold", "2"),
        ("show=gold_wrong", "1"),
        ("show=tie", "1"),
        ("show=cant_tell", "1"),
        ("show=fast", "4"),
        ("rater=r1&show=fast", "4"),
        ("rater=r2&show=fast", "0"),
        ("rater=r3&show=all", "4"),
    ] {
        let (status, count, _) = behind(query).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(count.as_deref(), Some(want), "{query}");
    }
    // The wrong gold answer opens as r3 saw it.
    let (_, _, html) = behind("show=gold_wrong").await;
    let at = html
        .find("?assignment=")
        .expect("a link to the pair as seen");
    let link_start = html[..at].rfind("href=\"").unwrap() + 6;
    let seen = page(&app, &cookie, &html[link_start..at + 12 + 36]).await;
    assert!(
        seen.text()
            .contains("As <a href=\"/projects/d/quality/raters/r3\">r3</a> saw it")
    );
    assert_eq!(
        behind("show=everything").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(behind("rater=nobody").await.0, StatusCode::NOT_FOUND);
    // Raters do not read it, as they do not read the quality pages.
    let (annotator, _) = session(&app, "r1").await;
    let refused = page(&app, &annotator, "/projects/d/quality/judgments?show=first").await;
    let overview_refused = page(&app, &annotator, "/projects/d/quality").await;
    assert!(refused.status.is_client_error());
    assert_eq!(refused.status, overview_refused.status);

    // The lead's forms need the CSRF token.
    let post = |uri: &str, body: String| {
        app.send(
            Request::post(uri)
                .header(header::COOKIE, &cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
                .unwrap(),
        )
    };
    let res = post(
        "/projects/d/quality/raters/r3/pause",
        "csrf=wrong&on=1".into(),
    )
    .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let res = post(
        "/projects/d/quality/raters/r3/pause",
        format!("csrf={csrf}&on=1"),
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let res = post(
        &format!("/projects/d/pairs/{}/gold", ids[1]),
        format!("csrf={csrf}&answer=b"),
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    let res = post(
        "/projects/d/quality/promote",
        format!("csrf={csrf}&min_answers=3"),
    )
    .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.count("select count(*) from comparisons where gold is not null")
            .await,
        2,
        "P2 (now gold b) was the only unanimous pair"
    );
    // A researcher reads the dashboards but cannot act; an annotator cannot read them.
    app.user("res", Role::Researcher).await;
    app.add_member("d", &lead, "res", "researcher").await;
    let (rc, rcsrf) = session(&app, "res").await;
    assert_eq!(
        page(&app, &rc, "/projects/d/quality").await.status,
        StatusCode::OK
    );
    let res = app
        .send(
            Request::post("/projects/d/quality/raters/r3/pause")
                .header(header::COOKIE, &rc)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("csrf={rcsrf}&on=0")))
                .unwrap(),
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    let (ac, _) = session(&app, "r1").await;
    assert_eq!(
        page(&app, &ac, "/projects/d/quality").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_position_bias_detector_flags_the_simulated_always_left_rater() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let store = ClipStore::local(dir.path()).unwrap();
    let opts = simulate::SimOpts {
        task: simulate::TaskKind::Text,
        pairs: 40,
        raters: 4,
        overlap: 3,
        train: false,
        steps: Some(20),
        temperature: 1.0,
        seed: 7,
    };
    simulate::project::run(&app.pool, &store, &opts)
        .await
        .unwrap();
    let project: Uuid = sqlx::query_scalar("select id from projects where slug = 'sim-text'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let q = report::report(&app.pool, project).await.unwrap();
    let rater = |profile: &str| q.raters.iter().find(|r| r.name.contains(profile)).unwrap();
    let flagged = |profile: &str| {
        rater(profile)
            .flags
            .iter()
            .any(|f| f.code == "position_bias")
    };
    // How many pairs each simulated rater answers depends on who asks first, so the test
    // checks the exact binomial p-value of the count it got rather than a fixed bound.
    let left = &rater("always-left").position;
    assert!(left.share.n >= 10, "{left:?}");
    assert_eq!(left.share.k, left.share.n, "{left:?}");
    let exact = 2.0 * 0.5f64.powi(left.share.n as i32);
    assert!((left.p_value - exact).abs() <= exact * 1e-9, "{left:?}");
    assert!(flagged("always-left"), "{left:?}");
    // The careful rater's sides are random: nothing near the always-left rater's evidence
    // (a random rater reaches p < 1e-6 about once in a million runs).
    let careful = &rater("careful").position;
    assert!(careful.p_value > 1e-6, "{careful:?}");
}

#[tokio::test]
async fn the_quality_api_is_in_the_openapi_document() {
    let app = app().await;
    let doc = app
        .call(axum::http::Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .json();
    for path in [
        "/api/v1/projects/{slug}/quality",
        "/api/v1/projects/{slug}/quality/raters/{name}",
        "/api/v1/projects/{slug}/quality/settings",
        "/api/v1/projects/{slug}/pairs/{id}/gold",
        "/api/v1/projects/{slug}/gold/promote",
        "/api/v1/projects/{slug}/raters/{name}/pause",
        "/api/v1/projects/{slug}/raters/{name}/exclusion",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighting_and_the_model_check_work_on_a_trained_project() {
    let app = app().await;
    let dir = tempfile::tempdir().unwrap();
    let store = ClipStore::local(dir.path()).unwrap();
    let opts = simulate::SimOpts {
        task: simulate::TaskKind::Text,
        pairs: 40,
        raters: 4,
        overlap: 2,
        train: true,
        // The service's 300 steps: enough for the model to be confident about some pairs.
        steps: None,
        temperature: 1.0,
        seed: 3,
    };
    simulate::project::run(&app.pool, &store, &opts)
        .await
        .unwrap();
    let project = backflip::projects::by_slug(&app.pool, "sim-text")
        .await
        .unwrap();
    // Off by default: every judgment weighs 1.
    let rows = backflip::reward::data::judgments(&app.pool, project.id)
        .await
        .unwrap();
    assert_eq!(rows.len(), 80);
    assert!(rows.iter().all(|r| r.weight == 1.0));
    sqlx::query("update projects set reliability_weighting = true where id = $1")
        .bind(project.id)
        .execute(&app.pool)
        .await
        .unwrap();
    let rows = backflip::reward::data::judgments(&app.pool, project.id)
        .await
        .unwrap();
    // On: each judgment weighs its rater's reliability (floor 0.05), no longer 1 throughout.
    // (Which raters weigh more is not asserted here: with 80 judgments from this panel — an
    // always-left rater among four, sides drawn at random by the server — Dawid–Skene can put
    // every rater at the floor; `quality::bench` measures the weighting on enough data.)
    let weights: BTreeSet<u32> = rows.iter().map(|r| (r.weight * 1000.0) as u32).collect();
    assert!(
        rows.iter().any(|r| r.weight < 1.0),
        "reliability weights apply: {weights:?}"
    );
    assert!(rows.iter().all(|r| (0.05..=1.0).contains(&r.weight)));
    // The model check scores the report's majority pairs with the trained model.
    let q = backflip::quality::report::report(&app.pool, project.id)
        .await
        .unwrap();
    assert!(!q.majority_pairs.is_empty());
    let found = backflip::quality::model_check::disagreements(
        &app.pool,
        &store,
        &Default::default(),
        &project,
        &q.majority_pairs,
    )
    .await
    .unwrap()
    .expect("the project has a model");
    assert!(
        found
            .iter()
            .all(|d| d.model_probability <= 0.1 && d.votes * 2 > d.answers)
    );
    // Two votes against the model on every pair of the project: the check reports exactly the
    // pairs the model ranks with P >= 0.9, each with the model's probability of the raters'
    // (less liked) side, most confident first.
    let pairs: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "select id, rollout_a, rollout_b from comparisons where project_id = $1 order by seq",
    )
    .bind(project.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let rollouts = pairs
        .iter()
        .flat_map(|p| [p.1, p.2])
        .map(|id| backflip::reward::score::ScoreInput {
            text: None,
            features: None,
            rollout_id: Some(id),
        })
        .collect();
    let rewards = backflip::reward::score::score(
        &app.pool,
        &store,
        &Default::default(),
        &project,
        backflip::reward::score::ScoreRequest { rollouts },
    )
    .await
    .unwrap()
    .rewards;
    let (mut against, mut expected) = (vec![], vec![]);
    for (p, r) in pairs.iter().zip(rewards.chunks(2)) {
        let p_a = 1.0 / (1.0 + f64::from(r[1].mean - r[0].mean).exp());
        let (a, b, p_raters) = if p_a >= 0.5 {
            (0, 2, 1.0 - p_a)
        } else {
            (2, 0, p_a)
        };
        against.push(report::SplitPair {
            pair: p.0,
            a,
            b,
            tie: 0,
        });
        if p_raters <= backflip::quality::model_check::CONFIDENT {
            expected.push((p.0, p_raters));
        }
    }
    assert!(
        !expected.is_empty(),
        "the trained model is confident about some pair"
    );
    expected.sort_by(|x, y| x.1.total_cmp(&y.1));
    let found = backflip::quality::model_check::disagreements(
        &app.pool,
        &store,
        &Default::default(),
        &project,
        &against,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(found.len(), expected.len());
    for (d, (pair, p)) in found.iter().zip(&expected) {
        assert_eq!(d.pair, *pair);
        assert!((d.model_probability - p).abs() < 1e-9);
        assert_eq!((d.votes, d.answers), (2, 2));
        let m = against.iter().find(|m| m.pair == *pair).unwrap();
        assert_eq!(d.consensus, if m.a == 2 { "a" } else { "b" });
    }
}
