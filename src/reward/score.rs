//! Scoring rollouts with a project's current reward model.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ModelKind, data, store};
use crate::{
    clips::ClipStore,
    error::{Error, Result},
    ml::{ClipReward, Ensemble, MlpReward},
    projects::Project,
};

/// A loaded ensemble of either network.
pub enum Loaded {
    Mlp(Ensemble<MlpReward>),
    Clip(Ensemble<ClipReward>),
}

/// Loaded models by version id: weights are read from the object store once
/// per process, then shared by every request (ensembles are `Send + Sync`).
#[derive(Default)]
pub struct ModelCache {
    models: Mutex<HashMap<Uuid, Arc<Loaded>>>,
}

/// What the caller gets to know about the model that scored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelRef {
    pub id: Uuid,
    pub version: i32,
    pub kind: String,
}

impl ModelCache {
    /// The project's current version, loaded; None when it has none yet.
    pub async fn current(
        &self,
        pool: &PgPool,
        store: &ClipStore,
        project_id: Uuid,
    ) -> Result<Option<(ModelRef, ModelKind, Arc<Loaded>)>> {
        let row: Option<(Uuid, i32, String, String, serde_json::Value)> = sqlx::query_as(
            "select m.id, m.version, m.kind, m.weights_sha256, m.config from projects p
             join reward_models m on m.id = p.current_model where p.id = $1",
        )
        .bind(project_id)
        .fetch_optional(pool)
        .await?;
        let Some((id, version, kind_name, sha, config)) = row else {
            return Ok(None);
        };
        let kind = match kind_name.as_str() {
            "clip" => ModelKind::Clip,
            "features" => {
                ModelKind::Features(config["model"]["d_input"].as_u64().unwrap_or(0) as usize)
            }
            _ => ModelKind::Text,
        };
        let cached = self.models.lock().expect("model cache").get(&id).cloned();
        let loaded = match cached {
            Some(m) => m,
            None => {
                let blob = store.get_model(&sha).await?;
                let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<Loaded> {
                    let saved = store::decode(&blob)?;
                    Ok(match kind {
                        ModelKind::Clip => Loaded::Clip(Ensemble::load(&saved)?),
                        _ => Loaded::Mlp(Ensemble::load(&saved)?),
                    })
                })
                .await
                .map_err(anyhow::Error::from)??;
                let loaded = Arc::new(loaded);
                let mut cache = self.models.lock().expect("model cache");
                // Old versions are not asked for again once a newer one is current.
                cache.retain(|_, m| Arc::strong_count(m) > 1);
                cache.insert(id, loaded.clone());
                loaded
            }
        };
        Ok(Some((
            ModelRef {
                id,
                version,
                kind: kind_name,
            },
            kind,
            loaded,
        )))
    }
}

/// Rollouts to score: each one of `text`, `features` or a stored `rollout_id`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreRequest {
    pub rollouts: Vec<ScoreInput>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreInput {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub features: Option<Vec<f32>>,
    #[serde(default)]
    pub rollout_id: Option<Uuid>,
}

/// Rewards, one per rollout in order, with the model that gave them.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScoreResponse {
    pub model: ModelRef,
    pub rewards: Vec<Reward>,
}

/// One rollout's reward: the ensemble's mean, its standard deviation, and each member's.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reward {
    pub mean: f32,
    pub std: f32,
    pub members: Vec<f32>,
}

/// Most rollouts in one request.
pub const MAX_SCORE: usize = 1000;

enum Input {
    Vector(Vec<f32>),
    Clip(crate::ml::Clip),
}

/// Score rollouts with the project's current model.
pub async fn score(
    pool: &PgPool,
    store: &ClipStore,
    cache: &ModelCache,
    project: &Project,
    req: ScoreRequest,
) -> Result<ScoreResponse> {
    if req.rollouts.is_empty() || req.rollouts.len() > MAX_SCORE {
        return Err(Error::invalid(format!("send 1 to {MAX_SCORE} rollouts")));
    }
    let (model, kind, loaded) = cache
        .current(pool, store, project.id)
        .await?
        .ok_or(Error::Conflict {
        code: "no_model",
        message:
            "this project has no reward model yet: it trains after enough judgments, or on demand"
                .into(),
    })?;
    // Stored rollouts and their clips in one query each, whatever the request's size.
    let ids: Vec<Uuid> = req.rollouts.iter().filter_map(|r| r.rollout_id).collect();
    let stored = data::rollouts(pool, project.id, &ids).await?;
    let clips = match kind {
        ModelKind::Clip => data::clips_of(pool, stored.values()).await?,
        _ => HashMap::new(),
    };
    let mut inputs = Vec::with_capacity(req.rollouts.len());
    for (i, r) in req.rollouts.iter().enumerate() {
        inputs.push(
            resolve(kind, r, &stored, &clips)
                .map_err(|e| Error::invalid(format!("rollouts[{i}]: {e}")))?,
        );
    }
    let per_member = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(match &*loaded {
            Loaded::Mlp(m) => {
                let v: Vec<&Vec<f32>> = inputs
                    .iter()
                    .filter_map(|i| {
                        if let Input::Vector(v) = i {
                            Some(v)
                        } else {
                            None
                        }
                    })
                    .collect();
                m.member_rewards(&v)?
            }
            Loaded::Clip(m) => {
                let v: Vec<&crate::ml::Clip> = inputs
                    .iter()
                    .filter_map(|i| {
                        if let Input::Clip(c) = i {
                            Some(c)
                        } else {
                            None
                        }
                    })
                    .collect();
                m.member_rewards(&v)?
            }
        })
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(|e| Error::invalid(e.to_string()))?;
    let n = req.rollouts.len();
    let rewards = (0..n)
        .map(|i| {
            let members: Vec<f32> = per_member.iter().map(|m| m[i]).collect();
            let k = members.len() as f32;
            let mean = members.iter().sum::<f32>() / k;
            let var = members.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / k;
            Reward {
                mean,
                std: var.sqrt(),
                members,
            }
        })
        .collect();
    Ok(ScoreResponse { model, rewards })
}

fn resolve(
    kind: ModelKind,
    r: &ScoreInput,
    stored: &HashMap<Uuid, data::RolloutContent>,
    clips: &HashMap<String, crate::ml::Clip>,
) -> std::result::Result<Input, String> {
    let stored = match r.rollout_id {
        Some(id) => Some(stored.get(&id).ok_or("no such rollout in this project")?),
        None => None,
    };
    match (kind, &r.text, &r.features, stored) {
        (ModelKind::Clip, None, None, Some(s)) => {
            let sha = s.clip_sha256.as_ref().ok_or("not a clip rollout")?;
            clips
                .get(sha)
                .cloned()
                .map(Input::Clip)
                .ok_or_else(|| "the clip's frames are missing".into())
        }
        (ModelKind::Clip, ..) => Err("this project's model scores clips: give a rollout_id".into()),
        (ModelKind::Text, Some(t), None, None) => {
            Ok(Input::Vector(crate::ml::features::text_features(t)))
        }
        (ModelKind::Features(d), None, Some(f), None)
            if f.len() == d && f.iter().all(|x| x.is_finite()) =>
        {
            Ok(Input::Vector(f.clone()))
        }
        (ModelKind::Features(d), None, Some(_), None) => {
            Err(format!("features must be {d} finite numbers"))
        }
        (_, None, None, Some(s)) => data::vector(kind, s)
            .map(Input::Vector)
            .ok_or_else(|| "the rollout has no content this model reads".into()),
        (ModelKind::Text, ..) => Err("give exactly one of text or rollout_id".into()),
        (ModelKind::Features(_), ..) => Err("give exactly one of features or rollout_id".into()),
    }
}
