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
