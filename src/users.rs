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

/// Changes a user's web password after checking the current one, and ends every session of
/// theirs (on every device) in the same transaction: whoever knew the old password is out.
/// API tokens are unaffected.
pub async fn change_password(pool: &PgPool, user: &User, current: &str, new: &str) -> Result<()> {
    check_password(new)?;
    let hash: Option<String> = sqlx::query_scalar("select password_hash from users where id = $1")
        .bind(user.id)
        .fetch_one(pool)
        .await?;
    let (current, new) = (current.to_owned(), new.to_owned());
    let new_hash = tokio::task::spawn_blocking(move || {
        let ok = hash.is_some_and(|h| auth::verify_password(&h, &current));
        ok.then(|| auth::hash_password(&new)).transpose()
    })
    .await
    .map_err(anyhow::Error::from)??;
    let Some(new_hash) = new_hash else {
        return Err(Error::forbidden("the current password is wrong"));
    };
    let mut tx = pool.begin().await?;
    sqlx::query("update users set password_hash = $2 where id = $1")
        .bind(user.id)
        .bind(new_hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query("delete from sessions where user_id = $1")
        .bind(user.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
