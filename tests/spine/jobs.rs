//! The job queue: debounce, claims that never collide, leases taken over after
//! a worker dies, retries with backoff, panics, shutdown, NOTIFY wake-ups.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use backflip::jobs::{Handlers, Runner, WorkerConfig, storage};
use serde_json::json;

use crate::common::app;

async fn project_id(app: &crate::common::TestApp, slug: &str) -> uuid::Uuid {
    app.project(slug, json!({})).await;
    sqlx::query_scalar("select id from projects where slug = $1")
        .bind(slug)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn enqueue(pool: &sqlx::PgPool, kind: &str, project: Option<uuid::Uuid>) -> Option<i64> {
    let mut conn = pool.acquire().await.unwrap();
    storage::enqueue(&mut conn, kind, project, json!({}))
        .await
        .unwrap()
}

#[tokio::test]
async fn one_queued_job_per_project_and_kind() {
    let app = app().await;
    let p = project_id(&app, "deb").await;
    let first = enqueue(&app.pool, "train", Some(p)).await;
    assert!(first.is_some());
    assert_eq!(
        enqueue(&app.pool, "train", Some(p)).await,
        None,
        "debounced"
    );
    assert!(
        enqueue(&app.pool, "other", Some(p)).await.is_some(),
        "another kind is separate"
    );
    let job = storage::claim(&app.pool, "w1", 60.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(job.id), first);
    // Once it runs, the next one may queue.
    assert!(enqueue(&app.pool, "train", Some(p)).await.is_some());
}

#[tokio::test]
async fn concurrent_claims_take_different_jobs() {
    let app = app().await;
    for _ in 0..20 {
        enqueue(&app.pool, "k", None).await;
    }
    let mut tasks = Vec::new();
    for w in 0..10 {
        let pool = app.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(j) = storage::claim(&pool, &format!("w{w}"), 60.0).await.unwrap() {
                got.push(j.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!((n, all.len()), (20, 20), "every job claimed exactly once");
}

#[tokio::test]
async fn a_dead_workers_job_is_taken_over_when_its_lease_ends() {
    let app = app().await;
    let id = enqueue(&app.pool, "k", None).await.unwrap();
    let a = storage::claim(&app.pool, "dead", 0.5)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.id, id);
    assert!(
        storage::claim(&app.pool, "alive", 60.0)
            .await
            .unwrap()
            .is_none(),
        "leased"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let b = storage::claim(&app.pool, "alive", 60.0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((b.id, b.attempts), (id, 2));
    // The dead worker, should it come back, no longer owns the job.
    assert!(
        !storage::heartbeat(&app.pool, id, "dead", 60.0, None)
            .await
            .unwrap()
    );
    assert!(
        !storage::finish(&app.pool, id, "dead", &json!({}))
            .await
            .unwrap()
    );
    assert!(
        storage::finish(&app.pool, id, "alive", &json!({"ok": true}))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn failures_back_off_then_fail_for_good() {
    let app = app().await;
    let id = enqueue(&app.pool, "k", None).await.unwrap();
    sqlx::query("update jobs set max_attempts = 2 where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let job = storage::claim(&app.pool, "w", 60.0).await.unwrap().unwrap();
    storage::fail(&app.pool, job.id, "w", "first")
        .await
        .unwrap();
    let (status, delay): (String, f64) = sqlx::query_as(
        "select status, extract(epoch from run_after - now())::float8 from jobs where id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(status, "queued");
    assert!(
        delay > 8.0 && delay <= 10.0,
        "retried after ~10 s, got {delay}"
    );
    assert!(
        storage::claim(&app.pool, "w", 60.0)
            .await
            .unwrap()
            .is_none(),
        "not due yet"
    );
    sqlx::query("update jobs set run_after = now() where id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let job = storage::claim(&app.pool, "w", 60.0).await.unwrap().unwrap();
    storage::fail(&app.pool, job.id, "w", "second")
        .await
        .unwrap();
    let row = storage::get(&app.pool, id).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.attempts, row.error.as_deref()),
        ("failed", 2, Some("second"))
    );
}

fn handlers() -> Handlers {
    let mut h: Handlers = Handlers::new();
    h.insert(
        "ok",
        Arc::new(|ctx| {
            ctx.progress(json!({"step": 1}));
            Ok(json!({"answer": 42, "job": ctx.job.id}))
        }),
    );
    h.insert("boom", Arc::new(|_| panic!("boom")));
    h.insert("err", Arc::new(|_| anyhow::bail!("no data")));
    h.insert(
        "forever",
        Arc::new(|ctx| {
            while !ctx.cancel.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            anyhow::bail!("cancelled")
        }),
    );
    h
}

#[tokio::test]
async fn the_runner_records_results_errors_and_panics() {
    let app = app().await;
    let ok = enqueue(&app.pool, "ok", None).await.unwrap();
    let boom = enqueue(&app.pool, "boom", None).await.unwrap();
    let err = enqueue(&app.pool, "err", None).await.unwrap();
    let unknown = enqueue(&app.pool, "nobody-handles-this", None)
        .await
        .unwrap();
    let runner = Runner::new(app.pool.clone(), handlers(), WorkerConfig::new(1, 30.0));
    assert_eq!(runner.drain().await.unwrap(), 4);
    let result: serde_json::Value = sqlx::query_scalar("select result from jobs where id = $1")
        .bind(ok)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(result, json!({"answer": 42, "job": ok}));
    for (id, needle) in [
        (boom, "panicked: boom"),
        (err, "no data"),
        (unknown, "no handler"),
    ] {
        let row = storage::get(&app.pool, id).await.unwrap().unwrap();
        assert_eq!(row.status, "queued", "retried later");
        assert!(row.error.unwrap().contains(needle));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_an_idle_worker_and_shutdown_hands_jobs_back() {
    let app = app().await;
    let mut config = WorkerConfig::new(2, 30.0);
    // Polling alone would take a minute: only NOTIFY can wake the worker in time.
    config.poll = Duration::from_secs(60);
    let runner = Runner::new(app.pool.clone(), handlers(), config);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run(stopped).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = enqueue(&app.pool, "ok", None).await.unwrap();
    let forever = enqueue(&app.pool, "forever", None).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done = storage::get(&app.pool, ok).await.unwrap().unwrap().status == "done";
        let running = storage::get(&app.pool, forever)
            .await
            .unwrap()
            .unwrap()
            .status
            == "running";
        if done && running {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle worker was not woken"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shutdown finishes")
        .unwrap();
    let row = storage::get(&app.pool, forever).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.attempts),
        ("queued", 0),
        "handed back, attempt not counted"
    );
}

#[tokio::test]
async fn judgments_queue_retraining_every_n_debounced() {
    let app = app().await;
    let lead = app
        .project("auto", json!({"train_every": 3, "overlap": 1}))
        .await;
    app.import_text_pairs("auto", &lead, 12).await;
    let r1 = app.annotator("auto", &lead, "r1").await;
    let judge = |n: usize| {
        let (app, r1) = (&app, r1.clone());
        async move {
            for _ in 0..n {
                let res = app.judge_next("auto", &r1, json!({"choice": "left"})).await;
                assert_eq!(res.status, axum::http::StatusCode::CREATED);
            }
        }
    };
    judge(2).await;
    assert_eq!(app.count("select count(*) from jobs").await, 0);
    judge(1).await;
    assert_eq!(
        app.count("select count(*) from jobs where kind = 'train' and status = 'queued'")
            .await,
        1
    );
    judge(3).await;
    assert_eq!(
        app.count("select count(*) from jobs").await,
        1,
        "one queued job at most"
    );
    storage::claim(&app.pool, "w", 60.0).await.unwrap().unwrap();
    judge(2).await;
    assert_eq!(
        app.count("select count(*) from jobs").await,
        1,
        "3 new judgments since the last job are needed"
    );
    judge(1).await;
    assert_eq!(
        app.count("select count(*) from jobs where status = 'queued'")
            .await,
        1
    );
    assert_eq!(app.count("select count(*) from jobs").await, 2);
}

#[tokio::test]
async fn a_failed_or_released_job_gives_way_to_a_newer_queued_one() {
    let app = app().await;
    let p = project_id(&app, "newer").await;
    let first = enqueue(&app.pool, "train", Some(p)).await.unwrap();
    storage::claim(&app.pool, "w", 60.0).await.unwrap().unwrap();
    let second = enqueue(&app.pool, "train", Some(p)).await.unwrap();
    storage::fail(&app.pool, first, "w", "boom").await.unwrap();
    let row = storage::get(&app.pool, first).await.unwrap().unwrap();
    assert_eq!(row.status, "failed", "the queued newer job does the work");
    let job = storage::claim(&app.pool, "w", 60.0).await.unwrap().unwrap();
    assert_eq!(job.id, second);
    let third = enqueue(&app.pool, "train", Some(p)).await.unwrap();
    assert!(storage::release(&app.pool, second, "w").await.unwrap());
    assert_eq!(
        storage::get(&app.pool, second)
            .await
            .unwrap()
            .unwrap()
            .status,
        "failed"
    );
    assert_eq!(
        storage::get(&app.pool, third)
            .await
            .unwrap()
            .unwrap()
            .status,
        "queued"
    );
}
