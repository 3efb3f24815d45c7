//! Rater weights for reliability-weighted preferences, and where they came from.
//!
//! The weights are those reliability-weighted training uses
//! (`quality::weights::Weights::from_report`): the project's quality report fits
//! Dawid–Skene to every first answer (a, b or tie) in the project, and each
//! rater's reliability is rescaled to (reliability − chance) / (1 − chance),
//! clamped to [0.05, 1]. They are computed once, before the export streams, over
//! the whole project (not only the rows the filters keep), so one rater weighs
//! the same in every export made at the same time.

use std::collections::HashMap;

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Plan, pseudonym};
use crate::quality::{
    stats::{self, Rating},
    weights::{MIN_WEIGHT, Weights, reliability_weight},
};

/// One rater's weight, as the manifest and the card list it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RaterWeight {
    /// Pseudonym (default) or login name, as the export names raters.
    pub rater: String,
    /// Dawid–Skene reliability (probability of giving the true answer); none when
    /// the model had no answer of theirs.
    pub reliability: Option<f64>,
    pub weight: f32,
}

/// How a preference export aggregated votes (the manifest's `aggregation`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AggregationInfo {
    /// majority or reliability.
    #[schema(value_type = String)]
    pub method: &'static str,
    /// Where the weights came from (reliability only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights_source: Option<String>,
    /// Dawid–Skene class priors of a, b, tie; "chance" is the largest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub class_priors: Vec<f64>,
    /// Every rater's weight, by name; raters not listed weigh 1.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub raters: Vec<RaterWeight>,
}

impl AggregationInfo {
    pub fn majority() -> Self {
        AggregationInfo {
            method: "majority",
            weights_source: None,
            class_priors: vec![],
            raters: vec![],
        }
    }
}

/// The weights the aggregation applies, by rater id, with their provenance.
#[derive(Debug, Clone)]
pub struct RaterWeights {
    pub weights: Weights,
    pub info: AggregationInfo,
}

/// Every rater's first answers (a, b, tie) in the project, excluded raters included:
/// the ratings the quality report fits Dawid–Skene to (`report::Index::ratings`).
const RATINGS_SQL: &str = "select j.comparison_id, j.rater_id, j.choice from judgments j
     where j.project_id = $1 and j.kind <> 'repeat' and j.choice <> 'cant_tell'
     order by j.created_at, j.id";

/// Fit Dawid–Skene to the project's answers as the quality report does, and turn the
/// reliabilities into the weights training uses. Only the ratings are held (three
/// integers each), not the report's per-judgment detail.
pub async fn load(pool: &PgPool, plan: &Plan) -> anyhow::Result<RaterWeights> {
    let mut items = HashMap::new();
    let mut raters: HashMap<Uuid, usize> = HashMap::new();
    let mut ratings = Vec::new();
    let mut rows = sqlx::query_as::<_, (Uuid, Uuid, String)>(RATINGS_SQL)
        .bind(plan.project.id)
        .fetch(pool);
    while let Some((pair, rater, choice)) = rows.try_next().await? {
        let category = match choice.as_str() {
            "a" => 0,
            "b" => 1,
            _ => 2,
        };
        let n = items.len();
        let item = *items.entry(pair).or_insert(n);
        let n = raters.len();
        let rater = *raters.entry(rater).or_insert(n);
        ratings.push(Rating {
            item,
            rater,
            category,
        });
    }
    drop(items);
    let ds = stats::dawid_skene(&ratings, 3, 100, 1e-6);
    drop(ratings);
    let priors = ds.as_ref().map(|d| d.priors.clone()).unwrap_or_default();
    let chance = priors.iter().copied().fold(0.0, f64::max);
    let names: HashMap<Uuid, String> =
        sqlx::query_as::<_, (Uuid, String)>("select id, name from users where id = any($1)")
            .bind(raters.keys().copied().collect::<Vec<_>>())
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let mut by_id = HashMap::new();
    let mut listed = Vec::new();
    for (id, index) in &raters {
        let reliability = ds
            .as_ref()
            .and_then(|d| d.rater_accuracy.get(index).copied());
        let weight = reliability.map_or(1.0, |r| reliability_weight(r, chance));
        by_id.insert(*id, weight);
        listed.push(RaterWeight {
            rater: if plan.args.real_identities {
                names.get(id).cloned().unwrap_or_else(|| id.to_string())
            } else {
                pseudonym(plan.salt, *id)
            },
            reliability,
            weight,
        });
    }
    listed.sort_by(|a, b| a.rater.cmp(&b.rater));
    let info = AggregationInfo {
        method: "reliability",
        weights_source: Some(format!(
            "Dawid–Skene (as in Backflip's rater-quality report) fitted at export time to every \
             rater's first answers (a, b, tie) in the whole project, whatever the export's filters; \
             weight = (reliability − chance) / (1 − chance) clamped to [{MIN_WEIGHT}, 1], chance = \
             the largest class prior ({chance:.3}); raters without an estimate weigh 1; the \
             weighting reliability-weighted training uses"
        )),
        class_priors: priors,
        raters: listed,
    };
    Ok(RaterWeights {
        weights: Weights::from_map(by_id),
        info,
    })
}
