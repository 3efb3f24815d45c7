//! `backflip simulate`: a simulated project labelled through the real HTTP API.
//!
//! Creates (idempotently) the project `sim-text` or `sim-gif` with a lead and simulated
//! raters, imports generated pairs, serves the API in-process on a random port and has every
//! rater label over HTTP until nothing is left; optionally trains the reward model in-process.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use sqlx::PgPool;

use super::setup::{ensure_user, pairs};
use super::{Rater, TaskKind, client, derive_seed, raters};
use crate::auth::Role;
use crate::clips::ClipStore;
use crate::error::Error;
use crate::jobs::{Runner, WorkerConfig, storage};
use crate::projects::{self, MemberRole, ProjectSettings};
use crate::{import, reward};

/// Settings of one simulation.
#[derive(clap::Args, Debug, Clone)]
pub struct SimOpts {
    /// Which task: text pairs, or GIF clips of an agent heading for a goal.
    #[arg(long, value_enum)]
    pub task: TaskKind,
    /// Pairs in the project (a re-run with more adds the new ones).
    #[arg(long, default_value_t = 300)]
    pub pairs: usize,
    /// Simulated raters; profiles cycle careful, noisy, always-left, left-biased.
    #[arg(long, default_value_t = 3)]
    pub raters: usize,
    /// Raters per pair (set when the project is created).
    #[arg(long, default_value_t = 1)]
    pub overlap: i32,
    /// Train the reward model in this process afterwards and print its held-out metrics.
    #[arg(long)]
    pub train: bool,
    /// Optimiser steps per ensemble member when training (the service's default: 300).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Boltzmann temperature of the raters, in units of the task's true reward.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Seed of the task, the pairs and the raters.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One simulated rater's judgments in the project.
#[derive(Debug, Clone)]
pub struct RaterCount {
    /// Login name, e.g. `sim-text-careful-1`.
    pub name: String,
    /// Profile from [`raters::panel`].
    pub profile: &'static str,
    /// Judgments made in this run.
    pub this_run: usize,
    /// Judgments in the project, all runs.
    pub judgments: i64,
    /// Of those, how many were "left" as displayed.
    pub left: i64,
}

/// What a simulation did.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The project's slug.
    pub slug: String,
    /// Pairs new in this run (a re-run imports none).
    pub imported: usize,
    /// Each simulated rater's counts.
    pub raters: Vec<RaterCount>,
    /// The training job's result (version and metrics), when asked to train.
    pub training: Option<serde_json::Value>,
}

/// Runs a simulation on `pool`, storing clips in `store`.
pub async fn run(pool: &PgPool, store: &ClipStore, opts: &SimOpts) -> anyhow::Result<SimReport> {
    let slug = format!("sim-{}", opts.task.as_str());
    let (lead, _) = ensure_user(pool, "sim-lead", Role::Lead).await?;
    let mut settings =
        ProjectSettings::new(&slug, &format!("Simulated {} task", opts.task.as_str()));
    settings.media_kind = opts.task.as_str().into();
    settings.overlap = opts.overlap;
    settings.train_every = 0; // trained on request only (--train), so runs are comparable
    settings.instructions = "Simulated raters answer by a hidden true reward.".into();
    match projects::create(pool, &lead, settings).await {
        Ok(_) | Err(Error::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let access = projects::access(pool, &lead, &slug).await?;
    let (body, truth) = pairs(pool, store, &access, opts).await?;
    let imported = import::import(pool, &access, body.as_bytes())
        .await?
        .imported;

    let mut raters = Vec::new();
    for (k, (profile, config)) in raters::panel(opts.raters, opts.temperature)
        .into_iter()
        .enumerate()
    {
        let name = format!("{slug}-{profile}-{}", k + 1);
        let (_, token) = ensure_user(pool, &name, Role::Annotator).await?;
        projects::add_member(pool, &access, &name, MemberRole::Annotator).await?;
        let rater = Rater::new(config, derive_seed(opts.seed, 100 + k as u64));
        raters.push((name, profile, token, rater));
    }
    let done = client::label_all(pool, store, &slug, Arc::new(truth), &raters).await?;

    let training = if opts.train {
        Some(train(pool, store, access.project.id, opts.steps).await?)
    } else {
        None
    };
    let counts: HashMap<String, (i64, i64)> = sqlx::query_as::<_, (String, i64, i64)>(
        "select u.name, count(*), count(*) filter (where j.displayed_choice = 'left')
         from judgments j join users u on u.id = j.rater_id
         where j.project_id = $1 group by u.name",
    )
    .bind(access.project.id)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(name, n, left)| (name, (n, left)))
    .collect();
    let raters = raters
        .into_iter()
        .zip(done)
        .map(|((name, profile, _, _), this_run)| {
            let (judgments, left) = counts.get(&name).copied().unwrap_or_default();
            RaterCount {
                name,
                profile,
                this_run,
                judgments,
                left,
            }
        })
        .collect();
    Ok(SimReport {
        slug,
        imported,
        raters,
        training,
    })
}

/// Queue a training run and run it in this process. `drain` runs every due job of the
/// database, not only this one, as `backflip train --here` would: acceptable in a one-shot
/// command, and it means no job of this project is left queued behind ours.
async fn train(
    pool: &PgPool,
    store: &ClipStore,
    project: uuid::Uuid,
    steps: Option<usize>,
) -> anyhow::Result<serde_json::Value> {
    let mut conn = pool.acquire().await?;
    let payload = json!({"reason": "simulate", "steps": steps});
    let queued = storage::enqueue(&mut conn, "train", Some(project), payload).await?;
    drop(conn);
    let job: i64 = match queued {
        Some(id) => id,
        None => sqlx::query_scalar(
            "select id from jobs where project_id = $1 and kind = 'train' and status = 'queued'",
        )
        .bind(project)
        .fetch_one(pool)
        .await?,
    };
    let runner = Runner::new(
        pool.clone(),
        reward::job_handlers(store.clone()),
        WorkerConfig::new(1, 60.0),
    );
    runner.drain().await?;
    let (status, result, error): (String, Option<serde_json::Value>, Option<String>) =
        sqlx::query_as("select status, result, error from jobs where id = $1")
            .bind(job)
            .fetch_one(pool)
            .await?;
    anyhow::ensure!(
        status == "done",
        "training job {job} {status}: {}",
        error.unwrap_or_default()
    );
    result.context("the training job left no result")
}
