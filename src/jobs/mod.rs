//! The PostgreSQL-backed job queue and its workers.
//!
//! Design (see the `..._jobs.sql` migration): one `jobs` table; claim with
//! `FOR UPDATE SKIP LOCKED` and a lease instead of a long transaction, so a
//! multi-minute training run holds no database lock; heartbeats extend the
//! lease; a dead worker's job is taken over when its lease runs out; retries
//! back off in SQL; `NOTIFY` wakes idle workers, with polling as the fallback;
//! panics are caught and count as failures; finished rows stay as history.
//!
//! Jobs run on a dedicated OS thread each (not tokio's blocking pool), so a
//! long CPU-bound training run never delays request handling.

pub mod runner;
pub mod storage;

pub use runner::{Handler, Handlers, JobContext, Runner, WorkerConfig};

/// Every job kind the workers run: training, exports, selection and quality reports (what
/// `serve` and `backflip worker` register, and the tests' runners when they need them all).
pub fn every_handler(store: crate::clips::ClipStore) -> Handlers {
    let mut handlers = crate::reward::job_handlers(store.clone());
    handlers.extend(crate::export::job::handlers(store.clone()));
    handlers.extend(crate::selection::job::handlers(store));
    handlers.extend(crate::quality::store::handlers());
    handlers
}
