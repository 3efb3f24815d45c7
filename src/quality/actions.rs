//! What a lead does about quality: gold answers, the gold and repeat rates, pausing and
//! excluding raters. Every change is audit-logged with who did it; each runs in one
//! transaction with its audit row.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    report::{self, Agreement},
    store,
};
use crate::{
    error::{Error, Result},
    projects::{Access, audit},
};

/// The project's quality settings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(deny_unknown_fields)]
pub struct QualitySettings {
    /// Share of `next` answers that are a gold pair (0 to 0.5).
    pub gold_rate: f32,
    /// Share of `next` answers that repeat one of the rater's judged pairs, sides swapped (0 to 0.5).
    pub repeat_rate: f32,
    /// Reward-model training weights each judgment by its rater's Dawid–Skene reliability.
    pub reliability_weighting: bool,
}

pub async fn settings(pool: &PgPool, project_id: Uuid) -> Result<QualitySettings> {
    Ok(sqlx::query_as(
        "select gold_rate, repeat_rate, reliability_weighting from projects where id = $1",
    )
    .bind(project_id)
    .fetch_one(pool)
    .await?)
}

pub async fn update_settings(pool: &PgPool, access: &Access, s: QualitySettings) -> Result<()> {
    let ok = |r: f32| (0.0..=0.5).contains(&r);
    if !ok(s.gold_rate) || !ok(s.repeat_rate) {
        return Err(Error::invalid(
            "gold and repeat rates are shares between 0 and 0.5",
        ));
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "update projects set gold_rate = $2, repeat_rate = $3, reliability_weighting = $4
         where id = $1",
    )
    .bind(access.project.id)
    .bind(s.gold_rate)
    .bind(s.repeat_rate)
    .bind(s.reliability_weighting)
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::to_value(s).map_err(anyhow::Error::from)?;
    audit(
        &mut tx,
        &access.user,
        access.project.id,
        "quality_settings",
        detail,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Mark a pair gold with its right answer (a, b or tie), or unmark it (None).
pub async fn set_gold(
    pool: &PgPool,
    access: &Access,
    pair: Uuid,
    answer: Option<&str>,
) -> Result<()> {
    if answer.is_some_and(|a| !["a", "b", "tie"].contains(&a)) {
        return Err(Error::invalid("a gold answer is a, b or tie"));
    }
    let mut tx = pool.begin().await?;
    let done = sqlx::query("update comparisons set gold = $3 where id = $1 and project_id = $2")
        .bind(pair)
        .bind(access.project.id)
        .bind(answer)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound("pair"));
    }
    let detail = serde_json::json!({"pair": pair, "gold": answer});
    audit(&mut tx, &access.user, access.project.id, "set_gold", detail).await?;
    store::enqueue(&mut tx, access.project.id, "set_gold", true).await?;
    tx.commit().await?;
    Ok(())
}

/// Make gold of every pair not yet gold on which at least `min_answers` first answers of
/// counted (not excluded) raters all say the same (a, b or tie). Returns how many.
pub async fn promote_unanimous(pool: &PgPool, access: &Access, min_answers: i64) -> Result<u64> {
    if min_answers < 2 {
        return Err(Error::invalid("unanimous needs at least 2 answers"));
    }
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "with answers as (
             select j.comparison_id, min(j.choice) as choice, count(*) as n,
                    count(distinct j.choice) as kinds
             from judgments j
             left join project_members m on m.project_id = j.project_id and m.user_id = j.rater_id
             where j.project_id = $1 and j.kind <> 'repeat' and m.excluded_at is null
             group by j.comparison_id)
         update comparisons c set gold = a.choice
         from answers a
         where c.id = a.comparison_id and c.gold is null
           and a.kinds = 1 and a.n >= $2 and a.choice in ('a', 'b', 'tie')",
    )
    .bind(access.project.id)
    .bind(min_answers)
    .execute(&mut *tx)
    .await?;
    let detail = serde_json::json!({"min_answers": min_answers, "promoted": done.rows_affected()});
    audit(
        &mut tx,
        &access.user,
        access.project.id,
        "promote_gold",
        detail,
    )
    .await?;
    if done.rows_affected() > 0 {
        store::enqueue(&mut tx, access.project.id, "promote_gold", true).await?;
    }
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// A member of the project, by name, that a lead acts on.
async fn member_id(pool: &PgPool, access: &Access, name: &str) -> Result<Uuid> {
    sqlx::query_scalar(
        "select u.id from users u join project_members m on m.user_id = u.id
         where m.project_id = $1 and u.name = $2",
    )
    .bind(access.project.id)
    .bind(name)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("member"))
}

/// Pause a rater (no new pairs from `next`; leases they hold run out) or let them go on.
pub async fn set_paused(pool: &PgPool, access: &Access, name: &str, paused: bool) -> Result<()> {
    let rater = member_id(pool, access, name).await?;
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "update project_members set paused_at = case when $3 then now() end
         where project_id = $1 and user_id = $2 and (paused_at is not null) <> $3",
    )
    .bind(access.project.id)
    .bind(rater)
    .bind(paused)
    .execute(&mut *tx)
    .await?;
    if changed.rows_affected() > 0 {
        let action = if paused {
            "pause_rater"
        } else {
            "resume_rater"
        };
        let detail = serde_json::json!({"rater": name});
        audit(&mut tx, &access.user, access.project.id, action, detail).await?;
        store::enqueue(&mut tx, access.project.id, action, true).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What an exclusion changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExclusionResult {
    pub excluded: bool,
    /// Pairs whose coverage changed: re-opened for other raters on exclusion, counted again on
    /// re-inclusion.
    pub pairs_requeued: u64,
}

/// Exclude a rater's judgments from training, export and project agreement, or take them
/// back. Judgments are never deleted, so this is reversible. On exclusion each pair the rater
/// judged (first answers only) loses one from its judged count, so it re-opens for another
/// rater; re-inclusion gives it back (a pair may then hold one more answer than its overlap).
/// While excluded, the rater's new judgments cover nothing (`labeling::submit` reads the
/// member row). A judgment committed in the instant between the two reads may be counted once
/// too often; pausing the rater first closes that window.
pub async fn set_excluded(
    pool: &PgPool,
    access: &Access,
    name: &str,
    excluded: bool,
) -> Result<ExclusionResult> {
    let rater = member_id(pool, access, name).await?;
    let mut tx = pool.begin().await?;
    // The member row is the toggle: only a real change moves the counts, so a repeated
    // request changes nothing twice.
    let changed = sqlx::query(
        "update project_members set excluded_at = case when $3 then now() end
         where project_id = $1 and user_id = $2 and (excluded_at is not null) <> $3",
    )
    .bind(access.project.id)
    .bind(rater)
    .bind(excluded)
    .execute(&mut *tx)
    .await?;
    let mut pairs = 0;
    if changed.rows_affected() > 0 {
        // Relative updates under the row lock, so a judgment committing at the same time is
        // not lost (a recount from a snapshot could miss it).
        pairs = sqlx::query(
            "update comparisons c set taken_count = c.taken_count + case when $3 then -1 else 1 end
             where c.id in (select j.comparison_id from judgments j
                            where j.project_id = $1 and j.rater_id = $2 and j.kind = 'regular')",
        )
        .bind(access.project.id)
        .bind(rater)
        .bind(excluded)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let action = if excluded {
            "exclude_rater"
        } else {
            "include_rater"
        };
        let detail = serde_json::json!({"rater": name, "pairs_requeued": pairs});
        audit(&mut tx, &access.user, access.project.id, action, detail).await?;
        store::enqueue(&mut tx, access.project.id, action, true).await?;
    }
    tx.commit().await?;
    Ok(ExclusionResult {
        excluded,
        pairs_requeued: pairs,
    })
}

/// Project agreement now and with one more rater excluded (or taken back).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExclusionPreview {
    pub rater: String,
    /// Whether the rater is excluded now.
    pub excluded_now: bool,
    pub before: Agreement,
    pub after: Agreement,
    /// Judgments (first answers) that would stop or start counting.
    pub judgments: usize,
}

pub async fn preview_exclusion(
    pool: &PgPool,
    access: &Access,
    name: &str,
) -> Result<ExclusionPreview> {
    let rater = member_id(pool, access, name).await?;
    let (obs, raters) = report::load(&mut *pool.acquire().await?, access.project.id).await?;
    let mut excluded: HashSet<Uuid> = raters.iter().filter(|r| r.excluded).map(|r| r.id).collect();
    let excluded_now = excluded.contains(&rater);
    let before = report::project_agreement(&obs, &excluded);
    if excluded_now {
        excluded.remove(&rater);
    } else {
        excluded.insert(rater);
    }
    let after = report::project_agreement(&obs, &excluded);
    Ok(ExclusionPreview {
        rater: name.to_owned(),
        excluded_now,
        before,
        after,
        judgments: obs
            .iter()
            .filter(|o| o.rater == rater && o.kind != "repeat")
            .count(),
    })
}
