//! The producer: one query, rows encoded in batches, chunks through a bounded
//! channel. A spawned task owns the database connection, so an HTTP body (or a
//! file writer) only pulls `Bytes`; when the consumer goes away the task stops
//! at its next send and the query is dropped with it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io,
    pin::Pin,
    sync::Arc,
};

use anyhow::Context;
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    Aggregation, Format, Plan,
    parquet::ParquetEncoder,
    pseudonym,
    rows::{self, Dropped, PairVotes},
    weights::{self, AggregationInfo},
};

/// Encoded bytes are handed on in chunks of about this size.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between producer and consumer (memory bound: CHUNK × this).
const IN_FLIGHT: usize = 4;

/// What was written, for the manifest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Data rows written (judgments or pairs).
    pub rows: u64,
    /// Pairs left out of preferences, by reason.
    pub dropped: BTreeMap<Dropped, u64>,
    /// How preference votes were combined, and the weights (preference formats).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<AggregationInfo>,
    /// Clips (sha256) the rows reference; collected for bundles only.
    #[serde(skip)]
    pub clips: BTreeSet<String>,
}

pub type Chunks = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Start producing `plan`'s data file. The summary arrives once the stream has ended.
pub fn start(
    pool: PgPool,
    plan: Arc<Plan>,
) -> (Chunks, oneshot::Receiver<anyhow::Result<Summary>>) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(IN_FLIGHT);
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut out = Out {
            tx,
            buf: Vec::with_capacity(CHUNK + 4096),
        };
        let result = produce(&pool, &plan, &mut out).await;
        let result = match result {
            Ok(summary) => out.flush().await.map(|_| summary),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, project = %plan.project.slug, "export stopped");
            // The body ends with an error, so the client sees a broken transfer, not a short file.
            let _ = out.tx.send(Err(io::Error::other(format!("{e:#}")))).await;
        }
        let _ = done_tx.send(result);
    });
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (Box::pin(body), done_rx)
}

pub(super) struct Out {
    tx: mpsc::Sender<io::Result<Bytes>>,
    pub(super) buf: Vec<u8>,
}

impl Out {
    pub(super) async fn maybe_flush(&mut self) -> anyhow::Result<()> {
        if self.buf.len() >= CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK + 4096),
        ));
        self.tx
            .send(Ok(chunk))
            .await
            .map_err(|_| anyhow::anyhow!("the export's reader went away"))
    }
}

/// A read-only snapshot for the export, with planner settings for streaming:
/// nested loops over index lookups keep the rows in index order, where hash
/// joins would need a final sort of every wide row (on disk, with PostgreSQL's
/// default 4 MB `work_mem`) before the first row could be sent. No JIT either:
/// compiling costs more than it saves for a stream of simple rows; and no
/// parallel workers, whose merge at the leader is slower than one ordered walk.
pub(super) const SNAPSHOT_SETTINGS: &str =
    "set transaction isolation level repeatable read, read only;
     set local enable_hashjoin = off;
     set local enable_mergejoin = off;
     set local enable_sort = off;
     set local max_parallel_workers_per_gather = 0;
     set local jit = off;";

async fn snapshot(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(SNAPSHOT_SETTINGS).execute(&mut *tx).await?;
    Ok(tx)
}

async fn produce(pool: &PgPool, plan: &Plan, out: &mut Out) -> anyhow::Result<Summary> {
    match plan.args.format {
        Format::RawJsonl | Format::Csv => super::raw::raw(pool, plan, out).await,
        Format::PreferencesJsonl | Format::PreferencesParquet | Format::Bundle => {
            preferences(pool, plan, out).await
        }
    }
}

/// Rater names as the export shows them: pseudonyms, or login names on request.
pub(super) struct Raters<'a> {
    pool: &'a PgPool,
    plan: &'a Plan,
    names: HashMap<Uuid, String>,
}

impl<'a> Raters<'a> {
    pub(super) fn new(pool: &'a PgPool, plan: &'a Plan) -> Self {
        Raters {
            pool,
            plan,
            names: HashMap::new(),
        }
    }

    pub(super) async fn name(&mut self, id: Uuid) -> anyhow::Result<&str> {
        if !self.names.contains_key(&id) {
            let name = if self.plan.args.real_identities {
                sqlx::query_scalar("select name from users where id = $1")
                    .bind(id)
                    .fetch_one(self.pool)
                    .await?
            } else {
                pseudonym(self.plan.salt, id)
            };
            self.names.insert(id, name);
        }
        Ok(&self.names[&id])
    }
}

/// The raw columns, in order (the CSV header).
pub const RAW_COLUMNS: [&str; 27] = [
    "judgment_id",
    "pair_id",
    "external_id",
    "prompt",
    "a_id",
    "a_text",
    "a_clip",
    "a_policy",
    "b_id",
    "b_text",
    "b_clip",
    "b_policy",
    "choice",
    "preferred_id",
    "shown_left",
    "displayed_choice",
    "strength",
    "rationale",
    "content_flag",
    "flag_reason",
    "duration_ms",
    "replays",
    "answered_before_clip_end",
    "rater",
    "created_at",
    "gold",
    "repeat",
];

async fn preferences(pool: &PgPool, plan: &Plan, out: &mut Out) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    // Reliability weights: fitted once, before the stream (the report holds the
    // project's answers in memory while it fits, then only the weights stay).
    let (weights, sql) = match plan.args.aggregation {
        Aggregation::Majority => (None, rows::PAIRS_SQL),
        Aggregation::Reliability => {
            let w = weights::load(pool, plan)
                .await
                .context("estimating rater reliability")?;
            (Some(w), rows::PAIRS_VOTERS_SQL)
        }
    };
    summary.aggregation = Some(
        weights
            .as_ref()
            .map_or_else(AggregationInfo::majority, |w| w.info.clone()),
    );
    let vote_weights = weights.as_ref().map(|w| &w.weights);
    let mut tx = snapshot(pool).await?;
    let mut rows = rows::bind_filters(sqlx::query_as::<_, PairVotes>(sql), plan).fetch(&mut *tx);
    let mut parquet = match plan.args.format {
        Format::PreferencesParquet => Some(ParquetEncoder::new()?),
        _ => None,
    };
    let bundle = plan.args.format == Format::Bundle;
    while let Some(votes) = rows.try_next().await.context("reading pairs")? {
        let row = match rows::aggregate(votes, plan, vote_weights) {
            Ok(row) => row,
            Err(why) => {
                *summary.dropped.entry(why).or_default() += 1;
                continue;
            }
        };
        summary.rows += 1;
        if bundle {
            for path in [&row.chosen, &row.rejected] {
                if let Some(sha) = path
                    .strip_prefix("clips/")
                    .and_then(|p| p.strip_suffix(".gif"))
                {
                    summary.clips.insert(sha.to_owned());
                }
            }
        }
        match &mut parquet {
            Some(p) => {
                if let Some(bytes) = p.push(row)? {
                    out.buf.extend_from_slice(&bytes);
                }
            }
            None => {
                serde_json::to_writer(&mut out.buf, &row)?;
                out.buf.push(b'\n');
            }
        }
        out.maybe_flush().await?;
    }
    if let Some(p) = parquet {
        out.buf.extend_from_slice(&p.finish()?);
    }
    Ok(summary)
}
