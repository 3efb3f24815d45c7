//! The `train` job: judgments → examples → ensemble → a published version.

use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use uuid::Uuid;

use super::{ModelKind, data, store};
use crate::{
    clips::ClipStore,
    jobs::{Handler, JobContext},
    ml::{
        self, ClipReward, ClipRewardConfig, Example, MlpReward, MlpRewardConfig, RewardModel,
        TrainingConfig,
    },
};

/// Fewer usable judgments than this and a run would only measure noise.
pub const MIN_JUDGMENTS: usize = 10;

/// The handler for `train` jobs (weights go to `store`).
pub fn train_handler(store: ClipStore) -> Handler {
    Arc::new(move |ctx: &JobContext| train(ctx, &store))
}

fn train(ctx: &JobContext, store: &ClipStore) -> anyhow::Result<serde_json::Value> {
    let project_id = ctx.job.project_id.context("a train job needs a project")?;
    let media: String = ctx.rt.block_on(
        sqlx::query_scalar("select media_kind from projects where id = $1")
            .bind(project_id)
            .fetch_one(&ctx.pool),
    )?;
    let rows = ctx.rt.block_on(data::judgments(&ctx.pool, project_id))?;
    if rows.len() < MIN_JUDGMENTS {
        // Nothing to learn yet: done, not failed (a retry would not help).
        return Ok(
            json!({"skipped": format!("{} usable judgment(s); training needs at least {MIN_JUDGMENTS}", rows.len())}),
        );
    }
    let kind = data::kind_for(&media, &rows);
    // Hyper-parameters may be set per run in the job's payload (e.g. from tests, benchmarks
    // or `backflip train`); what was used is saved with the version.
    // `"early_stopping": true` evaluates every `every` steps (clips less often: dearer).
    let tune = |cfg: TrainingConfig, every: usize| -> TrainingConfig {
        let payload = &ctx.job.payload;
        let count = |name: &str| payload.get(name).and_then(|t| t.as_u64());
        let mut cfg = cfg.with_steps(count("steps").map_or(300, |v| v.max(1) as usize));
        cfg = cfg.with_threads(count("threads").map_or(1, |v| v.max(1) as usize));
        match payload.get("early_stopping").and_then(|v| v.as_bool()) {
            Some(true) => cfg = cfg.with_eval_every(every),
            Some(false) => cfg = cfg.with_eval_every(0),
            None => {}
        }
        if let Some(nice) = count("nice") {
            cfg = cfg.with_nice(nice.min(19) as i32);
        }
        cfg
    };
    let trained = match kind {
        ModelKind::Clip => {
            let mut shas: Vec<String> = rows
                .iter()
                .flat_map(|r| [r.a.clip_sha256.clone(), r.b.clip_sha256.clone()])
                .flatten()
                .collect();
            shas.sort();
            shas.dedup();
            let clips = ctx.rt.block_on(data::clips(&ctx.pool, &shas))?;
            let examples = data::clip_examples(&rows, &clips);
            let cfg = tune(clip_training(), 50);
            fit::<ClipReward>(ctx, &clip_model(), cfg, examples)?
        }
        ModelKind::Text | ModelKind::Features(_) => {
            let examples = data::vector_examples(kind, &rows);
            let dim = examples
                .first()
                .map(|(_, e)| e.left.len())
                .context("no usable examples")?;
            let cfg = tune(vector_training(), 25);
            fit::<MlpReward>(ctx, &MlpRewardConfig::new(dim), cfg, examples)?
        }
    };
    let Fitted {
        blob,
        config,
        metrics,
        train_pairs,
        held_out_pairs,
    } = trained;
    let version = store::NewVersion {
        project_id,
        kind,
        config,
        metrics: metrics.clone(),
        train_pairs: train_pairs as i32,
        held_out_pairs: held_out_pairs as i32,
        job_id: Some(ctx.job.id),
    };
    if ctx.cancelled() {
        anyhow::bail!("cancelled before publishing");
    }
    let (id, number) = ctx
        .rt
        .block_on(store::publish(&ctx.pool, store, version, blob))?;
    // Queue refresh: the generator re-scores open candidates with the new version.
    ctx.rt.block_on(crate::selection::job::enqueue_refresh(
        &ctx.pool, project_id, id,
    ))?;
    Ok(json!({"model": id, "version": number, "kind": kind.as_str(), "metrics": metrics}))
}

/// How the service trains the clip model: small batches (BURN.md: 2–8 pairs per step). When
/// early stopping is asked for, it evaluates less often and on fewer pairs than for text (an
/// out-of-bag clip pair costs two CNN passes over every frame), never before step 200 (the
/// loss can sit on a plateau first).
pub fn clip_training() -> TrainingConfig {
    TrainingConfig::new()
        .with_batch_size(4)
        .with_eval_pairs(64)
        .with_min_steps(200)
}

/// The clip network the service trains: a potential Φ of one frame (with CoordConv
/// channels) whose keypoint head relates where things are.
///
/// On the simulated GIF task (`backflip bench reward --task gif`, see `docs/benchmarks.md`)
/// accuracy after 500 labels went from 0.68 (per-step sum) to 0.80 (CoordConv and the
/// potential form, which also trains ~4× faster: only a clip's first and last frames go
/// through the network) to above 0.90 with the keypoint head.
pub fn clip_model() -> ClipRewardConfig {
    ClipRewardConfig::new()
        .with_frame_stack(1)
        .with_coord(Some(true))
        .with_potential(Some(true))
        .with_keypoints(Some(32))
}

/// How the service trains the text and feature MLPs: the defaults of [`TrainingConfig`].
pub fn vector_training() -> TrainingConfig {
    TrainingConfig::new()
}

struct Fitted {
    blob: Vec<u8>,
    config: serde_json::Value,
    metrics: serde_json::Value,
    train_pairs: usize,
    held_out_pairs: usize,
}

/// Split by pair (1/e held out), train the ensemble with progress reports, and
/// measure it: held-out accuracy, log-loss, calibration, each member's accuracy.
fn fit<M: RewardModel>(
    ctx: &JobContext,
    model_cfg: &M::Config,
    cfg: TrainingConfig,
    examples: Vec<(Uuid, Example<M::Input>)>,
) -> anyhow::Result<Fitted>
where
    M::Config: serde::Serialize,
    M::Input: Clone,
{
    let (train, held_out) = ml::data::split_held_out(examples, |(pair, _)| *pair.as_bytes());
    let train: Vec<Example<M::Input>> = train.into_iter().map(|(_, e)| e).collect();
    let held_out: Vec<Example<M::Input>> = held_out.into_iter().map(|(_, e)| e).collect();
    anyhow::ensure!(
        !train.is_empty(),
        "every usable judgment fell in the held-out split"
    );
    let mut curve: Vec<(usize, f32)> = Vec::new();
    let report_every = (cfg.ensemble_size * cfg.steps / 50).max(1);
    let (ensemble, report) = ml::train_ensemble::<M>(
        model_cfg,
        &cfg,
        &train,
        &held_out,
        |p| {
            // Cheap (a mutex write): the heartbeat stores the latest in the job row.
            ctx.progress(json!({"step": p.step, "total": p.total, "loss": p.loss}));
            if p.step % report_every == 0 || p.step == p.total {
                curve.push((p.step, p.loss));
            }
        },
        &ctx.cancel,
    )?;
    let member_accuracy = member_accuracy(&ensemble, &held_out)?;
    let saved = ensemble.save()?;
    let metrics = json!({
        "held_out": report.metrics,
        "member_accuracy": member_accuracy,
        "final_losses": report.final_losses,
        "member_steps": report.member_steps,
        "kept_steps": report.kept_steps,
        "loss_curve": curve,
        "pairs_seen": report.pairs_seen,
        "train_seconds": report.elapsed.as_secs_f64(),
        "train_pairs": train.len(),
        "held_out_pairs": held_out.len(),
    });
    let config = json!({"model": model_cfg, "training": serde_json::to_value(&cfg)?});
    Ok(Fitted {
        blob: store::encode(&saved),
        config,
        metrics,
        train_pairs: train.len(),
        held_out_pairs: held_out.len(),
    })
}

/// Each member's accuracy on held-out pairs that are not ties.
fn member_accuracy<M: RewardModel>(
    ensemble: &ml::Ensemble<M>,
    held_out: &[Example<M::Input>],
) -> anyhow::Result<Vec<Option<f64>>> {
    let decided: Vec<&Example<M::Input>> = held_out.iter().filter(|e| !e.is_tie()).collect();
    let inputs: Vec<&M::Input> = decided.iter().flat_map(|e| [&e.left, &e.right]).collect();
    let per_member = ensemble.member_rewards(&inputs)?;
    Ok(per_member
        .iter()
        .map(|r| {
            let right = decided
                .iter()
                .enumerate()
                .filter(|(i, e)| (r[2 * i] > r[2 * i + 1]) == (e.target > 0.5))
                .count();
            (!decided.is_empty()).then(|| right as f64 / decided.len() as f64)
        })
        .collect())
}
