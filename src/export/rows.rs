//! The rows of each format, the SQL that reads them, and vote aggregation
//! (majority or reliability-weighted).
//!
//! The queries share one filter clause (`judgment_filters!` in `mod.rs`).

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Plan;

/// Bind the filter parameters $1..$7 of `judgment_filters!` in order.
pub fn bind_filters<'q, O>(
    q: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    plan: &'q Plan,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    bind_filters!(q, plan)
}

/// One judgment (raw-jsonl and csv). Field order is the column order.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RawRow {
    pub judgment_id: Uuid,
    pub pair_id: Uuid,
    pub external_id: Option<String>,
    pub prompt: String,
    pub a_id: Uuid,
    pub a_text: Option<String>,
    /// `clips/<sha256>.gif`: the path in a bundle, and `GET /api/v1/clips/<sha256>`.
    pub a_clip: Option<String>,
    pub a_policy: Option<String>,
    pub b_id: Uuid,
    pub b_text: Option<String>,
    pub b_clip: Option<String>,
    pub b_policy: Option<String>,
    /// Canonical: a, b, tie, cant_tell (already resolved from the side shown).
    pub choice: String,
    /// The rollout the rater preferred (null for tie and can't tell).
    pub preferred_id: Option<Uuid>,
    /// Which rollout was shown on the left: a or b.
    pub shown_left: String,
    /// What the rater pressed: left, right, tie, cant_tell.
    pub displayed_choice: String,
    pub strength: Option<i32>,
    pub rationale: Option<String>,
    pub content_flag: bool,
    pub flag_reason: Option<String>,
    pub duration_ms: Option<i32>,
    pub replays: Option<i32>,
    pub answered_before_clip_end: Option<bool>,
    #[serde(skip)]
    pub rater_id: Uuid,
    /// Pseudonym (default) or login name.
    #[sqlx(skip)]
    pub rater: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub gold: bool,
    /// A rater's second, side-swapped answer to a pair they judged before (a
    /// test–retest check): left out of preferences, kept here and marked.
    pub repeat: bool,
}

/// Judgments by pair in import order, then by time (and id: a total order, so
/// two exports of the same data are byte-identical). With the planner settings
/// in `stream::snapshot` this is an index walk over the pairs with nested-loop
/// lookups, which streams in order without sorting the wide rows.
pub const RAW_SQL: &str = concat!(
    "select j.id as judgment_id, c.id as pair_id, c.external_id, c.prompt,
        ra.id as a_id, ra.body as a_text, 'clips/' || ra.clip_sha256 || '.gif' as a_clip, ra.policy as a_policy,
        rb.id as b_id, rb.body as b_text, 'clips/' || rb.clip_sha256 || '.gif' as b_clip, rb.policy as b_policy,
        j.choice, case j.choice when 'a' then ra.id when 'b' then rb.id end as preferred_id,
        case when j.left_is_a then 'a' else 'b' end as shown_left, j.displayed_choice,
        j.strength, j.rationale, j.content_flag, j.flag_reason, j.duration_ms, j.replays,
        j.answered_before_clip_end, j.rater_id, j.created_at, c.gold is not null as gold,
        j.kind = 'repeat' as repeat",
    judgment_joins!(),
    judgment_filters!(),
    " order by c.seq, j.created_at, j.id"
);

/// A pair's votes after the filters, with its rollouts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PairVotes {
    pub pair_id: Uuid,
    pub external_id: Option<String>,
    pub prompt: String,
    pub a_id: Uuid,
    /// Text, or `clips/<sha256>.gif`.
    pub a_content: String,
    pub a_policy: Option<String>,
    pub b_id: Uuid,
    pub b_content: String,
    pub b_policy: Option<String>,
    pub a: i32,
    pub b: i32,
    pub tie: i32,
    pub cant_tell: i32,
    pub raters: i32,
    pub gold: bool,
    /// Each judgment's rater and canonical answer (PAIRS_VOTERS_SQL only).
    #[sqlx(default)]
    pub voters: Vec<Uuid>,
    #[sqlx(default)]
    pub choices: Vec<String>,
}

/// Pairs in import order with their vote counts: the same ordered walk as the
/// raw rows, grouped as it goes (a group aggregate over presorted input, no
/// hash table of all pairs). A rater judges a pair at most once (the
/// assignments' unique index), so `raters` is the judgment count. `$extra`:
/// more aggregate columns.
macro_rules! pairs_sql {
    ($extra:literal) => {
        concat!(
            "select c.id as pair_id, c.external_id, c.prompt,
                ra.id as a_id, coalesce(ra.body, 'clips/' || ra.clip_sha256 || '.gif') as a_content, ra.policy as a_policy,
                rb.id as b_id, coalesce(rb.body, 'clips/' || rb.clip_sha256 || '.gif') as b_content, rb.policy as b_policy,
                (count(*) filter (where j.choice = 'a'))::int as a,
                (count(*) filter (where j.choice = 'b'))::int as b,
                (count(*) filter (where j.choice = 'tie'))::int as tie,
                (count(*) filter (where j.choice = 'cant_tell'))::int as cant_tell,
                count(*)::int as raters, c.gold is not null as gold",
            $extra,
            judgment_joins!(),
            judgment_filters!(),
            // A rater's swapped repeat of a pair is a consistency check, not a second vote.
            " and j.kind <> 'repeat'",
            " group by c.seq, c.id, ra.id, rb.id order by c.seq"
        )
    };
}

/// Pairs with vote counts (majority).
pub const PAIRS_SQL: &str = pairs_sql!("");

/// Pairs with vote counts and who voted what (reliability-weighted): a pair's few
/// raters and answers as two arrays.
pub const PAIRS_VOTERS_SQL: &str =
    pairs_sql!(", array_agg(j.rater_id) as voters, array_agg(j.choice) as choices");

/// One pair's aggregated preference (preferences-jsonl, -parquet, bundle).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefRow {
    pub pair_id: Uuid,
    pub external_id: Option<String>,
    pub prompt: String,
    /// Text of the preferred rollout, or its clip path `clips/<sha256>.gif`.
    pub chosen: String,
    pub rejected: String,
    pub chosen_id: Uuid,
    pub rejected_id: Uuid,
    pub chosen_policy: Option<String>,
    pub rejected_policy: Option<String>,
    /// a or b (which stored rollout won), tie, or split (a and b equal).
    pub winner: &'static str,
    /// majority or reliability.
    pub aggregation: &'static str,
    /// Votes counted: a + b + tie (can't-tell is not a vote).
    pub votes: i32,
    pub votes_chosen: i32,
    pub votes_rejected: i32,
    pub votes_tie: i32,
    pub votes_cant_tell: i32,
    pub raters: i32,
    /// Share of the votes (of the vote weight, reliability) for the winning answer.
    pub agreement: f64,
    /// (votes_chosen - votes_rejected) / votes, in vote weight for reliability;
    /// 0 for ties and splits.
    pub margin: f64,
    pub gold: bool,
}

/// Why a pair left the preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    /// Only can't-tell answers.
    NoVotes,
    TooFewVotes,
    LowAgreement,
    Tie,
    Split,
}

/// A vote's weight: 1 each (majority), or the rater's reliability weight.
pub type VoteWeights<'a> = Option<&'a crate::quality::weights::Weights>;

/// Weighted vote over a, b and tie (every weight 1 for majority). A strict
/// winner among the three decides; a and b level at the top is a split; tie
/// alone at the top is a tie. `agreement` and `margin` are shares of the vote
/// weight; the vote counts stay counts; `min_votes` counts votes.
pub fn aggregate(v: PairVotes, plan: &Plan, weights: VoteWeights) -> Result<PrefRow, Dropped> {
    let votes = v.a + v.b + v.tie;
    if votes == 0 {
        return Err(Dropped::NoVotes);
    }
    if (votes as u32) < plan.min_votes {
        return Err(Dropped::TooFewVotes);
    }
    let (wa, wb, wt) = match weights {
        None => (v.a as f64, v.b as f64, v.tie as f64),
        Some(w) => {
            let mut sums = [0.0f64; 3];
            for (rater, choice) in v.voters.iter().zip(&v.choices) {
                let slot = match choice.as_str() {
                    "a" => 0,
                    "b" => 1,
                    "tie" => 2,
                    _ => continue,
                };
                sums[slot] += f64::from(w.get(rater));
            }
            (sums[0], sums[1], sums[2])
        }
    };
    let total = wa + wb + wt;
    let top = wa.max(wb).max(wt);
    // Equal up to rounding (weights are f32 sums; counts compare exactly).
    let level = |x: f64| (top - x).abs() <= 1e-9 * total;
    let winner = if level(wa) && level(wb) {
        "split"
    } else if level(wa) && !level(wt) {
        "a"
    } else if level(wb) && !level(wt) {
        "b"
    } else if level(wt) && !level(wa) && !level(wb) {
        "tie"
    } else {
        // The tie answer level with a or b at the top: no majority either way.
        "split"
    };
    let agreement = top / total;
    if agreement + 1e-12 < plan.min_agreement {
        return Err(Dropped::LowAgreement);
    }
    match winner {
        "tie" if !plan.args.keep_ties => return Err(Dropped::Tie),
        "split" if !plan.args.keep_splits => return Err(Dropped::Split),
        _ => {}
    }
    let b_wins = winner == "b";
    let (chosen, rejected, chosen_id, rejected_id, chosen_policy, rejected_policy, vc, vr) =
        if b_wins {
            (
                v.b_content,
                v.a_content,
                v.b_id,
                v.a_id,
                v.b_policy,
                v.a_policy,
                v.b,
                v.a,
            )
        } else {
            (
                v.a_content,
                v.b_content,
                v.a_id,
                v.b_id,
                v.a_policy,
                v.b_policy,
                v.a,
                v.b,
            )
        };
    let (wc, wr) = if b_wins { (wb, wa) } else { (wa, wb) };
    let margin = if matches!(winner, "a" | "b") {
        (wc - wr) / total
    } else {
        0.0
    };
    Ok(PrefRow {
        pair_id: v.pair_id,
        external_id: v.external_id,
        prompt: v.prompt,
        chosen,
        rejected,
        chosen_id,
        rejected_id,
        chosen_policy,
        rejected_policy,
        winner,
        aggregation: plan.args.aggregation.as_str(),
        votes,
        votes_chosen: vc,
        votes_rejected: vr,
        votes_tie: v.tie,
        votes_cant_tell: v.cant_tell,
        raters: v.raters,
        agreement,
        margin,
        gold: v.gold,
    })
}
