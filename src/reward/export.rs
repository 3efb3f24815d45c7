//! A reward-model version as files a researcher can use outside Backflip: the weights of every
//! ensemble member in one SafeTensors file, the configuration as JSON, and a document saying
//! how to compute rewards from them (`docs/reward-model-export.md`, shipped as the README).

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::{ModelKind, store};
use crate::{
    clips::ClipStore,
    error::{Error, Result},
    ml::{ClipReward, Ensemble, MlpReward, RewardModel, TEXT_FEATURE_DIM},
    projects::Project,
};

/// How to compute rewards from the exported files; written next to them as `README.md`.
pub const README: &str = include_str!("../../docs/reward-model-export.md");

/// One exported version.
pub struct ModelExport {
    /// Its version number in the project.
    pub version: i32,
    /// Every member's tensors; the header's metadata repeats [`config`](Self::config) as
    /// `backflip.config`.
    pub safetensors: Vec<u8>,
    /// Kind, architecture, hyper-parameters, input recipe, tensor shapes, metrics summary.
    pub config: serde_json::Value,
}

/// Exports `version` of the project's reward model, or its current version when `None`.
pub async fn export(
    pool: &PgPool,
    store: &ClipStore,
    project: &Project,
    version: Option<i32>,
) -> Result<ModelExport> {
    let row: Option<(
        Uuid,
        i32,
        String,
        String,
        serde_json::Value,
        serde_json::Value,
    )> = sqlx::query_as(
        "select m.id, m.version, m.kind, m.weights_sha256, m.config, m.metrics
             from reward_models m join projects p on p.id = m.project_id
             where m.project_id = $1
               and (m.version = $2 or ($2 is null and m.id = p.current_model))",
    )
    .bind(project.id)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    let Some((id, version, kind, sha, trained_with, metrics)) = row else {
        return Err(match version {
            Some(_) => Error::NotFound("that version of the reward model"),
            None => Error::Conflict {
                code: "no_model",
                message: "this project has no reward model yet: it trains after enough \
                          judgments, or on demand"
                    .into(),
            },
        });
    };
    let blob = store.get_model(&sha).await?;
    let slug = project.slug.clone();
    let built = tokio::task::spawn_blocking(move || -> anyhow::Result<ModelExport> {
        let saved = store::decode(&blob)?;
        let mut config = json!({
            "format": "backflip-reward-model/1",
            "backflip_version": env!("CARGO_PKG_VERSION"),
            "project": slug,
            "model_id": id,
            "version": version,
            "kind": kind,
            "input": input_recipe(&kind, &trained_with),
            "trained_with": trained_with,
            "metrics": {
                "held_out": metrics.get("held_out"),
                "train_pairs": metrics.get("train_pairs"),
                "held_out_pairs": metrics.get("held_out_pairs"),
            },
        });
        let safetensors = if kind == ModelKind::Clip.as_str() {
            write::<ClipReward>(&Ensemble::load(&saved)?, &mut config)?
        } else {
            write::<MlpReward>(&Ensemble::load(&saved)?, &mut config)?
        };
        Ok(ModelExport {
            version,
            safetensors,
            config,
        })
    });
    Ok(built.await.map_err(anyhow::Error::from)??)
}

/// Adds the ensemble's manifest to `config` and writes the SafeTensors bytes with it.
fn write<M: RewardModel>(
    ensemble: &Ensemble<M>,
    config: &mut serde_json::Value,
) -> anyhow::Result<Vec<u8>> {
    let manifest: serde_json::Value = serde_json::from_str(&ensemble.manifest()?)?;
    config["architecture"] = manifest["kind"].clone();
    config["model"] = manifest["model"].clone();
    config["members"] = manifest["members"].clone();
    config["random_answer_rate"] = manifest["random_answer_rate"].clone();
    let text = serde_json::to_string(config)?;
    Ok(ensemble.to_safetensors(&[("backflip.config", text)])?)
}

/// What the model reads, in words and numbers (the README has the full recipe).
fn input_recipe(kind: &str, trained_with: &serde_json::Value) -> serde_json::Value {
    match kind {
        "text" => json!({
            "type": "text",
            "features": "hashed word, word-pair and character-trigram counts (FNV-1a), see README",
            "dim": TEXT_FEATURE_DIM,
        }),
        "features" => json!({
            "type": "features",
            "features": "the rollout's own `features` vector, unchanged",
            "dim": trained_with["model"]["d_input"],
        }),
        _ => json!({
            "type": "clip",
            "frame_side": crate::ml::data::CLIP_SIDE,
            "max_frames": super::MAX_TRAINING_FRAMES,
            "frame_stack": trained_with["model"]["frame_stack"],
            "pixels": "grayscale luma (0.299 R + 0.587 G + 0.114 B), box-filtered to 64x64, divided by 255",
        }),
    }
}
