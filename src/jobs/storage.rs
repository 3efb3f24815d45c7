//! All the queue's SQL. See the migration `..._jobs.sql` for the design.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// A claimed job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub project_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// Queue a job unless one of its kind is already queued for the project
/// (debounce). Returns the new job's id, or None when one was already waiting.
/// Takes a connection so callers enqueue in the transaction that causes the job.
pub async fn enqueue(
    conn: &mut PgConnection,
    kind: &str,
    project_id: Option<Uuid>,
    payload: serde_json::Value,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "insert into jobs (kind, project_id, payload) values ($1, $2, $3)
         on conflict (project_id, kind) where status = 'queued' do nothing
         returning id",
    )
    .bind(kind)
    .bind(project_id)
    .bind(payload)
    .fetch_optional(conn)
    .await
}

/// Claim the next job: a queued one that is due, or a running one whose lease
/// ran out (its worker died). Never waits on jobs other workers are claiming.
pub async fn claim(pool: &PgPool, worker: &str, lease_seconds: f64) -> sqlx::Result<Option<Job>> {
    sqlx::query_as(
        "update jobs set status = 'running', attempts = attempts + 1, worker = $1,
                lease_until = now() + make_interval(secs => $2), started_at = now(), error = null
         where id = (
             select id from jobs
             where (status = 'queued' and run_after <= now())
                or (status = 'running' and lease_until < now())
             order by run_after, id
             limit 1
             for update skip locked)
         returning id, kind, project_id, payload, attempts, max_attempts",
    )
    .bind(worker)
    .bind(lease_seconds)
    .fetch_optional(pool)
    .await
}

/// Extend the lease and record progress. False when the job is no longer ours
/// (our lease ran out and another worker took it): the caller must stop.
pub async fn heartbeat(
    pool: &PgPool,
    id: i64,
    worker: &str,
    lease_seconds: f64,
    progress: Option<&serde_json::Value>,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "update jobs set lease_until = now() + make_interval(secs => $3),
                progress = coalesce($4, progress)
         where id = $1 and worker = $2 and status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(lease_seconds)
    .bind(progress)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Mark a job done, keeping its result. False when it was no longer ours.
pub async fn finish(
    pool: &PgPool,
    id: i64,
    worker: &str,
    result: &serde_json::Value,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "update jobs set status = 'done', finished_at = now(), lease_until = null, result = $3
         where id = $1 and worker = $2 and status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(result)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Record a failure: queued again after 10 s × 4^(attempts − 1) while attempts
/// remain, else failed for good. When a newer job of its kind is already queued
/// for the project, that one will do the work: this one fails for good.
pub async fn fail(pool: &PgPool, id: i64, worker: &str, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "update jobs set
             status = case when attempts < max_attempts and not exists (select 1 from jobs q
                 where q.project_id = jobs.project_id and q.kind = jobs.kind and q.status = 'queued')
                 then 'queued' else 'failed' end,
             run_after = now() + make_interval(secs => 10 * power(4, attempts - 1)),
             finished_at = case when attempts < max_attempts then null else now() end,
             lease_until = null, error = $3
         where id = $1 and worker = $2 and status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .bind(error)
    .execute(pool)
    .await
    .map(|_| ())
}

/// One row of a project's job history.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub worker: Option<String>,
    pub progress: Option<serde_json::Value>,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// A job's row, for its status.
pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(
        "select id, kind, status, attempts, worker, progress, error, created_at, started_at, finished_at
         from jobs where id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A project's most recent jobs, newest first.
pub async fn history(pool: &PgPool, project_id: Uuid, limit: i64) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(
        "select id, kind, status, attempts, worker, progress, error, created_at, started_at, finished_at
         from jobs where project_id = $1 order by created_at desc, id desc limit $2",
    )
    .bind(project_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Hand a job back to the queue without counting the attempt (worker shutting
/// down), unless a newer job of its kind is queued for the project already.
pub async fn release(pool: &PgPool, id: i64, worker: &str) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "update jobs set
             status = case when exists (select 1 from jobs q where q.project_id = jobs.project_id
                 and q.kind = jobs.kind and q.status = 'queued') then 'failed' else 'queued' end,
             error = case when exists (select 1 from jobs q where q.project_id = jobs.project_id
                 and q.kind = jobs.kind and q.status = 'queued')
                 then 'interrupted by a worker shutdown; a newer run is queued' end,
             finished_at = case when exists (select 1 from jobs q where q.project_id = jobs.project_id
                 and q.kind = jobs.kind and q.status = 'queued') then now() end,
             attempts = attempts - 1, run_after = now(), lease_until = null, worker = null
         where id = $1 and worker = $2 and status = 'running'",
    )
    .bind(id)
    .bind(worker)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Whether project `p` (an alias of `projects` in the judging statement) is due
/// for training once the `{adding}` judgments being stored are in: it has
/// `train_every` judgments newer than the data its last training job saw (the
/// time it started), those included. See [`due_after_judgments`].
pub fn training_due(adding: &str) -> String {
    format!(
        "p.train_every > 0 and {}",
        due_after_judgments("train", "p.train_every", "'-infinity'", adding)
    )
}

/// Whether project `p` has `{every}` judgments newer than the start of its newest
/// job of `kind` (or than `{since}` without one), the `{adding}` judgments being
/// stored included: a clause of the judging statement, whose snapshot predates
/// them (hence `+ {adding}`), so the hot path pays no statement of its own for
/// it. It reads at most `{every}` index entries and touches no shared row; while
/// a job of `kind` is queued it reads only that job's index entry, as the insert
/// it guards would do nothing then (measured: a tenth of PostgreSQL's time per
/// judgment when it counted, docs/benchmarks.md). Jobs run in order, so the
/// newest one's start bounds the data it saw.
pub fn due_after_judgments(kind: &str, every: &str, since: &str, adding: &str) -> String {
    format!(
        "case when exists (select 1 from jobs
                           where project_id = p.id and kind = '{kind}' and status = 'queued')
         then false
         else (select count(*) from (
                   select 1 from judgments j
                   where j.project_id = p.id
                     and j.created_at > coalesce(
                         (select coalesce(started_at, created_at) from jobs
                          where project_id = p.id and kind = '{kind}'
                          order by created_at desc limit 1),
                         {since})
                   limit {every}) recent) + {adding} >= {every} end"
    )
}
