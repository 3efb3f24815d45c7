//! Scoring candidate pairs with the project's current reward-model ensemble:
//! the variance across members of P(a ≻ b) ("disagreement"), highest where a
//! new label teaches most.

use std::{collections::HashMap, sync::Arc};

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    clips::ClipStore,
    error::Result,
    reward::{ModelCache, ModelKind, data, score::Loaded},
};

/// What scoring needs: the object store (weights, clips) and loaded models.
#[derive(Clone, Copy)]
pub struct Scorer<'a> {
    pub store: &'a ClipStore,
    pub cache: &'a ModelCache,
}

/// Disagreement for each pair of rollout ids, in order; None when the project
/// has no model yet. A pair the model cannot read (a rollout without its
/// input) scores 0.
pub async fn disagreement(
    pool: &PgPool,
    scorer: Scorer<'_>,
    project_id: Uuid,
    pairs: &[(Uuid, Uuid)],
) -> Result<Option<Vec<f32>>> {
    let Some((_, kind, loaded)) = scorer.cache.current(pool, scorer.store, project_id).await?
    else {
        return Ok(None);
    };
    let mut ids: Vec<Uuid> = pairs.iter().flat_map(|&(a, b)| [a, b]).collect();
    ids.sort();
    ids.dedup();
    let rows = data::rollouts(pool, project_id, &ids).await?;
    let scores = match &*loaded {
        Loaded::Mlp(_) => {
            let inputs: HashMap<Uuid, Vec<f32>> = rows
                .values()
                .filter_map(|r| Some((r.id, data::vector(kind, r)?)))
                .filter(|(_, v)| !matches!(kind, ModelKind::Features(d) if v.len() != d))
                .collect();
            in_blocking(loaded, pairs, inputs, |l, p| match l {
                Loaded::Mlp(m) => m.disagreement(p),
                Loaded::Clip(_) => unreachable!("matched above"),
            })
            .await?
        }
        Loaded::Clip(_) => {
            let clips = data::clips_of(pool, rows.values()).await?;
            let inputs: HashMap<Uuid, crate::ml::Clip> = rows
                .values()
                .filter_map(|r| Some((r.id, clips.get(r.clip_sha256.as_ref()?)?.clone())))
                .collect();
            in_blocking(loaded, pairs, inputs, |l, p| match l {
                Loaded::Clip(m) => m.disagreement(p),
                Loaded::Mlp(_) => unreachable!("matched above"),
            })
            .await?
        }
    };
    Ok(Some(scores))
}

/// One network's disagreement over pairs of its inputs.
type Disagreement<I> = fn(&Loaded, &[(&I, &I)]) -> crate::ml::Result<Vec<f32>>;

/// [`score_with`] on a blocking thread: inference is CPU-bound.
async fn in_blocking<I: Send + Sync + 'static>(
    loaded: Arc<Loaded>,
    pairs: &[(Uuid, Uuid)],
    inputs: HashMap<Uuid, I>,
    f: Disagreement<I>,
) -> Result<Vec<f32>> {
    let pairs = pairs.to_vec();
    let scores =
        tokio::task::spawn_blocking(move || score_with(&pairs, &inputs, |p| f(&loaded, p)))
            .await
            .map_err(anyhow::Error::from)??;
    Ok(scores)
}

/// Score the pairs whose both inputs exist (in one batch); the rest get 0.
fn score_with<I, E: Into<anyhow::Error>>(
    pairs: &[(Uuid, Uuid)],
    inputs: &HashMap<Uuid, I>,
    f: impl Fn(&[(&I, &I)]) -> std::result::Result<Vec<f32>, E>,
) -> anyhow::Result<Vec<f32>> {
    let readable: Vec<(usize, (&I, &I))> = pairs
        .iter()
        .enumerate()
        .filter_map(|(k, (a, b))| Some((k, (inputs.get(a)?, inputs.get(b)?))))
        .collect();
    let mut out = vec![0.0; pairs.len()];
    if readable.is_empty() {
        return Ok(out);
    }
    let batch: Vec<(&I, &I)> = readable.iter().map(|&(_, p)| p).collect();
    for ((k, _), s) in readable.iter().zip(f(&batch).map_err(Into::into)?) {
        out[*k] = if s.is_finite() { s } else { 0.0 };
    }
    Ok(out)
}

/// Highest score priority: a disagreement (a variance of probabilities) is at most 1.
pub const MAX_SCORED: i32 = 1_000_001;

/// Priority of coverage pairs in a scored queue: above every scored pair, so
/// rollouts nobody has seen yet are asked about first.
pub const COVERAGE: i32 = MAX_SCORED + 1;

/// A disagreement as a queue priority: higher first, always above the 0 of
/// pairs generated at random or imported.
pub fn priority(disagreement: f32) -> i32 {
    1 + (disagreement.clamp(0.0, 1.0) * 1_000_000.0) as i32
}
