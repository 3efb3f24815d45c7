//! Pairs where the current reward model confidently disagrees with the raters' consensus:
//! candidate rater errors, or model errors, for the error dashboard.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::figures::SplitPair;
use crate::{
    clips::ClipStore,
    error::{Error, Result},
    projects::Project,
    reward::{
        ModelCache,
        score::{self, ScoreInput, ScoreRequest},
    },
};

/// The model "confidently" disagrees when it gives the raters' choice at most this probability.
pub const CONFIDENT: f64 = 0.1;
/// Pairs checked per request: the report keeps this many majority pairs (two rollouts each,
/// within the scorer's limit).
pub const CHECKED_PAIRS: usize = 500;

/// A pair the model and the raters see differently.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelDisagreement {
    pub pair: Uuid,
    /// The raters' majority: a or b.
    pub consensus: String,
    /// Answers for the majority, of all counted first answers.
    pub votes: i64,
    pub answers: i64,
    /// The model's P(consensus side preferred) = sigmoid of the reward difference.
    pub model_probability: f64,
}

/// The report's majority pairs (`ProjectQuality::majority_pairs`: the latest pairs with a
/// strict a-or-b majority of at least two counted answers) checked against the current model,
/// most confident disagreement first. None when there is no model yet. One query for the
/// pairs' rollouts and one scoring call: no aggregate over the project's judgments, so a
/// stored report's check costs the same at a thousand judgments as at a million.
pub async fn disagreements(
    pool: &PgPool,
    store: &ClipStore,
    cache: &ModelCache,
    project: &Project,
    majority: &[SplitPair],
) -> Result<Option<Vec<ModelDisagreement>>> {
    let has_model: bool =
        sqlx::query_scalar("select current_model is not null from projects where id = $1")
            .bind(project.id)
            .fetch_one(pool)
            .await?;
    if !has_model {
        return Ok(None);
    }
    let majority = &majority[..majority.len().min(CHECKED_PAIRS)];
    let ids: Vec<Uuid> = majority.iter().map(|p| p.pair).collect();
    let sides: HashMap<Uuid, (Uuid, Uuid)> = sqlx::query_as(
        "select id, rollout_a, rollout_b from comparisons where id = any($1) and project_id = $2",
    )
    .bind(&ids)
    .bind(project.id)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, a, b): (Uuid, Uuid, Uuid)| (id, (a, b)))
    .collect();
    let rows: Vec<(&SplitPair, (Uuid, Uuid))> = majority
        .iter()
        .filter_map(|p| Some((p, *sides.get(&p.pair)?)))
        .collect();
    if rows.is_empty() {
        return Ok(Some(vec![]));
    }
    let rollouts = rows
        .iter()
        .flat_map(|(_, (a, b))| [*a, *b])
        .map(|id| ScoreInput {
            text: None,
            features: None,
            rollout_id: Some(id),
        })
        .collect();
    let scored = match score::score(pool, store, cache, project, ScoreRequest { rollouts }).await {
        Ok(s) => s,
        Err(Error::Conflict {
            code: "no_model", ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = vec![];
    for ((p, _), pair) in rows.iter().zip(scored.rewards.chunks(2)) {
        let (na, nb) = (p.a as i64, p.b as i64);
        let (consensus, votes, prob) = verdict(na, nb, pair[0].mean, pair[1].mean);
        if prob <= CONFIDENT {
            out.push(ModelDisagreement {
                pair: p.pair,
                consensus: consensus.into(),
                votes,
                answers: (p.a + p.b + p.tie) as i64,
                model_probability: prob,
            });
        }
    }
    out.sort_by(|a, b| a.model_probability.total_cmp(&b.model_probability));
    Ok(Some(out))
}

/// The majority (a or b, given a strict majority), its votes, and the model's probability of
/// it: P(a ≻ b) = σ(reward_a − reward_b), the Bradley–Terry reading of the rewards.
fn verdict(na: i64, nb: i64, reward_a: f32, reward_b: f32) -> (&'static str, i64, f64) {
    let p_a = 1.0 / (1.0 + f64::from(reward_b - reward_a).exp());
    if na > nb {
        ("a", na, p_a)
    } else {
        ("b", nb, 1.0 - p_a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_probability_is_of_the_raters_choice() {
        // Raters 3-0 for a; the model gives b a reward 3 higher: P(a) = σ(-3) = 0.0474.
        let (c, votes, p) = verdict(3, 0, 0.0, 3.0);
        assert_eq!((c, votes), ("a", 3));
        assert!((p - 0.047_426).abs() < 1e-6 && p <= CONFIDENT);
        // Raters 1-2 for b, same rewards: the model agrees, P(b) = 0.9526.
        let (c, _, p) = verdict(1, 2, 0.0, 3.0);
        assert_eq!(c, "b");
        assert!((p - 0.952_574).abs() < 1e-6);
        // Equal rewards: a coin flip, never confident.
        assert_eq!(verdict(2, 0, 1.5, 1.5).2, 0.5);
    }
}
