//! Connecting to PostgreSQL: the operator's (`DATABASE_URL`) or our own embedded cluster.

pub mod embedded;

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    Executor, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::GlobalOpts;
use embedded::EmbeddedPostgres;

/// The database a process works with, and the embedded cluster behind it if we run one.
pub struct Database {
    pub pool: PgPool,
    embedded: Option<EmbeddedPostgres>,
    /// Stop the embedded cluster on close even if it was already running
    /// (`serve` after a crash of ours); other commands leave a cluster they
    /// found running alone, since a server may be using it.
    owner: bool,
}

/// The database the embedded cluster keeps Backflip's data in.
pub const EMBEDDED_DATABASE: &str = "backflip";

impl Database {
    /// Connect (starting the embedded cluster when no URL is configured) and migrate,
    /// as a short-lived command.
    pub async fn open(opts: &GlobalOpts) -> anyhow::Result<Self> {
        Self::open_with(opts, false).await
    }

    /// As [`open`](Self::open), for the server, which owns the embedded cluster:
    /// it stops it on shutdown even when it found it running.
    pub async fn open_server(opts: &GlobalOpts) -> anyhow::Result<Self> {
        Self::open_with(opts, true).await
    }

    async fn open_with(opts: &GlobalOpts, owner: bool) -> anyhow::Result<Self> {
        let (url, embedded) = match &opts.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir = opts.data_dir.clone();
                let pg =
                    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir)).await??;
                ensure_database(&pg.url("postgres"), EMBEDDED_DATABASE).await?;
                (pg.url(EMBEDDED_DATABASE), Some(pg))
            }
        };
        let pool = pool(&url, opts.db_pool).await?;
        migrate(&pool).await?;
        Ok(Database {
            pool,
            embedded,
            owner,
        })
    }

    /// Close the pool, then stop the embedded cluster if we run one.
    pub async fn close(mut self) {
        self.pool.close().await;
        if let Some(mut pg) = self.embedded.take() {
            if pg.adopted() && !self.owner {
                // Someone else's server: leave it running.
                pg.keep_running();
                return;
            }
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = pg.stop() {
                    tracing::warn!(error = %e, "stopping the embedded PostgreSQL");
                }
            })
            .await;
        }
    }
}

/// A connection pool. Acquiring waits at most a few seconds, so requests get a
/// quick 503 while the database is down instead of hanging. A connection is not
/// pinged when taken (sqlx's default): that was a round trip per query. One that
/// died with the server fails its next query with a 503 and is dropped when given
/// back, where sqlx still checks it.
pub async fn pool(url: &str, max: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = url
        .parse()
        .with_context(|| format!("reading the PostgreSQL URL {}", redact(url)))?;
    let jit_off = !sets_jit(&options);
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .after_connect(move |conn, _| Box::pin(async move { session(conn, jit_off).await }))
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))
}

/// Set up a new connection of ours: PostgreSQL's JIT compilation off, unless
/// the URL sets `jit` itself (`?options=-c%20jit%3Don`, see [`sets_jit`]).
/// Every pool connection runs this once, and so does a batching task's own
/// connection (`labeling::own_conn`).
///
/// JIT compiles a statement whose estimated cost passes `jit_above_cost`, on
/// every execution. The leasing statement's generic plan (a prepared
/// statement's, once PostgreSQL settles on one) estimates a tenth of a large
/// queue for the pool it takes, and so crossed that line with a million open
/// pairs: each lease then spent 100–170 ms compiling 251 functions, for a
/// statement that runs in a few milliseconds (docs/benchmarks.md, "JIT
/// compilation and a stale plan"). No statement here gains from JIT what that
/// costs. A `SET` rather than the startup packet's `options`, which some
/// connection poolers refuse.
pub async fn session(conn: &mut PgConnection, jit_off: bool) -> Result<(), sqlx::Error> {
    if jit_off {
        conn.execute("set jit = off").await?;
    }
    Ok(())
}

/// Whether the URL's `options` set `jit` (`-c jit=…`); then [`session`] leaves it.
pub fn sets_jit(options: &PgConnectOptions) -> bool {
    options.get_options().is_some_and(|set| {
        set.split_whitespace().any(|word| {
            word.trim_start_matches("-c")
                .trim_start_matches('-')
                .starts_with("jit=")
        })
    })
}

/// Apply the migrations in `migrations/` (embedded in the binary).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(pool)
        .await
        .context("migrating the database")
}

/// Create a database if it does not exist (connecting to `admin_url`).
pub async fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let admin = pool(admin_url, 1).await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&admin)
            .await?;
    if !exists {
        // Identifiers cannot be bound; `name` is one of our constants or a test name we made.
        anyhow::ensure!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&admin)
            .await?;
    }
    admin.close().await;
    Ok(())
}

/// A URL fit for logs: the password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_url_may_set_jit() {
        let sets = |url: &str| super::sets_jit(&url.parse().unwrap());
        assert!(!sets("postgres://u@h/db"));
        assert!(sets(
            "postgres://u@h/db?options=-c%20jit%3Don%20-c%20work_mem%3D8MB"
        ));
        assert!(sets(
            "postgres://u@h/db?options=-c%20work_mem%3D8MB%20-cjit%3Doff"
        ));
        assert!(sets("postgres://u@h/db?options=--jit%3Don"));
        assert!(!sets("postgres://u@h/db?options=-c%20jit_above_cost%3D10"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
