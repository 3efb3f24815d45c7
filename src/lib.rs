//! Backflip: collect human preference labels for RLHF and turn them into a reward model.
#![forbid(unsafe_code)]

/// Who may do what: password hashing, API tokens, sessions, role checks.
pub mod auth;
/// `backflip bench`: load figures as ratios to a PostgreSQL baseline.
pub mod bench;
/// GIF clip validation, decoding to training frames, content-addressed storage.
pub mod clips;
/// Command line and environment configuration.
pub mod config;
/// Connecting to PostgreSQL (external or embedded) and migrating it.
pub mod db;
/// The demo projects: text pairs and generated GIF clips.
pub mod demo;
/// The one error type of the domain code and the API, with stable codes.
pub mod error;
/// Exports: raw judgments and aggregated preferences (JSONL, CSV, Parquet, bundles)
/// with manifests and dataset cards, streamed in flat memory.
pub mod export;
/// HTTP: the JSON API, the lead pages, health checks.
pub mod http;
/// JSONL import of pairs, shared by the API and the CLI.
pub mod import;
/// The PostgreSQL-backed job queue and worker pool.
pub mod jobs;
/// Assignment of pairs to raters and storage of their judgments.
pub mod labeling;
/// Policies ranked by Bradley–Terry strength from the judgments, with bootstrap intervals.
pub mod leaderboard;
/// Reward models with Burn: features, networks, ensembles, training, scoring.
pub mod ml;
/// Projects, their settings and members.
pub mod projects;
/// Rater quality: agreement statistics (kappas, alpha), Dawid–Skene reliability, tests.
pub mod quality;
/// The rater's side: content warnings, reports, session caps, progress.
pub mod rater;
/// The reward model in the service: training job, versions, scoring.
pub mod reward;
/// Simulated tasks with a hidden true reward, simulated raters, `backflip simulate`.
pub mod simulate;
/// Users and their credentials.
pub mod users;
