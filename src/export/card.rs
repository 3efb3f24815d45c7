//! The manifest (what was exported, how, and the sha256 of each file) and the
//! `README.md` dataset card (instructions, answer options, counts, agreement).

use std::collections::HashMap;

use serde::Serialize;
use sqlx::PgPool;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use super::{Plan, rows, stream::Summary, weights::AggregationInfo};
use crate::quality::stats::{self, Rating};

/// Agreement statistics are computed on at most this many judgments (the
/// statistics hold every rating in memory; the card says when it sampled).
pub const STATS_SAMPLE: i64 = 200_000;

/// Counts and agreement of the judgments the filters keep.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CardStats {
    pub judgments: i64,
    pub pairs: i64,
    pub raters: i64,
    /// Judgments whose answer was a, b or tie (those the statistics use).
    pub rated: usize,
    /// Whether the statistics used only the first STATS_SAMPLE judgments (by pair).
    pub sampled: bool,
    pub percent_agreement: Option<f64>,
    pub fleiss_kappa: Option<f64>,
    pub krippendorff_alpha: Option<f64>,
}

/// Counts over the filtered judgments.
const COUNTS_SQL: &str = concat!(
    "select count(*), count(distinct j.comparison_id), count(distinct j.rater_id)",
    judgment_joins!(),
    judgment_filters!()
);

/// The filtered judgments by pair, for the agreement statistics.
const RATINGS_SQL: &str = concat!(
    "select j.comparison_id, j.rater_id, j.choice",
    judgment_joins!(),
    judgment_filters!(),
    " and j.choice <> 'cant_tell' order by c.seq limit 200000"
);

pub async fn stats(pool: &PgPool, plan: &Plan) -> sqlx::Result<CardStats> {
    let (judgments, pairs, raters): (i64, i64, i64) =
        rows::bind_filters(sqlx::query_as(COUNTS_SQL), plan)
            .fetch_one(pool)
            .await?;
    let ratings: Vec<(Uuid, Uuid, String)> = rows::bind_filters(sqlx::query_as(RATINGS_SQL), plan)
        .fetch_all(pool)
        .await?;
    let mut items = HashMap::new();
    let mut people = HashMap::new();
    let ratings: Vec<Rating> = ratings
        .iter()
        .map(|(pair, rater, choice)| {
            let n = items.len();
            let item = *items.entry(*pair).or_insert(n);
            let n = people.len();
            let rater = *people.entry(*rater).or_insert(n);
            let category = match choice.as_str() {
                "a" => 0,
                "b" => 1,
                _ => 2,
            };
            Rating {
                item,
                rater,
                category,
            }
        })
        .collect();
    Ok(CardStats {
        judgments,
        pairs,
        raters,
        rated: ratings.len(),
        sampled: ratings.len() as i64 >= STATS_SAMPLE,
        percent_agreement: stats::percent_agreement(&ratings),
        fleiss_kappa: stats::fleiss_kappa(&ratings, 3),
        krippendorff_alpha: stats::krippendorff_alpha_nominal(&ratings, 3),
    })
}

/// One file of an export.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, utoipa::ToSchema)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Manifest {
    #[schema(value_type = String)]
    pub backflip_version: &'static str,
    /// RFC 3339.
    pub created_at: String,
    pub project: String,
    #[schema(value_type = String)]
    pub format: &'static str,
    /// The filters as applied (dates resolved, defaults filled in).
    #[schema(value_type = Object)]
    pub filters: serde_json::Value,
    /// Data rows written (judgments or pairs).
    pub rows: u64,
    /// Preference pairs left out, by reason.
    #[schema(value_type = Object)]
    pub dropped: serde_json::Value,
    /// Preference formats: the aggregation method and, for reliability, the
    /// weights' source and every rater's weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<AggregationInfo>,
    pub stats: CardStats,
    /// The data file, the card, and (bundles) the clips, with their sha256.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn new(plan: &Plan, summary: &Summary, stats: &CardStats, files: Vec<FileEntry>) -> Self {
        Manifest {
            backflip_version: env!("CARGO_PKG_VERSION"),
            created_at: OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
            project: plan.project.slug.clone(),
            format: plan.args.format.as_str(),
            filters: plan.filters_json(),
            rows: summary.rows,
            dropped: serde_json::to_value(&summary.dropped).unwrap_or_default(),
            aggregation: summary.aggregation.clone(),
            stats: stats.clone(),
            files,
        }
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.3}"))
}

/// The dataset card.
pub fn readme(plan: &Plan, summary: &Summary, s: &CardStats, data_file: &str) -> String {
    let p = &plan.project;
    let f = plan.args.format;
    let mut out = format!("# {} — Backflip export\n\n", p.name);
    out += &format!(
        "Project `{}` ({} pairs), exported as `{}` into `{data_file}` by Backflip {} at {}.\n\n",
        p.slug,
        p.media_kind,
        f.as_str(),
        env!("CARGO_PKG_VERSION"),
        OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default()
    );
    out += "## Contents\n\n";
    if f.is_preferences() {
        let reliability = summary
            .aggregation
            .as_ref()
            .filter(|a| a.method == "reliability");
        out += &format!(
            "{} preference rows (one per pair: `prompt`, `chosen`, `rejected`, votes, \
             `agreement`, `margin`; aggregation: {}).\n",
            summary.rows,
            if reliability.is_some() {
                "reliability-weighted vote, `aggregation` = `reliability`"
            } else {
                "majority vote, `aggregation` = `majority`"
            }
        );
        for (why, n) in &summary.dropped {
            out += &format!("- left out: {n} pair(s), {why:?}\n");
        }
        if let Some(a) = reliability {
            out += &format!(
                "\n### Rater weights\n\nEach vote counts its rater's weight; `agreement` and `margin` \
                 are shares of the vote weight, the `votes_*` columns stay counts. Weights: {}.\n\n\
                 | rater | reliability | weight |\n|---|---|---|\n",
                a.weights_source.as_deref().unwrap_or("")
            );
            for r in &a.raters {
                out += &format!(
                    "| {} | {} | {:.3} |\n",
                    r.rater,
                    num(r.reliability),
                    r.weight
                );
            }
        }
    } else {
        out += &format!("{} judgments, one row each.\n", summary.rows);
    }
    out += &format!(
        "\nThe filters kept {} judgments of {} pairs by {} raters. Raters are named {}.\n\n",
        s.judgments,
        s.pairs,
        s.raters,
        if plan.args.real_identities {
            "by login name"
        } else {
            "by a per-project pseudonym (`r-` + 12 hex digits), stable across this project's exports"
        }
    );
    out += &format!(
        "Filters: `{}`\n\n",
        serde_json::to_string(&plan.filters_json()).unwrap_or_default()
    );
    out += "## Agreement\n\n";
    out += &format!(
        "Over {} answers of a, b or tie{}:\n\n\
         | statistic | value |\n|---|---|\n\
         | pairwise percent agreement | {} |\n| Fleiss' kappa | {} |\n| Krippendorff's alpha (nominal) | {} |\n\n",
        s.rated,
        if s.sampled {
            " (the first 200,000 by pair: a sample)"
        } else {
            ""
        },
        num(s.percent_agreement),
        num(s.fleiss_kappa),
        num(s.krippendorff_alpha)
    );
    out += "## Answer options\n\n";
    for o in &p.options {
        let meaning = match o.as_str() {
            "left" | "right" => {
                "the rollout shown on that side is better (recorded in canonical a/b terms)"
            }
            "tie" => "equally good",
            _ => "can't tell (not counted as a vote)",
        };
        out += &format!("- `{o}`: {meaning}\n");
    }
    if let Some(scale) = p.strength_scale {
        out += &format!("\nStrength of preference: 1 to {scale}.\n");
    }
    out += &format!("\nRationale: {}.\n\n", p.rationale);
    out += "## Instructions the raters saw\n\n";
    out += if p.instructions.trim().is_empty() {
        "(none)"
    } else {
        &p.instructions
    };
    out += "\n\n## Notes\n\n\
        - Gold pairs are left out unless `include_gold`; raw rows mark a rater's side-swapped repeat of a pair with `repeat`, and preferences count only first answers.\n\
        - Judgments of raters a lead excluded are left out unless `include_excluded`.\n\
        - Schemas: see Backflip's README, section \"Export formats\". `manifest.json` lists the sha256 of every file.\n";
    out
}
