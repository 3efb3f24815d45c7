//! Credentials and roles.
//!
//! Passwords are argon2id hashes. API tokens, session ids and invite codes are
//! 256-bit random secrets handed out once; only their sha256 digests are
//! stored, so a database leak does not leak working credentials.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A user's global role. Admins do everything; leads create and run projects;
/// researchers read and export; annotators label the projects they belong to.
#[derive(
    clap::ValueEnum, Serialize, Deserialize, utoipa::ToSchema, Clone, Copy, Debug, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Lead,
    Researcher,
    Annotator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Lead => "lead",
            Role::Researcher => "researcher",
            Role::Annotator => "annotator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "lead" => Role::Lead,
            "researcher" => Role::Researcher,
            "annotator" => Role::Annotator,
            _ => return None,
        })
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
}

impl User {
    /// The command line acting with full rights (audit rows record no user for it).
    pub fn system() -> User {
        User {
            id: Uuid::nil(),
            name: "backflip-cli".into(),
            role: Role::Admin,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// How long a browser session lasts without logging in again.
pub const SESSION_TTL: Duration = Duration::days(7);

/// A fresh 256-bit secret, hex encoded.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What we store instead of a secret.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Hash a password with argon2id (CPU-heavy: call from a blocking thread in handlers).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

/// Check a password against a stored hash; a malformed hash never verifies.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

pub(crate) fn user_from_row(id: Uuid, name: String, role: String) -> User {
    // The check constraint on users.role keeps this total.
    let role = Role::parse(&role).unwrap_or(Role::Annotator);
    User { id, name, role }
}

/// The user a token's digest (`$1`) belongs to, as `user_id`, `user_name`,
/// `user_role` and `csrf` (null).
const TOKEN_CALLER: &str = "select u.id as user_id, u.name as user_name, u.role as user_role,
            null::text as csrf
     from api_tokens t join users u on u.id = t.user_id where t.token_hash = $1";

/// The user of the live session whose id has the digest `$1`, with the
/// session's CSRF token, as [`TOKEN_CALLER`].
const SESSION_CALLER: &str = "select u.id as user_id, u.name as user_name, u.role as user_role,
            s.csrf_token as csrf
     from sessions s join users u on u.id = s.user_id
     where s.token_hash = $1 and s.expires_at > now()";

/// The queries that read the user of a credential's digest (`$1`): `user_id`,
/// `user_name`, `user_role` and `csrf`; see [`Credential::lookup`].
pub(crate) const CALLERS: [&str; 2] = [TOKEN_CALLER, SESSION_CALLER];

/// The user an API bearer token belongs to.
pub async fn user_by_token(
    db: impl sqlx::PgExecutor<'_>,
    token: &str,
) -> sqlx::Result<Option<User>> {
    let row: Option<(Uuid, String, String, Option<String>)> = sqlx::query_as(TOKEN_CALLER)
        .bind(digest(token))
        .fetch_optional(db)
        .await?;
    Ok(row.map(|(id, name, role, _)| user_from_row(id, name, role)))
}

/// Issue a new API token for a user; returns the secret (shown once).
pub async fn create_token(
    conn: &mut sqlx::PgConnection,
    user_id: Uuid,
    label: &str,
) -> sqlx::Result<String> {
    let token = new_secret();
    sqlx::query("insert into api_tokens (token_hash, user_id, label) values ($1, $2, $3)")
        .bind(digest(&token))
        .bind(user_id)
        .bind(label)
        .execute(conn)
        .await?;
    Ok(token)
}

/// A logged-in browser session: its user and the CSRF token its forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

pub async fn session_by_id(
    db: impl sqlx::PgExecutor<'_>,
    id: &str,
) -> sqlx::Result<Option<Session>> {
    let row: Option<(Uuid, String, String, String)> = sqlx::query_as(SESSION_CALLER)
        .bind(digest(id))
        .fetch_optional(db)
        .await?;
    Ok(row.map(|(id, name, role, csrf)| Session {
        user: user_from_row(id, name, role),
        csrf,
    }))
}

/// What an API caller presents, before it is looked up: a bearer token, or a
/// browser session's cookie with the CSRF header the request carried. Not
/// `Debug`, so that a secret cannot end up in a log line.
#[derive(Clone)]
pub enum Credential {
    /// `Authorization: Bearer …`
    Token(String),
    /// The session cookie. `safe`: the method changes nothing (GET, HEAD,
    /// OPTIONS), so the request needs no CSRF header.
    Session {
        id: String,
        csrf_sent: Option<String>,
        safe: bool,
    },
}

impl Credential {
    /// The user it belongs to: 401 when it is unknown (or the session expired),
    /// 403 when a session's state-changing request lacks its CSRF token.
    pub async fn user(&self, db: impl sqlx::PgExecutor<'_>) -> crate::error::Result<User> {
        use crate::error::Error;
        match self {
            Credential::Token(token) => user_by_token(db, token).await?.ok_or(Error::Unauthorized),
            Credential::Session { id, .. } => {
                let session = session_by_id(db, id).await?.ok_or(Error::Unauthorized)?;
                self.check_csrf(&session.csrf)?;
                Ok(session.user)
            }
        }
    }

    /// For a session, that a state-changing request carries the session's CSRF
    /// token `csrf`; nothing to check for a bearer token.
    pub fn check_csrf(&self, csrf: &str) -> crate::error::Result<()> {
        match self {
            Credential::Session {
                csrf_sent,
                safe: false,
                ..
            } if !csrf_sent.as_deref().is_some_and(|s| constant_eq(s, csrf)) => Err(
                crate::error::Error::forbidden("missing or wrong X-CSRF-Token header"),
            ),
            _ => Ok(()),
        }
    }

    /// The stored digest of the secret, and which of [`CALLERS`] reads its user.
    pub(crate) fn lookup(&self) -> (Vec<u8>, usize) {
        match self {
            Credential::Token(token) => (digest(token), 0),
            Credential::Session { id, .. } => (digest(id), 1),
        }
    }
}

/// Compare secrets without leaking where they differ through timing.
pub fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Start a session; returns the session id to put in the cookie.
pub async fn create_session(pool: &PgPool, user_id: Uuid) -> sqlx::Result<String> {
    let id = new_secret();
    sqlx::query(
        "insert into sessions (token_hash, user_id, csrf_token, expires_at) values ($1, $2, $3, $4)",
    )
    .bind(digest(&id))
    .bind(user_id)
    .bind(new_secret())
    .bind(OffsetDateTime::now_utc() + SESSION_TTL)
    .execute(pool)
    .await?;
    Ok(id)
}

pub async fn delete_session(pool: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query("delete from sessions where token_hash = $1")
        .bind(digest(id))
        .execute(pool)
        .await?;
    Ok(())
}

/// Failed web logins of one name, within [`LOGIN_WINDOW_MINUTES`], after which further
/// attempts for that name are refused until the oldest failure leaves the window.
pub const LOGIN_FAILURES_ALLOWED: i64 = 10;
/// The window failed logins are counted over.
pub const LOGIN_WINDOW_MINUTES: i64 = 15;

/// What a login attempt came to.
#[derive(Debug)]
pub enum Login {
    /// Right name and password.
    Ok(User),
    /// Wrong name or password (which one is not said).
    Wrong,
    /// Too many recent failures for this name: refused without looking at the password.
    Locked {
        /// Seconds until an attempt is counted again.
        retry_after: u64,
    },
}

impl Login {
    /// The user, when the login succeeded.
    pub fn user(self) -> Option<User> {
        match self {
            Login::Ok(user) => Some(user),
            _ => None,
        }
    }
}

/// Checks a name and password, counting failures per name in PostgreSQL (so every server
/// node sees the same count). A name that does not exist counts like a wrong password, and
/// costs the same argon2 verification, so neither the answer nor its timing tells whether
/// the name exists.
pub async fn login(pool: &PgPool, name: &str, password: &str) -> anyhow::Result<Login> {
    let (failures, retry_after): (i64, Option<f64>) = sqlx::query_as(
        "select count(*), extract(epoch from min(at) + make_interval(mins => $2::int) - now())::float8
         from login_failures where name = $1 and at > now() - make_interval(mins => $2::int)",
    )
    .bind(name)
    .bind(LOGIN_WINDOW_MINUTES as i32)
    .fetch_one(pool)
    .await?;
    if failures >= LOGIN_FAILURES_ALLOWED {
        return Ok(Login::Locked {
            retry_after: retry_after.unwrap_or(0.0).ceil().max(1.0) as u64,
        });
    }
    let row: Option<(Uuid, String, String, Option<String>)> =
        sqlx::query_as("select id, name, role, password_hash from users where name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    let (user, hash) = match row {
        Some((id, name, role, Some(hash))) => (Some(user_from_row(id, name, role)), hash),
        _ => (None, dummy_hash().to_owned()),
    };
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &password)).await?;
    match user.filter(|_| ok) {
        Some(user) => {
            sqlx::query("delete from login_failures where name = $1")
                .bind(name)
                .execute(pool)
                .await?;
            Ok(Login::Ok(user))
        }
        None => {
            // Record the failure; old rows of any name go as new ones arrive.
            sqlx::query(
                "with old as (delete from login_failures where ctid in
                     (select ctid from login_failures where at < now() - interval '1 day' limit 100))
                 insert into login_failures (name) values ($1)",
            )
            .bind(name)
            .execute(pool)
            .await?;
            Ok(Login::Wrong)
        }
    }
}

/// A valid argon2 hash of a random secret, verified against when the name is unknown.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&new_secret()).expect("hashing a random secret"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong horse"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn secrets_are_unique_and_digests_fixed_size() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(digest(&a).len(), 32);
        assert_eq!(digest(&a), digest(&a));
    }
}
