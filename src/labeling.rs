//! Assignment of pairs to raters, and their judgments.
//!
//! Concurrency design: a pair's row in `comparisons` carries `judged_count`
//! and `leased_count`, changed only in the statements that create
//! assignments and judgments. `next` picks an open pair with
//! `FOR UPDATE SKIP LOCKED`, so concurrent raters take different rows; when a
//! row was changed by a transaction that committed after our snapshot,
//! PostgreSQL re-checks `judged_count + leased_count < overlap` on the new
//! version before locking it, so a pair is never over-assigned. Expired leases
//! are reaped (and their slot given back) in a short statement of their own
//! that skips rows a judgment is writing.
//!
//! Round trips are the cost on this path (`backflip bench next`): a regular
//! `next` is two statements after the caller's project lookup — reap plus the
//! rater's leases, then one that picks, takes a slot, leases and reads the
//! pair — and a judgment is one locked read and one write in a transaction.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::User,
    error::{Error, Result},
    projects::Access,
};

/// A rater may hold this many live leases per project (the page fetches one
/// ahead); asking for more gives back the oldest, so a client bug or a reload
/// cannot drain the queue.
pub const MAX_LIVE_LEASES: i64 = 2;

/// One side of a pair as a rater sees it: text, or the URL of a GIF clip.
/// The rollout's policy and metadata are withheld so they cannot bias the rater.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShownRollout {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_url: Option<String>,
}

/// A pair assigned to the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextPair {
    pub assignment_id: Uuid,
    pub prompt: String,
    pub left: ShownRollout,
    pub right: ShownRollout,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Assign the caller a pair of the project they have not judged, or None when
/// nothing is left for them.
pub async fn next(pool: &PgPool, access: &Access) -> Result<Option<NextPair>> {
    crate::rater::gate(pool, access).await?;
    // Retry the rare races the database resolves by refusing one side: a
    // deadlock, or this rater's own concurrent request taking the same pair.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_next(pool, access).await {
            Err(Error::Internal(e)) if attempt < 5 && is_retryable(&e) => continue,
            other => return other,
        }
    }
}

fn is_retryable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "23505" || c == "40001")
}

/// The first open pair (by priority, then import order) the rater has not been
/// given. `kind <> 'repeat'` changes nothing (a repeat is always of a pair the
/// rater holds a judged regular assignment for) but lets the anti-join probe the
/// partial unique index `assignments_rater_pair_idx` once per candidate, instead
/// of reading the rater's whole history.
const PICK_OPEN_PAIR: &str = "select c.id from comparisons c
     where c.project_id = $1 and c.judged_count + c.leased_count < c.overlap
       and not exists (select 1 from assignments a
                       where a.comparison_id = c.id and a.rater_id = $2
                         and a.state <> 'expired' and a.kind <> 'repeat')
     order by c.priority desc, c.seq
     limit 1";

/// Take a slot of the picked pair, lease it to the rater and read it as shown,
/// in one statement: `$1` project, `$2` rater, `$3` left_is_a, `$4` lease seconds.
const ASSIGN_OPEN_PAIR: &str = "with picked as (
         update comparisons set leased_count = leased_count + 1
         where id = ({PICK} {LOCK})
         returning id, prompt, rollout_a, rollout_b),
     assigned as (
         insert into assignments (comparison_id, project_id, rater_id, left_is_a, expires_at, kind)
         select id, $1, $2, $3, now() + make_interval(secs => $4), 'regular' from picked
         returning id, expires_at)
     select a.id, a.expires_at, p.prompt, ra.body, ra.clip_sha256, rb.body, rb.clip_sha256
     from assigned a, picked p
     join rollouts ra on ra.id = p.rollout_a
     join rollouts rb on rb.id = p.rollout_b";

/// [`ASSIGN_OPEN_PAIR`] with its lock clause: first skipping pairs other raters
/// are taking right now, then waiting for them.
static ASSIGN_SQL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
    ["for update of c skip locked", "for update of c"].map(|lock| {
        ASSIGN_OPEN_PAIR
            .replace("{PICK}", PICK_OPEN_PAIR)
            .replace("{LOCK}", lock)
    })
});

/// A pair as read for the rater: assignment id, lease expiry, prompt, and the
/// text and clip of rollouts a and b.
type ShownRow = (
    Uuid,
    OffsetDateTime,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

async fn try_next(pool: &PgPool, access: &Access) -> Result<Option<NextPair>> {
    let (project, rater) = (&access.project, &access.user);

    // In one round trip: give the project's expired leases back to the queue (a
    // short statement of its own, skipping leases a judgment is writing), and
    // read the quality settings, whether the rater is paused, and the oldest
    // live lease with how many the rater holds.
    type Held = (
        f32,
        f32,
        bool,
        Option<Uuid>,
        Option<Uuid>,
        Option<bool>,
        Option<OffsetDateTime>,
        Option<i64>,
    );
    let (gold_rate, repeat_rate, paused, id, comparison_id, left_is_a, expires_at, n): Held =
        sqlx::query_as(
            "with expired as (
                 update assignments set state = 'expired'
                 where id in (select id from assignments
                              where project_id = $2 and state = 'leased' and expires_at <= now()
                              for update skip locked)
                 returning comparison_id, kind),
             per_pair as (select comparison_id, count(*) as n from expired
                          where kind = 'regular' group by comparison_id),
             reaped as (update comparisons c set leased_count = c.leased_count - p.n
                        from per_pair p where c.id = p.comparison_id)
             select p.gold_rate, p.repeat_rate,
                    exists (select 1 from project_members m where m.project_id = p.id
                            and m.user_id = $1 and m.paused_at is not null),
                    h.id, h.comparison_id, h.left_is_a, h.expires_at, h.n
             from projects p left join lateral (
                 select id, comparison_id, left_is_a, expires_at, count(*) over () as n
                 from assignments
                 where rater_id = $1 and project_id = p.id and state = 'leased' and expires_at > now()
                 order by created_at limit 1) h on true
             where p.id = $2",
        )
        .bind(rater.id)
        .bind(project.id)
        .fetch_one(pool)
        .await?;
    if paused {
        return Err(Error::Conflict {
            code: "paused",
            message: "the project's leads have paused your labeling here".into(),
        });
    }
    if let (Some(id), Some(comparison_id), Some(left_is_a), Some(expires_at), Some(n)) =
        (id, comparison_id, left_is_a, expires_at, n)
        && n >= MAX_LIVE_LEASES
    {
        return Ok(Some(
            shown(pool, id, comparison_id, left_is_a, expires_at).await?,
        ));
    }

    // Quality checks, each taken only at its configured rate and each a single
    // indexed probe: a gold pair the rater has not seen, or one of their judged
    // pairs again with the sides swapped. Neither touches the pair's counts.
    let (gold_roll, repeat_roll) = {
        let mut rng = rand::rng();
        (rng.random::<f32>(), rng.random::<f32>())
    };
    if gold_roll < gold_rate || repeat_roll < repeat_rate {
        let mut tx = pool.begin().await?;
        if let Some(pair) = extra(&mut tx, access, gold_roll < gold_rate).await? {
            tx.commit().await?;
            return Ok(Some(pair));
        }
    }

    // A regular pair, in one statement: pick, take a slot, lease, read. If
    // skipping pairs other raters are taking finds nothing, the open pairs may
    // all be locked by transactions that will leave slots free: wait for them
    // rather than wrongly answer "nothing left".
    let left_is_a = rand::rng().random_bool(0.5);
    for sql in ASSIGN_SQL.iter() {
        let row: Option<ShownRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(project.id)
            .bind(rater.id)
            .bind(left_is_a)
            .bind(f64::from(project.lease_seconds))
            .fetch_optional(pool)
            .await?;
        if let Some(row) = row {
            return Ok(Some(present(row, left_is_a)));
        }
    }
    Ok(None)
}

/// A gold pair the rater has not seen (`gold`), or else one of their judged
/// pairs again with the sides swapped, assigned in `tx`; None when there is none.
async fn extra(
    tx: &mut Transaction<'_, Postgres>,
    access: &Access,
    gold: bool,
) -> Result<Option<NextPair>> {
    let (project, rater) = (&access.project, &access.user);
    let extra: Option<(Uuid, &str, Option<Uuid>, bool)> = if gold {
        sqlx::query_scalar::<_, Uuid>(
            "select c.id from comparisons c
             where c.project_id = $1 and c.gold is not null
               and not exists (select 1 from assignments a where a.comparison_id = c.id
                               and a.rater_id = $2 and a.state <> 'expired'
                               and a.kind <> 'repeat')
             order by c.seq limit 1",
        )
        .bind(project.id)
        .bind(rater.id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|c| (c, "gold", None, rand::rng().random_bool(0.5)))
    } else {
        let earlier: Option<(Uuid, Uuid, bool)> = sqlx::query_as(
            "update assignments set repeated = true
             where id = (select id from assignments
                         where rater_id = $1 and project_id = $2 and state = 'judged'
                           and kind = 'regular' and not repeated
                         order by judged_at limit 1 for update skip locked)
             returning id, comparison_id, left_is_a",
        )
        .bind(rater.id)
        .bind(project.id)
        .fetch_optional(&mut **tx)
        .await?;
        earlier.map(|(id, c, left_is_a)| (c, "repeat", Some(id), !left_is_a))
    };
    let Some((comparison_id, kind, repeat_of, left_is_a)) = extra else {
        return Ok(None);
    };
    let (assignment_id, expires_at): (Uuid, OffsetDateTime) = sqlx::query_as(
        "insert into assignments (comparison_id, project_id, rater_id, left_is_a, expires_at,
                                  kind, repeat_of)
         values ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7)
         returning id, expires_at",
    )
    .bind(comparison_id)
    .bind(project.id)
    .bind(rater.id)
    .bind(left_is_a)
    .bind(f64::from(project.lease_seconds))
    .bind(kind)
    .bind(repeat_of)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some(
        shown(
            &mut **tx,
            assignment_id,
            comparison_id,
            left_is_a,
            expires_at,
        )
        .await?,
    ))
}

/// The pair of an assignment as the rater sees it, sides as recorded in it.
async fn shown(
    db: impl sqlx::PgExecutor<'_>,
    assignment_id: Uuid,
    comparison_id: Uuid,
    left_is_a: bool,
    expires_at: OffsetDateTime,
) -> Result<NextPair> {
    let (prompt, a_text, a_clip, b_text, b_clip): (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as(
        "select c.prompt, ra.body, ra.clip_sha256, rb.body, rb.clip_sha256
             from comparisons c
             join rollouts ra on ra.id = c.rollout_a
             join rollouts rb on rb.id = c.rollout_b
             where c.id = $1",
    )
    .bind(comparison_id)
    .fetch_one(db)
    .await?;
    let row = (
        assignment_id,
        expires_at,
        prompt,
        a_text,
        a_clip,
        b_text,
        b_clip,
    );
    Ok(present(row, left_is_a))
}

/// The answer has the same shape whatever the assignment's kind, so a gold or
/// repeated pair cannot be told from any other.
fn present(row: ShownRow, left_is_a: bool) -> NextPair {
    let (assignment_id, expires_at, prompt, a_text, a_clip, b_text, b_clip) = row;
    let show = |text, clip: Option<String>| ShownRollout {
        text,
        clip_url: clip.map(|sha| format!("/api/v1/clips/{sha}")),
    };
    let (a, b) = (show(a_text, a_clip), show(b_text, b_clip));
    let (left, right) = if left_is_a { (a, b) } else { (b, a) };
    NextPair {
        assignment_id,
        prompt,
        left,
        right,
        expires_at,
    }
}

/// A rater's answer, as the client sends it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgmentInput {
    /// `left`, `right`, `tie` or `cant_tell` (as displayed).
    pub choice: String,
    /// 1..=strength_scale, when the project has a strength scale.
    #[serde(default)]
    pub strength: Option<i32>,
    #[serde(default)]
    pub rationale: Option<String>,
    /// The rater flags the content as disturbing or inappropriate.
    #[serde(default)]
    pub content_flag: bool,
    #[serde(default)]
    pub flag_reason: Option<String>,
    /// Time the rater took, measured by the client.
    #[serde(default)]
    pub duration_ms: Option<i32>,
    /// For clips: how many times the rater restarted them.
    #[serde(default)]
    pub replays: Option<i32>,
    /// For clips: whether the rater answered before they had played through once.
    #[serde(default)]
    pub answered_before_clip_end: Option<bool>,
}

/// A stored judgment.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Judgment {
    pub id: Uuid,
    pub assignment_id: Uuid,
    pub comparison_id: Uuid,
    /// The answer in canonical terms: `a`, `b`, `tie` or `cant_tell`.
    pub choice: String,
    /// The answer as the rater gave it: `left`, `right`, `tie`, `cant_tell`.
    pub displayed_choice: String,
    /// Whether rollout a was shown on the left.
    pub left_is_a: bool,
    pub strength: Option<i32>,
    pub rationale: Option<String>,
    pub content_flag: bool,
    pub flag_reason: Option<String>,
    pub duration_ms: Option<i32>,
    pub replays: Option<i32>,
    pub answered_before_clip_end: Option<bool>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

const JUDGMENT_COLUMNS: &str = "id, assignment_id, comparison_id, choice, displayed_choice, \
     left_is_a, strength, rationale, content_flag, flag_reason, duration_ms, replays, \
     answered_before_clip_end, created_at";

/// Optional free text as stored: trimmed, and None when blank.
fn non_blank(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

/// Map a displayed answer to canonical (a/b) terms.
pub fn canonical(displayed: &str, left_is_a: bool) -> &'static str {
    match (displayed, left_is_a) {
        ("left", true) | ("right", false) => "a",
        ("left", false) | ("right", true) => "b",
        ("tie", _) => "tie",
        _ => "cant_tell",
    }
}

/// The longest rationale or flag reason we keep.
pub const MAX_TEXT: usize = 10_000;

/// Store a judgment for one of the caller's assignments. Returns the judgment
/// and whether it was created now (false: an idempotent replay of the same key).
pub async fn submit(
    pool: &PgPool,
    rater: &User,
    assignment_id: Uuid,
    input: &JudgmentInput,
    idempotency_key: Option<&str>,
) -> Result<(Judgment, bool)> {
    if let Some(key) = idempotency_key
        && (key.is_empty() || key.len() > 200)
    {
        return Err(Error::BadRequest {
            code: "bad_idempotency_key",
            message: "Idempotency-Key must be 1-200 characters".into(),
        });
    }

    let mut tx = pool.begin().await?;
    // The assignment, locked, with its project's settings, the assignment an
    // idempotency key was already used for, if any, and whether the project is
    // due for training once this judgment is in.
    type Row = (
        Uuid,
        String,
        bool,
        bool,
        Uuid,
        Vec<String>,
        Option<i32>,
        String,
        Uuid,
        String,
        bool,
        Option<Uuid>,
        bool,
    );
    static LOCK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "select a.rater_id, a.state, a.expires_at > now(), a.left_is_a, a.comparison_id,
                    p.options, p.strength_scale, p.rationale, p.id, a.kind,
                    coalesce(m.excluded_at is not null, false),
                    (select j.assignment_id from judgments j
                     where j.rater_id = $2 and j.idempotency_key = $3),
                    {}
             from assignments a join projects p on p.id = a.project_id
             left join project_members m on m.project_id = a.project_id and m.user_id = a.rater_id
             where a.id = $1 for update of a",
            crate::jobs::storage::TRAINING_DUE
        )
    });
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(LOCK.as_str()))
        .bind(assignment_id)
        .bind(rater.id)
        .bind(idempotency_key)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((
        owner,
        state,
        live,
        left_is_a,
        comparison_id,
        options,
        scale,
        rationale_mode,
        project_id,
        kind,
        excluded,
        key_used_for,
        training_due,
    )) = row
    else {
        drop(tx);
        // A key used for another assignment is reported as such, as a replay would.
        if let Some(key) = idempotency_key {
            replay(pool, rater, assignment_id, key).await?;
        }
        return Err(Error::NotFound("assignment"));
    };
    if let (Some(key), Some(_)) = (idempotency_key, key_used_for) {
        drop(tx);
        // Judgments are never deleted: the key's judgment is there to replay.
        let j = replay(pool, rater, assignment_id, key).await?;
        return j.map(|j| (j, false)).ok_or(Error::NotFound("judgment"));
    }
    if owner != rater.id {
        return Err(Error::forbidden("this assignment belongs to another rater"));
    }
    if state == "judged" {
        drop(tx);
        // A concurrent request with the same key may have just committed.
        if let Some(key) = idempotency_key
            && let Some(j) = replay(pool, rater, assignment_id, key).await?
        {
            return Ok((j, false));
        }
        return Err(Error::Conflict {
            code: "already_judged",
            message: "this assignment has already been judged".into(),
        });
    }
    if state == "reported" {
        return Err(Error::Conflict {
            code: "already_reported",
            message: "this pair was reported and skipped".into(),
        });
    }
    if state != "leased" || !live {
        return Err(Error::Gone {
            code: "lease_expired",
            message: "the lease on this pair expired; ask for the next pair".into(),
        });
    }
    validate(input, &options, scale, &rationale_mode)?;

    // In one statement: the judgment, the assignment marked judged, and — only a
    // regular assignment holds a slot of the pair's coverage — the pair's counts
    // (an excluded rater's judgment does not cover the pair; re-including them
    // counts it then). `refill`: a generated pair is now complete.
    #[derive(sqlx::FromRow)]
    struct Stored {
        #[sqlx(flatten)]
        judgment: Judgment,
        refill: bool,
    }
    static STORE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "with j as (
                 insert into judgments (assignment_id, comparison_id, project_id, rater_id, choice,
                     displayed_choice, left_is_a, strength, rationale, content_flag, flag_reason,
                     duration_ms, idempotency_key, replays, answered_before_clip_end, kind)
                 values ($1, $2, $15, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $16)
                 returning {JUDGMENT_COLUMNS}),
             a as (update assignments set state = 'judged', judged_at = now() where id = $1),
             c as (update comparisons
                   set judged_count = judged_count + case when $17 then 0 else 1 end,
                       leased_count = leased_count - 1
                   where id = $2 and $16 = 'regular'
                   returning generated and judged_count >= overlap as refill)
             select j.*, coalesce((select refill from c), false) as refill from j"
        )
    });
    let stored: Stored = sqlx::query_as(sqlx::AssertSqlSafe(STORE.as_str()))
        .bind(assignment_id)
        .bind(comparison_id)
        .bind(rater.id)
        .bind(canonical(&input.choice, left_is_a))
        .bind(&input.choice)
        .bind(left_is_a)
        .bind(input.strength)
        .bind(non_blank(&input.rationale))
        .bind(input.content_flag)
        .bind(non_blank(&input.flag_reason))
        .bind(input.duration_ms)
        .bind(idempotency_key)
        .bind(input.replays)
        .bind(input.answered_before_clip_end)
        .bind(project_id)
        .bind(&kind)
        .bind(excluded)
        .fetch_one(&mut *tx)
        .await
        .map_err(
            |e| match e.as_database_error().and_then(|d| d.constraint()) {
                Some("judgments_idempotency_idx") => Error::Conflict {
                    code: "idempotency_key_reused",
                    message: "this Idempotency-Key was already used for another assignment".into(),
                },
                _ => e.into(),
            },
        )?;
    // A generated pair is complete: the generator tops the queue up again.
    if stored.refill {
        let payload = serde_json::json!({"reason": "pair judged"});
        let kind = crate::selection::job::KIND;
        crate::jobs::storage::enqueue(&mut tx, kind, Some(project_id), payload).await?;
    }
    // Retraining is queued in the same transaction as the judgment that calls for it.
    if training_due {
        crate::jobs::storage::enqueue_training(&mut tx, project_id).await?;
    }
    // A stored quality report is refreshed after enough new judgments (one
    // statement; nothing happens until a report has been stored).
    crate::quality::store::enqueue_if_due(&mut tx, project_id).await?;
    // Durable before the client hears of it: commit waits for the WAL flush.
    tx.commit().await?;
    Ok((stored.judgment, true))
}

/// The judgment an idempotency key already produced, if any.
async fn replay(
    pool: &PgPool,
    rater: &User,
    assignment_id: Uuid,
    key: &str,
) -> Result<Option<Judgment>> {
    let found: Option<Judgment> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {JUDGMENT_COLUMNS} from judgments where rater_id = $1 and idempotency_key = $2"
    )))
    .bind(rater.id)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    match found {
        Some(j) if j.assignment_id != assignment_id => Err(Error::Conflict {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was already used for another assignment".into(),
        }),
        other => Ok(other),
    }
}

fn validate(
    input: &JudgmentInput,
    options: &[String],
    scale: Option<i32>,
    rationale: &str,
) -> Result<()> {
    if !options.contains(&input.choice) {
        return Err(Error::invalid(format!(
            "choice must be one of {}",
            options.join(", ")
        )));
    }
    match (input.strength, scale) {
        (Some(_), None) => return Err(Error::invalid("this project has no strength scale")),
        (Some(s), Some(max)) if !(1..=max).contains(&s) => {
            return Err(Error::invalid(format!(
                "strength must be between 1 and {max}"
            )));
        }
        _ => {}
    }
    let text = input.rationale.as_deref().map(str::trim).unwrap_or("");
    if rationale == "required" && text.is_empty() {
        return Err(Error::invalid(
            "this project asks for a rationale with every judgment",
        ));
    }
    if rationale == "off" && !text.is_empty() {
        return Err(Error::invalid("this project does not take rationales"));
    }
    if text.len() > MAX_TEXT || input.flag_reason.as_deref().unwrap_or("").len() > MAX_TEXT {
        return Err(Error::invalid(format!(
            "rationale and flag reason: at most {MAX_TEXT} bytes"
        )));
    }
    if input.duration_ms.is_some_and(|d| d < 0) || input.replays.is_some_and(|r| r < 0) {
        return Err(Error::invalid("duration_ms and replays cannot be negative"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_choice_follows_the_sides() {
        assert_eq!(canonical("left", true), "a");
        assert_eq!(canonical("left", false), "b");
        assert_eq!(canonical("right", true), "b");
        assert_eq!(canonical("right", false), "a");
        assert_eq!(canonical("tie", false), "tie");
        assert_eq!(canonical("cant_tell", true), "cant_tell");
    }
}
