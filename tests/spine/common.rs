//! Test harness: a fresh, migrated PostgreSQL database per test, on the server
//! named by `DATABASE_URL`, or else on an embedded cluster under
//! `target/test-pg` that is started once and left running for the next run.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use backflip::{
    auth::Role,
    clips::{ClipLimits, ClipStore},
    db,
    http::{AppState, Settings},
    users,
};
use http_body_util::BodyExt;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use tower::ServiceExt;

/// An admin connection URL for the server tests use, and the embedded cluster if any.
pub async fn server_url() -> &'static str {
    static URL: OnceCell<String> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return url;
        }
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-pg");
        let pg = tokio::task::spawn_blocking(move || {
            let mut pg = backflip::db::embedded::EmbeddedPostgres::start(&dir)
                .expect("no DATABASE_URL, and the embedded PostgreSQL did not start");
            pg.keep_running();
            pg
        })
        .await
        .unwrap();
        pg.url("postgres")
    })
    .await
}

/// A fresh migrated database; returns its pool and URL.
pub async fn fresh_database() -> (PgPool, String) {
    let admin_url = server_url().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let admin = db::pool(admin_url, 2).await.unwrap();
    static CLEANED: OnceLock<()> = OnceLock::new();
    if CLEANED.set(()).is_ok() {
        // Databases of earlier runs older than two hours (a crashed run leaves them).
        let old: Vec<String> =
            sqlx::query_scalar("select datname from pg_database where datname like 'bf_test_%'")
                .fetch_all(&admin)
                .await
                .unwrap();
        for name in old {
            let ts: u64 = name
                .split('_')
                .nth(2)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if ts + 7200 < now {
                let drop = format!("drop database if exists {name} with (force)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
            }
        }
    }
    let name = format!("bf_test_{now}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let url = backflip::bench::with_database(admin_url, &name);
    let pool = db::pool(&url, 20).await.unwrap();
    db::migrate(&pool).await.unwrap();
    (pool, url)
}

pub struct TestApp {
    pub pool: PgPool,
    /// The test database's URL, for child processes.
    pub url: String,
    pub state: AppState,
    router: Router,
    /// Holds the clip store's folder until the test ends.
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// The folder the app's object store lives in (`clips/` under it), usable as a child
    /// process's `BACKFLIP_DATA_DIR`.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

pub async fn app() -> TestApp {
    let (pool, url) = fresh_database().await;
    app_on(pool, url)
}

/// The application on an already migrated database (e.g. a cluster a test restarts).
pub fn app_on(pool: PgPool, url: String) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState {
        pool: pool.clone(),
        clips: ClipStore::local(&dir.path().join("clips")).unwrap(),
        inner: Arc::new(Settings {
            clip_limits: ClipLimits::default(),
            public_url: None,
            max_import_bytes: 8 << 20,
        }),
        models: Default::default(),
        judgments: backflip::labeling::Writer::spawn(pool.clone()),
        leases: backflip::labeling::Leaser::spawn(pool.clone()),
    };
    TestApp {
        router: backflip::http::router(state.clone()),
        pool,
        url,
        state,
        _dir: dir,
    }
}

/// A response, its body parsed as JSON when it is JSON.
pub struct Res {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
    /// Trailer fields sent after a streamed body, if any.
    pub trailers: Option<axum::http::HeaderMap>,
}

impl Res {
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The error code of an API error body.
    #[track_caller]
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_owned()
    }
}

impl TestApp {
    /// A new user with this role; returns their API token.
    pub async fn user(&self, name: &str, role: Role) -> String {
        users::create(&self.pool, name, role, Some("password123"))
            .await
            .unwrap()
            .token
    }

    pub async fn send(&self, req: Request<Body>) -> Res {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let collected = res.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes().to_vec();
        Res {
            status,
            headers,
            body,
            trailers,
        }
    }

    /// An API call with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn get(&self, uri: &str, token: &str) -> Res {
        self.call(Method::GET, uri, Some(token), None).await
    }

    pub async fn post(&self, uri: &str, token: &str, body: Value) -> Res {
        self.call(Method::POST, uri, Some(token), Some(body)).await
    }

    /// POST JSON with an `Idempotency-Key`.
    pub async fn post_keyed(&self, uri: &str, token: &str, key: &str, body: Value) -> Res {
        let req = Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(body.to_string().into())
            .unwrap();
        self.send(req).await
    }

    /// POST a raw body (e.g. JSONL).
    pub async fn post_raw(&self, uri: &str, token: &str, body: impl Into<Body>) -> Res {
        let req = Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(body.into())
            .unwrap();
        self.send(req).await
    }

    /// A text project created by a new lead; returns the lead's token.
    pub async fn project(&self, slug: &str, settings: Value) -> String {
        let lead = self.user(&format!("lead-{slug}"), Role::Lead).await;
        let mut body = serde_json::json!({"slug": slug, "name": format!("Project {slug}")});
        for (k, v) in settings.as_object().unwrap() {
            body[k] = v.clone();
        }
        let res = self.post("/api/v1/projects", &lead, body).await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        lead
    }

    /// An annotator who is a member of the project; returns their token.
    pub async fn annotator(&self, slug: &str, lead: &str, name: &str) -> String {
        let token = self.user(name, Role::Annotator).await;
        self.add_member(slug, lead, name, "annotator").await;
        token
    }

    /// A project's lead adds an existing user to it with a project role.
    pub async fn add_member(&self, slug: &str, lead: &str, user: &str, role: &str) {
        let res = self
            .post(
                &format!("/api/v1/projects/{slug}/members"),
                lead,
                serde_json::json!({"user": user, "role": role}),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
    }

    /// Import `n` text pairs with ids `{prefix}{i}`.
    pub async fn import_text_pairs(&self, slug: &str, lead: &str, n: usize) {
        let res = self
            .post_raw(
                &format!("/api/v1/projects/{slug}/import"),
                lead,
                text_pairs("p", n),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        assert_eq!(res.json()["imported"], n);
    }

    /// Ask for the next pair of a project; its assignment's id.
    pub async fn lease(&self, slug: &str, token: &str) -> String {
        let res = self
            .get(&format!("/api/v1/projects/{slug}/next"), token)
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        res.json()["assignment_id"].as_str().unwrap().to_owned()
    }

    /// A project's lead pauses (or resumes) a rater there.
    pub async fn pause(&self, slug: &str, lead: &str, rater: &str, paused: bool) {
        let uri = format!("/api/v1/projects/{slug}/raters/{rater}/pause");
        let res = self
            .post(&uri, lead, serde_json::json!({ "paused": paused }))
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    }

    /// Let an assignment's lease run out.
    pub async fn expire(&self, assignment: &str) {
        sqlx::query(
            "update assignments set expires_at = now() - interval '1 second' where id = $1::uuid",
        )
        .bind(assignment)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// Ask for the next pair of a project and answer it; the judgment's response.
    pub async fn judge_next(&self, slug: &str, token: &str, body: serde_json::Value) -> Res {
        let id = self.lease(slug, token).await;
        self.post(&format!("/api/v1/assignments/{id}/judgment"), token, body)
            .await
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Pairs whose count of taken slots disagrees with what takes them: their
    /// regular leases still held plus their regular judgments by raters not
    /// excluded (migration `taken_slots`). Zero whenever the counts are right.
    pub async fn miscounted_pairs(&self) -> i64 {
        self.count(
            "select count(*) from comparisons c
             where c.taken_count <>
                   (select count(*) from assignments a
                    where a.comparison_id = c.id and a.kind = 'regular' and a.state = 'leased')
                 + (select count(*) from judgments j
                    left join project_members m
                        on m.project_id = j.project_id and m.user_id = j.rater_id
                    where j.comparison_id = c.id and j.kind = 'regular'
                      and m.excluded_at is null)",
        )
        .await
    }
}

/// JSONL of `n` text pairs.
pub fn text_pairs(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("{prefix}{i}"),
                "prompt": format!("question {i}"),
                "a": {"text": format!("answer A{i}"), "policy": "pa"},
                "b": {"text": format!("answer B{i}"), "policy": "pb"},
            })
            .to_string()
                + "\n"
        })
        .collect()
}
