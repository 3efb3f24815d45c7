//! Assignment of pairs to raters, and their judgments.
//!
//! Concurrency design: a pair's row in `comparisons` carries `taken_count`,
//! its slots taken by leases and by the judgments that answered them (see
//! migration `taken_slots`; the view `pair_counts` tells the two apart),
//! changed only by the statements that lease, give leases back, and exclude or
//! include raters: a judgment keeps its lease's slot and does not write the
//! pair, unless its rater is excluded (it gives the slot back).
//! `next` picks an open pair with
//! `FOR UPDATE SKIP LOCKED`, so concurrent raters take different rows; when a
//! row was changed by a transaction that committed after our snapshot,
//! PostgreSQL re-checks `is_open` (stored: `taken_count < overlap`) on the new
//! version before locking it, so a pair is never
//! over-assigned. Expired leases
//! are reaped (and their slot given back) by `next`'s statement, skipping rows
//! another statement holds, so that statement never waits for a row lock (only,
//! briefly, for another transaction queuing the same refill job); when
//! it finds nothing to lease, a second reap waits for those rows (locking pairs
//! in id order, as a batch with an excluded rater's judgments does) before the
//! waiting pick.
//!
//! Round trips are the cost on this path (`backflip bench submit`, `bench
//! next`): a regular `next` is one statement (look up the caller and the
//! project, reap, the rater's leases, pick, take a slot, lease, read the pair:
//! [`next_by_credential`]); a judgment is one statement (look up a bearer
//! token, judge the lease, write the judgment, queue the jobs it calls for),
//! each its own transaction. Under load the calls waiting at one
//! moment share one statement: the judgments ([`writer`]), and the `next`
//! calls ([`leaser`]). The uncommon answers (a quality check, a refusal) take a
//! few more.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::User,
    error::{Error, Result},
    projects::Access,
};

mod batched;
pub mod leaser;
mod own_conn;
pub mod writer;
pub use leaser::Leaser;
pub use writer::Writer;

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
///
/// Every statement runs on `conn`, the caller's connection for the request
/// (each trip to the pool costs a round trip to PostgreSQL when the connection
/// is given back).
pub async fn next(conn: &mut PgConnection, access: &Access) -> Result<Option<NextPair>> {
    crate::rater::gate(conn, access).await?;
    // Retry the rare races the database resolves by refusing one side: a
    // deadlock, or this rater's own concurrent request taking the same pair.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_next(conn, access).await {
            Err(Error::Internal(e)) if attempt < 5 && is_retryable(&e) => continue,
            other => return other,
        }
    }
}

fn is_retryable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<sqlx::Error>().is_some_and(is_race)
}

/// A race the database resolved by refusing this side (see [`next`]).
fn is_race(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "40P01" || c == "23505" || c == "40001")
}

/// `next` for the caller presenting `credential`, in project `slug`: in the
/// common case one statement ([`NEXT_BY_CREDENTIAL`]), shared under load with
/// the other calls waiting ([`leaser`]), looks up the caller and the project and
/// leases the pair, and the call takes no connection from `pool`. Whatever that
/// statement leaves open (the caller or project not found, not allowed, a
/// content warning or a session cap to check first, a quality check, nothing
/// free without waiting) takes the usual way: the look-up
/// ([`crate::projects::access_by_credential`]) that tells which, then [`next`],
/// or the rest of it with the same rolls.
pub async fn next_by_credential(
    pool: &PgPool,
    leaser: &Leaser,
    credential: &crate::auth::Credential,
    slug: &str,
) -> Result<Option<NextPair>> {
    let rolls = Rolls::draw();
    let (digest, caller) = credential.lookup();
    let ask = leaser::Ask {
        digest,
        caller,
        slug: slug.to_owned(),
        rolls,
    };
    let row = leaser.lease(ask).await?;
    let rates = row.as_ref().map(|r| (r.gold_rate, r.repeat_rate));
    let mut conn = match row {
        Some(mut row) => {
            if let Some(pair) = leased(&mut row, rolls.left_is_a) {
                return Ok(Some(pair));
            }
            let mut conn = pool.acquire().await?;
            if let Some(pair) = settled(&mut conn, row, rolls.left_is_a).await? {
                return Ok(Some(pair));
            }
            conn
        }
        None => pool.acquire().await?,
    };
    let access = crate::projects::access_by_credential(&mut conn, credential, slug)
        .await?
        .require_label()?;
    if let Some(rates) = rates {
        match finish(&mut conn, &access, rates, rolls).await {
            Err(Error::Internal(e)) if is_retryable(&e) => {}
            other => return other,
        }
    }
    next(&mut conn, &access).await
}

/// The first open pair (by priority, then import order) the rater has not been
/// given. `kind <> 'repeat'` changes nothing (a repeat is always of a pair the
/// rater holds a judged regular assignment for) but lets the anti-join probe the
/// partial unique index `assignments_rater_pair_idx` once per candidate, instead
/// of reading the rater's whole history. `offset 0` keeps PostgreSQL from turning
/// the test into an anti-join: as one, with an estimate of the rater's history
/// older than the history, it read that whole history again for every candidate
/// (over 1,000 rows each, `bench submit`). `{GUARD}`: further conditions. The
/// pick takes the first ([`assign_sql`]); progress counts them
/// ([`crate::rater::progress`]).
pub(crate) const OPEN_TO_RATER: &str = "select c.id from comparisons c
     where c.project_id = $1 and c.is_open
       and not exists (select 1 from assignments a
                       where a.comparison_id = c.id and a.rater_id = $2
                         and a.state <> 'expired' and a.kind <> 'repeat'
                       offset 0)
       {GUARD}
     order by c.priority desc, c.seq";

/// Take a slot of the picked pair, lease it to the rater and read it as shown:
/// `$1` project, `$2` rater, `$3` left_is_a, `$4` lease seconds. Common table
/// expressions, ending in `shown`.
const ASSIGN_OPEN_PAIR: &str = "picked as (
         update comparisons set taken_count = taken_count + 1
         where id = ({PICK} {LOCK})
         returning id, project_id, prompt, rollout_a, rollout_b,
                   generated and not is_open as filled),
     {REFILL},
     assigned as (
         insert into assignments (comparison_id, project_id, rater_id, left_is_a, expires_at, kind)
         select id, $1, $2, $3, now() + make_interval(secs => $4), 'regular' from picked
         returning id, expires_at),
     shown as (
         select a.id, a.expires_at, p.prompt, ra.body as a_body, ra.clip_sha256 as a_clip,
                rb.body as b_body, rb.clip_sha256 as b_clip
         from assigned a, picked p
         join rollouts ra on ra.id = p.rollout_a
         join rollouts rb on rb.id = p.rollout_b)";

/// A condition that is always true and makes the statement's transaction commit
/// without waiting for its WAL to reach the disk (`synchronous_commit = off`,
/// for this transaction only). For the statements that lease pairs: a lease is
/// soft state. Should PostgreSQL itself crash before the WAL writer flushes it
/// (at most three times `wal_writer_delay`: 0.6 s by default), the lease is lost
/// with everything after it, and its pair goes back to the queue; the rater's
/// answer to it is then refused (404: an unknown assignment), as one to an
/// expired lease is (410). Nothing acknowledged is lost: a judgment commits with the
/// flush (see `writer`), and a flush covers all the WAL before it, so once a
/// judgment is stored, the lease it answers is on disk too. Each `next` then
/// costs no disk flush of its own.
const LAX_COMMIT: &str = "set_config('synchronous_commit', 'off', true) = 'off'";

/// Whether `user` may label `project` (SQL expressions), as
/// [`crate::projects::Access::can_label`] says: an admin (`is_admin`, an SQL condition), or an
/// annotator or lead member of the project. Every statement that leases asks
/// it this way.
fn may_label_sql(is_admin: &str, project: &str, user: &str) -> String {
    format!(
        "({is_admin}
          or exists (select 1 from project_members m
                     where m.project_id = {project} and m.user_id = {user}
                       and m.role in ('annotator', 'lead')))"
    )
}

/// Whether the project's leads have paused `user`'s labeling in `project`.
fn paused_sql(project: &str, user: &str) -> String {
    format!(
        "exists (select 1 from project_members m where m.project_id = {project}
                 and m.user_id = {user} and m.paused_at is not null)"
    )
}

/// The pick with its lock clause and guard, as a statement's tail.
fn assign_sql(lock: &str, guard: &str) -> String {
    ASSIGN_OPEN_PAIR
        .replace(
            "{PICK}",
            &format!("{} limit 1", OPEN_TO_RATER.replace("{GUARD}", guard)),
        )
        .replace("{LOCK}", lock)
        .replace("{REFILL}", &crate::selection::job::refill_cte("picked"))
}

/// A regular pair on its own (see [`try_next`]): first skipping pairs other
/// raters are taking right now, then waiting for them.
static ASSIGN_ALONE: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
    ["for update of c skip locked", "for update of c"].map(|lock| {
        format!(
            "with {} select * from shown where {LAX_COMMIT}",
            assign_sql(lock, "")
        )
    })
});

/// The regular `next` in one statement, `$5` and `$6` being the gold and repeat
/// rolls: give the project's expired leases back to the queue, skipping leases
/// a judgment is writing and pairs another statement has locked (reaped later,
/// by [`REAP_WAITING`] when this statement finds nothing), read the quality settings, whether the rater is
/// paused and the oldest live lease with how many the rater holds (`s`), and —
/// only when the rater may have a new regular pair — pick one, skipping pairs
/// other raters are taking right now, and lease it. A pair reaped here is not
/// picked in the same statement (a row is changed once per statement); the
/// waiting pick that follows an empty answer sees it.
///
/// The statement never waits for a row lock (its refill insert may wait, briefly,
/// for another transaction queuing the same job): the pairs it reaps are locked
/// with the leases (the reap itself runs last, as it is referenced by nothing),
/// and the pick skips what is locked. So it cannot deadlock with a batch of
/// judgments, which locks the pairs of excluded raters' judgments (in id order)
/// and may wait for this statement.
static NEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "with {},
         reaped as (update comparisons c set taken_count = c.taken_count - p.n
                    from per_pair p where c.id = p.comparison_id),
         s as (
             select p.gold_rate, p.repeat_rate, {paused} as paused,
                    h.id as held, h.comparison_id as held_pair, h.left_is_a as held_left_is_a,
                    h.expires_at as held_expires_at, h.n as held_count
             from projects p left join lateral (
                 select id, comparison_id, left_is_a, expires_at, count(*) over () as n
                 from assignments
                 where rater_id = $2 and project_id = p.id and state = 'leased' and expires_at > now()
                 order by created_at limit 1) h on true
             where p.id = $1 and {LAX_COMMIT}),
         {}
         select s.*, shown.* from s left join shown on true",
        expired_sql(
            "join comparisons c on c.id = a.comparison_id",
            "for update of a skip locked for no key update of c skip locked"
        ),
        assign_sql(
            "for update of c skip locked",
            &format!(
                "and (select not paused and coalesce(held_count, 0) < {MAX_LIVE_LEASES}
                             and $5 >= gold_rate and $6 >= repeat_rate from s)
                 and c.id not in (select comparison_id from per_pair)"
            ),
        ),
        paused = paused_sql("p.id", "$2"),
    )
});

/// Give the project's expired leases back to the queue (`$1`), waiting for
/// pairs another statement holds (after [`NEXT`] skipped them). The pairs are
/// locked in id order before they are counted, as a batch of judgments does for
/// its excluded raters' pairs (`writer`), so the two cannot deadlock.
static REAP_WAITING: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "with {},
         pairs as (select id from comparisons where id in (select comparison_id from per_pair)
                   order by id for no key update)
         update comparisons c set taken_count = c.taken_count - p.n
         from per_pair p where c.id = p.comparison_id and c.id in (select id from pairs)",
        expired_sql("", "for update skip locked")
    )
});

/// [`NEXT`] for a caller and a project not yet looked up: `who` reads the user
/// of a credential's digest (`$4`, by [`crate::auth::CALLERS`]) and the project
/// whose slug is `$5`, and stands in for `NEXT`'s project, rater and lease
/// length; the rolls and side are `$1`–`$3`. `who` is empty, and the statement
/// changes nothing and answers no row, unless the caller may label the project
/// (a member annotator or lead, or an admin: `Access::can_label`) and the
/// project asks nothing of them before a pair (no content warning, no session
/// caps: `rater::gate`).
static NEXT_BY_CREDENTIAL: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
    let next = NEXT
        .strip_prefix("with ")
        .expect("NEXT starts with its CTEs");
    let next = map_params(next, |n| match n {
        1 => "(select project_id from who)".into(),
        2 => "(select user_id from who)".into(),
        3 => "$1".into(),
        4 => "(select lease_seconds from who)".into(),
        5 => "$2".into(),
        6 => "$3".into(),
        n => panic!("NEXT has no parameter ${n}"),
    });
    crate::auth::CALLERS.map(|caller| {
        let caller = map_params(caller, |_| "$4".into());
        format!(
            "with who as (
                 select p.id as project_id, p.lease_seconds::float8 as lease_seconds, c.user_id
                 from projects p, ({caller}) c
                 where p.slug = $5 and p.content_warning is null
                   and p.session_cap_pairs is null and p.session_cap_minutes is null
                   and {}),
             {next}",
            may_label_sql("c.user_role = 'admin'", "p.id", "c.user_id")
        )
    })
});

/// `sql` with each parameter `$n` replaced by `map(n)`.
fn map_params(sql: &str, map: impl Fn(u32) -> String) -> String {
    let mut out = String::with_capacity(sql.len() + 256);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        match rest[at + 1..at + 1 + digits].parse() {
            Ok(n) => out.push_str(&map(n)),
            Err(_) => out.push('$'),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// The reap's first two common table expressions: `expired`, the project's
/// (`$1`) expired leases, taken with `lock` (on `a`, the assignment, and on
/// anything `join` adds), marked expired; `per_pair`, how many regular slots
/// that frees per pair. The statement gives the slots back.
fn expired_sql(join: &str, lock: &str) -> String {
    format!(
        "expired as (
             update assignments set state = 'expired'
             where id in (select a.id from assignments a {join}
                          where a.project_id = $1 and a.state = 'leased' and a.expires_at <= now()
                          {lock})
             returning comparison_id, kind),
         per_pair as (select comparison_id, count(*) as n from expired
                      where kind = 'regular' group by comparison_id)"
    )
}

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

/// [`NEXT`]'s answer.
#[derive(sqlx::FromRow)]
struct NextRow {
    gold_rate: f32,
    repeat_rate: f32,
    paused: bool,
    held: Option<Uuid>,
    held_pair: Option<Uuid>,
    held_left_is_a: Option<bool>,
    held_expires_at: Option<OffsetDateTime>,
    held_count: Option<i64>,
    id: Option<Uuid>,
    expires_at: Option<OffsetDateTime>,
    prompt: Option<String>,
    a_body: Option<String>,
    a_clip: Option<String>,
    b_body: Option<String>,
    b_clip: Option<String>,
}

/// The quality-check rolls and the side rollout a is shown on, drawn once per try.
#[derive(Clone, Copy)]
struct Rolls {
    gold: f32,
    repeat: f32,
    left_is_a: bool,
}

impl Rolls {
    fn draw() -> Rolls {
        let mut rng = rand::rng();
        Rolls {
            gold: rng.random(),
            repeat: rng.random(),
            left_is_a: rng.random_bool(0.5),
        }
    }
}

async fn try_next(conn: &mut PgConnection, access: &Access) -> Result<Option<NextPair>> {
    let (project, rater) = (&access.project, &access.user);
    // Quality checks, each taken only at its configured rate: a gold pair the
    // rater has not seen, or one of their judged pairs again with the sides
    // swapped. Neither touches the pair's counts.
    let rolls = Rolls::draw();
    let row: NextRow = sqlx::query_as(sqlx::AssertSqlSafe(NEXT.as_str()))
        .bind(project.id)
        .bind(rater.id)
        .bind(rolls.left_is_a)
        .bind(f64::from(project.lease_seconds))
        .bind(rolls.gold)
        .bind(rolls.repeat)
        .fetch_one(&mut *conn)
        .await?;
    let rates = (row.gold_rate, row.repeat_rate);
    if let Some(pair) = settled(&mut *conn, row, rolls.left_is_a).await? {
        return Ok(Some(pair));
    }
    finish(conn, access, rates, rolls).await
}

/// The first live lease its rater took, in the judgment's project, since a
/// judgment was stored: what a one-call `next` that stored it answered (unless
/// the rater leased another meanwhile), for the replay of that call, so a
/// retry after a lost answer is handed that pair rather than leased another
/// while it waits for its lease to run out. None when the rater may no longer
/// label there or is paused: the replay then asks the leaser, which says why.
pub async fn leased_since(pool: &PgPool, judgment: &Judgment) -> Result<Option<NextPair>> {
    static HELD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "select n.id, n.comparison_id, n.left_is_a, n.expires_at
             from assignments j
             join assignments n on n.rater_id = j.rater_id and n.project_id = j.project_id
             where j.id = $1 and n.state = 'leased' and n.expires_at > now()
               and n.created_at >= $2 and {} and not {}
             order by n.created_at
             limit 1",
            may_label_sql(
                "exists (select 1 from users u where u.id = j.rater_id and u.role = 'admin')",
                "j.project_id",
                "j.rater_id"
            ),
            paused_sql("j.project_id", "j.rater_id")
        )
    });
    let held: Option<(Uuid, Uuid, bool, OffsetDateTime)> = sqlx::query_as(HELD.as_str())
        .bind(judgment.assignment_id)
        .bind(judgment.created_at)
        .fetch_optional(pool)
        .await?;
    match held {
        Some((id, pair, left_is_a, expires_at)) => {
            Ok(Some(shown(pool, id, pair, left_is_a, expires_at).await?))
        }
        None => Ok(None),
    }
}

/// [`NEXT`]'s answer when it settles the call: the rater is paused (an error),
/// holds as many leases as they may (the oldest again), or was leased a pair.
async fn settled(
    conn: &mut PgConnection,
    mut row: NextRow,
    left_is_a: bool,
) -> Result<Option<NextPair>> {
    if row.paused {
        return Err(Error::Conflict {
            code: "paused",
            message: "the project's leads have paused your labeling here".into(),
        });
    }
    if let (Some(id), Some(comparison_id), Some(left_is_a), Some(expires_at), Some(n)) = (
        row.held,
        row.held_pair,
        row.held_left_is_a,
        row.held_expires_at,
        row.held_count,
    ) && n >= MAX_LIVE_LEASES
    {
        return Ok(Some(
            shown(&mut *conn, id, comparison_id, left_is_a, expires_at).await?,
        ));
    }
    Ok(leased(&mut row, left_is_a))
}

/// The pair [`NEXT`] leased (taken out of its answer), or None when it leased none.
fn leased(row: &mut NextRow, left_is_a: bool) -> Option<NextPair> {
    let (Some(id), Some(expires_at), Some(prompt)) = (row.id, row.expires_at, row.prompt.take())
    else {
        return None;
    };
    let shown = (
        id,
        expires_at,
        prompt,
        row.a_body.take(),
        row.a_clip.take(),
        row.b_body.take(),
        row.b_clip.take(),
    );
    Some(present(shown, left_is_a))
}

/// The rest of a `next` whose [`NEXT`] leased nothing, with its `rolls` and the
/// project's gold and repeat rates: the quality check the rolls asked for, else
/// the waiting reap and pick.
async fn finish(
    conn: &mut PgConnection,
    access: &Access,
    (gold_rate, repeat_rate): (f32, f32),
    rolls: Rolls,
) -> Result<Option<NextPair>> {
    let (project, rater) = (&access.project, &access.user);
    let left_is_a = rolls.left_is_a;
    let gold = rolls.gold < gold_rate;
    let check = gold || rolls.repeat < repeat_rate;
    if check {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        if let Some(pair) = extra(&mut tx, access, gold).await? {
            tx.commit().await?;
            return Ok(Some(pair));
        }
    }

    // No regular pair was free to take without waiting (or the rolls asked for a
    // quality check there was none of): the open pairs may all be locked by
    // transactions that will leave slots free, so wait for them rather than
    // wrongly answer "nothing left". So too for the expired leases `NEXT` left
    // because their pairs were locked: reap them now, waiting. The skipping
    // pick runs again first when the rolls kept the statement above from
    // trying it.
    sqlx::query(sqlx::AssertSqlSafe(REAP_WAITING.as_str()))
        .bind(project.id)
        .execute(&mut *conn)
        .await?;
    let tries = if check {
        &ASSIGN_ALONE[..]
    } else {
        &ASSIGN_ALONE[1..]
    };
    for sql in tries {
        let found: Option<ShownRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(project.id)
            .bind(rater.id)
            .bind(left_is_a)
            .bind(f64::from(project.lease_seconds))
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(found) = found {
            return Ok(Some(present(found, left_is_a)));
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
        // `offset 0`: one index probe per candidate, as in `OPEN_TO_RATER`.
        sqlx::query_scalar::<_, Uuid>(
            "select c.id from comparisons c
             where c.project_id = $1 and c.gold is not null
               and not exists (select 1 from assignments a where a.comparison_id = c.id
                               and a.rater_id = $2 and a.state <> 'expired'
                               and a.kind <> 'repeat' offset 0)
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
    // A lease like any other: its transaction commits without a flush. (Not
    // covered by a test: `NEXT` always runs first and sets the same in a test's
    // enclosing transaction, so only the commit itself could tell.)
    static LEASE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "insert into assignments (comparison_id, project_id, rater_id, left_is_a, expires_at,
                                      kind, repeat_of)
             select $1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7 where {LAX_COMMIT}
             returning id, expires_at"
        )
    });
    let (assignment_id, expires_at): (Uuid, OffsetDateTime) =
        sqlx::query_as(sqlx::AssertSqlSafe(LEASE.as_str()))
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
///
/// The common case is one statement, committed on its own, that `writer` shares
/// with the other judgments waiting when it is free (see [`writer`]): the
/// assignment is marked judged only if it is the caller's live lease (of the
/// project with slug `project`, when the caller names one: 422 `wrong_project`
/// otherwise) and the answer fits the project, and in the same statement the
/// judgment is written
/// (the pair keeps the slot the lease took, unless the rater is excluded) and
/// any job the judgment calls for is queued. When
/// that statement changes nothing for it, [`refusal`] reads why and answers as
/// the caller needs (a replay, or the error), so every refusal is explained by
/// one code path.
pub async fn submit(
    writer: &Writer,
    judge: Judge<'_>,
    assignment_id: Uuid,
    project: Option<&str>,
    input: &JudgmentInput,
    idempotency_key: Option<&str>,
) -> Result<(Judgment, bool)> {
    let pool = writer.pool();
    let submission = Submission {
        judge,
        assignment_id,
        project,
        input,
        idempotency_key,
    };
    if let Some(key) = idempotency_key
        && (key.is_empty() || key.len() > 200)
    {
        judge.user(pool).await?;
        return Err(Error::BadRequest {
            code: "bad_idempotency_key",
            message: "Idempotency-Key must be 1-200 characters".into(),
        });
    }
    // Answers that are wrong whatever the project go straight to `refusal`, which
    // reports them in their place among the other checks.
    if validate_input(input).is_ok() {
        let (rater_id, token_hash) = match judge {
            Judge::User(user) => (Some(user.id), None),
            Judge::Token(token) => (None, Some(crate::auth::digest(token))),
        };
        let pending = writer::Pending {
            rater_id,
            token_hash,
            assignment_id,
            project: project.map(str::to_owned),
            input: input.clone(),
            idempotency_key: idempotency_key.map(str::to_owned),
        };
        // Twice at most: a lease refused and then found in order by `refusal` can
        // only mean a concurrent change in between; the second try settles it.
        for _ in 0..2 {
            if let Some(j) = writer.store(pending.clone()).await? {
                return Ok((j, true));
            }
            match refusal(pool, &submission).await? {
                Some(replayed) => return Ok((replayed, false)),
                None => continue,
            }
        }
        return Err(Error::Internal(anyhow::anyhow!(
            "judgment of {assignment_id} neither stored nor refused"
        )));
    }
    match refusal(pool, &submission).await? {
        Some(replayed) => Ok((replayed, false)),
        // `refusal` rejects what `validate_input` rejected.
        None => Err(Error::Internal(anyhow::anyhow!(
            "judgment input refused but not explained"
        ))),
    }
}

/// Who is judging: a user already looked up, or a bearer token, which the
/// judging statement looks up itself, so that a judgment through the API costs
/// no statement for its caller. Every answer but a stored judgment looks the
/// token up first, so an unknown token is told 401 before anything else.
#[derive(Clone, Copy)]
pub enum Judge<'a> {
    User(&'a User),
    Token(&'a str),
}

impl Judge<'_> {
    /// The user judging: 401 for an unknown token.
    pub async fn user(self, pool: &PgPool) -> Result<User> {
        match self {
            Judge::User(user) => Ok(user.clone()),
            Judge::Token(token) => crate::auth::user_by_token(pool, token)
                .await?
                .ok_or(Error::Unauthorized),
        }
    }
}

/// What [`submit`] was asked to store.
#[derive(Clone, Copy)]
struct Submission<'a> {
    judge: Judge<'a>,
    assignment_id: Uuid,
    /// The slug of the project the assignment must be of, when the caller named one.
    project: Option<&'a str>,
    input: &'a JudgmentInput,
    idempotency_key: Option<&'a str>,
}

/// Why [`Writer::store`] wrote nothing: the replayed judgment of an idempotency
/// key, or the error the caller gets (401 first, for an unknown token).
/// `Ok(None)` when the assignment is in order after all (it changed since the
/// writer looked).
async fn refusal(pool: &PgPool, submission: &Submission<'_>) -> Result<Option<Judgment>> {
    let Submission {
        judge,
        assignment_id,
        project,
        input,
        idempotency_key,
    } = *submission;
    let rater = &judge.user(pool).await?;
    type Row = (
        Uuid,
        String,
        bool,
        Vec<String>,
        Option<i32>,
        String,
        Option<Uuid>,
        String,
    );
    let row: Option<Row> = sqlx::query_as(
        "select a.rater_id, a.state, a.expires_at > now(),
                p.options, p.strength_scale, p.rationale,
                (select j.assignment_id from judgments j
                 where j.rater_id = $2 and j.idempotency_key = $3),
                p.slug
         from assignments a join projects p on p.id = a.project_id
         where a.id = $1",
    )
    .bind(assignment_id)
    .bind(rater.id)
    .bind(idempotency_key)
    .fetch_optional(pool)
    .await?;
    let Some((owner, state, live, options, scale, rationale_mode, key_used_for, slug)) = row else {
        // A key used for another assignment is reported as such, as a replay would.
        if let Some(key) = idempotency_key {
            replay(pool, rater, assignment_id, key).await?;
        }
        return Err(Error::NotFound("assignment"));
    };
    // The assignee learns that their assignment is of another project, even
    // on a replay; anyone else hears only that it is not theirs (below).
    if owner == rater.id
        && let Some(expected) = project
        && expected != slug
    {
        return Err(Error::Invalid {
            code: "wrong_project",
            message: format!("this assignment is of project {slug}, not {expected}"),
        });
    }
    if let (Some(key), Some(_)) = (idempotency_key, key_used_for) {
        // Judgments are never deleted: the key's judgment is there to replay.
        let j = replay(pool, rater, assignment_id, key).await?;
        return j.map(Some).ok_or(Error::NotFound("judgment"));
    }
    if owner != rater.id {
        return Err(Error::forbidden("this assignment belongs to another rater"));
    }
    if state == "judged" {
        // A concurrent request with the same key may have just committed.
        if let Some(key) = idempotency_key
            && let Some(j) = replay(pool, rater, assignment_id, key).await?
        {
            return Ok(Some(j));
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
    Ok(None)
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

/// The answer against the project's settings, then [`validate_input`].
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
    validate_input(input)
}

/// What is wrong with an answer whatever the project.
fn validate_input(input: &JudgmentInput) -> Result<()> {
    let text = input.rationale.as_deref().map(str::trim).unwrap_or("");
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
    fn parameters_are_renumbered_whole() {
        let sql = "select $1, $12, '$', $2 where x = $1";
        let mapped = map_params(sql, |n| match n {
            1 => "(a)".into(),
            n => format!("${}", n + 1),
        });
        assert_eq!(mapped, "select (a), $13, '$', $3 where x = (a)");
        // Every parameter of `NEXT` is replaced: the statement has only its own.
        for sql in NEXT_BY_CREDENTIAL.iter() {
            assert!(!sql.contains("$6") && sql.contains("$5") && sql.contains("$1"));
        }
    }

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
