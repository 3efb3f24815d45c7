//! Training examples from a project's judgments.
//!
//! Canonical choice `a` → target 1 (rollout a preferred), `b` → 0, `tie` → ½;
//! `cant_tell` is dropped, and so are judgments of excluded raters and swapped
//! repeats (a rater's second answer to the same pair). Each example has weight
//! 1.0, or, when the project asks for it, its rater's reliability weight (see
//! `quality::weights`).

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

use super::{MAX_TRAINING_FRAMES, ModelKind};
use crate::ml::{Clip, Example, data::CLIP_SIDE, features};

/// One rollout's content, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RolloutContent {
    pub id: Uuid,
    pub body: Option<String>,
    pub clip_sha256: Option<String>,
    pub features: Option<serde_json::Value>,
}

/// A usable judgment: its pair, both rollouts, and the target P(a ≻ b).
#[derive(Debug, Clone)]
pub struct Labelled {
    pub comparison: Uuid,
    pub a: RolloutContent,
    pub b: RolloutContent,
    pub target: f32,
    /// The example's weight in the loss.
    pub weight: f32,
}

/// The judgments of a project that training uses.
pub async fn judgments(pool: &PgPool, project_id: Uuid) -> sqlx::Result<Vec<Labelled>> {
    type Row = (
        Uuid,
        String,
        Uuid,
        Option<String>,
        Option<String>,
        Option<serde_json::Value>,
        Uuid,
        Option<String>,
        Option<String>,
        Option<serde_json::Value>,
        Uuid,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select c.id, j.choice,
                ra.id, ra.body, ra.clip_sha256, ra.meta -> 'features',
                rb.id, rb.body, rb.clip_sha256, rb.meta -> 'features', j.rater_id
         from judgments j
         join comparisons c on c.id = j.comparison_id
         join rollouts ra on ra.id = c.rollout_a
         join rollouts rb on rb.id = c.rollout_b
         left join project_members m on m.project_id = j.project_id and m.user_id = j.rater_id
         where j.project_id = $1 and j.choice <> 'cant_tell' and m.excluded_at is null
           and j.kind <> 'repeat'
         order by j.created_at",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    let weights = crate::quality::weights::for_training(pool, project_id).await?;
    Ok(rows
        .into_iter()
        .map(
            |(comparison, choice, aid, abody, aclip, afeat, bid, bbody, bclip, bfeat, rater)| {
                Labelled {
                    comparison,
                    a: RolloutContent {
                        id: aid,
                        body: abody,
                        clip_sha256: aclip,
                        features: afeat,
                    },
                    b: RolloutContent {
                        id: bid,
                        body: bbody,
                        clip_sha256: bclip,
                        features: bfeat,
                    },
                    target: match choice.as_str() {
                        "a" => 1.0,
                        "b" => 0.0,
                        _ => 0.5,
                    },
                    weight: weights.as_ref().map_or(1.0, |w| w.get(&rater)),
                }
            },
        )
        .collect())
}

/// A rollout's own feature vector, if it carries a valid one.
pub fn own_features(r: &RolloutContent) -> Option<Vec<f32>> {
    let v = r.features.as_ref()?.as_array()?;
    let out: Option<Vec<f32>> = v.iter().map(|x| x.as_f64().map(|f| f as f32)).collect();
    out.filter(|f| !f.is_empty() && f.iter().all(|x| x.is_finite()))
}

/// Which model fits this project's data: clips for GIF projects; the rollouts'
/// own vectors when every rollout carries one of the same length; else text.
pub fn kind_for(media_kind: &str, rows: &[Labelled]) -> ModelKind {
    if media_kind == "gif" {
        return ModelKind::Clip;
    }
    let mut dims = rows
        .iter()
        .flat_map(|r| [&r.a, &r.b])
        .map(|r| own_features(r).map(|f| f.len()));
    match dims.next() {
        Some(Some(d)) if dims.all(|x| x == Some(d)) => ModelKind::Features(d),
        _ => ModelKind::Text,
    }
}

/// The vector an MLP reads for a rollout (features model or hashed text).
pub fn vector(kind: ModelKind, r: &RolloutContent) -> Option<Vec<f32>> {
    match kind {
        ModelKind::Features(_) => own_features(r),
        _ => r.body.as_deref().map(features::text_features),
    }
}

/// Examples for an MLP, keyed by their pair (for the held-out split).
pub fn vector_examples(kind: ModelKind, rows: &[Labelled]) -> Vec<(Uuid, Example<Vec<f32>>)> {
    rows.iter()
        .filter_map(|r| {
            let (a, b) = (vector(kind, &r.a)?, vector(kind, &r.b)?);
            Some((
                r.comparison,
                Example {
                    left: a,
                    right: b,
                    target: r.target,
                    weight: r.weight,
                },
            ))
        })
        .collect()
}

/// Stored rollouts of a project by id, as a model reads them (one query, any number of ids;
/// ids of other projects' rollouts are not found).
pub async fn rollouts(
    pool: &PgPool,
    project_id: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, RolloutContent>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<RolloutContent> = sqlx::query_as(
        "select id, body, clip_sha256, meta -> 'features' as features from rollouts
         where id = any($1) and project_id = $2",
    )
    .bind(ids)
    .bind(project_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r)).collect())
}

/// [`clips`] of every clip rollout among `rollouts`, each clip read once.
pub async fn clips_of<'a>(
    pool: &PgPool,
    rollouts: impl Iterator<Item = &'a RolloutContent>,
) -> sqlx::Result<HashMap<String, Clip>> {
    let mut shas: Vec<String> = rollouts.filter_map(|r| r.clip_sha256.clone()).collect();
    shas.sort();
    shas.dedup();
    clips(pool, &shas).await
}

/// Decoded training frames of clips, by sha256, at most `MAX_TRAINING_FRAMES` each.
pub async fn clips(pool: &PgPool, shas: &[String]) -> sqlx::Result<HashMap<String, Clip>> {
    let rows: Vec<(String, i32, i32, Vec<u8>)> = sqlx::query_as(
        "select sha256, frame_count, frame_side, frames from clip_blobs where sha256 = any($1)",
    )
    .bind(shas)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(sha, count, side, frames)| {
            (side as usize == CLIP_SIDE).then_some(())?;
            training_clip(count as usize, &frames).map(|c| (sha, c))
        })
        .collect())
}

/// Evenly spaced frames, at most `MAX_TRAINING_FRAMES`, as a model input.
pub fn training_clip(count: usize, frames: &[u8]) -> Option<Clip> {
    let n = CLIP_SIDE * CLIP_SIDE;
    if count == 0 || frames.len() != count * n {
        return None;
    }
    let keep = count.min(MAX_TRAINING_FRAMES);
    let mut pixels = Vec::with_capacity(keep * n);
    for k in 0..keep {
        let t = k * count / keep;
        pixels.extend_from_slice(&frames[t * n..(t + 1) * n]);
    }
    Clip::new(keep, pixels).ok()
}

/// Examples for the clip model.
pub fn clip_examples(
    rows: &[Labelled],
    clips: &HashMap<String, Clip>,
) -> Vec<(Uuid, Example<Clip>)> {
    rows.iter()
        .filter_map(|r| {
            let a = clips.get(r.a.clip_sha256.as_ref()?)?.clone();
            let b = clips.get(r.b.clip_sha256.as_ref()?)?.clone();
            Some((
                r.comparison,
                Example {
                    left: a,
                    right: b,
                    target: r.target,
                    weight: r.weight,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_are_subsampled_evenly() {
        let n = CLIP_SIDE * CLIP_SIDE;
        let frames: Vec<u8> = (0..50u8).flat_map(|t| std::iter::repeat_n(t, n)).collect();
        let clip = training_clip(50, &frames).unwrap();
        assert_eq!(clip.frames(), 25);
        assert_eq!(clip.frame(1)[0], 2);
        assert_eq!(clip.frame(24)[0], 48);
        assert!(training_clip(3, &frames).is_none(), "length must match");
    }

    #[test]
    fn a_features_model_needs_vectors_on_every_rollout() {
        let r = |f: Option<serde_json::Value>| RolloutContent {
            id: Uuid::nil(),
            body: Some("x".into()),
            clip_sha256: None,
            features: f,
        };
        let row = |a, b| Labelled {
            comparison: Uuid::nil(),
            a: r(a),
            b: r(b),
            target: 1.0,
            weight: 1.0,
        };
        let v = Some(serde_json::json!([0.1, 0.2]));
        assert_eq!(
            kind_for("text", &[row(v.clone(), v.clone())]),
            ModelKind::Features(2)
        );
        assert_eq!(kind_for("text", &[row(v.clone(), None)]), ModelKind::Text);
        assert_eq!(
            kind_for("text", &[row(v.clone(), Some(serde_json::json!([1.0])))]),
            ModelKind::Text
        );
        assert_eq!(kind_for("gif", &[]), ModelKind::Clip);
    }
}
