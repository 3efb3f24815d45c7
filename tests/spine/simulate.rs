//! `backflip simulate` at small scale: simulated raters label a project over real
//! HTTP until every pair has its overlap, idempotently, and a model trains on it.

use backflip::{
    clips::ClipStore,
    simulate::{SimOpts, TaskKind, project},
};

use crate::common::fresh_database;

fn opts(task: TaskKind, pairs: usize, raters: usize, overlap: i32) -> SimOpts {
    SimOpts {
        task,
        pairs,
        raters,
        overlap,
        train: false,
        steps: Some(20),
        temperature: 1.0,
        seed: 1,
    }
}

async fn scalar(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_raters_label_every_pair_overlap_times() {
    let (pool, _) = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = ClipStore::local(dir.path()).unwrap();
    // Four raters: careful, noisy, always-left, left-biased.
    let mut o = opts(TaskKind::Text, 30, 4, 2);
    o.train = true;
    let report = project::run(&pool, &store, &o).await.unwrap();
    assert_eq!((report.slug.as_str(), report.imported), ("sim-text", 30));
    assert_eq!(report.raters.iter().map(|r| r.this_run).sum::<usize>(), 60);
    assert_eq!(
        scalar(
            &pool,
            "select count(*) from pair_counts where judged_count <> 2"
        )
        .await,
        0,
        "every pair judged exactly twice"
    );
    let always_left = report
        .raters
        .iter()
        .find(|r| r.profile == "always-left")
        .unwrap();
    assert_eq!(always_left.name, "sim-text-always-left-3");
    assert!(always_left.judgments > 0);
    assert_eq!(always_left.left, always_left.judgments);
    let shown_left: i64 = sqlx::query_scalar(
        "select count(*) from judgments j join users u on u.id = j.rater_id
         where u.name = 'sim-text-always-left-3' and j.displayed_choice <> 'left'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        shown_left, 0,
        "the always-left rater's displayed choices are all left"
    );
    // Judgments carry their Idempotency-Key, so a retried submit would not duplicate.
    assert_eq!(
        scalar(
            &pool,
            "select count(*) from judgments where idempotency_key is null"
        )
        .await,
        0
    );
    let training = report.training.expect("trained");
    assert_eq!(training["version"], 1);
    let accuracy = training["metrics"]["held_out"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{training}");

    // Again: nothing new to import or label, and no duplicate users or projects.
    let again = project::run(&pool, &store, &opts(TaskKind::Text, 30, 4, 2))
        .await
        .unwrap();
    assert_eq!(again.imported, 0);
    assert!(again.raters.iter().all(|r| r.this_run == 0));
    assert_eq!(scalar(&pool, "select count(*) from judgments").await, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_gif_clips_are_ingested_and_labelled() {
    let (pool, _) = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let store = ClipStore::local(dir.path()).unwrap();
    let report = project::run(&pool, &store, &opts(TaskKind::Gif, 6, 2, 1))
        .await
        .unwrap();
    assert_eq!((report.slug.as_str(), report.imported), ("sim-gif", 6));
    assert_eq!(scalar(&pool, "select count(*) from judgments").await, 6);
    assert_eq!(
        scalar(
            &pool,
            "select count(*) from clip_blobs where frame_count = 16"
        )
        .await,
        12
    );
    assert_eq!(
        scalar(
            &pool,
            "select count(*) from pair_counts where judged_count <> 1"
        )
        .await,
        0
    );
}
