//! Which error type where: domain functions and handlers return [`Error`]
//! (typed, with a stable `code` the API shows); start-up, the CLI and jobs use
//! `anyhow`. An `Error` becomes `{"code": "...", "message": "..."}` in the API
//! (see `http::error`); a 500 never shows its cause to the client, only to the log.

use serde::Serialize;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One bad line of an import file.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, PartialEq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{} bad line(s) in the import; nothing was imported", .0.len())]
    Import(Vec<LineError>),
    #[error("{0}")]
    TooLarge(String),
    #[error("the database is unavailable; try again shortly")]
    Unavailable,
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            code: "invalid",
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden(message.into())
    }

    /// The stable machine-readable code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthorized => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::BadRequest { code, .. }
            | Error::Conflict { code, .. }
            | Error::Gone { code, .. }
            | Error::Invalid { code, .. } => code,
            Error::Import(_) => "invalid_import",
            Error::TooLarge(_) => "too_large",
            Error::Unavailable => "unavailable",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // Connection trouble is temporary: say so (503), the client may retry.
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %e, "database unavailable");
                Error::Unavailable
            }
            e if is_unavailable(&e) => {
                tracing::warn!(error = %e, "database unavailable");
                Error::Unavailable
            }
            e => Error::Internal(e.into()),
        }
    }
}

/// Whether PostgreSQL refused with an error that says it is out of reach for
/// now rather than that the statement is wrong: shutting down or starting up
/// (class 57P: a FATAL that ends the connection), a connection exception
/// (class 08), or too many connections (53300).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("57P") || c.starts_with("08") || c == "53300")
}

/// Turn a unique-key violation on a named constraint into a clear 409 at the call site.
pub trait ResultExt<T> {
    fn on_unique(
        self,
        constraint: &str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn on_unique(
        self,
        constraint: &str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Result<T> {
        self.map_err(|e| match &e {
            sqlx::Error::Database(db) if db.constraint() == Some(constraint) => Error::Conflict {
                code,
                message: message.into(),
            },
            _ => e.into(),
        })
    }
}
