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
    let unordered: HashSet<(Uuid, Uuid)> =
        pairs.iter().map(|p| (p.0.min(p.1), p.0.max(p.1))).collect();
    assert_eq!(unordered.len(), 100, "no unordered pair twice");
    assert!(pairs.iter().all(|p| p.2 == p.3), "pairs only within groups");
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
    assert_eq!(
        before,
        json!({"strategy": "random", "random_share": 0.3, "open_target": 200})
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
async fn next_serves_generated_pairs_and_judging_refills_the_queue() {
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
    for _ in 0..3 {
        let res = app.get("/api/v1/projects/e2e/next", &ann).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
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
    // Completing generated pairs queued one (debounced) refill job; running it tops up.
    assert_eq!(
        app.count("select count(*) from jobs where kind = 'select' and status = 'queued'")
            .await,
        1
    );
    let runner = backflip::jobs::Runner::new(
        app.pool.clone(),
        backflip::selection::job::handlers(),
        backflip::jobs::WorkerConfig::new(1, 30.0),
    );
    assert_eq!(runner.drain().await.unwrap(), 1);
    assert_eq!(
        app.count(
            "select count(*) from comparisons where generated and judged_count + leased_count < overlap"
        )
        .await,
        3
    );
    let res = app
        .judge_next("e2e", &ann, json!({"choice": "right"}))
        .await;
    assert!(res.status.is_success(), "{}", res.text());
}
