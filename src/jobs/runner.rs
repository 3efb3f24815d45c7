//! Workers: claim, run on a dedicated thread, heartbeat, record the outcome.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use super::storage::{self, Job};

/// What a job's code gets: the job, the database, a runtime handle to run async
/// queries from its thread, a progress reporter and a cancellation flag.
pub struct JobContext {
    pub job: Job,
    pub pool: PgPool,
    pub rt: tokio::runtime::Handle,
    progress: Arc<Mutex<Option<serde_json::Value>>>,
    pub cancel: Arc<AtomicBool>,
}

impl JobContext {
    /// Report progress; it is written to the job's row with the next heartbeat.
    pub fn progress(&self, value: serde_json::Value) {
        *self.progress.lock().expect("progress lock") = Some(value);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// A job kind's code. It runs on its own thread and may block.
pub type Handler = Arc<dyn Fn(&JobContext) -> anyhow::Result<serde_json::Value> + Send + Sync>;
/// Handlers by job kind.
pub type Handlers = HashMap<&'static str, Handler>;

/// How a worker process behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this process in `jobs.worker` (host and pid by default).
    pub name: String,
    /// Jobs run at once.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease_seconds: f64,
    /// How often to look for work when no notification arrives.
    pub poll: Duration,
}

impl WorkerConfig {
    pub fn new(concurrency: usize, lease_seconds: f64) -> Self {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        WorkerConfig {
            name: format!("{}:{}", host.trim(), std::process::id()),
            concurrency,
            lease_seconds,
            poll: Duration::from_secs(5),
        }
    }
}

/// A pool of workers in this process.
#[derive(Clone)]
pub struct Runner {
    pool: PgPool,
    handlers: Arc<Handlers>,
    config: WorkerConfig,
    wake: Arc<Notify>,
}

impl Runner {
    pub fn new(pool: PgPool, handlers: Handlers, config: WorkerConfig) -> Self {
        Runner {
            pool,
            handlers: Arc::new(handlers),
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Run until `shutdown` flips to true; then cancel running jobs and hand
    /// them back to the queue for another worker.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let listener = self.listen(shutdown.clone());
        let slots: Vec<_> = (0..self.config.concurrency)
            .map(|slot| {
                let (me, shutdown) = (self.clone(), shutdown.clone());
                tokio::spawn(async move { me.slot(slot, shutdown).await })
            })
            .collect();
        let _ = shutdown.wait_for(|s| *s).await;
        self.wake.notify_waiters();
        for s in slots {
            let _ = s.await;
        }
        listener.abort();
    }

    /// Turn NOTIFY on the jobs channel into wake-ups (polling covers its gaps).
    fn listen(&self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let (pool, wake) = (self.pool.clone(), self.wake.clone());
        tokio::spawn(async move {
            while !*shutdown.borrow() {
                let Ok(mut listener) = sqlx::postgres::PgListener::connect_with(&pool).await else {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                };
                if listener.listen("backflip_jobs").await.is_err() {
                    continue;
                }
                while listener.recv().await.is_ok() {
                    wake.notify_waiters();
                }
            }
        })
    }

    async fn slot(&self, slot: usize, shutdown: watch::Receiver<bool>) {
        let name = format!("{}#{slot}", self.config.name);
        while !*shutdown.borrow() {
            // Waiting for work also ends at shutdown, even one that came while
            // this slot was claiming (`notify_waiters` wakes only who waits).
            let mut stop = shutdown.clone();
            match storage::claim(&self.pool, &name, self.config.lease_seconds).await {
                Ok(Some(job)) => self.run_one(&name, job, Some(shutdown.clone())).await,
                Ok(None) => {
                    tokio::select! {
                        _ = tokio::time::timeout(self.config.poll, self.wake.notified()) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job");
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }
            }
        }
    }

    /// Run queued jobs one after another until none is due; returns how many ran.
    /// For tests and one-shot commands.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        let name = format!("{}#drain", self.config.name);
        let mut n = 0;
        while let Some(job) = storage::claim(&self.pool, &name, self.config.lease_seconds).await? {
            self.run_one(&name, job, None).await;
            n += 1;
        }
        Ok(n)
    }

    async fn run_one(&self, worker: &str, job: Job, shutdown: Option<watch::Receiver<bool>>) {
        let span =
            tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
        let _enter = span.enter();
        tracing::info!("job started");
        let Some(handler) = self.handlers.get(job.kind.as_str()).cloned() else {
            let msg = format!("no handler for job kind {:?}", job.kind);
            let _ = storage::fail(&self.pool, job.id, worker, &msg).await;
            return;
        };
        let ctx = JobContext {
            job: job.clone(),
            pool: self.pool.clone(),
            rt: tokio::runtime::Handle::current(),
            progress: Arc::new(Mutex::new(None)),
            cancel: Arc::new(AtomicBool::new(false)),
        };
        let (progress, cancel) = (ctx.progress.clone(), ctx.cancel.clone());
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("job-{}", job.id))
            .spawn(move || {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| handler(&ctx)));
                let _ = done_tx.send(outcome);
            })
            .expect("spawning a job thread");

        let beat = Duration::from_secs_f64((self.config.lease_seconds / 3.0).max(0.2));
        let mut shutting_down = false;
        let outcome = loop {
            let stop = async {
                match shutdown.clone() {
                    Some(mut s) => {
                        let _ = s.wait_for(|v| *v).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = &mut done_rx => break outcome,
                _ = tokio::time::sleep(beat) => {
                    let p = progress.lock().expect("progress lock").clone();
                    match storage::heartbeat(&self.pool, job.id, worker, self.config.lease_seconds, p.as_ref()).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!("lost the job's lease; stopping it");
                            cancel.store(true, Ordering::Relaxed);
                        }
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
                _ = stop, if !shutting_down => {
                    shutting_down = true;
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        };
        let result = match outcome {
            Ok(Ok(Ok(value))) => storage::finish(&self.pool, job.id, worker, &value)
                .await
                .map(|_| ()),
            // Cancelled by our shutdown: another worker starts it afresh.
            _ if shutting_down => storage::release(&self.pool, job.id, worker)
                .await
                .map(|_| ()),
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %format!("{e:#}"), "job failed");
                storage::fail(&self.pool, job.id, worker, &format!("{e:#}")).await
            }
            Ok(Err(panic)) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(%msg, "job panicked");
                storage::fail(&self.pool, job.id, worker, &format!("panicked: {msg}")).await
            }
            Err(_) => storage::fail(&self.pool, job.id, worker, "the job thread vanished").await,
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "recording the job's outcome");
        }
        tracing::info!("job ended");
    }
}
