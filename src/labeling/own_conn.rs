//! A connection of a batching task's own (the judgment [`super::Writer`], the
//! lease [`super::Leaser`]), not one taken from the pool: sqlx tests a pooled
//! connection with a round trip every time it is given back, which would cost a
//! round trip per batch (for a lone call, per call).
//!
//! A connection that fails other than with the database's refusal of the
//! statement is dropped, and the next batch opens a new one; one that sat idle
//! for over 100 ms is tested before use (the database may have restarted
//! meanwhile), so the round trip is paid only when the task is not busy.

use sqlx::{Connection, PgConnection, PgPool};

use crate::error::{Error, Result};

/// How long a task waits for a new connection before answering its batch 503,
/// as long as the pool waits for one.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A connection unused for longer than this is tested before use.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// A task's connection: None until the first batch, and after one broke.
pub(super) struct OwnConn {
    pool: PgPool,
    /// The connection's `application_name`, so `pg_stat_activity` tells the
    /// tasks' connections apart.
    name: &'static str,
    conn: Option<PgConnection>,
    used: std::time::Instant,
}

impl OwnConn {
    pub(super) fn new(pool: PgPool, name: &'static str) -> OwnConn {
        OwnConn {
            pool,
            name,
            conn: None,
            used: std::time::Instant::now(),
        }
    }

    /// The connection, opened (to the pool's database) if there is none or if it
    /// was idle and fails a test. Connection errors are 503s, as the pool's are:
    /// see [`crate::error::is_unavailable`].
    pub(super) async fn get(&mut self) -> Result<&mut PgConnection> {
        if self.used.elapsed() > IDLE_CHECK
            && let Some(conn) = self.conn.as_mut()
            && !matches!(
                tokio::time::timeout(CONNECT_TIMEOUT, conn.ping()).await,
                Ok(Ok(()))
            )
        {
            self.conn = None;
        }
        if self.conn.is_none() {
            let options = (*self.pool.connect_options())
                .clone()
                .application_name(self.name);
            let mut conn =
                tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
                    .await
                    .map_err(|_| Error::Unavailable)??;
            crate::db::session(&mut conn, !crate::db::sets_jit(&options)).await?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("opened above"))
    }

    /// After a statement on the connection: idle from now (a statement that ran
    /// long is no reason to test it), and dropped when the statement failed other
    /// than by the database's refusal (the database gone or shutting down, a
    /// broken protocol state), so the next batch opens a new one.
    pub(super) fn used<T>(&mut self, result: &std::result::Result<T, sqlx::Error>) {
        self.used = std::time::Instant::now();
        if let Err(e) = result
            && (!matches!(e, sqlx::Error::Database(_)) || crate::error::is_unavailable(e))
        {
            self.conn = None;
        }
    }

    pub(super) async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}
