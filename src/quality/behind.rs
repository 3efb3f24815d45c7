//! The judgments behind a figure: every number on the quality pages links to a list of the
//! judgments it counts (`/projects/{slug}/quality/judgments?show=…[&rater=…]`), each linking
//! to the pair as the rater saw it.

use sqlx::PgPool;
use uuid::Uuid;

use super::{report::FAST_MS, series::Recent};
use crate::error::{Error, Result};

/// Which judgments a figure counts. Project figures count raters who are not excluded; a
/// rater's figures count theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// Every judgment, repeats included.
    All,
    /// First answers (repeats left out): judgments, answer times.
    First,
    /// First answers other than can't-tell: what agreement, kappa, alpha, agreement with the
    /// majority, reliability and drift count.
    Answers,
    /// Answers to gold pairs (can't-tell is no answer).
    Gold,
    /// Wrong answers to gold pairs.
    GoldWrong,
    /// Swapped repeats that self-consistency counts (neither answer can't-tell): each pair
    /// page shows the earlier answer too.
    Repeats,
    /// First answers on the left or right side as shown (position bias).
    Left,
    Right,
    /// First answers for the longer text, where the texts differ in length (length bias).
    Longer,
    Tie,
    CantTell,
    /// First answers faster than the floor.
    Fast,
    /// First answers given before the clips finished playing.
    BeforeClipEnd,
}

/// Rows listed; the count goes further (up to `COUNT_CAP`).
pub const LIST: i64 = 200;
/// Matching judgments are counted up to this many.
pub const COUNT_CAP: i64 = 10_000;

impl Behind {
    pub const ALL: [Behind; 13] = [
        Behind::All,
        Behind::First,
        Behind::Answers,
        Behind::Gold,
        Behind::GoldWrong,
        Behind::Repeats,
        Behind::Left,
        Behind::Right,
        Behind::Longer,
        Behind::Tie,
        Behind::CantTell,
        Behind::Fast,
        Behind::BeforeClipEnd,
    ];

    /// The name in the page's query string.
    pub fn name(self) -> &'static str {
        match self {
            Behind::All => "all",
            Behind::First => "first",
            Behind::Answers => "answers",
            Behind::Gold => "gold",
            Behind::GoldWrong => "gold_wrong",
            Behind::Repeats => "repeats",
            Behind::Left => "left",
            Behind::Right => "right",
            Behind::Longer => "longer",
            Behind::Tie => "tie",
            Behind::CantTell => "cant_tell",
            Behind::Fast => "fast",
            Behind::BeforeClipEnd => "before_clip_end",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Behind::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Behind::ALL.iter().map(|b| b.name()).collect();
                Error::invalid(format!("show must be one of {}", names.join(", ")))
            })
    }

    /// What the list holds, for its heading.
    pub fn describe(self) -> &'static str {
        match self {
            Behind::All => "every judgment, repeats included",
            Behind::First => "first answers (repeats left out)",
            Behind::Answers => "first answers other than can't-tell (what agreement counts)",
            Behind::Gold => "answers to gold pairs (can't-tell is no answer)",
            Behind::GoldWrong => "wrong answers to gold pairs",
            Behind::Repeats => {
                "swapped repeats, neither answer can't-tell (the pair page shows the earlier one)"
            }
            Behind::Left => "first answers for the side shown on the left",
            Behind::Right => "first answers for the side shown on the right",
            Behind::Longer => "first answers for the longer text (texts of different lengths)",
            Behind::Tie => "first answers: tie",
            Behind::CantTell => "first answers: can't tell",
            Behind::Fast => "first answers faster than the floor",
            Behind::BeforeClipEnd => "first answers given before the clips finished playing",
        }
    }

    /// The SQL condition on `j` (judgments) and `c` (the pair); constants only.
    fn condition(self) -> String {
        let first = "j.kind <> 'repeat'";
        match self {
            Behind::All => "true".into(),
            Behind::First => first.into(),
            Behind::Answers => format!("{first} and j.choice <> 'cant_tell'"),
            Behind::Gold => format!("{first} and c.gold is not null and j.choice <> 'cant_tell'"),
            Behind::GoldWrong => format!(
                "{first} and c.gold is not null and j.choice <> 'cant_tell' and j.choice <> c.gold"
            ),
            Behind::Repeats => "j.kind = 'repeat' and j.choice <> 'cant_tell'
                 and exists (select 1 from assignments x
                             join judgments o on o.assignment_id = x.repeat_of
                             where x.id = j.assignment_id and o.choice <> 'cant_tell')"
                .into(),
            Behind::Left => format!("{first} and j.displayed_choice = 'left'"),
            Behind::Right => format!("{first} and j.displayed_choice = 'right'"),
            Behind::Longer => format!(
                "{first} and ((j.choice = 'a' and length(ra.body) > length(rb.body))
                              or (j.choice = 'b' and length(rb.body) > length(ra.body)))"
            ),
            Behind::Tie => format!("{first} and j.choice = 'tie'"),
            Behind::CantTell => format!("{first} and j.choice = 'cant_tell'"),
            Behind::Fast => format!("{first} and j.duration_ms < {FAST_MS}"),
            Behind::BeforeClipEnd => format!("{first} and j.answered_before_clip_end"),
        }
    }
}

/// The judgments behind a figure, newest first (at most `LIST`). `rater`: one rater's; None:
/// the project's raters who are not excluded.
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    rater: Option<Uuid>,
    behind: Behind,
) -> Result<Vec<Recent>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select j.assignment_id as assignment, j.comparison_id as pair, c.external_id,
                j.displayed_choice as displayed, j.choice, j.kind, c.gold, j.duration_ms,
                to_char(j.created_at at time zone 'utc', 'YYYY-MM-DD HH24:MI:SS') as at
         {} order by j.created_at desc limit $3",
        from(rater, behind)
    )))
    .bind(project_id)
    .bind(rater)
    .bind(LIST)
    .fetch_all(pool)
    .await?)
}

/// How many judgments are behind a figure, counted up to `COUNT_CAP` + 1.
pub async fn count(
    pool: &PgPool,
    project_id: Uuid,
    rater: Option<Uuid>,
    behind: Behind,
) -> Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "select count(*) from (select 1 {} limit $3) n",
        from(rater, behind)
    )))
    .bind(project_id)
    .bind(rater)
    .bind(COUNT_CAP + 1)
    .fetch_one(pool)
    .await?)
}

/// The `from … where …` of both queries: `$1` project, `$2` rater (or null). Built from the
/// constants above only: no input reaches the SQL text.
fn from(rater: Option<Uuid>, behind: Behind) -> String {
    let who = match rater {
        Some(_) => "j.rater_id = $2",
        None => {
            "$2::uuid is null and not exists (select 1 from project_members m
                 where m.project_id = j.project_id and m.user_id = j.rater_id
                   and m.excluded_at is not null)"
        }
    };
    let lengths = match behind {
        Behind::Longer => {
            "join rollouts ra on ra.id = c.rollout_a join rollouts rb on rb.id = c.rollout_b"
        }
        _ => "",
    };
    format!(
        "from judgments j join comparisons c on c.id = j.comparison_id {lengths}
         where j.project_id = $1 and {who} and {}",
        behind.condition()
    )
}

/// A rater of the project by name: a member, or anyone who judged in it.
pub async fn rater_id(pool: &PgPool, project_id: Uuid, name: &str) -> Result<Uuid> {
    sqlx::query_scalar(
        "select u.id from users u
         where u.name = $2
           and (exists (select 1 from project_members m
                        where m.user_id = u.id and m.project_id = $1)
                or exists (select 1 from judgments j
                           where j.rater_id = u.id and j.project_id = $1))",
    )
    .bind(project_id)
    .bind(name)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("rater"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for b in Behind::ALL {
            assert_eq!(Behind::parse(b.name()).unwrap(), b);
        }
        let err = Behind::parse("everything").unwrap_err().to_string();
        assert!(err.contains("gold_wrong"), "{err}");
    }
}
