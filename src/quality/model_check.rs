//! Pairs where the current reward model confidently disagrees with the raters' consensus:
//! candidate rater errors, or model errors, for the error dashboard.

use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

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
/// Pairs checked per request (two rollouts each, within the scorer's limit).
const MAX_PAIRS: i64 = 500;

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

/// Pairs with a strict a-or-b majority among at least two counted first answers, checked
/// against the current model (the most recent `MAX_PAIRS`). None when there is no model yet.
pub async fn disagreements(
    pool: &PgPool,
    store: &ClipStore,
    cache: &ModelCache,
    project: &Project,
) -> Result<Option<Vec<ModelDisagreement>>> {
    // Without a model there is nothing to check: ask before aggregating every judgment.
    let has_model: bool =
        sqlx::query_scalar("select current_model is not null from projects where id = $1")
            .bind(project.id)
            .fetch_one(pool)
            .await?;
    if !has_model {
        return Ok(None);
    }
    let rows: Vec<(Uuid, Uuid, Uuid, i64, i64, i64)> = sqlx::query_as(
        "select c.id, c.rollout_a, c.rollout_b,
                count(*) filter (where j.choice = 'a'), count(*) filter (where j.choice = 'b'),
                count(*)
         from judgments j
         join comparisons c on c.id = j.comparison_id
         left join project_members m on m.project_id = j.project_id and m.user_id = j.rater_id
         where j.project_id = $1 and j.kind <> 'repeat' and m.excluded_at is null
           and j.choice in ('a', 'b', 'tie')
         group by c.id
         having count(*) >= 2
            and greatest(count(*) filter (where j.choice = 'a'),
                         count(*) filter (where j.choice = 'b')) * 2 > count(*)
         order by max(j.created_at) desc limit $2",
    )
    .bind(project.id)
    .bind(MAX_PAIRS)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(Some(vec![]));
    }
    let rollouts = rows
        .iter()
        .flat_map(|r| [r.1, r.2])
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
    for (r, pair) in rows.iter().zip(scored.rewards.chunks(2)) {
        let (id, _, _, na, nb, n) = *r;
        let (consensus, votes, p) = verdict(na, nb, pair[0].mean, pair[1].mean);
        if p <= CONFIDENT {
            out.push(ModelDisagreement {
                pair: id,
                consensus: consensus.into(),
                votes,
                answers: n,
                model_probability: p,
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
