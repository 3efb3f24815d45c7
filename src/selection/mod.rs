//! Choosing what to ask. Rollouts imported on their own carry a `group`
//! (same prompt or task, so comparable); pairs are generated within groups by
//! the project's strategy as the queue needs them, never enumerated up front.
//!
//! Generated pairs are ordinary `comparisons` rows (`generated = true`), so
//! `next` serves them through the same open-pairs index with no change. The
//! generator keeps `open_target` generated pairs open: it runs after a rollout
//! import, after a settings change, and as the `select` job that the leasing
//! statement queues when it takes the last slot of a generated pair.

pub mod generate;
pub mod import;
pub mod job;
pub mod plan;
pub mod score;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{Error, Result},
    projects::{Access, audit},
};

/// The strategies a project can pick pairs by.
pub const STRATEGIES: [&str; 3] = ["random", "uncertainty", "mixed"];

/// A project's pair-selection settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectionSettings {
    /// `random` (coverage first, policies balanced), `uncertainty` (highest
    /// reward-ensemble disagreement in a pool ten times larger than needed) or
    /// `mixed` (uncertainty with a share of random pairs).
    pub strategy: String,
    /// For `mixed`: the share of generated pairs drawn at random (0 to 1).
    pub random_share: f32,
    /// How many generated pairs are kept open (1 to 100,000).
    pub open_target: i32,
}

impl SelectionSettings {
    fn validate(&self) -> Result<()> {
        if !STRATEGIES.contains(&self.strategy.as_str()) {
            return Err(Error::invalid(format!(
                "strategy: one of {}; got {:?}",
                STRATEGIES.join(", "),
                self.strategy
            )));
        }
        if !(0.0..=1.0).contains(&self.random_share) {
            return Err(Error::invalid("random_share: a share between 0 and 1"));
        }
        if !(1..=100_000).contains(&self.open_target) {
            return Err(Error::invalid("open_target: between 1 and 100000 pairs"));
        }
        Ok(())
    }
}

pub async fn settings(pool: &PgPool, project_id: Uuid) -> Result<SelectionSettings> {
    Ok(
        sqlx::query_as("select strategy, random_share, open_target from projects where id = $1")
            .bind(project_id)
            .fetch_one(pool)
            .await?,
    )
}

/// Change the settings (checked first: a bad value changes nothing), then top
/// the queue up to the new target. Returns the pairs generated.
pub async fn update_settings(
    pool: &PgPool,
    access: &Access,
    s: SelectionSettings,
    scorer: score::Scorer<'_>,
) -> Result<usize> {
    s.validate()?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update projects set strategy = $2, random_share = $3, open_target = $4 where id = $1",
    )
    .bind(access.project.id)
    .bind(&s.strategy)
    .bind(s.random_share)
    .bind(s.open_target)
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::to_value(&s).map_err(anyhow::Error::from)?;
    audit(
        &mut tx,
        &access.user,
        access.project.id,
        "selection_settings",
        detail,
    )
    .await?;
    tx.commit().await?;
    generate::top_up(pool, access.project.id, Some(scorer)).await
}
