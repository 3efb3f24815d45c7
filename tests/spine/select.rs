//! Choosing what to ask: rollouts imported in groups, pairs generated within
//! groups (coverage first, never twice), the strategy setting, and generated
//! pairs served by `next` and judged end to end.

use std::collections::{HashMap, HashSet};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{TestApp, app};

/// JSONL of rollouts: `groups[g]` rollouts in group `g{g}`, policies cycling over `policies`.
fn rollouts(prefix: &str, groups: &[usize], policies: usize) -> String {
    let mut out = String::new();
    for (g, &n) in groups.iter().enumerate() {
        for i in 0..n {
            let line = json!({
                "id": format!("{prefix}{g}-{i}"),
                "group": format!("g{g}"),
                "prompt": format!("prompt of group {g}"),
                "rollout": {"text": format!("rollout {g}-{i}"), "policy": format!("ckpt-{}", i % policies)},
            });
            out += &format!("{line}\n");
        }
    }
    out
}

async fn put_selection(app: &TestApp, slug: &str, token: &str, body: Value) -> crate::common::Res {
    app.call(
        Method::PUT,
        &format!("/api/v1/projects/{slug}/selection"),
        Some(token),
        Some(body),
    )
    .await
}

/// The generated pairs in queue order: (rollout a, rollout b, group of a, group of b).
async fn generated(app: &TestApp) -> Vec<(Uuid, Uuid, String, String)> {
    sqlx::query_as(
        "select c.rollout_a, c.rollout_b, ra.group_key, rb.group_key from comparisons c
         join rollouts ra on ra.id = c.rollout_a join rollouts rb on rb.id = c.rollout_b
         where c.generated order by c.priority desc, c.seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// No unordered pair twice, and pairs only within groups.
#[track_caller]
fn assert_distinct_within_groups(pairs: &[(Uuid, Uuid, String, String)]) {
    let unordered: HashSet<(Uuid, Uuid)> =
        pairs.iter().map(|p| (p.0.min(p.1), p.0.max(p.1))).collect();
    assert_eq!(unordered.len(), pairs.len(), "no unordered pair twice");
    assert!(pairs.iter().all(|p| p.2 == p.3), "pairs only within groups");
}

#[tokio::test]
async fn rollout_import_is_checked_all_or_nothing_and_skips_known_ids() {
    let app = app().await;
    let lead = app.project("sel", json!({})).await;
    let bad = [
        r#"{"group": "g", "prompt": "p", "rollout": {"text": "fine"}}"#,
        r#"{"group": "g", "prompt": "p", "rollout": {"clip": "x.gif"}}"#,
        r#"{"prompt": "p", "a": {"text": "x"}, "b": {"text": "y"}}"#,
        "not json",
        r#"{"group": "g", "prompt": "p"}"#,
    ]
    .join("\n");
    let res = app
        .post_raw("/api/v1/projects/sel/import", &lead, bad)
        .await;
    assert_eq!(
        res.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        res.text()
    );
    let lines: Vec<i64> = res.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3, 4, 5], "{}", res.text());
    assert_eq!(app.count("select count(*) from rollouts").await, 0);
    assert_eq!(app.count("select count(*) from comparisons").await, 0);

    let file = rollouts("r", &[3, 2], 2);
    let res = app
        .post_raw("/api/v1/projects/sel/import", &lead, file.clone())
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    // A group of 3 has 3 pairs, a group of 2 one: all of them fit the default target.
    assert_eq!(
        res.json(),
        json!({"lines": 5, "imported": 5, "duplicates": 0, "generated": 4})
    );
    let res = app
        .post_raw(
            "/api/v1/projects/sel/import",
            &lead,
            file + &rollouts("s", &[1], 1),
        )
        .await;
    // The new rollout joins group g0 and is paired with its three rollouts.
    assert_eq!(
        res.json(),
        json!({"lines": 6, "imported": 1, "duplicates": 5, "generated": 3})
    );
    assert_eq!(app.count("select count(*) from rollouts").await, 6);
    // Imported with their group, prompt and policy.
    assert_eq!(
        app.count(
            "select count(*) from rollouts where group_key = 'g0' and prompt = 'prompt of group 0'
             and policy like 'ckpt-%'"
        )
        .await,
        4
    );
}

#[tokio::test]
async fn pairs_stay_in_groups_cover_every_rollout_first_and_never_repeat() {
    let app = app().await;
    let lead = app.project("cov", json!({})).await;
    // Target 11 first: just enough to cover 10 + 11 rollouts in two groups.
    let res = put_selection(
        &app,
        "cov",
        &lead,
        json!({"strategy": "random", "random_share": 0.3, "open_target": 11}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let res = app
        .post_raw(
            "/api/v1/projects/cov/import",
            &lead,
            rollouts("r", &[10, 11], 3),
        )
        .await;
    assert_eq!(res.json()["generated"], 11, "{}", res.text());
    let pairs = generated(&app).await;
    let covered: HashSet<Uuid> = pairs.iter().flat_map(|p| [p.0, p.1]).collect();
    assert_eq!(
        covered.len(),
        21,
        "the first ⌈n/2⌉ pairs per group cover everyone"
    );

    // Raising the target tops up; asking for more than exists yields every pair once.
    let res = put_selection(
        &app,
        "cov",
        &lead,
        json!({"strategy": "random", "random_share": 0.3, "open_target": 1000}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["generated"], 45 + 55 - 11);
    let pairs = generated(&app).await;
    assert_eq!(pairs.len(), 100);
    assert_distinct_within_groups(&pairs);
    // Each rollout's appearances stay level: 9 or 10 partners, all it has.
    let mut count: HashMap<Uuid, usize> = HashMap::new();
    for p in &pairs {
        *count.entry(p.0).or_default() += 1;
        *count.entry(p.1).or_default() += 1;
    }
    assert!(count.values().all(|&c| c == 9 || c == 10));
    // The database refuses a duplicate too, in either order.
    let dup = sqlx::query(
        "insert into comparisons (project_id, prompt, rollout_a, rollout_b, overlap)
         select project_id, prompt, rollout_b, rollout_a, overlap from comparisons limit 1",
    )
    .execute(&app.pool)
    .await;
    assert!(dup.is_err());
}

#[tokio::test]
async fn the_strategy_setting_is_validated_and_audited() {
    let app = app().await;
    let lead = app.project("st", json!({})).await;
    let before = app.get("/api/v1/projects/st/selection", &lead).await.json();
    // The default is the strategy the label-efficiency benchmark supports (migration 0013).
    assert_eq!(
        before,
        json!({"strategy": "mixed", "random_share": 0.3, "open_target": 200})
    );
    for bad in [
        json!({"strategy": "greedy", "random_share": 0.3, "open_target": 10}),
        json!({"strategy": "mixed", "random_share": 1.5, "open_target": 10}),
        json!({"strategy": "mixed", "random_share": 0.5, "open_target": 0}),
        json!({"strategy": "mixed", "random_share": 0.5, "open_target": 10, "k": 1}),
    ] {
        let res = put_selection(&app, "st", &lead, bad.clone()).await;
        assert_eq!(
            res.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            res.text()
        );
        assert!(!res.code().is_empty());
    }
    let after = app.get("/api/v1/projects/st/selection", &lead).await.json();
    assert_eq!(after, before, "a refused change changes nothing");
    let good = json!({"strategy": "mixed", "random_share": 0.5, "open_target": 50});
    let res = put_selection(&app, "st", &lead, good.clone()).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(
        app.get("/api/v1/projects/st/selection", &lead).await.json(),
        good
    );
    assert_eq!(
        app.count("select count(*) from audit_log where action = 'selection_settings'")
            .await,
        1
    );
    // An annotator cannot change it.
    let ann = app.annotator("st", &lead, "ann").await;
    let res = put_selection(&app, "st", &ann, good).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn next_serves_generated_pairs_and_taking_them_refills_the_queue() {
    let app = app().await;
    let lead = app.project("e2e", json!({"overlap": 1})).await;
    let res = put_selection(
        &app,
        "e2e",
        &lead,
        json!({"strategy": "random", "random_share": 0.3, "open_target": 3}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let res = app
        .post_raw("/api/v1/projects/e2e/import", &lead, rollouts("r", &[6], 2))
        .await;
    assert_eq!(res.json()["generated"], 3);
    let ann = app.annotator("e2e", &lead, "ann").await;
    // The first three pairs cover all six rollouts, and `next` serves them in that order.
    let mut seen = HashSet::new();
    for i in 0..3 {
        let res = app.get("/api/v1/projects/e2e/next", &ann).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        // The lease took the pair's last slot: the refill is queued at once.
        assert_eq!(
            app.count("select count(*) from jobs where kind = 'select' and status = 'queued'")
                .await,
            1,
            "after lease {i}"
        );
        let pair = res.json();
        assert_eq!(pair["prompt"], "prompt of group 0", "{pair}");
        let id = pair["assignment_id"].as_str().unwrap().to_owned();
        let res = app
            .post(
                &format!("/api/v1/assignments/{id}/judgment"),
                &ann,
                json!({"choice": "left"}),
            )
            .await;
        assert!(res.status.is_success(), "{}", res.text());
        seen.insert(pair["left"].to_string());
        seen.insert(pair["right"].to_string());
    }
    assert_eq!(seen.len(), 6, "every rollout shown once");
    assert_eq!(app.count("select count(*) from judgments").await, 3);
    // Taking generated pairs queued one (debounced) refill job; running it tops up.
    assert_eq!(
        app.count("select count(*) from jobs where kind = 'select' and status = 'queued'")
            .await,
        1
    );
    let runner = backflip::jobs::Runner::new(
        app.pool.clone(),
        backflip::selection::job::handlers(app.state.clips.clone()),
        backflip::jobs::WorkerConfig::new(1, 30.0),
    );
    assert_eq!(runner.drain().await.unwrap(), 1);
    assert_eq!(
        app.count("select count(*) from comparisons where generated and is_open")
            .await,
        3
    );
    let res = app
        .judge_next("e2e", &ann, json!({"choice": "right"}))
        .await;
    assert!(res.status.is_success(), "{}", res.text());
}

/// A text rollout whose words a simple model can tell apart.
fn sentence(g: usize, i: usize) -> String {
    let words = ["good", "fine", "bad", "poor", "great", "awful", "ok", "meh"];
    (0..6)
        .map(|k| words[(g * 7 + i * 3 + k * 5) % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
        + &format!(" r{g}x{i}")
}

/// JSONL of [`sentence`] rollouts, group `g{g}` with prompt `task {g}`; ids
/// `{id}{g}-{i}` unless `id` is empty.
fn sentence_lines(items: impl Iterator<Item = (usize, usize)>, id: &str) -> String {
    items
        .map(|(g, i)| {
            let mut line = json!({"group": format!("g{g}"), "prompt": format!("task {g}"),
                                  "rollout": {"text": sentence(g, i)}});
            if !id.is_empty() {
                line["id"] = json!(format!("{id}{g}-{i}"));
            }
            line.to_string() + "\n"
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncertainty_asks_the_most_disputed_pairs_and_a_new_model_refreshes_the_queue() {
    let app = app().await;
    let lead = app
        .project("unc", json!({"overlap": 1, "train_every": 0}))
        .await;
    let set = |body: Value| put_selection(&app, "unc", &lead, body);
    let res = set(json!({"strategy": "random", "random_share": 0.3, "open_target": 24})).await;
    assert_eq!(res.status, StatusCode::OK);
    let lines = sentence_lines((0..4).flat_map(|g| (0..8).map(move |i| (g, i))), "");
    let res = app
        .post_raw("/api/v1/projects/unc/import", &lead, lines)
        .await;
    assert_eq!(res.json()["generated"], 24, "{}", res.text());
    let ann = app.annotator("unc", &lead, "ann").await;
    for _ in 0..24 {
        let res = app.judge_next("unc", &ann, json!({"choice": "left"})).await;
        assert!(res.status.is_success(), "{}", res.text());
    }
    // Train a small model; the random queue gets no refresh job from it.
    let mut handlers = backflip::reward::job_handlers(app.state.clips.clone());
    handlers.extend(backflip::selection::job::handlers(app.state.clips.clone()));
    let runner = backflip::jobs::Runner::new(
        app.pool.clone(),
        handlers,
        backflip::jobs::WorkerConfig::new(1, 60.0),
    );
    sqlx::query("delete from jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    let project_id: Uuid = sqlx::query_scalar("select id from projects where slug = 'unc'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    backflip::jobs::storage::enqueue(&mut conn, "train", Some(project_id), json!({"steps": 40}))
        .await
        .unwrap();
    drop(conn);
    assert_eq!(runner.drain().await.unwrap(), 1);
    assert_eq!(
        app.count("select count(*) from projects where current_model is not null")
            .await,
        1,
        "{:?}",
        sqlx::query_scalar::<_, Option<String>>("select error from jobs")
            .fetch_all(&app.pool)
            .await
    );

    // Uncertainty: ten pairs from a scored pool, asked most disputed first.
    let res = set(json!({"strategy": "uncertainty", "random_share": 0.3, "open_target": 10})).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["generated"], 10);
    let scored: Vec<i32> = sqlx::query_scalar(
        "select priority from comparisons
         where generated and id in (select id from pair_counts where judged_count = 0) order by seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(scored.len(), 10);
    assert!(scored.iter().all(|&p| p >= 1));
    assert!(
        scored[0] > scored[9],
        "the ensemble disagrees more on some: {scored:?}"
    );
    assert!(
        scored.windows(2).all(|w| w[0] >= w[1]),
        "inserted most disputed first: {scored:?}"
    );
    let next = app.get("/api/v1/projects/unc/next", &ann).await;
    assert_eq!(next.status, StatusCode::OK);
    let served: i32 = sqlx::query_scalar(
        "select c.priority from assignments a join comparisons c on c.id = a.comparison_id
         where a.state = 'leased'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(served, scored[0], "next serves the most disputed pair");

    // A new version re-scores the open, unleased, unjudged candidates in place;
    // the leased pair keeps its priority.
    sqlx::query(
        "update comparisons set priority = 3
         where generated and id in (select id from pair_counts where judged_count = 0)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let model: Uuid = sqlx::query_scalar("select current_model from projects")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    backflip::selection::job::enqueue_refresh(&app.pool, project_id, model)
        .await
        .unwrap();
    assert_eq!(runner.drain().await.unwrap(), 1);
    let result: Value = sqlx::query_scalar("select result from jobs where kind = 'select'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(result["rescored"], 9, "{result}");
    assert_eq!(
        app.count("select count(*) from comparisons c join pair_counts n on n.id = c.id where c.priority = 3 and n.leased_count = 1")
            .await,
        1
    );
    assert_eq!(
        app.count("select count(*) from comparisons where priority = 3")
            .await,
        1
    );

    // Mixed: a share of random pairs, interleaved with the scored ones.
    let res = set(json!({"strategy": "mixed", "random_share": 0.5, "open_target": 20})).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_eq!(res.json()["generated"], 10);
    let pairs = generated(&app).await;
    assert_distinct_within_groups(&pairs);

    // New rollouts under a scored strategy: the import (no ensemble at hand)
    // queues the job, which pairs them first, ahead of every scored pair.
    sqlx::query("update projects set open_target = open_target + 2")
        .execute(&app.pool)
        .await
        .unwrap();
    let lines = sentence_lines((8..10).map(|i| (0, i)), "late");
    let res = app
        .post_raw("/api/v1/projects/unc/import", &lead, lines)
        .await;
    assert_eq!(res.json()["generated"], 0, "{}", res.text());
    assert_eq!(runner.drain().await.unwrap(), 1);
    let top: (i32, Option<String>, Option<String>) = sqlx::query_as(
        "select c.priority, ra.external_id, rb.external_id from comparisons c
         join rollouts ra on ra.id = c.rollout_a join rollouts rb on rb.id = c.rollout_b
         where c.generated and c.is_open
         order by c.priority desc, c.seq limit 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(top.0, backflip::selection::score::COVERAGE);
    assert!(top.1.is_some() && top.2.is_some(), "{top:?}");
}

#[tokio::test]
async fn the_cli_imports_rollouts_and_reports_the_pairs_generated() {
    let app = app().await;
    app.project("cli-sel", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rollouts.jsonl");
    std::fs::write(&file, rollouts("c", &[4], 2)).unwrap();
    for expected in [
        "imported 4 new rollout(s) from 4 line(s); 0 already present; 6 pair(s) generated",
        "imported 0 new rollout(s) from 4 line(s); 4 already present; 0 pair(s) generated",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_backflip"))
            .env("DATABASE_URL", &app.url)
            .env("RUST_LOG", "warn")
            .args(["import", "--project", "cli-sel"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_generators_fill_the_gap_once() {
    let app = app().await;
    let lead = app.project("conc", json!({})).await;
    let res = put_selection(
        &app,
        "conc",
        &lead,
        json!({"strategy": "random", "random_share": 0.3, "open_target": 1}),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let res = app
        .post_raw(
            "/api/v1/projects/conc/import",
            &lead,
            rollouts("r", &[30], 3),
        )
        .await;
    assert_eq!(res.json()["generated"], 1);
    sqlx::query("update projects set open_target = 60")
        .execute(&app.pool)
        .await
        .unwrap();
    let project_id: Uuid = sqlx::query_scalar("select id from projects where slug = 'conc'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let pool = app.pool.clone();
            tokio::spawn(async move {
                backflip::selection::generate::top_up(&pool, project_id, None)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut total = 0;
    for r in runs {
        total += r.await.unwrap();
    }
    assert_eq!(total, 59, "one run fills the gap, the others find none");
    let pairs = generated(&app).await;
    assert_eq!(pairs.len(), 60);
    assert_distinct_within_groups(&pairs);
}
