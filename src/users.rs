//! Users and their credentials.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    auth::{self, Role, User},
    error::{Error, Result, ResultExt},
};

/// A new user and their first API token (shown once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub token: String,
}

pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "user names are 1-64 letters, digits or _ . @ -",
        ))
    }
}

pub fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < 8 {
        return Err(Error::invalid("passwords need at least 8 characters"));
    }
    Ok(())
}

/// Create a user (with an optional web password) and an API token, in one transaction.
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: Role,
    password: Option<&str>,
) -> Result<CreatedUser> {
    check_name(name)?;
    let hash = match password {
        Some(p) => {
            check_password(p)?;
            let p = p.to_owned();
            Some(
                tokio::task::spawn_blocking(move || auth::hash_password(&p))
                    .await
                    .map_err(anyhow::Error::from)??,
            )
        }
        None => None,
    };
    let mut tx = pool.begin().await?;
    let id: Uuid = sqlx::query_scalar(
        "insert into users (name, role, password_hash) values ($1, $2, $3) returning id",
    )
    .bind(name)
    .bind(role.as_str())
    .bind(hash)
    .fetch_one(&mut *tx)
    .await
    .on_unique(
        "users_name_key",
        "name_taken",
        format!("the name {name:?} is taken"),
    )?;
    let token = auth::create_token(&mut tx, id, "created with the user").await?;
    tx.commit().await?;
    Ok(CreatedUser {
        id,
        name: name.to_owned(),
        role,
        token,
    })
}

/// Look a user up by name.
pub async fn by_name(pool: &PgPool, name: &str) -> Result<User> {
    let row: Option<(Uuid, String, String)> =
        sqlx::query_as("select id, name, role from users where name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
    let (id, name, role) = row.ok_or(Error::NotFound("user"))?;
    Ok(auth::user_from_row(id, name, role))
}
