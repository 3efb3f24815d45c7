//! `kill -9` the server while raters label over real HTTP: every judgment that was answered
//! 2xx is in the database exactly once after a restart, and retrying the requests that were
//! in flight with their idempotency keys creates nothing twice.

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};

use crate::common::{TestApp, app};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A judgment request: its assignment and idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Sent {
    rater: usize,
    assignment: String,
    key: String,
}

fn start_server(app: &TestApp, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_backflip"))
        .env("DATABASE_URL", &app.url)
        .env("BACKFLIP_DATA_DIR", app.data_dir())
        .env("RUST_LOG", "warn")
        .args(["serve", "--workers", "0", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(client: &HttpClient, base: &str) {
    let started = Instant::now();
    loop {
        let req = Request::get(format!("{base}/readyz"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        if let Ok(res) = client.request(req).await
            && res.status() == StatusCode::OK
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, Value), hyper_util::client::legacy::Error> {
    let res = client.request(req).await?;
    let status = res.status();
    let body = match res.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        // The connection died mid-body: as good as no answer.
        Err(_) => return Ok((StatusCode::BAD_GATEWAY, Value::Null)),
    };
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn judgment(base: &str, token: &str, sent: &Sent) -> Request<Full<Bytes>> {
    Request::post(format!(
        "{base}/api/v1/assignments/{}/judgment",
        sent.assignment
    ))
    .header("authorization", format!("Bearer {token}"))
    .header("content-type", "application/json")
    .header("idempotency-key", &sent.key)
    .body(Full::new(Bytes::from(
        json!({"choice": "left", "duration_ms": 1500}).to_string(),
    )))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_judgment_is_lost_when_the_server_is_killed() {
    let app = app().await;
    let lead = app
        .project("crash", json!({"overlap": 1, "train_every": 0}))
        .await;
    app.import_text_pairs("crash", &lead, 3000).await;
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(app.annotator("crash", &lead, &format!("r{i}")).await);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut server = start_server(&app, port);
    wait_ready(&client, &base).await;

    // Raters loop next → judgment; each remembers what was acknowledged and what was sent
    // without an answer when the server died.
    let acked: Arc<Mutex<Vec<(Sent, String)>>> = Arc::default();
    let unanswered: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let raters: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(rater, token)| {
            let (client, base, token) = (client.clone(), base.clone(), token.clone());
            let (acked, unanswered) = (acked.clone(), unanswered.clone());
            tokio::spawn(async move {
                loop {
                    let next = Request::get(format!("{base}/api/v1/projects/crash/next"))
                        .header("authorization", format!("Bearer {token}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let Ok((StatusCode::OK, pair)) = call(&client, next).await else {
                        return;
                    };
                    let assignment = pair["assignment_id"].as_str().unwrap().to_owned();
                    let sent = Sent {
                        rater,
                        key: format!("crash-{assignment}"),
                        assignment,
                    };
                    match call(&client, judgment(&base, &token, &sent)).await {
                        Ok((s, body)) if s.is_success() => acked
                            .lock()
                            .unwrap()
                            .push((sent, body["id"].as_str().unwrap().to_owned())),
                        _ => {
                            unanswered.lock().unwrap().push(sent);
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    // Kill once the raters are well under way.
    let started = Instant::now();
    while acked.lock().unwrap().len() < 150 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().unwrap(); // SIGKILL: no shutdown, no flushing
    server.wait().unwrap();
    for r in raters {
        r.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let unanswered = unanswered.lock().unwrap().clone();
    assert!(
        acked.len() >= 150,
        "only {} judgments before the kill",
        acked.len()
    );

    // Every acknowledged judgment is stored, once.
    let ids: Vec<uuid::Uuid> = acked.iter().map(|(_, id)| id.parse().unwrap()).collect();
    let stored: i64 = sqlx::query_scalar("select count(*) from judgments where id = any($1)")
        .bind(&ids)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, acked.len());

    // After a restart, retrying with the same keys: acknowledged ones come back as they
    // were; unanswered ones are stored now (or were, before the kill), never twice.
    let mut server = start_server(&app, port);
    // A fresh client: the old one's pooled connections died with the server.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    wait_ready(&client, &base).await;
    for (sent, id) in acked.iter().step_by(10) {
        let (status, body) = call(&client, judgment(&base, &tokens[sent.rater], sent))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "a replay answers 200: {body}");
        assert_eq!(body["id"].as_str().unwrap(), id);
    }
    for sent in &unanswered {
        let (status, body) = call(&client, judgment(&base, &tokens[sent.rater], sent))
            .await
            .unwrap();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "{status}: {body}"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let (total, keys): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct (rater_id, idempotency_key)) from judgments j
         join projects p on p.id = j.project_id where p.slug = 'crash'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let expected: HashSet<&str> = acked
        .iter()
        .map(|(s, _)| s.key.as_str())
        .chain(unanswered.iter().map(|s| s.key.as_str()))
        .collect();
    assert_eq!(total, keys, "no key stored twice");
    assert_eq!(
        total as usize,
        expected.len(),
        "exactly what was sent, once"
    );
    eprintln!(
        "crash: {} acknowledged before kill -9, {} in flight, all stored once",
        acked.len(),
        unanswered.len()
    );
}

/// PostgreSQL stops under the server: requests get 503 (not 500, not a hang), `/readyz`
/// says so, and once the database is back the same process serves again without a restart,
/// with nothing acknowledged lost. Uses its own embedded cluster, so stopping it disturbs no
/// other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_503_while_postgres_is_down_and_recovers_by_itself() {
    use backflip::db::{self, embedded::EmbeddedPostgres};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("restart-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    // The postgres user (when we run as root) must be able to enter it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cluster = dir.path().join("pg");
    let start = |cluster: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&cluster).unwrap())
            .await
            .unwrap()
    };
    let mut pg = start(cluster.clone()).await;
    let url = pg.url("postgres");
    let pool = db::pool(&url, 4).await.unwrap();
    db::migrate(&pool).await.unwrap();
    let app = crate::common::app_on(pool, url);
    let lead = app
        .project("db", json!({"overlap": 1, "train_every": 0}))
        .await;
    app.import_text_pairs("db", &lead, 20).await;
    let rater = app.annotator("db", &lead, "r").await;
    let mut acked = Vec::new();
    for _ in 0..3 {
        let res = app
            .judge_next("db", &rater, json!({"choice": "left"}))
            .await;
        assert_eq!(res.status, StatusCode::CREATED);
        acked.push(res.json()["id"].as_str().unwrap().to_owned());
    }

    tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    for uri in ["/api/v1/projects/db/next", "/readyz"] {
        let res = app.get(uri, &rater).await;
        assert_eq!(
            res.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{uri}: {}",
            res.text()
        );
    }
    let res = app.get("/api/v1/projects/db/next", &rater).await;
    assert_eq!(res.code(), "unavailable", "a stable code clients retry on");

    let mut pg = start(cluster).await;
    // The pool reconnects on its own: the first requests after the restart may still meet a
    // dead connection (503) and must succeed within a few tries.
    let mut next = None;
    for _ in 0..20 {
        let res = app.get("/api/v1/projects/db/next", &rater).await;
        if res.status == StatusCode::OK {
            next = Some(res.json());
            break;
        }
        assert_eq!(
            res.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            res.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let next = next.expect("the server recovered once PostgreSQL was back");
    let id = next["assignment_id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/api/v1/assignments/{id}/judgment"),
            &rater,
            json!({"choice": "right"}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED);
    acked.push(res.json()["id"].as_str().unwrap().to_owned());
    let ids: Vec<uuid::Uuid> = acked.iter().map(|id| id.parse().unwrap()).collect();
    // On a connection of its own: the pool may still hold connections from before
    // the restart that no request has met yet (`next` and judgments run on the
    // leaser's and the writer's own connections).
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.url)
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("select count(*) from judgments where id = any($1)")
        .bind(&ids)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        stored, 4,
        "the three judgments before the stop and the one after"
    );
    app.pool.close().await;
    tokio::task::spawn_blocking(move || pg.stop().unwrap())
        .await
        .unwrap();
}

/// A lease is soft state: the statement that takes it commits without waiting
/// for the WAL flush (a judgment's flush later covers it), and only that
/// transaction does so: the pooled connection goes back to synchronous commits,
/// which every other write on it relies on.
#[tokio::test]
async fn a_lease_commits_without_a_flush_and_only_its_own_transaction_does() {
    let app = app().await;
    let lead = app.project("lax", json!({"overlap": 1})).await;
    app.import_text_pairs("lax", &lead, 2).await;
    let token = app.annotator("lax", &lead, "rater").await;
    let user = backflip::auth::user_by_token(&app.pool, &token)
        .await
        .unwrap()
        .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let access = backflip::projects::access(&mut *conn, &user, "lax")
        .await
        .unwrap();
    let show = "select current_setting('synchronous_commit')";
    // Inside a transaction of the test's, the setting the lease made is visible.
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let pair = backflip::labeling::next(&mut tx, &access).await.unwrap();
    assert!(pair.is_some(), "a pair was leased");
    let during: String = sqlx::query_scalar(show).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(
        during, "off",
        "the lease's transaction commits without a flush"
    );
    tx.commit().await.unwrap();
    let after: String = sqlx::query_scalar(show)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        after, "on",
        "the next transaction on the connection flushes again"
    );
    // On its own (the route's case), the lease is committed and visible.
    let pair = backflip::labeling::next(&mut conn, &access).await.unwrap();
    let id = pair.expect("the second pair").assignment_id;
    let after: String = sqlx::query_scalar(show)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(after, "on");
    let state: String = sqlx::query_scalar("select state from assignments where id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "leased");
}
