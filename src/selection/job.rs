//! The `select` job: top a project's queue up with generated pairs. The
//! judging transaction queues it (debounced: one queued per project) when it
//! completes a generated pair.

use std::sync::Arc;

use anyhow::Context;
use serde_json::json;

use crate::jobs::{Handler, Handlers, JobContext};

/// Job kind of the generator.
pub const KIND: &str = "select";

/// The generator's job handlers, by kind.
pub fn handlers() -> Handlers {
    let mut handlers = Handlers::new();
    handlers.insert(KIND, Arc::new(run) as Handler);
    handlers
}

fn run(ctx: &JobContext) -> anyhow::Result<serde_json::Value> {
    let project_id = ctx.job.project_id.context("a select job needs a project")?;
    let generated = ctx
        .rt
        .block_on(super::generate::top_up(&ctx.pool, project_id))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(json!({"generated": generated}))
}
