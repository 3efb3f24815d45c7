//! Judgments written many at a time.
//!
//! Every judgment is one statement (see [`super::submit`]), and under load most
//! of PostgreSQL's work on it is the statement's own cost, not the rows': start
//! the executor and its triggers, check the locks, commit and flush the WAL
//! (docs/benchmarks.md, "One statement per call"). A [`Writer`] is a task that
//! takes the judgments waiting for it and writes them all in one statement: one
//! start-up and one commit for the lot, by the machinery it shares with the
//! leaser ([`super::batched`]: a lone judgment goes at once, a batch grows only
//! while the last one is being written, on a connection of its own).
//!
//! Nothing is acknowledged before its batch commits: each caller hears back
//! only then. A batch that fails as a whole (a reused idempotency key, a
//! deadlock) is written again one judgment at a time, so each caller gets its
//! own answer, as without batching.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
};

use futures::future::BoxFuture;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    JUDGMENT_COLUMNS, Judgment, JudgmentInput,
    batched::{Batch, Queue, column},
    canonical, non_blank,
    own_conn::OwnConn,
};
use crate::error::{Error, Result};

pub use super::batched::MAX_BATCH;

/// A judgment to store: the rater's live lease `assignment_id`, answered.
#[derive(Clone)]
pub(super) struct Pending {
    /// The rater, or (None) the one `token_hash` belongs to: the statement looks
    /// the bearer token's digest up itself, so a judgment through the API costs
    /// no lookup of its own.
    pub rater_id: Option<Uuid>,
    pub token_hash: Option<Vec<u8>>,
    pub assignment_id: Uuid,
    /// When set, the slug of the project the assignment must be of.
    pub project: Option<String>,
    pub input: JudgmentInput,
    pub idempotency_key: Option<String>,
}

/// The writer's connection's `application_name`.
pub const APPLICATION_NAME: &str = "backflip-writer";

/// The handle to the writing task (cheap to clone). The task ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Writer {
    pool: PgPool,
    queue: Queue<Judging>,
}

/// Judgments as a [`Batch`]; what the writer has done since it started.
#[derive(Debug, Default)]
struct Judging {
    statements: AtomicU64,
    judgments: AtomicU64,
    largest: AtomicUsize,
}

/// What the writer has done since it started, for benchmarks and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Judging statements run (a batch, or one judgment on its own).
    pub statements: u64,
    /// Judgments those statements wrote.
    pub judgments: u64,
    /// The most judgments one statement was given.
    pub largest: usize,
    /// Judgments waiting for the writing task now.
    pub queued: usize,
}

impl WriterStats {
    /// The statements and judgments since `earlier` (the largest and the queue as now).
    pub fn since(self, earlier: WriterStats) -> WriterStats {
        WriterStats {
            statements: self.statements - earlier.statements,
            judgments: self.judgments - earlier.judgments,
            ..self
        }
    }

    /// Judgments written per statement.
    pub fn per_statement(&self) -> f64 {
        self.judgments as f64 / self.statements.max(1) as f64
    }
}

impl Writer {
    /// Start the writing task on the current Tokio runtime.
    pub fn spawn(pool: PgPool) -> Writer {
        let queue = Queue::spawn(pool.clone(), Judging::default());
        Writer { pool, queue }
    }

    pub fn stats(&self) -> WriterStats {
        let counts = self.queue.batch();
        WriterStats {
            statements: counts.statements.load(Relaxed),
            judgments: counts.judgments.load(Relaxed),
            largest: counts.largest.load(Relaxed),
            queued: self.queue.queued(),
        }
    }

    /// The pool of the database the judgments are written to (the task's own
    /// connection is to the same database).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Write `pending` (in a batch with whatever else is waiting): its judgment
    /// once committed, or None when the assignment is not the rater's live lease or
    /// the answer does not fit the project.
    pub(super) async fn store(&self, pending: Pending) -> Result<Option<Judgment>> {
        self.queue.call(pending).await
    }
}

impl Batch for Judging {
    type Input = Pending;
    type Output = Option<Judgment>;
    /// A second judgment of one assignment in the same batch waits for the first
    /// to commit, then is refused or replayed on its own, as it would have been.
    type Key = Uuid;
    const NAME: &'static str = APPLICATION_NAME;
    const WHAT: &'static str = "judgment writer";

    fn key(pending: &Pending) -> Uuid {
        pending.assignment_id
    }

    fn many<'a>(
        &'a self,
        conn: &'a mut OwnConn,
        pending: &'a [&'a Pending],
    ) -> BoxFuture<'a, Result<Vec<Option<Judgment>>>> {
        Box::pin(async move {
            let mut by_assignment: HashMap<Uuid, Judgment> = store(self, conn, pending)
                .await?
                .into_iter()
                .map(|j| (j.assignment_id, j))
                .collect();
            Ok(pending
                .iter()
                .map(|p| by_assignment.remove(&p.assignment_id))
                .collect())
        })
    }

    fn one<'a>(
        &'a self,
        conn: &'a mut OwnConn,
        pending: &'a Pending,
    ) -> BoxFuture<'a, Result<Option<Judgment>>> {
        Box::pin(async move { Ok(store(self, conn, &[pending]).await?.into_iter().next()) })
    }
}

/// The judgments in one statement: for each pending judgment whose assignment
/// is the rater's live lease (of the project it names, if it names one) and
/// whose answer fits the project, the assignment
/// is marked judged, the judgment written and any job the judgments call for
/// queued. The pair is not written: its lease's slot stays taken by the
/// judgment (migration `taken_slots`), unless the rater is excluded.
///
/// Concurrency: the update locks each assignment; a concurrent judgment or reap
/// of one makes PostgreSQL re-check the conditions on the new version, so one
/// wins and the other changes nothing. The pairs of excluded raters' judgments
/// are locked in id order before they are counted, so two batches sharing
/// pairs cannot deadlock on them. Every
/// sub-statement sees the snapshot taken before the batch, so the training and
/// quality checks add each project's judgments in the batch to what they count.
async fn store(
    counts: &Judging,
    conn: &mut OwnConn,
    pending: &[&Pending],
) -> Result<Vec<Judgment>> {
    static STORE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "with i as (
                 select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                      $6::text[], $7::int[], $8::text[], $9::bool[], $10::text[],
                                      $11::int[], $12::int[], $13::bool[], $14::bytea[],
                                      $15::text[])
                     as i(assignment_id, rater_id, choice_a, choice_b, choice, idempotency_key,
                          strength, rationale, content_flag, flag_reason, duration_ms, replays,
                          answered_before_clip_end, token_hash, project)),
             a as (
                 update assignments a set state = 'judged', judged_at = now()
                 from i, projects p
                 where a.id = i.assignment_id and a.state = 'leased'
                   and a.rater_id = coalesce(i.rater_id, (select t.user_id from api_tokens t
                                                          where t.token_hash = i.token_hash))
                   and a.expires_at > now() and p.id = a.project_id
                   and (i.project is null or p.slug = i.project)
                   and i.choice = any(p.options)
                   and case when i.strength is null then true
                            else i.strength between 1 and coalesce(p.strength_scale, 0) end
                   and case p.rationale when 'required' then i.rationale is not null
                                        when 'off' then i.rationale is null
                                        else true end
                 returning a.id, a.comparison_id, a.project_id, a.rater_id, a.left_is_a, a.kind,
                     case when a.left_is_a then i.choice_a else i.choice_b end as canonical,
                     i.choice, i.idempotency_key, i.strength, i.rationale, i.content_flag,
                     i.flag_reason, i.duration_ms, i.replays, i.answered_before_clip_end,
                     coalesce((select m.excluded_at is not null from project_members m
                               where m.project_id = a.project_id and m.user_id = a.rater_id),
                              false) as excluded),
             j as (
                 insert into judgments (assignment_id, comparison_id, project_id, rater_id, choice,
                     displayed_choice, left_is_a, strength, rationale, content_flag, flag_reason,
                     duration_ms, idempotency_key, replays, answered_before_clip_end, kind)
                 select id, comparison_id, project_id, rater_id, canonical, choice, left_is_a,
                        strength, rationale, content_flag, flag_reason, duration_ms,
                        idempotency_key, replays, answered_before_clip_end, kind
                 from a
                 returning {JUDGMENT_COLUMNS}),
             -- a regular lease's slot of the pair's coverage stays taken by its
             -- judgment, so the pair is not written, unless the rater is excluded:
             -- their judgments cover nothing, and the slot is given back
             -- (re-including them takes it again). Those pairs are locked in id
             -- order (below the sort) before they are counted, as the waiting reap
             -- locks them, so the two cannot deadlock; two judgments of one pair
             -- count together, as an update changes a row once.
             pairs as (
                 select id from comparisons
                 where id in (select comparison_id from a where kind = 'regular' and excluded)
                 order by id
                 for no key update),
             freed as (
                 update comparisons c set taken_count = c.taken_count - n.k
                 from (select comparison_id, count(*) as k from a
                       where kind = 'regular' and excluded group by comparison_id) n
                 where c.id = n.comparison_id and c.id in (select id from pairs)),
             -- how many judgments each project gets: the checks below see the
             -- snapshot before them, so they add these
             b as (select project_id, count(*) as n from a group by project_id),
             -- retraining is queued with the judgments that call for it
             train as (
                 insert into jobs (kind, project_id, payload)
                 select 'train', p.id, '{{\"reason\": \"new judgments\"}}'
                 from b join projects p on p.id = b.project_id
                 where {training_due}
                 on conflict (project_id, kind) where status = 'queued' do nothing),
             -- a stored quality report is refreshed after enough new judgments
             quality as ({quality})
             select * from j",
            training_due = crate::jobs::storage::training_due("b.n"),
            quality = crate::quality::store::refresh_if_due("b"),
        )
    });
    let own = conn;
    let conn = own.get().await?;
    counts.statements.fetch_add(1, Relaxed);
    counts.largest.fetch_max(pending.len(), Relaxed);
    // Durable before any caller hears of it: the statement's commit waits for the
    // WAL flush.
    let result: std::result::Result<Vec<Judgment>, sqlx::Error> =
        sqlx::query_as(sqlx::AssertSqlSafe(STORE.as_str()))
            .bind(column(pending, |p| p.assignment_id))
            .bind(column(pending, |p| p.rater_id))
            .bind(column(pending, |p| canonical(&p.input.choice, true)))
            .bind(column(pending, |p| canonical(&p.input.choice, false)))
            .bind(column(pending, |p| p.input.choice.as_str()))
            .bind(column(pending, |p| p.idempotency_key.as_deref()))
            .bind(column(pending, |p| p.input.strength))
            .bind(column(pending, |p| non_blank(&p.input.rationale)))
            .bind(column(pending, |p| p.input.content_flag))
            .bind(column(pending, |p| non_blank(&p.input.flag_reason)))
            .bind(column(pending, |p| p.input.duration_ms))
            .bind(column(pending, |p| p.input.replays))
            .bind(column(pending, |p| p.input.answered_before_clip_end))
            .bind(column(pending, |p| p.token_hash.as_deref()))
            .bind(column(pending, |p| p.project.as_deref()))
            .fetch_all(&mut *conn)
            .await;
    own.used(&result);
    let stored = result.map_err(
        |e| match e.as_database_error().and_then(|d| d.constraint()) {
            Some("judgments_idempotency_idx") => Error::Conflict {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was already used for another assignment".into(),
            },
            _ => e.into(),
        },
    )?;
    counts.judgments.fetch_add(stored.len() as u64, Relaxed);
    Ok(stored)
}
