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
        let p_a = 1.0 / (1.0 + f64::from(pair[1].mean - pair[0].mean).exp());
        let (consensus, votes, p) = if na > nb {
            ("a", na, p_a)
        } else {
            ("b", nb, 1.0 - p_a)
        };
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
