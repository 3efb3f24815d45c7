//! The figures of a quality report, as the pages and the JSON API show them, and the
//! judgment and rater rows the report is computed from.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::detectors::{Drift, Proportion, Tested, Timing};

/// One judgment with what the report needs about it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Obs {
    pub assignment: Uuid,
    /// For a repeat: the earlier assignment it repeats.
    pub repeat_of: Option<Uuid>,
    pub rater: Uuid,
    pub pair: Uuid,
    /// Canonical: a, b, tie, cant_tell.
    pub choice: String,
    /// As pressed: left, right, tie, cant_tell.
    pub displayed: String,
    /// regular, gold or repeat.
    pub kind: String,
    pub duration_ms: Option<i32>,
    pub before_clip_end: Option<bool>,
    pub at: OffsetDateTime,
    /// The pair's gold answer (a, b or tie), if it is gold.
    pub gold: Option<String>,
    /// Character lengths of the two texts (None for clips).
    pub len_a: Option<i32>,
    pub len_b: Option<i32>,
}

/// A rater as the report lists them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RaterInfo {
    pub id: Uuid,
    pub name: String,
    pub excluded: bool,
    pub paused: bool,
}

/// Inter-rater agreement over pairs with at least two answers (a, b or tie).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agreement {
    /// Pairs with two or more answers.
    pub pairs: usize,
    pub percent: Option<f64>,
    pub fleiss_kappa: Option<f64>,
    pub krippendorff_alpha: Option<f64>,
}

/// Why a rater is flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Flag {
    /// low_gold_accuracy, position_bias, too_fast, low_agreement
    pub code: String,
    pub reason: String,
}

/// One rater's figures.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RaterQuality {
    pub id: Uuid,
    pub name: String,
    pub excluded: bool,
    pub paused: bool,
    /// First answers (repeats not counted).
    pub judgments: usize,
    /// Agreement with the majority of the other raters on the same pair (pairs where the others
    /// tie for first are skipped).
    pub majority_agreement: Proportion,
    pub gold_accuracy: Proportion,
    /// Repeats answered the same way as the first time (in canonical terms, sides swapped).
    pub self_consistency: Proportion,
    pub position: Tested,
    /// Text projects: share choosing the longer text, against the project's level.
    pub length: Option<Tested>,
    pub ties: Proportion,
    pub cant_tell: Proportion,
    pub timing: Timing,
    /// Majority agreement in the first and second half of each session.
    pub session_drift: Drift,
    /// Majority agreement on the first and second half of the days worked.
    pub day_drift: Drift,
    /// Dawid–Skene: probability of giving the true answer on a random pair.
    pub reliability: Option<f64>,
    pub flags: Vec<Flag>,
}

/// Cohen's kappa of two raters over the pairs both answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PairAgreement {
    pub a: String,
    pub b: String,
    pub shared: usize,
    pub agreement: Option<f64>,
    pub kappa: Option<f64>,
}

/// A pair's counted answers: in `split_pairs` when raters split, in `majority_pairs` when a or b
/// has a strict majority.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SplitPair {
    pub pair: Uuid,
    pub a: usize,
    pub b: usize,
    pub tie: usize,
}

/// A wrong answer to a gold pair.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GoldFailure {
    pub pair: Uuid,
    pub assignment: Uuid,
    pub rater: String,
    pub gold: String,
    pub choice: String,
}

/// Everything the quality pages and `GET /quality` show.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectQuality {
    pub judgments: usize,
    pub agreement: Agreement,
    pub position: Tested,
    pub length: Option<Tested>,
    pub ties: Proportion,
    pub cant_tell: Proportion,
    pub gold_accuracy: Proportion,
    pub self_consistency: Proportion,
    pub timing: Timing,
    /// Dawid–Skene's estimate of how often each true answer (a, b, tie) occurs.
    pub class_priors: Vec<f64>,
    pub raters: Vec<RaterQuality>,
    pub rater_pairs: Vec<PairAgreement>,
    pub split_pairs: Vec<SplitPair>,
    pub gold_failures: Vec<GoldFailure>,
    /// The latest pairs (at most 500, newest answer first) with a strict a-or-b majority of at
    /// least two counted answers: what the error dashboard checks against the current reward
    /// model.
    #[serde(default)]
    pub majority_pairs: Vec<SplitPair>,
}
