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
        .count("select count(*) from pair_counts where judged_count <> 3 or leased_count <> 0")
        .await;
    assert_eq!(counters, 0);
    assert_eq!(app.miscounted_pairs().await, 0);
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
    let id = app.lease("retry", &r1).await;
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

/// A judgment to send: the rater's token, the assignment, the Idempotency-Key.
struct Answer {
    token: String,
    assignment: String,
    key: String,
}

/// The rater's next assignment.
async fn lease(app: &TestApp, slug: &str, token: &str) -> Answer {
    let res = app
        .get(&format!("/api/v1/projects/{slug}/next"), token)
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let assignment = res.json()["assignment_id"].as_str().unwrap().to_owned();
    Answer {
        token: token.to_owned(),
        key: format!("key-{assignment}"),
        assignment,
    }
}

fn send(app: &Arc<TestApp>, a: &Answer) -> tokio::task::JoinHandle<crate::common::Res> {
    let app = app.clone();
    let req = Request::post(format!("/api/v1/assignments/{}/judgment", a.assignment))
        .header(header::AUTHORIZATION, format!("Bearer {}", a.token))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", &a.key)
        .body(json!({"choice": "left"}).to_string().into())
        .unwrap();
    tokio::spawn(async move { app.send(req).await })
}

/// A project `slug` with `pairs` text pairs, and `raters` annotators who each hold
/// a lease on it (pairs go out in import order).
async fn leased(
    app: &TestApp,
    slug: &str,
    settings: serde_json::Value,
    pairs: usize,
    raters_n: usize,
) -> (Vec<String>, Vec<Answer>) {
    let lead = app.project(slug, settings).await;
    app.import_text_pairs(slug, &lead, pairs).await;
    let tokens = raters(app, slug, &lead, raters_n).await;
    let mut answers = Vec::new();
    for t in &tokens {
        answers.push(lease(app, slug, t).await);
    }
    (tokens, answers)
}

/// Sessions of the test database waiting for a row lock.
async fn lock_waiters(app: &TestApp) -> usize {
    app.count(
        "select count(*) from pg_stat_activity
         where datname = current_database() and wait_event_type = 'Lock'",
    )
    .await as usize
}

/// Wait (ten seconds at most) until `done`.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if done().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Keep the writer's task busy (judging `held`, whose row the test locks),
/// queue `queued` in order meanwhile, then let go: the queued judgments are
/// written together. Every response, `held`'s first.
async fn behind_a_busy_writer(
    app: &Arc<TestApp>,
    held: &Answer,
    queued: &[Answer],
) -> Vec<crate::common::Res> {
    let mut lock = app.pool.begin().await.unwrap();
    let id: uuid::Uuid = held.assignment.parse().unwrap();
    sqlx::query("select 1 from assignments where id = $1 for update")
        .bind(id)
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut tasks = vec![send(app, held)];
    until("the writing task to wait for the lock", async || {
        lock_waiters(app).await == 1
    })
    .await;
    let writer = app.state.judgments.clone();
    for (i, a) in queued.iter().enumerate() {
        tasks.push(send(app, a));
        until("the judgment to queue", async || {
            writer.stats().queued == i + 1
        })
        .await;
    }
    lock.commit().await.unwrap();
    let mut responses = Vec::new();
    for t in tasks {
        responses.push(t.await.unwrap());
    }
    responses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn judgments_that_wait_are_written_together_and_a_pair_judged_twice_counts_twice() {
    let app = Arc::new(app().await);
    // Pairs go out in import order, each to three raters: four pairs, three leases each.
    let (_, mut answers) = leased(&app, "batch", json!({"overlap": 3}), 8, 12).await;
    let queued = answers.split_off(1);
    let before = app.state.judgments.stats();
    let responses = behind_a_busy_writer(&app, &answers[0], &queued).await;
    for r in &responses {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    let after = app.state.judgments.stats();
    assert_eq!(after.judgments - before.judgments, 12);
    assert_eq!(
        after.largest, 11,
        "the eleven that waited went in one statement"
    );
    assert_eq!(after.statements - before.statements, 2);
    // Each answer stored once, under its own key, for its own assignment.
    for (a, r) in answers.iter().chain(&queued).zip(&responses) {
        assert_eq!(r.json()["assignment_id"], a.assignment.as_str());
    }
    assert_eq!(
        app.count("select count(distinct idempotency_key) from judgments")
            .await,
        12
    );
    // Three judgments of each of four pairs, counted, with no lease left over.
    let counts: Vec<(i32, i32)> = sqlx::query_as(
        "select judged_count, leased_count from pair_counts where judged_count > 0 order by 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(counts, vec![(3, 0); 4]);
    assert_eq!(app.miscounted_pairs().await, 0);
    assert_eq!(
        app.count("select count(*) from assignments where state = 'judged'")
            .await,
        12
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bad_judgment_in_a_batch_is_refused_alone() {
    let app = Arc::new(app().await);
    let (tokens, mut answers) = leased(&app, "batchbad", json!({"overlap": 1}), 12, 6).await;
    // The last rater holds a second lease and sends it with the key of the first,
    // and another rater sends the same assignment twice.
    let mut reused = lease(&app, "batchbad", &tokens[5]).await;
    reused.key = answers[5].key.clone();
    let twice = Answer {
        token: answers[4].token.clone(),
        assignment: answers[4].assignment.clone(),
        key: answers[4].key.clone(),
    };
    let queued: Vec<Answer> = answers
        .split_off(1)
        .into_iter()
        .chain([reused, twice])
        .collect();
    let before = app.state.judgments.stats();
    let responses = behind_a_busy_writer(&app, &answers[0], &queued).await;
    let after = app.state.judgments.stats().since(before);
    // The one held; the batch of six (the repeat kept apart), which failed;
    // its six again one by one; the repeat.
    assert_eq!(after.largest, 6);
    assert_eq!(after.statements, 1 + 1 + 6 + 1);
    assert_eq!(after.judgments, 6);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses,
        [201, 201, 201, 201, 201, 201, 409, 200],
        "{statuses:?}"
    );
    assert_eq!(responses[6].code(), "idempotency_key_reused");
    assert_eq!(
        responses[7].json()["id"],
        responses[4].json()["id"],
        "a replay"
    );
    assert_eq!(app.count("select count(*) from judgments").await, 6);
    assert_eq!(
        app.count("select count(*) from pair_counts where judged_count = 1 and leased_count = 0")
            .await,
        6
    );
    assert_eq!(
        app.count("select count(*) from pair_counts where leased_count = 1")
            .await,
        1,
        "the refused judgment's lease is still held"
    );
    assert_eq!(app.miscounted_pairs().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_reaches_the_training_threshold_queues_training() {
    let app = Arc::new(app().await);
    let settings = json!({"overlap": 1, "train_every": 5});
    let (_, mut answers) = leased(&app, "batchtrain", settings, 8, 6).await;
    let queued = answers.split_off(1);
    let train_jobs = "select count(*) from jobs where kind = 'train'";
    assert_eq!(app.count(train_jobs).await, 0);
    // One alone, then five together: each of the five counting only itself
    // would see 1 + 1 of the 5; the batch sees 1 + 5.
    let responses = behind_a_busy_writer(&app, &answers[0], &queued).await;
    assert!(responses.iter().all(|r| r.status == StatusCode::CREATED));
    assert_eq!(app.state.judgments.stats().largest, 5);
    assert_eq!(app.count(train_jobs).await, 1);
}

/// A project `slug` (overlap 1) with `pairs` text pairs and `raters_n`
/// annotators, the first of whom held a lease that has just expired.
async fn expired_lease(
    app: &TestApp,
    slug: &str,
    pairs: usize,
    raters_n: usize,
) -> (Vec<String>, Answer) {
    let lead = app.project(slug, json!({"overlap": 1})).await;
    app.import_text_pairs(slug, &lead, pairs).await;
    let tokens = raters(app, slug, &lead, raters_n).await;
    let held = lease(app, slug, &tokens[0]).await;
    sqlx::query("update assignments set expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    (tokens, held)
}

/// An assignment's state.
async fn lease_state(app: &TestApp, id: uuid::Uuid) -> String {
    sqlx::query_scalar("select state from assignments where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A pair's judged and leased counts, once its taken slots are checked.
async fn pair_counts(app: &TestApp, pair: uuid::Uuid) -> (i32, i32) {
    assert_eq!(app.miscounted_pairs().await, 0);
    sqlx::query_as("select judged_count, leased_count from pair_counts where id = $1")
        .bind(pair)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// `next` reaps expired leases, but never waits for a pair another statement
/// has locked (a batch of judgments counting it): it leaves that lease for a
/// later `next`. Waiting there, while holding the pair it had picked, is how
/// `next` and a batch could deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn next_leaves_a_locked_pairs_expired_lease_for_later() {
    let app = Arc::new(app().await);
    let (tokens, held) = expired_lease(&app, "reap", 2, 3).await;
    let first: uuid::Uuid = held.assignment.parse().unwrap();
    let pair: uuid::Uuid =
        sqlx::query_scalar("select comparison_id from assignments where id = $1")
            .bind(first)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("select 1 from comparisons where id = $1 for no key update")
        .bind(pair)
        .execute(&mut *lock)
        .await
        .unwrap();
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        app.get("/api/v1/projects/reap/next", &tokens[1]),
    )
    .await
    .expect("next waited for the locked pair");
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let state = lease_state(&app, first).await;
    assert_eq!(state, "leased", "the locked pair's lease is left for later");
    assert_eq!(
        pair_counts(&app, pair).await.1,
        1,
        "its slot is still counted"
    );
    lock.commit().await.unwrap();
    // Once the pair is free, the next `next` reaps the lease and hands the pair out.
    let res = app.get("/api/v1/projects/reap/next", &tokens[2]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    let state = lease_state(&app, first).await;
    assert_eq!(state, "expired");
    assert_eq!(
        pair_counts(&app, pair).await,
        (0, 1),
        "one live lease: the new one"
    );
}

/// When nothing else is free, `next` waits for a locked pair's expired lease to
/// be reaped rather than answer "nothing left" while a slot is about to free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn next_waits_for_a_locked_pairs_expired_lease_rather_than_answer_nothing_left() {
    let app = Arc::new(app().await);
    let (tokens, held) = expired_lease(&app, "reap1", 1, 2).await;
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("select 1 from comparisons for no key update")
        .execute(&mut *lock)
        .await
        .unwrap();
    let next = {
        let (app, token) = (app.clone(), tokens[1].clone());
        tokio::spawn(async move { app.get("/api/v1/projects/reap1/next", &token).await })
    };
    until("next to wait for the pair", async || {
        lock_waiters(&app).await == 1
    })
    .await;
    lock.commit().await.unwrap();
    let res = next.await.unwrap();
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    assert_ne!(res.json()["assignment_id"], held.assignment.as_str());
    let (judged, leased): (i32, i32) =
        sqlx::query_as("select judged_count, leased_count from pair_counts")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (judged, leased),
        (0, 1),
        "the expired lease gave its slot to the new one"
    );
}

/// The database ends the writer's connections (as on a restart or an
/// administrator's `pg_terminate_backend`): the next judgments are answered 503
/// at worst, never 500, and the writer reconnects (by its idle test, or after
/// the failure) with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_connection_ended_by_the_database_gives_503_and_is_reopened() {
    let app = Arc::new(app().await);
    let (_, answers) = leased(&app, "term", json!({"overlap": 1}), 4, 4).await;
    // One judgment opens the writing task's connection.
    let res = send(&app, &answers[0]).await.unwrap();
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    assert_eq!(
        end_connections(&app, "backflip-writer").await,
        1,
        "the writer's connection is named"
    );
    // The task finds its connection gone, by a 503 (or, idle long enough, by
    // the test before use, reopening it first): so one 503 at most, and a
    // retry is stored once the task has a new connection.
    let mut unavailable = 0;
    for a in &answers[1..] {
        let res =
            past_ended_connections(&mut unavailable, async || send(&app, a).await.unwrap()).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    }
    assert_eq!(app.count("select count(*) from judgments").await, 4);
}

/// The same for the leaser's connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leaser_connection_ended_by_the_database_gives_503_and_is_reopened() {
    let app = Arc::new(app().await);
    // The first call opens the leasing task's connection.
    let (tokens, _) = leased(&app, "lterm", json!({"overlap": 1}), 4, 2).await;
    assert_eq!(
        end_connections(&app, "backflip-leaser").await,
        1,
        "the leaser's connection is named"
    );
    let mut unavailable = 0;
    for token in &tokens {
        let res = past_ended_connections(&mut unavailable, async || {
            app.get("/api/v1/projects/lterm/next", token).await
        })
        .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    }
    assert_eq!(
        app.count("select count(*) from assignments where state = 'leased'")
            .await,
        4
    );
}

/// End the test database's connections named `name`; how many there were.
async fn end_connections(app: &TestApp, name: &str) -> i64 {
    sqlx::query_scalar(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and application_name = $1) t",
    )
    .bind(name)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// `call`'s first answer other than 503, counting the 503s in `unavailable`:
/// one at most, from the task whose connection was ended.
async fn past_ended_connections(
    unavailable: &mut usize,
    mut call: impl AsyncFnMut() -> crate::common::Res,
) -> crate::common::Res {
    loop {
        let res = call().await;
        if res.status != StatusCode::SERVICE_UNAVAILABLE {
            return res;
        }
        assert_eq!(res.code(), "unavailable");
        *unavailable += 1;
        assert!(
            *unavailable <= 1,
            "the task answered 503 twice: not reopened"
        );
    }
}

/// A connection the server ends says FATAL 57P01 ("terminating connection due
/// to administrator command"), as on a restart: that is a 503 to retry, not a 500.
#[tokio::test]
async fn a_connection_ended_by_the_server_is_unavailable_not_an_internal_error() {
    let app = app().await;
    let mut conn = app.pool.acquire().await.unwrap().detach();
    let e = sqlx::query("select pg_terminate_backend(pg_backend_pid())")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(backflip::error::is_unavailable(&e), "{e}");
    assert!(matches!(
        backflip::error::Error::from(e),
        backflip::error::Error::Unavailable
    ));
}

/// `next` calls that wait while the leasing task is busy are answered by one
/// statement, which gives each rater a pair they have not been given, keeps
/// every pair within its overlap, and counts the leases it makes; callers it
/// cannot serve are answered as on their own. It commits without a flush, as a
/// lease on its own does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn next_calls_that_wait_are_leased_together_within_each_raters_history() {
    let app = Arc::new(app().await);
    let lead = app.project("lb", json!({"overlap": 2})).await;
    app.import_text_pairs("lb", &lead, 6).await;
    let tokens = raters(&app, "lb", &lead, 9).await;
    // The first rater has judged the first pair, which keeps a slot for someone else.
    let judged = app
        .judge_next("lb", &tokens[0], json!({"choice": "left"}))
        .await;
    assert_eq!(judged.status, StatusCode::CREATED, "{}", judged.text());
    let first_pair = judged.json()["comparison_id"].as_str().unwrap().to_owned();
    let other_lead = app.project("lb-other", json!({})).await;
    app.import_text_pairs("lb-other", &other_lead, 2).await;
    let other_rater = app.annotator("lb-other", &other_lead, "other-rater").await;
    // The call that holds the leasing task is of a third project: in one the
    // batch shares, the blocker still running could hold the pair the batch's
    // pool would take, and that caller would go the usual way.
    let block_lead = app.project("lb-block", json!({})).await;
    app.import_text_pairs("lb-block", &block_lead, 2).await;
    let browser = crate::pages::Browser::login(&app, "rater8", "password123").await;

    // Each statement that writes assignments or judgments notes the commit it
    // will make: a lease's is lax (a judgment's flush covers it), a judgment's not.
    sqlx::raw_sql(
        "create table commit_modes (tbl text, n bigint, mode text);
         create function note_commit_mode() returns trigger language plpgsql as $$
         begin
             insert into commit_modes select tg_table_name, count(*),
                 current_setting('synchronous_commit') from new_rows;
             return null;
         end $$;
         create trigger note_commit_mode after insert on assignments
             referencing new table as new_rows for each statement
             execute function note_commit_mode();
         create trigger note_commit_mode after insert on judgments
             referencing new table as new_rows for each statement
             execute function note_commit_mode();",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    // The leasing task waits behind a lock on the projects table with a call
    // of the third project's; meanwhile the calls to answer queue, in order.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("lock table projects in access exclusive mode")
        .execute(&mut *lock)
        .await
        .unwrap();
    let before = app.state.leases.stats();
    let get = |token: String, app: Arc<TestApp>| {
        tokio::spawn(async move { app.get("/api/v1/projects/lb-block/next", &token).await })
    };
    let blocker = get(block_lead.clone(), app.clone());
    until("the leasing task to wait for the lock", async || {
        lock_waiters(&app).await == 1
    })
    .await;
    // Eight raters by token, the ninth by session, a stranger, a lead of
    // another project (not a member here), and a rater of that other project.
    let mut callers: Vec<(Option<String>, &str)> = tokens[..8]
        .iter()
        .map(|t| (Some(t.clone()), "lb"))
        .collect();
    callers.extend([
        (None, "lb"),
        (Some("bf_nobody".into()), "lb"),
        (Some(other_lead.clone()), "lb"),
        (Some(other_rater.clone()), "lb-other"),
    ]);
    let mut calls = Vec::new();
    let leaser = app.state.leases.clone();
    for (i, (caller, slug)) in callers.into_iter().enumerate() {
        let (app, browser) = (app.clone(), browser.clone());
        let uri = format!("/api/v1/projects/{slug}/next");
        calls.push(tokio::spawn(async move {
            match caller {
                Some(token) => app.get(&uri, &token).await,
                None => browser.get(&app, &uri).await,
            }
        }));
        until("the call to queue", async || leaser.stats().queued == i + 1).await;
    }
    lock.commit().await.unwrap();
    assert_eq!(blocker.await.unwrap().status, StatusCode::OK);
    let mut responses = Vec::new();
    for c in calls {
        responses.push(c.await.unwrap());
    }
    let after = app.state.leases.stats().since(before);
    assert_eq!(
        (after.statements, after.calls, after.largest, after.leased),
        (2, 13, 12, 11),
        "a call on its own, then the twelve that waited in one statement, which \
         leased a pair to each of the ten who may have one"
    );
    for r in &responses[..9] {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(responses[9].status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        responses[10].status,
        StatusCode::NOT_FOUND,
        "{}",
        responses[10].text()
    );
    // The other project's rater has a pair too: the batch's only lease there.
    assert_eq!(
        responses[11].status,
        StatusCode::OK,
        "{}",
        responses[11].text()
    );
    assert_eq!(
        app.count(
            "select count(*) from assignments a join projects p on p.id = a.project_id
             where p.slug = 'lb-other' and a.state = 'leased'"
        )
        .await,
        1
    );

    // Nine leases: the first rater's is not the pair they judged, which went to
    // someone else; no pair beyond its overlap, and the counts match the rows.
    let first: String = sqlx::query_scalar(
        "select a.comparison_id::text from assignments a join projects p on p.id = a.project_id
         where p.slug = 'lb' and a.state = 'leased' and a.rater_id = (select user_id from api_tokens
               where token_hash = $1)",
    )
    .bind(backflip::auth::digest(&tokens[0]))
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_ne!(first, first_pair);
    let mismatched = app
        .count(
            "select count(*) from comparisons c join projects p on p.id = c.project_id
             where p.slug = 'lb' and (c.taken_count > 2
                or c.taken_count <> (select count(*) from assignments a
                                     where a.comparison_id = c.id
                                       and a.state in ('leased', 'judged')))",
        )
        .await;
    assert_eq!(mismatched, 0);
    assert_eq!(app.miscounted_pairs().await, 0);
    assert_eq!(
        app.count(
            "select count(*) from assignments a join projects p on p.id = a.project_id
             where p.slug = 'lb' and a.state = 'leased'"
        )
        .await,
        9
    );
    let taken: i64 = sqlx::query_scalar(
        "select count(*) from assignments where comparison_id::text = $1 and state <> 'expired'",
    )
    .bind(&first_pair)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        taken, 2,
        "the judged pair's free slot went to another rater"
    );

    // The batch's ten leases committed without waiting for a flush, as each
    // lease on its own does; a judgment (stored by the writer) waits for one.
    // (A rater may hold more than one lease: this `next` leases a new pair.)
    let judged = app
        .judge_next("lb", &tokens[1], json!({"choice": "left"}))
        .await;
    assert_eq!(judged.status, StatusCode::CREATED, "{}", judged.text());
    let modes: Vec<(String, i64, String)> =
        sqlx::query_as("select tbl, n, mode from commit_modes order by tbl, n")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let modes: Vec<(&str, i64, &str)> = modes
        .iter()
        .map(|(t, n, m)| (t.as_str(), *n, m.as_str()))
        .collect();
    assert_eq!(
        modes,
        [
            ("assignments", 1, "off"),
            ("assignments", 1, "off"),
            ("assignments", 10, "off"),
            ("judgments", 1, "on"),
        ],
        "the blocker's lease, the batch's, then a lease and its judgment"
    );
}
