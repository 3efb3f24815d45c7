//! The rater's side of a project beyond single judgments: the content warning
//! they must accept, reporting a pair, exposure limits per session, and progress.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::User,
    error::{Error, Result},
    projects::Access,
};

/// A gap between two judgments at least this long ends a labeling session
/// (and is the break a session cap asks for).
pub const BREAK_MINUTES: i64 = 10;

/// Record that the rater read and accepted the project's content warning.
pub async fn accept_warning(pool: &PgPool, access: &Access) -> Result<()> {
    sqlx::query(
        "insert into warning_acceptances (project_id, user_id) values ($1, $2)
         on conflict do nothing",
    )
    .bind(access.project.id)
    .bind(access.user.id)
    .execute(pool)
    .await?;
    Ok(())
}

async fn warning_accepted(db: impl sqlx::PgExecutor<'_>, access: &Access) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from warning_acceptances where project_id = $1 and user_id = $2)",
    )
    .bind(access.project.id)
    .bind(access.user.id)
    .fetch_one(db)
    .await?)
}

/// The rater's current labeling session in a project: when it started, how many
/// judgments it holds, and the last one. None when the last judgment is a break ago.
async fn session(
    db: impl sqlx::PgExecutor<'_>,
    access: &Access,
) -> Result<Option<(OffsetDateTime, i64, OffsetDateTime)>> {
    let row: (Option<OffsetDateTime>, i64, Option<OffsetDateTime>) = sqlx::query_as(
        "with j as (
             select created_at, lag(created_at) over (order by created_at) as prev
             from judgments
             where rater_id = $1 and project_id = $2 and created_at > now() - interval '2 days'),
         start as (
             select max(created_at) as at from j
             where prev is null or created_at - prev >= make_interval(mins => $3))
         select (select at from start),
                (select count(*) from j where created_at >= (select at from start)),
                (select max(created_at) from j)
         where (select max(created_at) from j) > now() - make_interval(mins => $3)
         union all select null, 0, null
         limit 1",
    )
    .bind(access.user.id)
    .bind(access.project.id)
    .bind(BREAK_MINUTES as i32)
    .fetch_one(db)
    .await?;
    Ok(match row {
        (Some(start), n, Some(last)) => Some((start, n, last)),
        _ => None,
    })
}

/// Refuse a new pair when the rater has not accepted the content warning or has
/// reached the project's session cap (the message says when labeling resumes).
pub async fn gate(conn: &mut sqlx::PgConnection, access: &Access) -> Result<()> {
    let p = &access.project;
    if p.content_warning.is_some() && !warning_accepted(&mut *conn, access).await? {
        return Err(Error::Conflict {
            code: "content_warning",
            message: "accept the project's content warning first".into(),
        });
    }
    if p.session_cap_pairs.is_none() && p.session_cap_minutes.is_none() {
        return Ok(());
    }
    let Some((start, n, last)) = session(&mut *conn, access).await? else {
        return Ok(());
    };
    let now = OffsetDateTime::now_utc();
    let over_pairs = p.session_cap_pairs.is_some_and(|cap| n >= i64::from(cap));
    let over_minutes = p
        .session_cap_minutes
        .is_some_and(|cap| now - start >= time::Duration::minutes(cap.into()));
    if over_pairs || over_minutes {
        let resume = last + time::Duration::minutes(BREAK_MINUTES);
        let wait = (resume - now).whole_minutes().max(0) + 1;
        return Err(Error::Conflict {
            code: "break_time",
            message: format!(
                "You have labeled {n} pair(s) in this session: time for a break. \
                 You can go on in about {wait} minute(s)."
            ),
        });
    }
    Ok(())
}

/// Why a rater reports a pair.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportInput {
    pub reason: String,
}

/// Report a leased pair's content: it leaves this rater's queue (its slot goes
/// back to other raters), and the report is kept for the project's leads.
pub async fn report(
    pool: &PgPool,
    rater: &User,
    assignment_id: Uuid,
    reason: &str,
) -> Result<Uuid> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > crate::labeling::MAX_TEXT {
        return Err(Error::invalid("give a reason (at most 10,000 bytes)"));
    }
    let mut tx = pool.begin().await?;
    let row: Option<(Uuid, String, Uuid, Uuid, String)> = sqlx::query_as(
        "select rater_id, state, comparison_id, project_id, kind from assignments
         where id = $1 for update",
    )
    .bind(assignment_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (owner, state, comparison_id, project_id, kind) =
        row.ok_or(Error::NotFound("assignment"))?;
    if owner != rater.id {
        return Err(Error::forbidden("this assignment belongs to another rater"));
    }
    match state.as_str() {
        "leased" => {}
        "reported" => {
            return Err(Error::Conflict {
                code: "already_reported",
                message: "this pair was already reported".into(),
            });
        }
        "judged" => {
            return Err(Error::Conflict {
                code: "already_judged",
                message: "this assignment has already been judged".into(),
            });
        }
        _ => {
            return Err(Error::Gone {
                code: "lease_expired",
                message: "the lease on this pair expired".into(),
            });
        }
    }
    let id: Uuid = sqlx::query_scalar(
        "insert into content_reports (assignment_id, comparison_id, project_id, rater_id, reason)
         values ($1, $2, $3, $4, $5) returning id",
    )
    .bind(assignment_id)
    .bind(comparison_id)
    .bind(project_id)
    .bind(rater.id)
    .bind(reason)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("update assignments set state = 'reported' where id = $1")
        .bind(assignment_id)
        .execute(&mut *tx)
        .await?;
    // Gold checks and repeats hold no slot of the pair's coverage.
    if kind == "regular" {
        sqlx::query("update comparisons set taken_count = taken_count - 1 where id = $1")
            .bind(comparison_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(id)
}

/// A rater's progress in a project.
#[derive(Debug, Serialize, ToSchema)]
pub struct Progress {
    /// Judgments given today (UTC).
    pub today: i64,
    /// Judgments given in this project.
    pub total: i64,
    /// Consecutive days, up to today or yesterday, with at least one judgment here.
    pub streak_days: i64,
    /// Judgments in the current session (see `session_cap_pairs`).
    pub session: i64,
    /// Pairs still open to this rater, counted up to [`REMAINING_COUNTED`].
    pub remaining: i64,
    /// True when there are more than `remaining` such pairs: the count stopped
    /// at [`REMAINING_COUNTED`], so that reading progress costs the same in a
    /// project of a million open pairs as in one of a thousand.
    pub remaining_capped: bool,
}

/// How many of the pairs open to a rater [`progress`] counts at most.
pub const REMAINING_COUNTED: i64 = 1000;

/// The rater's progress, read on `conn` (the request's one connection).
pub async fn progress(conn: &mut PgConnection, access: &Access) -> Result<Progress> {
    let (today, total): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where created_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'),
                count(*)
         from judgments where rater_id = $1 and project_id = $2",
    )
    .bind(access.user.id)
    .bind(access.project.id)
    .fetch_one(&mut *conn)
    .await?;
    let days: Vec<time::Date> = sqlx::query_scalar(
        "select distinct (created_at at time zone 'utc')::date as d from judgments
         where rater_id = $1 and project_id = $2 order by d desc limit 400",
    )
    .bind(access.user.id)
    .bind(access.project.id)
    .fetch_all(&mut *conn)
    .await?;
    // Open pairs the rater holds no live assignment for, one more than are
    // shown at most, walked in queue order as the leaser's pick walks them (one
    // index probe per pair). Without the order, PostgreSQL chose to walk the
    // pairs by id, through the closed ones first.
    static LEFT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "select count(*) from ({} limit $3) open_to_rater",
            crate::labeling::OPEN_TO_RATER.replace("{GUARD}", "")
        )
    });
    let counted: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(LEFT.as_str()))
        .bind(access.project.id)
        .bind(access.user.id)
        .bind(REMAINING_COUNTED + 1)
        .fetch_one(&mut *conn)
        .await?;
    let session = session(&mut *conn, access).await?.map_or(0, |(_, n, _)| n);
    Ok(Progress {
        today,
        total,
        streak_days: streak(&days, OffsetDateTime::now_utc().date()),
        session,
        remaining: counted.min(REMAINING_COUNTED),
        remaining_capped: counted > REMAINING_COUNTED,
    })
}

/// Length of the run of consecutive days ending today or yesterday, given the
/// distinct days with activity, newest first.
pub fn streak(days: &[time::Date], today: time::Date) -> i64 {
    let mut expected = match days.first() {
        Some(&d) if d == today || Some(d) == today.previous_day() => d,
        _ => return 0,
    };
    let mut n = 0;
    for &d in days {
        if d != expected {
            break;
        }
        n += 1;
        match d.previous_day() {
            Some(p) => expected = p,
            None => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::streak;

    #[test]
    fn streaks_count_consecutive_days_up_to_today_or_yesterday() {
        let today = date!(2026 - 11 - 27);
        assert_eq!(streak(&[], today), 0);
        assert_eq!(streak(&[date!(2026 - 11 - 27)], today), 1);
        assert_eq!(
            streak(&[date!(2026 - 11 - 26), date!(2026 - 11 - 25)], today),
            2
        );
        assert_eq!(
            streak(
                &[
                    date!(2026 - 11 - 27),
                    date!(2026 - 11 - 26),
                    date!(2026 - 11 - 24)
                ],
                today
            ),
            2
        );
        assert_eq!(
            streak(&[date!(2026 - 11 - 25)], today),
            0,
            "a day missed ends the streak"
        );
    }
}
