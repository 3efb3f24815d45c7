//! `next` for many raters in one statement.
//!
//! A regular `next` is one statement ([`super::NEXT_BY_CREDENTIAL`]), and under
//! load much of PostgreSQL's work on it is the statement's own cost, not the
//! rows': start the executor, lock the tables and indexes it reads, commit
//! (docs/benchmarks.md, "Leases many at a time"). A
//! [`Leaser`] takes the `next` calls waiting and answers them all with one
//! statement ([`NEXT_MANY`]), by the machinery the judgment [`super::Writer`]
//! uses ([`super::batched`]): a lone call goes at once, on its own statement,
//! and a batch grows only while the last one runs.
//!
//! The statement does for each caller what the single one does: look up the
//! caller and the project, reap the project's expired leases, read the quality
//! rates, whether the rater is paused and their live leases, and, when they may
//! have a regular pair, lease one. The pairs come from one pool per project:
//! the first open pairs (by priority, then import order) that no other
//! statement holds, locked as they are read (`for update skip locked`, on the
//! pair's newest version, so its free slots are current). The callers then take
//! them in turn (a recursive step): each the first pair of the pool they have
//! not been given that still has a free slot after the callers before them.
//!
//! Whatever the statement leaves open for a caller (not found, a quality check,
//! nothing in the pool for them) takes the usual way, exactly as after the
//! single statement. A batch that fails as a whole (a rater's own requests
//! racing each other for one pair) is run again one call at a time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use futures::future::BoxFuture;
use sqlx::PgPool;

use super::{
    LAX_COMMIT, MAX_LIVE_LEASES, NEXT_BY_CREDENTIAL, NextRow, Rolls,
    batched::{Batch, Queue, column},
    may_label_sql,
    own_conn::OwnConn,
    paused_sql,
};
use crate::error::Result;

/// The leasing connection's `application_name`.
pub const APPLICATION_NAME: &str = "backflip-leaser";

/// A `next` call to answer: the caller's credential (its digest, and which of
/// [`crate::auth::CALLERS`] reads it), the project's slug and the call's rolls.
pub(super) struct Ask {
    pub digest: Vec<u8>,
    pub caller: usize,
    pub slug: String,
    pub rolls: Rolls,
}

/// The handle to the leasing task (cheap to clone). The task ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Leaser {
    queue: Queue<Leasing>,
}

/// `next` calls as a [`Batch`]; what the leaser has done since it started.
#[derive(Debug, Default)]
struct Leasing {
    statements: AtomicU64,
    calls: AtomicU64,
    leased: AtomicU64,
    largest: AtomicUsize,
}

/// What the leaser has done since it started, for benchmarks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaserStats {
    /// Statements run (a batch, or one call on its own).
    pub statements: u64,
    /// Calls those statements answered.
    pub calls: u64,
    /// Calls they leased a pair to (the rest went the usual way, or were refused).
    pub leased: u64,
    /// The most calls one statement was given.
    pub largest: usize,
    /// Calls waiting for the leasing task now.
    pub queued: usize,
}

impl LeaserStats {
    /// The statements and calls since `earlier` (the largest and the queue as now).
    pub fn since(self, earlier: LeaserStats) -> LeaserStats {
        LeaserStats {
            statements: self.statements - earlier.statements,
            calls: self.calls - earlier.calls,
            leased: self.leased - earlier.leased,
            ..self
        }
    }

    /// Calls answered per statement.
    pub fn per_statement(&self) -> f64 {
        self.calls as f64 / self.statements.max(1) as f64
    }
}

impl Leaser {
    /// Start the leasing task on the current Tokio runtime, on a connection to
    /// `pool`'s database.
    pub fn spawn(pool: PgPool) -> Leaser {
        Leaser {
            queue: Queue::spawn(pool, Leasing::default()),
        }
    }

    pub fn stats(&self) -> LeaserStats {
        let counts = self.queue.batch();
        LeaserStats {
            statements: counts.statements.load(Relaxed),
            calls: counts.calls.load(Relaxed),
            leased: counts.leased.load(Relaxed),
            largest: counts.largest.load(Relaxed),
            queued: self.queue.queued(),
        }
    }

    /// [`super::NEXT_BY_CREDENTIAL`]'s answer to `ask` (in a batch with whatever
    /// else is waiting): None when the caller or project was not found or may
    /// not label there as is, or the statement lost a race.
    pub(super) async fn lease(&self, ask: Ask) -> Result<Option<NextRow>> {
        self.queue.call(ask).await
    }
}

impl Batch for Leasing {
    type Input = Ask;
    type Output = Option<NextRow>;
    /// A caller's second call in a batch goes after it, on its own: its leases
    /// so far decide what it may have.
    type Key = (Vec<u8>, usize);
    const NAME: &'static str = APPLICATION_NAME;
    const WHAT: &'static str = "leaser";

    fn key(ask: &Ask) -> (Vec<u8>, usize) {
        (ask.digest.clone(), ask.caller)
    }

    fn many<'a>(
        &'a self,
        conn: &'a mut OwnConn,
        asks: &'a [&'a Ask],
    ) -> BoxFuture<'a, Result<Vec<Option<NextRow>>>> {
        Box::pin(many(self, conn, asks))
    }

    fn one<'a>(
        &'a self,
        conn: &'a mut OwnConn,
        ask: &'a Ask,
    ) -> BoxFuture<'a, Result<Option<NextRow>>> {
        Box::pin(one(self, conn, ask))
    }
}

/// One call's [`super::NEXT_BY_CREDENTIAL`]. A race the database resolved by
/// refusing it is None: the usual way retries it.
async fn one(counts: &Leasing, conn: &mut OwnConn, ask: &Ask) -> Result<Option<NextRow>> {
    let db = conn.get().await?;
    counts.statements.fetch_add(1, Relaxed);
    counts.calls.fetch_add(1, Relaxed);
    let result = sqlx::query_as(sqlx::AssertSqlSafe(NEXT_BY_CREDENTIAL[ask.caller].as_str()))
        .bind(ask.rolls.left_is_a)
        .bind(ask.rolls.gold)
        .bind(ask.rolls.repeat)
        .bind(&ask.digest)
        .bind(&ask.slug)
        .fetch_optional(&mut *db)
        .await;
    conn.used(&result);
    match result {
        Err(e) if super::is_race(&e) => Ok(None),
        other => {
            let row: Option<NextRow> = other?;
            let leased = row.as_ref().is_some_and(|r| r.id.is_some());
            counts.leased.fetch_add(u64::from(leased), Relaxed);
            Ok(row)
        }
    }
}

/// A row of [`NEXT_MANY`]: the call's place in the batch (from 1) and its answer.
#[derive(sqlx::FromRow)]
struct ManyRow {
    ord: i64,
    #[sqlx(flatten)]
    row: NextRow,
}

/// The calls in one statement, each one's answer in their order: None for a
/// call that was not found or may not label there as is.
async fn many(counts: &Leasing, conn: &mut OwnConn, asks: &[&Ask]) -> Result<Vec<Option<NextRow>>> {
    let db = conn.get().await?;
    counts.statements.fetch_add(1, Relaxed);
    counts.calls.fetch_add(asks.len() as u64, Relaxed);
    counts.largest.fetch_max(asks.len(), Relaxed);
    let result: std::result::Result<Vec<ManyRow>, sqlx::Error> =
        sqlx::query_as(sqlx::AssertSqlSafe(NEXT_MANY.as_str()))
            .bind(column(asks, |a| a.digest.as_slice()))
            .bind(column(asks, |a| a.caller as i32))
            .bind(column(asks, |a| a.slug.as_str()))
            .bind(column(asks, |a| a.rolls.left_is_a))
            .bind(column(asks, |a| a.rolls.gold))
            .bind(column(asks, |a| a.rolls.repeat))
            .fetch_all(&mut *db)
            .await;
    conn.used(&result);
    let mut answers: Vec<Option<NextRow>> = asks.iter().map(|_| None).collect();
    for r in result? {
        if r.row.id.is_some() {
            counts.leased.fetch_add(1, Relaxed);
        }
        answers[(r.ord - 1) as usize] = Some(r.row);
    }
    Ok(answers)
}

/// [`super::NEXT_BY_CREDENTIAL`] for many calls: `$1`–`$6` are the calls'
/// digests, caller kinds (the index into [`crate::auth::CALLERS`]), project
/// slugs, sides and gold and repeat rolls. Answers a row per call that found its
/// caller and project and may label there as is (see `NEXT_BY_CREDENTIAL`),
/// with `ord`, the call's place in the arrays (from 1).
///
/// Each project's pool holds as many pairs as the batch has callers there who
/// may have one. With overlap 1, every open pair is new to every caller, so the
/// pool serves them all; otherwise a caller who has been given every pair in it
/// goes the usual way.
static NEXT_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let callers = crate::auth::CALLERS
        .iter()
        .enumerate()
        .map(|(kind, caller)| {
            format!(
                "select * from ({}) c where i.caller = {kind}",
                super::map_params(caller, |_| "i.digest".into())
            )
        })
        .collect::<Vec<_>>()
        .join(" union all ");
    let may_label = may_label_sql("c.user_role = 'admin'", "p.id", "c.user_id");
    let paused = paused_sql("w.project_id", "w.user_id");
    let expired = super::map_params(
        &super::expired_sql(
            "join comparisons c on c.id = a.comparison_id",
            "for update of a skip locked for no key update of c skip locked",
        ),
        |n| match n {
            1 => "any(array(select distinct project_id from who))".into(),
            n => panic!("the reap has no parameter ${n}"),
        },
    );
    format!(
        "with recursive
         i as (select * from unnest($1::bytea[], $2::int[], $3::text[], $4::bool[], $5::real[],
                                    $6::real[]) with ordinality
                   as i(digest, caller, slug, left_is_a, gold, repeat, ord)),
         who as (
             select i.ord, i.left_is_a, i.gold, i.repeat, p.id as project_id,
                    p.lease_seconds::float8 as lease_seconds, p.gold_rate, p.repeat_rate, c.user_id
             from i join projects p on p.slug = i.slug
             cross join lateral ({callers}) c
             where p.content_warning is null
               and p.session_cap_pairs is null and p.session_cap_minutes is null
               and {may_label}
               and {LAX_COMMIT}),
         {expired},
         reaped as (update comparisons c set taken_count = c.taken_count - p.n
                    from per_pair p where c.id = p.comparison_id),
         s as (
             select w.*, {paused} as paused,
                    h.id as held, h.comparison_id as held_pair, h.left_is_a as held_left_is_a,
                    h.expires_at as held_expires_at, h.n as held_count
             from who w left join lateral (
                 select id, comparison_id, left_is_a, expires_at, count(*) over () as n
                 from assignments
                 where rater_id = w.user_id and project_id = w.project_id and state = 'leased'
                   and expires_at > now()
                 order by created_at limit 1) h on true),
         -- the callers who may have a regular pair, numbered for the turns below
         e as (
             select row_number() over (order by ord) as n, ord, project_id, user_id, left_is_a,
                    lease_seconds
             from s
             where not paused and coalesce(held_count, 0) < {MAX_LIVE_LEASES}
               and gold >= gold_rate and repeat >= repeat_rate),
         pool as (
             select x.* from (select project_id, count(*) as k from e group by project_id) ep
             cross join lateral (
                 select c.id, c.project_id,
                        c.overlap - c.taken_count as free
                 from comparisons c
                 where c.project_id = ep.project_id and c.is_open
                   and c.id not in (select comparison_id from per_pair)
                 order by c.priority desc, c.seq
                 limit ep.k
                 for update of c skip locked) x),
         -- the callers' turns: each takes the first pair of the pool with a
         -- slot left after the turns before that they have not been given
         -- (`offset 0`: see `OPEN_TO_RATER`). The scan stops at the pair it
         -- takes, as the pool is read in the order it was made (no sort is
         -- asked for, so the history is probed for those pairs only).
         turns (n, taken, pick) as (
             select 0::bigint, array[]::uuid[], null::uuid
             union all
             select e.n, t.taken || x.id, x.id
             from turns t join e on e.n = t.n + 1
             left join lateral (
                 select p.id from pool p
                 where p.project_id = e.project_id
                   and p.free > cardinality(array_positions(t.taken, p.id))
                   and not exists (select 1 from assignments a
                                   where a.comparison_id = p.id and a.rater_id = e.user_id
                                     and a.state <> 'expired' and a.kind <> 'repeat'
                                   offset 0)
                 limit 1) x on true),
         picked as (
             update comparisons c set taken_count = c.taken_count + t.k
             from (select pick, count(*) as k from turns where pick is not null group by pick) t
             where c.id = t.pick
             returning c.id, c.project_id, c.prompt, c.rollout_a, c.rollout_b,
                       c.generated and not c.is_open as filled),
         {refill},
         assigned as (
             insert into assignments (comparison_id, project_id, rater_id, left_is_a, expires_at,
                                      kind)
             select t.pick, e.project_id, e.user_id, e.left_is_a,
                    now() + make_interval(secs => e.lease_seconds), 'regular'
             from turns t join e on e.n = t.n
             where t.pick in (select id from picked)
             returning id, comparison_id, rater_id, expires_at),
         -- materialized: read into the final join once, where inlined it would
         -- be joined again for every caller (the row estimates are of one caller)
         shown as materialized (
             select e.ord, a.id, a.expires_at, p.prompt, ra.body as a_body,
                    ra.clip_sha256 as a_clip, rb.body as b_body, rb.clip_sha256 as b_clip
             from assigned a
             join picked p on p.id = a.comparison_id
             join turns t on t.pick = a.comparison_id
             join e on e.n = t.n and e.user_id = a.rater_id
             join rollouts ra on ra.id = p.rollout_a
             join rollouts rb on rb.id = p.rollout_b)
         select s.ord, s.gold_rate, s.repeat_rate, s.paused, s.held, s.held_pair,
                s.held_left_is_a, s.held_expires_at, s.held_count, shown.id, shown.expires_at,
                shown.prompt, shown.a_body, shown.a_clip, shown.b_body, shown.b_clip
         from s left join shown on shown.ord = s.ord",
        refill = crate::selection::job::refill_cte("picked"),
    )
});
