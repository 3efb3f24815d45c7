//! The `select` job: re-score the open candidates with the current model
//! (queue refresh), then top the project's queue up with generated pairs. The
//! leasing statement queues it (debounced: one queued per project) when it
//! takes the last slot of a generated pair ([`refill_cte`]), and the train job
//! when it publishes a version.

use std::sync::Arc;

use anyhow::Context;
use serde_json::json;

use super::{generate, score::Scorer};
use crate::{
    clips::ClipStore,
    jobs::{Handler, Handlers, JobContext},
    reward::ModelCache,
};

/// Job kind of the generator.
pub const KIND: &str = "select";

/// The generator's job handlers, by kind. Models loaded once per process.
pub fn handlers(store: ClipStore) -> Handlers {
    let cache = Arc::new(ModelCache::default());
    let mut handlers = Handlers::new();
    let handler: Handler = Arc::new(move |ctx: &JobContext| run(ctx, &store, &cache));
    handlers.insert(KIND, handler);
    handlers
}

/// A common table expression, `refill`, that queues this job (debounced) for the
/// projects of `source`'s rows whose `filled` is true: a lease that took the last
/// slot of a generated pair leaves its project one open generated pair short of
/// its target, which the job tops up. `source` also names `project_id`. The
/// projects are queued in id order, so two leasing statements (of two servers)
/// that queue for the same projects wait for each other in one order, never in
/// a cycle. Should the lease expire, its pair opens again, and the project
/// then has one open generated pair more than its target until one is taken.
pub fn refill_cte(source: &str) -> String {
    format!(
        "refill as (
             insert into jobs (kind, project_id, payload)
             select distinct '{KIND}', project_id, '{{\"reason\": \"pair taken\"}}'::jsonb
             from {source} where filled
             order by project_id
             on conflict (project_id, kind) where status = 'queued' do nothing)"
    )
}

/// After a new model version: queue the job for a project whose strategy
/// uses the model (a `random` queue has nothing to re-score).
pub async fn enqueue_refresh(
    pool: &sqlx::PgPool,
    project_id: uuid::Uuid,
    model: uuid::Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into jobs (kind, project_id, payload)
         select $3, id, jsonb_build_object('reason', 'new model', 'model', $2::uuid)
         from projects where id = $1 and strategy <> 'random'
         on conflict (project_id, kind) where status = 'queued' do nothing",
    )
    .bind(project_id)
    .bind(model)
    .bind(KIND)
    .execute(pool)
    .await?;
    Ok(())
}

fn run(
    ctx: &JobContext,
    store: &ClipStore,
    cache: &ModelCache,
) -> anyhow::Result<serde_json::Value> {
    let project_id = ctx.job.project_id.context("a select job needs a project")?;
    let scorer = Scorer { store, cache };
    let (rescored, generated) = ctx
        .rt
        .block_on(async {
            let rescored = generate::refresh(&ctx.pool, project_id, scorer).await?;
            let generated = generate::top_up(&ctx.pool, project_id, Some(scorer)).await?;
            crate::error::Result::Ok((rescored, generated))
        })
        .map_err(|e: crate::error::Error| anyhow::anyhow!("{e}"))?;
    Ok(json!({"rescored": rescored, "generated": generated}))
}
