//! Many raters at once: the overlap is never exceeded, a rater never gets a pair
//! twice, concurrent retries of one judgment store one row.

use std::sync::Arc;

use axum::http::{Request, StatusCode, header};
use serde_json::json;

use crate::common::{TestApp, app};

async fn raters(app: &TestApp, slug: &str, lead: &str, n: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..n {
        tokens.push(app.annotator(slug, lead, &format!("rater{i}")).await);
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_raters_racing_for_twenty_pairs_never_over_assign() {
    let app = Arc::new(app().await);
    let lead = app.project("race", json!({"overlap": 3})).await;
    app.import_text_pairs("race", &lead, 20).await;
    let tokens = raters(&app, "race", &lead, 50).await;

    let mut tasks = Vec::new();
    for token in tokens {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut judged = 0;
            loop {
                let res = app.get("/api/v1/projects/race/next", &token).await;
                if res.status == StatusCode::NO_CONTENT {
                    return judged;
                }
                assert_eq!(res.status, StatusCode::OK, "{}", res.text());
                let id = res.json()["assignment_id"].as_str().unwrap().to_owned();
                let res = app
                    .post(
                        &format!("/api/v1/assignments/{id}/judgment"),
                        &token,
                        json!({"choice": "left"}),
                    )
                    .await;
                assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
                judged += 1;
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 60, "20 pairs x overlap 3");
    let per_pair: Vec<i64> =
        sqlx::query_scalar("select count(*) from judgments group by comparison_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(per_pair, vec![3; 20]);
    let repeats = app
        .count("select count(*) from (select 1 from judgments group by comparison_id, rater_id having count(*) > 1) d")
        .await;
    assert_eq!(repeats, 0);
    let counters = app
        .count("select count(*) from comparisons where judged_count <> 3 or leased_count <> 0")
        .await;
    assert_eq!(counters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_leases_respect_the_overlap() {
    let app = Arc::new(app().await);
    let lead = app.project("leases", json!({"overlap": 3})).await;
    app.import_text_pairs("leases", &lead, 10).await;
    let tokens = raters(&app, "leases", &lead, 50).await;
    let mut tasks = Vec::new();
    for token in tokens {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.get("/api/v1/projects/leases/next", &token).await.status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::NO_CONTENT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 30, "10 pairs x overlap 3 live leases, no more");
    let max: i64 = app
        .count(
            "select max(c) from (select count(*) as c from assignments group by comparison_id) x",
        )
        .await;
    assert_eq!(max, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_key_store_one_judgment() {
    let app = Arc::new(app().await);
    let lead = app.project("retry", json!({})).await;
    app.import_text_pairs("retry", &lead, 1).await;
    let r1 = app.annotator("retry", &lead, "r1").await;
    let id = app.get("/api/v1/projects/retry/next", &r1).await.json()["assignment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, r1, id) = (app.clone(), r1.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let req = Request::post(format!("/api/v1/assignments/{id}/judgment"))
                .header(header::AUTHORIZATION, format!("Bearer {r1}"))
                .header(header::CONTENT_TYPE, "application/json")
                .header("idempotency-key", "same-key")
                .body(json!({"choice": "right"}).to_string().into())
                .unwrap();
            let res = app.send(req).await;
            (res.status, res.json()["id"].clone())
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (status, jid) = t.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("unexpected {other}"),
        }
        ids.insert(jid.to_string());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1, "every reply names the same judgment");
    assert_eq!(app.count("select count(*) from judgments").await, 1);
}
