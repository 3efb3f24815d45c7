//! Configuration: every setting is a flag with an environment variable, never code.

use std::{fmt, net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::{auth::Role, clips::ClipLimits};

/// Backflip: collect human preference labels for RLHF and train a reward model on them.
///
/// With no DATABASE_URL, Backflip runs its own PostgreSQL cluster inside the
/// data directory (PostgreSQL's server binaries must be installed).
#[derive(Parser, Debug)]
#[command(name = "backflip", version, about, long_about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct GlobalOpts {
    /// PostgreSQL to use, e.g. postgres://user:pass@host/db. Unset: run a private
    /// cluster in <data-dir>/postgres, reachable only through a Unix socket.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Where Backflip keeps its embedded database and clip files.
    #[arg(
        long,
        env = "BACKFLIP_DATA_DIR",
        default_value = "backflip-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Maximum number of PostgreSQL connections in the pool.
    #[arg(long, env = "BACKFLIP_DB_POOL", default_value_t = 16, global = true)]
    pub db_pool: u32,
}

impl fmt::Debug for GlobalOpts {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalOpts")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("data_dir", &self.data_dir)
            .field("db_pool", &self.db_pool)
            .finish()
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the web server (JSON API and pages).
    Serve(ServeOpts),
    /// Run the server with a demo project of text pairs and one of GIF clips, and demo users.
    Demo(ServeOpts),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Import pairs, or single rollouts in groups, from a JSONL file into a project (see README for the format).
    ///
    /// A file with any bad line imports nothing: every bad line is reported with its number.
    Import(ImportOpts),
    /// Run background workers (reward-model training) until Ctrl-C or SIGTERM.
    ///
    /// Any number of worker processes, on any number of machines, share the queue
    /// in PostgreSQL. A killed worker's job is taken over once its lease expires.
    Worker(WorkerOpts),
    /// Queue a reward-model training run for a project.
    Train(TrainOpts),
    /// Score rollouts with a project's current reward model.
    ///
    /// Reads JSONL from FILE (or stdin when FILE is absent or `-`), one rollout per line:
    /// `{"text": "..."}`, `{"features": [...]}` or `{"rollout_id": "<uuid>"}` (a stored
    /// rollout; the way to score a clip). Writes one JSON line per input, in order:
    /// `{"mean": .., "std": .., "members": [..]}` — the ensemble's mean reward, its spread
    /// and each member's. The model version used goes to stderr. A bad line stops the
    /// command before anything is written, naming the line.
    Score(ScoreOpts),
    /// Reward-model versions: export one to use it outside Backflip.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Export a project's judgments or preferences, with a manifest and a dataset card.
    ///
    /// Formats: raw-jsonl (one row per judgment: pair, both rollouts, canonical choice,
    /// side shown, strength, rationale, flags, timings, rater), csv (the same columns),
    /// preferences-jsonl and preferences-parquet (one row per pair: prompt, chosen,
    /// rejected, votes, agreement, margin; majority vote, or reliability-weighted with
    /// --aggregation reliability; ties and splits left out unless kept), bundle (GIF projects: a tar of preferences.jsonl and the clips it
    /// references). Columns: README, "Export formats".
    ///
    /// Output: with --out DIR (an existing folder, or a path ending in /) the files
    /// are DIR/<data file>, DIR/README.md and DIR/manifest.json; with --out FILE they
    /// are FILE, FILE.README.md and FILE.manifest.json. Bad filters write nothing.
    ///
    /// Raters appear under a stable per-project pseudonym unless --real-identities.
    /// Excluded raters and gold pairs are left out unless asked for.
    Export(ExportOpts),
    /// Measure: simulated raters over HTTP, next → judgment, with a PostgreSQL baseline.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Simulated raters label a simulated project (`sim-text` or `sim-gif`) over HTTP.
    ///
    /// Creates the project, its lead and raters if missing, imports generated pairs,
    /// serves the API in-process on a random port, has the raters label until nothing
    /// is left, optionally trains the reward model, and prints per-rater counts.
    Simulate(crate::simulate::SimOpts),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Judgment throughput and latency against single-row inserts at the same concurrency.
    ///
    /// Works in a throwaway database `backflip_bench` on the configured server
    /// (dropped afterwards; the role needs CREATEDB).
    Submit(crate::bench::BenchOpts),
    /// `next` and judgment latency with a million open pairs and a thousand raters.
    ///
    /// Seeds by SQL a throwaway database `backflip_bench_next` (dropped afterwards
    /// unless --keep; the role needs CREATEDB), then runs phases: fresh queue,
    /// partly consumed, uncertainty priorities, and a rater who has seen the head.
    Next(crate::bench::next::NextBenchOpts),
    /// Reward-model accuracy against a simulated task's hidden true reward, by label count.
    ///
    /// Trains in this process on simulated labels (no database, no HTTP) with the
    /// service's model and training configurations, and prints a table.
    Reward(crate::bench::reward::RewardOpts),
    /// Label efficiency of the pair-selection strategies on a simulated task.
    ///
    /// Labels a pool of grouped rollouts round by round, each strategy picking pairs with
    /// the service's planner and retraining after every round, and prints accuracy against
    /// the hidden true reward at each label count (no database). `--svg` charts it.
    Select(crate::bench::select::SelectOpts),
    /// Export throughput and memory: seeds N judgments, then times the JSONL export.
    ///
    /// Works in a throwaway database `backflip_bench_export` (dropped afterwards; the
    /// role needs CREATEDB). Reports rows/s and this process's peak RSS (VmHWM).
    Export(crate::bench::export::ExportBenchOpts),
}

#[derive(Args, Debug, Clone)]
pub struct ServeOpts {
    /// Address to listen on.
    #[arg(long, env = "BACKFLIP_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Public base URL, used in invite links; https:// here also marks cookies Secure.
    #[arg(long, env = "BACKFLIP_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub clips: ClipOpts,
    /// Training workers to run inside the server (0: only separate `backflip worker` processes).
    #[arg(long, env = "BACKFLIP_WORKERS", default_value_t = 1)]
    pub workers: usize,
    #[command(flatten)]
    pub jobs: JobOpts,
    /// Largest accepted request body for imports, in bytes.
    #[arg(long, env = "BACKFLIP_MAX_IMPORT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_import_bytes: usize,
}

#[derive(Args, Debug, Clone)]
pub struct JobOpts {
    /// Seconds a worker holds a job without a heartbeat; a dead worker's job is
    /// taken over after this long.
    #[arg(long, env = "BACKFLIP_JOB_LEASE_SECONDS", default_value_t = 60.0)]
    pub job_lease_seconds: f64,
}

#[derive(Args, Debug, Clone)]
pub struct WorkerOpts {
    /// Jobs this process runs at once (each training run uses one core).
    #[arg(long, env = "BACKFLIP_WORKER_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    #[command(flatten)]
    pub jobs: JobOpts,
}

#[derive(Args, Debug, Clone)]
pub struct TrainOpts {
    /// Slug of the project whose reward model to train.
    #[arg(long)]
    pub project: String,
    /// Wait for the run to finish and print its metrics (a worker must be running,
    /// in `serve` or `worker`, unless --here).
    #[arg(long)]
    pub wait: bool,
    /// Run the training in this process instead of waiting for a worker (implies --wait).
    #[arg(long)]
    pub here: bool,
    #[command(flatten)]
    pub jobs: JobOpts,
}

#[derive(Args, Debug, Clone)]
pub struct ScoreOpts {
    /// Slug of the project whose current reward model scores.
    #[arg(long)]
    pub project: String,
    /// JSONL file of rollouts; `-` or absent: stdin.
    pub file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Write a version's weights (`model.safetensors`), `config.json` and a `README.md`
    /// saying how to compute rewards from them into a directory.
    Export(ModelExportOpts),
}

#[derive(Args, Debug, Clone)]
pub struct ModelExportOpts {
    /// Slug of the project.
    #[arg(long)]
    pub project: String,
    /// Directory to write into (created if missing; the three files are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Version number to export (default: the current version).
    #[arg(long)]
    pub version: Option<i32>,
}

#[derive(Args, Debug, Clone)]
pub struct ClipOpts {
    /// Largest accepted GIF clip, in bytes.
    #[arg(long, env = "BACKFLIP_CLIP_MAX_BYTES", default_value_t = ClipLimits::default().max_bytes)]
    pub clip_max_bytes: usize,
    /// Most frames a GIF clip may have.
    #[arg(long, env = "BACKFLIP_CLIP_MAX_FRAMES", default_value_t = ClipLimits::default().max_frames)]
    pub clip_max_frames: usize,
    /// Most pixels (width x height) a GIF clip's canvas may have.
    #[arg(long, env = "BACKFLIP_CLIP_MAX_PIXELS", default_value_t = ClipLimits::default().max_pixels)]
    pub clip_max_pixels: u64,
}

impl ClipOpts {
    pub fn limits(&self) -> ClipLimits {
        ClipLimits {
            max_bytes: self.clip_max_bytes,
            max_frames: self.clip_max_frames,
            max_pixels: self.clip_max_pixels,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user and print their new API token (alone) on stdout.
    Create(UserCreateOpts),
}

#[derive(Args, Debug)]
pub struct UserCreateOpts {
    /// Login name (letters, digits, _ . @ -).
    #[arg(long)]
    pub name: String,
    #[arg(long, value_enum)]
    pub role: Role,
    /// Read a password for web login from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct ExportOpts {
    /// Slug of the project to export.
    #[arg(long)]
    pub project: String,
    /// Where to write: a file (sidecars FILE.README.md and FILE.manifest.json beside it)
    /// or a folder (existing, or ending in /).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub args: crate::export::ExportArgs,
}

#[derive(Args, Debug)]
pub struct ImportOpts {
    /// Slug of the project to import into.
    #[arg(long)]
    pub project: String,
    /// JSONL file, one pair per line (or one rollout with its `group` per line).
    pub file: PathBuf,
    /// Folder holding the GIF clips the file names (for GIF projects).
    #[arg(long)]
    pub clips: Option<PathBuf>,
    #[command(flatten)]
    pub clip_opts: ClipOpts,
}
