//! `backflip bench submit`: simulated raters over real HTTP against an
//! in-process server, each looping `next` → `judgment`, and in the same run a
//! PostgreSQL baseline of single-row inserts at the same concurrency (from this
//! process's client, and from `pgbench` when it is installed), so the figures
//! come out as a ratio to what the database alone commits.
//!
//! It works in a throwaway database (`backflip_bench`) that it creates and drops.
//! `backflip bench next` (the queue at scale) lives in [`next`], `backflip bench
//! reward` in [`reward`].

pub mod export;
mod harness;
pub mod next;
pub mod reward;
pub mod select;

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;

use crate::{
    auth::{Role, User},
    clips::ClipStore,
    db, import, projects, users,
};
use harness::Harness;

/// Settings of one benchmark run.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchOpts {
    /// Concurrency levels to sweep (simulated raters).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    pub raters: Vec<usize>,
    /// Seconds each level runs.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Connections in the server's pool.
    #[arg(long, default_value_t = 16)]
    pub db_pool: u32,
    /// Run each level twice: as is, then with a reward-model training run in
    /// progress in the same process (one training thread, as `serve` runs it).
    #[arg(long)]
    pub with_training: bool,
    /// Niceness of that training thread (the service's: 10; 0 to compare without).
    #[arg(long, default_value_t = 10)]
    pub training_nice: u32,
    /// SQL run on the benchmark's database after it is seeded, before the
    /// server starts: a what-if experiment (drop an index or a foreign key,
    /// change a setting) measured against the same run without it. Several
    /// statements may be separated by `;`.
    #[arg(long, value_name = "SQL")]
    pub before_levels: Option<String>,
    /// Pairs seeded, of overlap 1: each judgment uses one up. At 8,000
    /// judgments/s a 128-rater level of 5 s takes 40,000; raise this for longer
    /// levels (a level that runs out says so under its row).
    #[arg(long, default_value_t = 100_000)]
    pub pairs: usize,
    /// Each simulated rater judges and takes its next pair in one call
    /// (`POST /projects/{slug}/next`) instead of two (`GET /next`, then `POST
    /// /assignments/{id}/judgment`). `submit` is then that call, and `next` a
    /// rater's first `GET /next` of each token in a level.
    #[arg(long)]
    pub combined: bool,
}

const BENCH_DB: &str = "backflip_bench";

/// Drop and create database `name` (a throwaway for a benchmark); returns the
/// statement that drops it again.
pub(crate) async fn recreate_database(admin: &PgPool, name: &str) -> anyhow::Result<String> {
    let drop = format!("drop database if exists {name} with (force)");
    sqlx::query(sqlx::AssertSqlSafe(drop.clone()))
        .execute(admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(admin)
        .await
        .context("creating the benchmark database (the role needs CREATEDB)")?;
    Ok(drop)
}

/// Run `bench` with the URL of a fresh database `name` on the server
/// `admin_url` points at, and drop that database afterwards unless `keep`.
pub(crate) async fn in_throwaway<F, Fut>(
    admin_url: &str,
    name: &str,
    keep: bool,
    bench: F,
) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let admin = db::pool(admin_url, 1).await?;
    let drop = recreate_database(&admin, name).await?;
    let result = bench(with_database(admin_url, name)).await;
    if !keep {
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&admin)
            .await?;
    }
    result
}

/// Run the sweep against a fresh database on the server `admin_url` points at.
pub async fn submit(admin_url: &str, opts: &BenchOpts) -> anyhow::Result<()> {
    in_throwaway(admin_url, BENCH_DB, false, |url| async move {
        run(&url, opts).await
    })
    .await
}

async fn run(url: &str, opts: &BenchOpts) -> anyhow::Result<()> {
    let pool = db::pool(url, opts.db_pool).await?;
    db::migrate(&pool).await?;
    let max_raters = opts.raters.iter().copied().max().unwrap_or(1);
    let tokens = seed(&pool, max_raters, opts.pairs).await?;
    if let Some(sql) = &opts.before_levels {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.as_str()))
            .execute(&pool)
            .await
            .context("running --before-levels")?;
        println!("before the levels: {sql}");
    }

    let harness = Harness::start(&pool, max_raters).await?;

    println!(
        "backflip bench submit: {}s per level, server pool {} connections, client and server in one process, {}",
        opts.seconds,
        opts.db_pool,
        match opts.combined {
            true => "one call per judgment (POST /next: judge, then lease the next pair)",
            false => "two calls per judgment (GET /next, POST /judgment)",
        }
    );
    println!(
        "baseline: single-row inserts, each committed, at the same concurrency: `pg inserts/s` \
         from this process's client (sqlx, as the server uses), `pgbench/s` from pgbench \
         (when on the PATH); `ratio` is judgments/s over pgbench/s, or over pg inserts/s without it; \
         `batch j/n`: judgments per judging statement and `next` calls per leasing statement (the \
         server answers those waiting together); \
         `WAL rec/j` and `flush/j`: WAL records written and WAL flushes to disk per judgment, from \
         the cluster's `pg_stat_wal`, and `xact/j`: transactions committed in the benchmark's \
         database per judgment (a statement on its own is one), from `pg_stat_database`, both \
         over the middle 60% of the level (anything else meanwhile counts too); \
         `cpu ms/j`: the whole machine's CPU time per judgment (all processes, from /proc/stat, \
         same window), and `cpu ratio`: pgbench's CPU time per insert (its whole run) over that, \
         how many of pgbench's inserts a judgment costs in CPU, inverted"
    );
    println!(
        "{:>6} {:>12} {:>20} {:>20} {:>18} {:>9} {:>6} {:>13} {:>11} {:>6} {:>9} {:>7} {:>6} {:>8} {:>9}",
        "raters",
        "judgments/s",
        "next p50/p95/p99",
        "submit p50/p95/p99",
        "both p50/p99 ms",
        "batch j/n",
        "errors",
        "pg inserts/s",
        "pgbench/s",
        "ratio",
        "WAL rec/j",
        "flush/j",
        "xact/j",
        "cpu ms/j",
        "cpu ratio"
    );
    let modes: &[bool] = if opts.with_training {
        &[false, true]
    } else {
        &[false]
    };
    for &n in &opts.raters {
        for &training in modes {
            let trainer = match training {
                true => Some(start_training(&pool, &harness.dir, opts.training_nice).await?),
                false => None,
            };
            let written = harness.judgments.stats();
            let leased = harness.leases.stats();
            let wal = tokio::spawn(per_judgment(
                pool.clone(),
                harness.judgments.clone(),
                opts.seconds,
            ));
            let r = harness
                .level(
                    &tokens[..n],
                    n,
                    opts.seconds,
                    std::time::Duration::ZERO,
                    opts.combined,
                )
                .await;
            let written = harness.judgments.stats().since(written);
            let leased = harness.leases.stats().since(leased);
            let wal = wal.await.ok().flatten();
            if let Some((stop, task)) = trainer {
                let _ = stop.send(true);
                let _ = task.await;
            }
            let inserts = baseline(url, n, opts.seconds).await?;
            let pgbench = pgbench(url, &pool, n, opts.seconds).await?;
            let rate = r.rate();
            let [next, submit, both] = r.latencies();
            let (pgbench_col, ratio) = match &pgbench {
                Some(PgBench { tps, clients, .. }) if *clients < n => {
                    (format!("{tps:.0} ({clients}c)"), rate / tps)
                }
                Some(PgBench { tps, .. }) => (format!("{tps:.0}"), rate / tps),
                None => ("-".into(), rate / inserts),
            };
            let cpu = wal.as_ref().and_then(|w| w.cpu_ms);
            let cpu_ratio = match (cpu, pgbench.as_ref().and_then(|p| p.cpu_ms)) {
                (Some(judgment), Some(insert)) if judgment > 0.0 => {
                    format!("{:.2}", insert / judgment)
                }
                _ => "-".into(),
            };
            let per_judgment = |value: fn(&PerJudgment) -> f64| {
                wal.as_ref()
                    .map_or("-".into(), |w| format!("{:.2}", value(w)))
            };
            println!(
                "{:>6} {:>12.0} {:>20} {:>20} {:>18} {:>9} {:>6} {:>13.0} {:>11} {:>6.2} {:>9} {:>7} {:>6} {:>8} {:>9}{}",
                n,
                rate,
                next,
                submit,
                both,
                format!(
                    "{:.1}/{:.1}",
                    written.per_statement(),
                    leased.per_statement()
                ),
                r.errors,
                inserts,
                pgbench_col,
                ratio,
                per_judgment(|w| w.records),
                per_judgment(|w| w.flushes),
                per_judgment(|w| w.transactions),
                cpu.map_or("-".into(), |ms| format!("{ms:.3}")),
                cpu_ratio,
                if training { "  (training)" } else { "" }
            );
            if r.nothing_left > 0 {
                println!(
                    "{:>6} ran out of pairs: {} calls found nothing left (counted as errors); seed more with --pairs",
                    "", r.nothing_left
                );
            }
        }
    }
    harness.stop().await?;
    pool.close().await;
    Ok(())
}

/// What PostgreSQL does per judgment over a level: WAL records and flushes,
/// and transactions committed in the benchmark's database.
struct PerJudgment {
    records: f64,
    flushes: f64,
    transactions: f64,
    /// The machine's CPU time per judgment, in ms (None without /proc/stat).
    cpu_ms: Option<f64>,
}

/// A reading of the machine's CPU times (/proc/stat's first line, in the
/// kernel's clock ticks): busy (user, nice, system, irq, softirq) and all (busy,
/// idle, I/O wait, steal), the cores (its `cpuN` lines) and when it was read.
struct CpuReading {
    busy: f64,
    all: f64,
    cores: usize,
    at: std::time::Instant,
}

impl CpuReading {
    /// None where there is no /proc/stat.
    fn now() -> Option<CpuReading> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let at = std::time::Instant::now();
        let mut lines = stat.lines();
        let ticks: Vec<f64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = ticks[..] else {
            return None;
        };
        let cores = lines
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        let busy = user + nice + system + irq + softirq;
        Some(CpuReading {
            busy,
            all: busy + idle + iowait + steal,
            cores,
            at,
        })
    }

    /// The CPU seconds the machine has been busy since `start` (None without
    /// one, without /proc/stat, or when no tick passed). All the ticks together
    /// advance by one second per core per second, which gives their length.
    fn busy_seconds_since(start: Option<CpuReading>) -> Option<f64> {
        let (start, now) = start.zip(CpuReading::now())?;
        let ticks = now.all - start.all;
        let seconds = (now.at - start.at).as_secs_f64() * start.cores as f64;
        (ticks > 0.0).then(|| (now.busy - start.busy) / ticks * seconds)
    }
}

/// WAL records and flushes (the cluster's `pg_stat_wal`, PostgreSQL 14 and
/// later), transactions committed in the benchmark's database
/// (`pg_stat_database`) and the machine's CPU time per judgment written, over
/// the middle 60 % of a level of `seconds`; None without those views, or with
/// no judgment meanwhile. Backends report to both views up to a second late; in
/// the middle of a level they are as late at both readings, where a reading at
/// the level's end would miss its last second. Unlike a rate, the WAL and
/// transaction counts do not depend on how busy the machine is.
async fn per_judgment(
    pool: PgPool,
    writer: crate::labeling::Writer,
    seconds: f64,
) -> Option<PerJudgment> {
    let read = async || -> Option<(i64, i64, i64, u64)> {
        let (records, flushes, commits): (i64, i64, i64) = sqlx::query_as(
            "select wal_records, wal_sync,
                    (select xact_commit from pg_stat_database where datname = current_database())
             from pg_stat_wal",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        Some((records, flushes, commits, writer.stats().judgments))
    };
    tokio::time::sleep(std::time::Duration::from_secs_f64(seconds * 0.2)).await;
    let (r1, f1, c1, j1) = read().await?;
    let cpu = CpuReading::now();
    tokio::time::sleep(std::time::Duration::from_secs_f64(seconds * 0.6)).await;
    let busy = CpuReading::busy_seconds_since(cpu);
    let (r2, f2, c2, j2) = read().await?;
    let judgments = j2.checked_sub(j1).filter(|&n| n > 0)? as f64;
    Some(PerJudgment {
        records: (r2 - r1) as f64 / judgments,
        flushes: (f2 - f1) as f64 / judgments,
        transactions: (c2 - c1) as f64 / judgments,
        cpu_ms: busy.map(|s| s * 1e3 / judgments),
    })
}

/// A lead, a project with `pairs` pairs (overlap 1, so every judgment uses up a
/// pair), and `raters` annotators; returns the annotators' tokens.
async fn seed(pool: &PgPool, raters: usize, pairs: usize) -> anyhow::Result<Vec<String>> {
    let lead = users::create(pool, "bench-lead", Role::Lead, None).await?;
    let lead = User {
        id: lead.id,
        name: lead.name,
        role: Role::Lead,
    };
    let mut s = projects::ProjectSettings::new("bench", "Benchmark");
    s.overlap = 1;
    projects::create(pool, &lead, s).await?;
    let access = projects::access(pool, &lead, "bench").await?;
    for chunk in (0..pairs).step_by(5000) {
        let body: String = (chunk..pairs.min(chunk + 5000))
            .map(|n| {
                format!("{{\"prompt\": \"question {n}\", \"a\": {{\"text\": \"answer a {n}\"}}, \"b\": {{\"text\": \"answer b {n}\"}}}}\n")
            })
            .collect();
        import::import(pool, &access, body.as_bytes()).await?;
    }
    let mut tokens = Vec::new();
    for i in 0..raters {
        let name = format!("bench-rater-{i}");
        let u = users::create(pool, &name, Role::Annotator, None).await?;
        projects::add_member(pool, &access, &name, projects::MemberRole::Annotator).await?;
        tokens.push(u.token);
    }
    Ok(tokens)
}

/// Single-row inserts at the same concurrency, one connection per client, each
/// its own committed transaction: what PostgreSQL alone sustains here.
async fn baseline(url: &str, clients: usize, seconds: f64) -> anyhow::Result<f64> {
    let pool = db::pool(url, clients as u32).await?;
    sqlx::query("create table if not exists bench_insert (id bigserial primary key, rater int, payload text, at timestamptz default now())")
        .execute(&pool)
        .await?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut n = 0usize;
                while Instant::now() < deadline {
                    if sqlx::query("insert into bench_insert (rater, payload) values ($1, 'left')")
                        .bind(i as i32)
                        .execute(&pool)
                        .await
                        .is_ok()
                    {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

/// What pgbench measured: inserts per second, at how many clients (fewer than
/// asked when PostgreSQL has fewer connections free), and the machine's CPU
/// time per insert over its whole run, in ms (None without /proc/stat).
struct PgBench {
    tps: f64,
    clients: usize,
    cpu_ms: Option<f64>,
}

/// The same single-row inserts driven by `pgbench`, the leanest client there is, or
/// None when pgbench is not on the PATH. pgbench holds a connection per client at
/// once, so the clients are capped to the connections the server has free (shown
/// next to the rate when fewer than asked).
async fn pgbench(
    url: &str,
    pool: &PgPool,
    clients: usize,
    seconds: f64,
) -> anyhow::Result<Option<PgBench>> {
    let free: i64 = sqlx::query_scalar(
        "select current_setting('max_connections')::int
                - current_setting('superuser_reserved_connections')::int
                - (select count(*) from pg_stat_activity)",
    )
    .fetch_one(pool)
    .await?;
    let clients = clients.min(usize::try_from(free).unwrap_or(0).max(1));
    let script = std::env::temp_dir().join(format!("backflip-pgbench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "insert into bench_insert (rater, payload) values (:client_id, 'left');\n",
    )?;
    let cpu = CpuReading::now();
    let output = tokio::process::Command::new("pgbench")
        .args(["--no-vacuum", "--protocol=prepared"])
        .arg(format!("--client={clients}"))
        .arg(format!("--jobs={}", clients.min(2)))
        .arg(format!("--time={}", seconds.ceil().max(1.0)))
        .arg("--file")
        .arg(&script)
        .arg(url)
        .output()
        .await;
    let busy = CpuReading::busy_seconds_since(cpu);
    let _ = std::fs::remove_file(&script);
    let output = match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.context("running pgbench")?,
    };
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The number that starts the line after `prefix` ("tps = 1234.5 (…)",
    // "…processed: 61234/61234").
    let number = |prefix: &str| -> Option<f64> {
        let rest = stdout.lines().find_map(|l| l.strip_prefix(prefix))?;
        rest.split(['/', ' ']).next()?.parse().ok()
    };
    let tps = number("tps = ").context("no `tps = ` line in pgbench's output")?;
    let inserts = number("number of transactions actually processed: ");
    Ok(Some(PgBench {
        tps,
        clients,
        cpu_ms: busy
            .zip(inserts.filter(|&n| n > 0.0))
            .map(|(s, n)| s * 1e3 / n),
    }))
}

pub(crate) fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub(crate) fn triple(v: &mut [f64]) -> String {
    format!("{:.1}/{:.1}/{:.1}", pct(v, 0.5), pct(v, 0.95), pct(v, 0.99))
}

/// Replace the database name in a connection URL, keeping its query string.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}

type Trainer = (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
);

/// Start a worker in this process on a training run long enough to outlast a level.
async fn start_training(
    pool: &PgPool,
    dir: &std::path::Path,
    nice: u32,
) -> anyhow::Result<Trainer> {
    let project: uuid::Uuid = sqlx::query_scalar("select id from projects where slug = 'bench'")
        .fetch_one(pool)
        .await?;
    sqlx::query("delete from jobs where status = 'queued'")
        .execute(pool)
        .await?;
    let mut conn = pool.acquire().await?;
    crate::jobs::storage::enqueue(
        &mut conn,
        "train",
        Some(project),
        // Early stopping off, so the run outlasts the level.
        serde_json::json!({"steps": 1_000_000, "early_stopping": false, "nice": nice}),
    )
    .await?;
    drop(conn);
    let runner = crate::jobs::Runner::new(
        pool.clone(),
        crate::reward::job_handlers(ClipStore::local(dir)?),
        crate::jobs::WorkerConfig::new(1, 6.0),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move { runner.run(stopped).await });
    // Wait until it is really training (the first progress report).
    for _ in 0..200 {
        let running: bool = sqlx::query_scalar(
            "select exists (select 1 from jobs where status = 'running' and progress is not null)",
        )
        .fetch_one(pool)
        .await?;
        if running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((stop, task))
}
