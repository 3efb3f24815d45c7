//! Extractors: who is calling (bearer token or session cookie), and JSON/form/path
//! extractors whose rejections use our error shape.

use axum::{
    extract::{FromRequest, FromRequestParts},
    http::{Method, header, request::Parts},
};

pub use crate::auth::constant_eq;

use super::AppState;
use crate::{
    auth::{self, Credential, Session, User},
    error::Error,
};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "backflip_session";
/// The header browser scripts send the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct Json<T>(pub T);

#[derive(FromRequest)]
#[from_request(via(axum::Form), rejection(Error))]
pub struct Form<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

/// A cookie's value from the request.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The caller of an API route: a bearer token, or a browser session (whose
/// state-changing requests must then carry the `X-CSRF-Token` header).
pub struct ApiUser(pub User);

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let mut conn = state.pool.acquire().await?;
        caller(parts, &mut conn).await.map(ApiUser)
    }
}

/// What an API route's caller presents, not yet looked up (401 when there is
/// nothing): see [`crate::projects::access_by_credential`], which looks it up
/// with the project in one statement.
impl FromRequestParts<AppState> for Credential {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Error> {
        credential(parts)
    }
}

/// The caller of a project's API route (`{slug}` in the path) and their access to
/// it, looked up in one statement, with the pool connection they were looked
/// up on, for the rest of the request: every trip to the pool costs a round
/// trip to PostgreSQL when the connection is given back (sqlx checks it then),
/// so the hot path (`next`) keeps one. Only for routes without a body, so no
/// connection waits on a slow client's upload.
pub struct ProjectConn {
    pub access: crate::projects::Access,
    pub conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
}

impl FromRequestParts<AppState> for ProjectConn {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let credential = credential(parts)?;
        let Path(slug) = Path::<String>::from_request_parts(parts, state).await?;
        let mut conn = state.pool.acquire().await?;
        let access = crate::projects::access_by_credential(&mut conn, &credential, &slug).await?;
        Ok(ProjectConn { access, conn })
    }
}

/// The credential a request carries: a bearer token, or a session cookie (with
/// the CSRF header, which state-changing requests must carry).
fn credential(parts: &Parts) -> Result<Credential, Error> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::Unauthorized)?;
        return Ok(Credential::Token(token.trim().to_owned()));
    }
    let id = cookie(parts, SESSION_COOKIE).ok_or(Error::Unauthorized)?;
    Ok(Credential::Session {
        id: id.to_owned(),
        csrf_sent: parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        safe: matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS),
    })
}

/// Who is calling: a bearer token, or a session cookie (with the CSRF header on
/// state-changing requests).
async fn caller(parts: &Parts, conn: &mut sqlx::PgConnection) -> Result<User, Error> {
    credential(parts)?.user(conn).await
}

/// A logged-in browser session, for pages. Without one, pages redirect to the login form.
pub struct PageSession {
    pub session: Session,
    pub id: String,
}

impl PageSession {
    /// Check a form's CSRF token against the session's.
    pub fn check_csrf(&self, sent: &str) -> Result<(), Error> {
        if constant_eq(sent, &self.session.csrf) {
            Ok(())
        } else {
            Err(Error::forbidden(
                "the form expired or came from another site; reload and retry",
            ))
        }
    }

    pub fn user(&self) -> &User {
        &self.session.user
    }
}

impl FromRequestParts<AppState> for PageSession {
    type Rejection = super::pages::PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(id) = cookie(parts, SESSION_COOKIE) else {
            return Err(super::pages::PageError::Login);
        };
        match auth::session_by_id(&state.pool, id).await? {
            Some(session) => Ok(PageSession {
                session,
                id: id.to_owned(),
            }),
            None => Err(super::pages::PageError::Login),
        }
    }
}
