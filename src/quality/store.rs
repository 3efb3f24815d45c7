//! Stored quality reports: the `quality` job computes a project's report in the background and
//! keeps it in `quality_results`; the pages and the API serve it with its age and whether it is
//! stale (see the `..._quality_results.sql` migration for how staleness is read).
//!
//! What a reader gets: a fresh stored report as it is; a project of at most
//! `quality_live_limit` judgments computed on request when nothing fresh is stored; a larger
//! project's stale report with how stale it is (and a refresh queued); for a larger project
//! with nothing stored yet, no figures and "being computed" (the job is queued).

use std::{collections::HashMap, sync::Arc, time::Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    report::{self, Obs, ProjectQuality, RaterInfo, RaterQuality},
    series::{self, DayPoint},
};
use crate::{
    error::{Error, Result},
    jobs::{Handler, Handlers, JobContext},
};

/// Job kind of the background computation.
pub const KIND: &str = "quality";

/// The `quality` job's handler.
pub fn handlers() -> Handlers {
    let mut handlers = Handlers::new();
    let handler: Handler = Arc::new(run);
    handlers.insert(KIND, handler);
    handlers
}

fn run(ctx: &JobContext) -> anyhow::Result<Value> {
    let project_id = ctx
        .job
        .project_id
        .context("a quality job needs a project")?;
    let stored = ctx.rt.block_on(snapshot(&ctx.pool, project_id))?;
    let seconds = stored.seconds;
    let judgments = stored.judgments;
    let computed = compute(stored);
    ctx.rt.block_on(save(&ctx.pool, project_id, &computed))?;
    Ok(json!({"judgments": judgments, "load_seconds": seconds, "seconds": computed.seconds}))
}

/// What one computation read: the judgments and raters of one snapshot, and what they cover.
pub struct Snapshot {
    obs: Vec<Obs>,
    raters: Vec<RaterInfo>,
    computed_at: OffsetDateTime,
    judgments: i64,
    horizon: OffsetDateTime,
    covered_recent: i64,
    started: Instant,
    /// Seconds the reading took.
    pub seconds: f64,
}

/// Read a project's judgments, raters and coverage counts in one repeatable-read snapshot.
pub async fn snapshot(pool: &PgPool, project_id: Uuid) -> sqlx::Result<Snapshot> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let (computed_at, judgments, horizon, covered_recent) = coverage(&mut tx, project_id).await?;
    let (obs, raters) = report::load(&mut tx, project_id).await?;
    tx.commit().await?;
    Ok(Snapshot {
        obs,
        raters,
        computed_at,
        judgments,
        horizon,
        covered_recent,
        started,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The snapshot's time, its judgment count, the horizon ten seconds before its newest judgment
/// and how many judgments are newer than the horizon.
async fn coverage(
    conn: &mut PgConnection,
    project_id: Uuid,
) -> sqlx::Result<(OffsetDateTime, i64, OffsetDateTime, i64)> {
    sqlx::query_as(
        "with h as (select coalesce(max(created_at), now()) - interval '10 seconds' as horizon
                    from judgments where project_id = $1)
         select now(), (select count(*) from judgments where project_id = $1), h.horizon,
                (select count(*) from judgments where project_id = $1 and created_at > h.horizon)
         from h",
    )
    .bind(project_id)
    .fetch_one(conn)
    .await
}

/// A computed report, ready to store.
pub struct Computed {
    pub report: ProjectQuality,
    pub days: HashMap<Uuid, Vec<DayPoint>>,
    snapshot: Snapshot,
    /// Seconds from the start of the reading to the end of the computation.
    pub seconds: f64,
}

/// The report and every rater's days of a snapshot (CPU only).
pub fn compute(mut snapshot: Snapshot) -> Computed {
    let excluded = snapshot
        .raters
        .iter()
        .filter(|r| r.excluded)
        .map(|r| r.id)
        .collect();
    let report = report::analyse(&snapshot.obs, &snapshot.raters, &excluded);
    let days = series::all_days(&snapshot.obs);
    snapshot.obs = vec![];
    Computed {
        report,
        days,
        seconds: snapshot.started.elapsed().as_secs_f64(),
        snapshot,
    }
}

/// Store a computed report, unless one from a later snapshot is stored already (two jobs of a
/// project can run at once: one running, one queued and claimed by another worker).
pub async fn save(pool: &PgPool, project_id: Uuid, c: &Computed) -> anyhow::Result<()> {
    let mut summary = c.report.clone();
    let split_pairs = std::mem::take(&mut summary.split_pairs);
    let gold_failures = std::mem::take(&mut summary.gold_failures);
    let majority_pairs = std::mem::take(&mut summary.majority_pairs);
    let s = &c.snapshot;
    sqlx::query(
        "insert into quality_results (project_id, summary, split_pairs, gold_failures, rater_days,
             judgments, horizon, covered_recent, computed_at, seconds, split_pairs_head,
             gold_failures_head, majority_pairs)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         on conflict (project_id) do update set summary = excluded.summary,
             split_pairs = excluded.split_pairs, gold_failures = excluded.gold_failures,
             split_pairs_head = excluded.split_pairs_head,
             gold_failures_head = excluded.gold_failures_head,
             majority_pairs = excluded.majority_pairs,
             rater_days = excluded.rater_days, judgments = excluded.judgments,
             horizon = excluded.horizon, covered_recent = excluded.covered_recent,
             computed_at = excluded.computed_at, seconds = excluded.seconds
         where quality_results.computed_at <= excluded.computed_at",
    )
    .bind(project_id)
    .bind(serde_json::to_value(&summary)?)
    .bind(serde_json::to_value(&split_pairs)?)
    .bind(serde_json::to_value(&gold_failures)?)
    .bind(serde_json::to_value(&c.days)?)
    .bind(s.judgments)
    .bind(s.horizon)
    .bind(s.covered_recent)
    .bind(s.computed_at)
    .bind(c.seconds)
    .bind(serde_json::to_value(
        &split_pairs[..split_pairs.len().min(HEAD)],
    )?)
    .bind(serde_json::to_value(
        &gold_failures[..gold_failures.len().min(HEAD)],
    )?)
    .bind(serde_json::to_value(&majority_pairs)?)
    .execute(pool)
    .await?;
    Ok(())
}

/// Where the figures a reader sees come from, and how fresh they are.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Freshness {
    /// stored (the background job's report), live (computed for this request: a project of at
    /// most `live_limit` judgments with no fresh stored report) or computing (nothing stored
    /// yet for a larger project; no figures until the job finishes).
    pub source: String,
    /// When the figures' data was read.
    #[serde(with = "time::serde::rfc3339::option")]
    pub computed_at: Option<OffsetDateTime>,
    /// Judgments (repeats included) the stored report covers.
    pub covers_judgments: Option<i64>,
    /// Judgments that arrived after the stored report's data was read (counted up to about
    /// 100,000).
    pub new_judgments: i64,
    /// A lead's action (gold, pause, exclusion) or a queued refresh since it was read.
    pub changed_since: bool,
    /// The figures leave out judgments or changes (true only for a stored report).
    pub stale: bool,
    /// A quality job is queued or running.
    pub refreshing: bool,
    /// How long the background computation took.
    pub seconds: Option<f64>,
    /// Projects above this many judgments are never computed per request.
    pub live_limit: i64,
}

impl Freshness {
    /// "computed 3 min ago, covers 1000000 judgments; 12 newer judgments not included;
    /// refreshing…", for the pages.
    pub fn describe(&self) -> String {
        let mut out = match (self.source.as_str(), self.computed_at) {
            ("live", _) => "computed for this request from every judgment".to_string(),
            ("stored", Some(at)) => format!(
                "computed {} in the background ({:.1} s), covers {} judgments",
                ago(OffsetDateTime::now_utc() - at),
                self.seconds.unwrap_or(0.0),
                self.covers_judgments.unwrap_or(0)
            ),
            _ => format!(
                "being computed: this project has more than {} judgments, so its statistics \
                 are computed in the background; reload in a minute",
                self.live_limit
            ),
        };
        if self.new_judgments > 0 {
            out += &format!("; {} newer judgments not included", self.new_judgments);
        }
        if self.changed_since {
            out += "; changed since (gold, pause or exclusion)";
        }
        if self.source == "stored" && self.stale {
            out += "; these figures are STALE";
        }
        if self.refreshing && self.source != "computing" {
            out += "; refreshing…";
        }
        out
    }
}

fn ago(d: time::Duration) -> String {
    match d.whole_seconds().max(0) {
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// Judgments past the horizon are counted up to this many (`new_judgments` is then a lower
/// bound).
const NEW_CAP: i64 = 100_000;

/// The stored report's age and staleness, if one is stored.
async fn stored_freshness(pool: &PgPool, project_id: Uuid) -> sqlx::Result<Option<Freshness>> {
    type Row = (OffsetDateTime, i64, f64, i64, bool, bool, i32);
    let row: Option<Row> = sqlx::query_as(
        "select r.computed_at, r.judgments, r.seconds,
                -- Ordered and capped so that the planner walks the (project, created_at)
                -- index: it cannot see the horizon when it plans, and a generic estimate
                -- (a third of the table) chose a sequential scan with JIT, ~1 s at 1M rows.
                (select count(*) from (select 1 from judgments j
                     where j.project_id = r.project_id and j.created_at > r.horizon
                     order by j.project_id, j.created_at limit $3) n) - r.covered_recent,
                exists (select 1 from jobs q where q.project_id = r.project_id and q.kind = $2
                        and (q.status = 'queued'
                             or (q.status = 'running' and q.started_at > r.computed_at))),
                exists (select 1 from jobs q where q.project_id = r.project_id and q.kind = $2
                        and q.status in ('queued', 'running')),
                p.quality_live_limit
         from quality_results r join projects p on p.id = r.project_id
         where r.project_id = $1",
    )
    .bind(project_id)
    .bind(KIND)
    .bind(NEW_CAP)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(at, judgments, seconds, new, changed, refreshing, limit)| Freshness {
            source: "stored".into(),
            computed_at: Some(at),
            covers_judgments: Some(judgments),
            new_judgments: new.max(0),
            changed_since: changed,
            stale: new > 0 || changed,
            refreshing,
            seconds: Some(seconds),
            live_limit: limit.into(),
        },
    ))
}

/// How a request gets its figures.
enum Plan {
    Stored(Freshness),
    Live(Freshness),
    Computing(Freshness),
}

async fn plan(pool: &PgPool, project_id: Uuid) -> Result<Plan> {
    let stored = stored_freshness(pool, project_id).await?;
    if let Some(f) = &stored
        && !f.stale
    {
        return Ok(Plan::Stored(stored.expect("checked")));
    }
    // Counts at most limit + 1 index entries.
    let (limit, over, pending): (i32, bool, bool) = sqlx::query_as(
        "select p.quality_live_limit, (select count(*) from (select 1 from judgments j
                 where j.project_id = p.id limit p.quality_live_limit + 1) n) > p.quality_live_limit,
                exists (select 1 from jobs q where q.project_id = p.id and q.kind = $2
                        and q.status in ('queued', 'running'))
         from projects p where p.id = $1",
    )
    .bind(project_id)
    .bind(KIND)
    .fetch_one(pool)
    .await?;
    if !over {
        return Ok(Plan::Live(Freshness {
            source: "live".into(),
            computed_at: Some(OffsetDateTime::now_utc()),
            covers_judgments: None,
            new_judgments: 0,
            changed_since: false,
            stale: false,
            refreshing: pending,
            seconds: None,
            live_limit: limit.into(),
        }));
    }
    // Stale or missing on a large project: make sure a computation is on its way.
    if !pending {
        enqueue(
            &mut *pool.acquire().await?,
            project_id,
            "read while stale",
            false,
        )
        .await?;
    }
    Ok(match stored {
        Some(f) => Plan::Stored(Freshness {
            refreshing: true,
            ..f
        }),
        None => Plan::Computing(Freshness {
            source: "computing".into(),
            computed_at: None,
            covers_judgments: None,
            new_judgments: 0,
            changed_since: false,
            stale: false,
            refreshing: true,
            seconds: None,
            live_limit: limit.into(),
        }),
    })
}

/// Rows of each long list stored apart for the error dashboard.
pub const HEAD: usize = 200;

/// How much of the two long lists (split pairs, gold failures) to read; the majority pairs (at
/// most 500) come whole with either list.
#[derive(Debug, Clone, Copy)]
pub enum Lists {
    None,
    /// The first `HEAD` rows.
    Head,
    All,
}

/// The project's report as a reader should see it, with its freshness; None while a large
/// project's first report is being computed.
pub async fn report(
    pool: &PgPool,
    project_id: Uuid,
    lists: Lists,
) -> Result<(Option<ProjectQuality>, Freshness)> {
    match plan(pool, project_id).await? {
        Plan::Live(f) => Ok((Some(report::report(pool, project_id).await?), f)),
        Plan::Computing(f) => Ok((None, f)),
        Plan::Stored(f) => {
            let which = match lists {
                Lists::None => "none",
                Lists::Head => "head",
                Lists::All => "all",
            };
            let (summary, split, gold, majority): (Value, Value, Value, Value) = sqlx::query_as(
                "select summary,
                        case $2 when 'all' then split_pairs when 'head' then split_pairs_head
                             else '[]' end,
                        case $2 when 'all' then gold_failures when 'head' then gold_failures_head
                             else '[]' end,
                        case $2 when 'none' then '[]' else majority_pairs end
                 from quality_results where project_id = $1",
            )
            .bind(project_id)
            .bind(which)
            .fetch_one(pool)
            .await?;
            let mut q: ProjectQuality = parse(summary)?;
            q.split_pairs = parse(split)?;
            q.gold_failures = parse(gold)?;
            q.majority_pairs = parse(majority)?;
            Ok((Some(q), f))
        }
    }
}

/// The report with its lists in full and its `freshness`, as JSON text (the API's body). A
/// stored report is composed in SQL, so a large project's megabytes of lists are not parsed
/// and serialised again per request.
pub async fn report_json(pool: &PgPool, project_id: Uuid) -> Result<(String, Freshness)> {
    let (report, f) = match plan(pool, project_id).await? {
        Plan::Stored(f) => {
            let text = sqlx::query_scalar(
                "select (summary || jsonb_build_object('split_pairs', split_pairs,
                         'gold_failures', gold_failures, 'majority_pairs', majority_pairs,
                         'freshness', $2::jsonb))::text
                 from quality_results where project_id = $1",
            )
            .bind(project_id)
            .bind(serde_json::to_value(&f).map_err(anyhow::Error::from)?)
            .fetch_one(pool)
            .await?;
            return Ok((text, f));
        }
        Plan::Live(f) => (Some(report::report(pool, project_id).await?), f),
        Plan::Computing(f) => (None, f),
    };
    let mut body = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
    if body.is_null() {
        body = json!({});
    }
    body["freshness"] = serde_json::to_value(&f).map_err(anyhow::Error::from)?;
    Ok((body.to_string(), f))
}

/// One rater's row and days as a reader should see them, with the report's freshness.
pub async fn rater(
    pool: &PgPool,
    project_id: Uuid,
    name: &str,
) -> Result<(Option<(RaterQuality, Vec<DayPoint>)>, Freshness)> {
    match plan(pool, project_id).await? {
        Plan::Live(f) => Ok((Some(series::rater(pool, project_id, name).await?), f)),
        Plan::Computing(f) => Ok((None, f)),
        Plan::Stored(f) => {
            let (row, days): (Value, Option<Value>) = sqlx::query_as(
                "select r, q.rater_days -> (r ->> 'id')
                 from quality_results q, jsonb_array_elements(q.summary -> 'raters') r
                 where q.project_id = $1 and r ->> 'name' = $2",
            )
            .bind(project_id)
            .bind(name)
            .fetch_optional(pool)
            .await?
            .ok_or(Error::NotFound("rater"))?;
            let days = days.map(parse).transpose()?.unwrap_or_default();
            Ok((Some((parse(row)?, days)), f))
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| Error::Internal(anyhow::anyhow!("a stored quality report: {e}")))
}

/// Queue a refresh (debounced: one queued per project); with `only_if_stored`, only when the
/// project has a stored report (a lead's action on a project computed per request needs no
/// job). In the caller's transaction. True when a job was queued.
pub async fn enqueue(
    conn: &mut PgConnection,
    project_id: Uuid,
    reason: &str,
    only_if_stored: bool,
) -> sqlx::Result<bool> {
    let n = sqlx::query(
        "insert into jobs (kind, project_id, payload)
         select $2, $1, jsonb_build_object('reason', $3::text)
         where not $4 or exists (select 1 from quality_results where project_id = $1)
         on conflict (project_id, kind) where status = 'queued' do nothing",
    )
    .bind(project_id)
    .bind(KIND)
    .bind(reason)
    .bind(only_if_stored)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Queue a quality refresh once `quality_every` judgments are newer than the last
/// quality job's start (or the stored report), counting the judgments being
/// stored. A clause for the judging statement (`labeling::writer`), reading the
/// projects and how many judgments each is getting from `{batch}`, a relation
/// of `(project_id, n)`; a project with no stored report costs a primary-key
/// probe, one with a report what [`crate::jobs::storage::due_after_judgments`]
/// reads.
pub fn refresh_if_due(batch: &str) -> String {
    format!(
        "insert into jobs (kind, project_id, payload)
         select '{KIND}', p.id, '{{\"reason\": \"new judgments\"}}'
         from {batch} b join projects p on p.id = b.project_id
              join quality_results r on r.project_id = p.id
         where {due}
         on conflict (project_id, kind) where status = 'queued' do nothing",
        due = crate::jobs::storage::due_after_judgments(
            KIND,
            "p.quality_every",
            "r.computed_at",
            "b.n"
        ),
    )
}
