//! What the judgment [`super::Writer`] and the lease [`super::Leaser`] share:
//! calls queued for a task on a connection of its own ([`OwnConn`]), that
//! takes every call waiting when it is free and answers them with one
//! statement. The task never waits to fill a batch: a lone call goes at once,
//! and a batch grows only while the last one runs.
//!
//! One task per kind, not two side by side: two statements of one kind touch
//! the same pairs, so the second waits for the first's row locks (or locks
//! what the first has just leased), and the batches are half as large. With
//! the release build one task each judged 10–20 % more per second at 8, 32
//! and 128 raters, with a lower p99 (docs/benchmarks.md, "The release build,
//! mimalloc, and one task per kind").
//!
//! A batch that fails as a whole is run again one call at a time, so each
//! caller gets the answer it would have had alone; if the database is out of
//! reach, every call of the batch hears 503 at once (rather than one timeout
//! after another).

use std::{collections::HashSet, hash::Hash, sync::Arc};

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::own_conn::OwnConn;
use crate::error::{Error, Result};

/// The most calls in one statement.
pub const MAX_BATCH: usize = 64;

/// A kind of call answered many at a time: how one statement answers many of
/// them, and how one answers one. `self` is the kind's shared state (its counts).
pub(super) trait Batch: Send + Sync + 'static {
    type Input: Send + Sync + 'static;
    type Output: Send + 'static;
    /// Two calls with the same key never share a statement: the second goes
    /// after it, on its own.
    type Key: Eq + Hash;
    /// The tasks' connections' `application_name`, so `pg_stat_activity` tells
    /// them apart.
    const NAME: &'static str;
    /// What the tasks are, for the error when they have stopped.
    const WHAT: &'static str;

    fn key(input: &Self::Input) -> Self::Key;

    /// The calls in one statement: each one's answer, in their order.
    fn many<'a>(
        &'a self,
        conn: &'a mut OwnConn,
        inputs: &'a [&'a Self::Input],
    ) -> BoxFuture<'a, Result<Vec<Self::Output>>>;

    /// One call in a statement of its own.
    fn one<'a>(
        &'a self,
        conn: &'a mut OwnConn,
        input: &'a Self::Input,
    ) -> BoxFuture<'a, Result<Self::Output>>;
}

struct Call<B: Batch> {
    input: B::Input,
    reply: oneshot::Sender<Result<B::Output>>,
}

/// The handle to the tasks (cheap to clone). The tasks end when the last
/// handle is dropped.
pub(super) struct Queue<B: Batch> {
    calls: mpsc::Sender<Call<B>>,
    batch: Arc<B>,
}

impl<B: Batch> Clone for Queue<B> {
    fn clone(&self) -> Self {
        Queue {
            calls: self.calls.clone(),
            batch: self.batch.clone(),
        }
    }
}

impl<B: Batch> Queue<B> {
    /// Start the task on the current Tokio runtime, on a connection to
    /// `pool`'s database.
    pub(super) fn spawn(pool: PgPool, batch: B) -> Queue<B> {
        let (calls, waiting) = mpsc::channel(4 * MAX_BATCH);
        let batch = Arc::new(batch);
        tokio::spawn(run(pool, waiting, batch.clone()));
        Queue { calls, batch }
    }

    /// `input`'s answer, once the statement it went in has run.
    pub(super) async fn call(&self, input: B::Input) -> Result<B::Output> {
        let (reply, answer) = oneshot::channel();
        let gone = || Error::Internal(anyhow::anyhow!("the {} has stopped", B::WHAT));
        self.calls
            .send(Call { input, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Calls waiting for a task now.
    pub(super) fn queued(&self) -> usize {
        self.calls.max_capacity() - self.calls.capacity()
    }

    /// The kind's shared state.
    pub(super) fn batch(&self) -> &B {
        &self.batch
    }
}

/// The task: take what is queued (waiting only for the first), answer it.
async fn run<B: Batch>(pool: PgPool, mut waiting: mpsc::Receiver<Call<B>>, batch: Arc<B>) {
    let mut calls = Vec::with_capacity(MAX_BATCH);
    let mut conn = OwnConn::new(pool, B::NAME);
    while waiting.recv_many(&mut calls, MAX_BATCH).await > 0 {
        answer(&*batch, &mut conn, std::mem::take(&mut calls)).await;
    }
    conn.close().await;
}

/// Answer `calls`: together when they can be, one by one otherwise.
async fn answer<B: Batch>(batch: &B, conn: &mut OwnConn, calls: Vec<Call<B>>) {
    let (together, again): (Vec<Call<B>>, Vec<Call<B>>) = {
        let mut seen = HashSet::with_capacity(calls.len());
        calls
            .into_iter()
            .partition(|c| seen.insert(B::key(&c.input)))
    };
    if together.len() > 1 {
        let inputs: Vec<&B::Input> = together.iter().map(|c| &c.input).collect();
        match batch.many(conn, &inputs).await {
            Ok(outputs) => {
                for (call, output) in together.into_iter().zip(outputs) {
                    let _ = call.reply.send(Ok(output));
                }
            }
            Err(Error::Unavailable) => {
                for call in together {
                    let _ = call.reply.send(Err(Error::Unavailable));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, size = together.len(), what = B::WHAT,
                                "batch failed; answering one by one");
                alone(batch, conn, together).await;
            }
        }
    } else {
        alone(batch, conn, together).await;
    }
    alone(batch, conn, again).await;
}

/// Each call in a statement of its own, answered with that statement's
/// outcome; once the database is out of reach, the rest are answered so at once.
async fn alone<B: Batch>(batch: &B, conn: &mut OwnConn, calls: Vec<Call<B>>) {
    let mut reachable = true;
    for call in calls {
        let result = match reachable {
            true => batch.one(conn, &call.input).await,
            false => Err(Error::Unavailable),
        };
        reachable = !matches!(result, Err(Error::Unavailable));
        let _ = call.reply.send(result);
    }
}

/// One field of every input: a column of a statement's input arrays.
pub(super) fn column<'a, I, T>(inputs: &[&'a I], field: impl Fn(&'a I) -> T) -> Vec<T> {
    inputs.iter().map(|i| field(i)).collect()
}
