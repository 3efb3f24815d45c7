//! `backflip bench export`: seed N judgments with a few `insert … select
//! generate_series` statements, then for each format time the data file as the
//! CLI writes it (streamed, hashed, to a file) and, apart, the dataset card's
//! statistics; report rows/s and peak RSS (VmHWM, reset before each format
//! through `/proc/self/clear_refs`, so seeding does not count).

use std::{io::Write, sync::Arc, time::Instant};

use anyhow::Context;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::{db, export};

#[derive(clap::Args, Debug, Clone)]
pub struct ExportBenchOpts {
    /// Judgments to seed (3 per pair).
    #[arg(long, default_value_t = 1_000_000)]
    pub judgments: i64,
    /// Distinct raters.
    #[arg(long, default_value_t = 50)]
    pub raters: i64,
    /// Keep the benchmark database afterwards (to rerun with --reuse).
    #[arg(long)]
    pub keep: bool,
    /// Reuse a database kept by an earlier --keep run instead of seeding.
    #[arg(long)]
    pub reuse: bool,
    /// Formats to time (repeat or comma-separate); default: raw-jsonl, csv,
    /// preferences-jsonl, preferences-parquet.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub format: Vec<export::Format>,
    /// Also time preferences-jsonl with reliability-weighted aggregation (fits the
    /// rater model first; its time is part of the stream's).
    #[arg(long)]
    pub reliability: bool,
}

const BENCH_DB: &str = "backflip_bench_export";

pub async fn run(admin_url: &str, opts: &ExportBenchOpts) -> anyhow::Result<()> {
    let admin = db::pool(admin_url, 1).await?;
    let drop = if opts.reuse {
        format!("drop database if exists {BENCH_DB} with (force)")
    } else {
        super::recreate_database(&admin, BENCH_DB).await?
    };
    let url = super::with_database(admin_url, BENCH_DB);
    let result = bench(&url, opts).await;
    if !opts.keep {
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&admin)
            .await?;
    }
    result
}

async fn bench(url: &str, opts: &ExportBenchOpts) -> anyhow::Result<()> {
    let pool = db::pool(url, 4).await?;
    db::migrate(&pool).await?;
    if !opts.reuse {
        let started = Instant::now();
        seed(&pool, opts.judgments, opts.raters.max(3)).await?;
        eprintln!(
            "seeded {} judgments in {:.1} s",
            opts.judgments,
            started.elapsed().as_secs_f64()
        );
    }
    let project = crate::projects::by_slug(&pool, "bench-export").await?;
    let dir = std::env::temp_dir().join(format!("backflip-bench-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "{:<20} {:>9} {:>9} {:>10} {:>9} {:>9} {:>12}",
        "format", "rows", "stream s", "rows/s", "card s", "MB", "peak RSS MB"
    );
    let mut runs: Vec<(export::Format, export::Aggregation)> = if opts.format.is_empty() {
        vec![
            export::Format::RawJsonl,
            export::Format::Csv,
            export::Format::PreferencesJsonl,
            export::Format::PreferencesParquet,
        ]
    } else {
        opts.format.clone()
    }
    .into_iter()
    .map(|f| (f, export::Aggregation::Majority))
    .collect();
    if opts.reliability {
        runs.push((
            export::Format::PreferencesJsonl,
            export::Aggregation::Reliability,
        ));
    }
    for (format, aggregation) in runs {
        let args = export::ExportArgs {
            format,
            aggregation,
            ..Default::default()
        };
        let plan = Arc::new(export::plan(&pool, project.clone(), args, true).await?);
        reset_peak_rss();
        // The data file as the CLI writes it (chunks to a file, hashed)...
        let out = dir.join(format.file_name());
        let started = Instant::now();
        let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
        let mut hash = Sha256::new();
        let (mut chunks, summary) = export::stream::start(pool.clone(), plan.clone());
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            hash.update(&chunk);
            file.write_all(&chunk)?;
        }
        file.flush()?;
        let summary = summary.await??;
        let stream_secs = started.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&out)?.len();
        std::fs::remove_file(&out).ok();
        // ...and the dataset card's counts and agreement statistics.
        let started = Instant::now();
        export::card::stats(&pool, &plan).await?;
        let card_secs = started.elapsed().as_secs_f64();
        let name = match aggregation {
            export::Aggregation::Majority => format.as_str().to_owned(),
            export::Aggregation::Reliability => format!("{}+rel", format.as_str()),
        };
        println!(
            "{:<20} {:>9} {:>9.2} {:>10.0} {:>9.2} {:>9.1} {:>12.1}",
            name,
            summary.rows,
            stream_secs,
            summary.rows as f64 / stream_secs,
            card_secs,
            bytes as f64 / 1e6,
            peak_rss_kb().unwrap_or(0) as f64 / 1024.0
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    pool.close().await;
    Ok(())
}

/// Reset VmHWM to the current RSS (Linux; ignored elsewhere).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A text project `bench-export` with `judgments / 3` pairs, each judged by three
/// of `raters` raters, with rationales (some with quotes, commas and newlines).
pub async fn seed(pool: &PgPool, judgments: i64, raters: i64) -> anyhow::Result<()> {
    let pairs = (judgments + 2) / 3;
    let project: uuid::Uuid = sqlx::query_scalar(
        "insert into projects (slug, name, media_kind, overlap, train_every, instructions)
         values ('bench-export', 'Export benchmark', 'text', 3, 0, 'Pick the better answer.') returning id",
    )
    .fetch_one(pool)
    .await?;
    // Every step names all four parameters through `p`, so one bind list fits all.
    macro_rules! step {
        ($sql:literal) => {
            concat!(
                "with p as (select $1::uuid as project, $2::bigint as raters, $3::bigint as pairs, $4::bigint as n) ",
                $sql
            )
        };
    }
    let steps: [&'static str; 6] = [
        step!("insert into users (id, name, role) select md5('u' || i)::uuid, 'bench-rater-' || i, 'annotator'
         from p, generate_series(1, p.raters) i"),
        step!("insert into project_members (project_id, user_id, role) select p.project, md5('u' || i)::uuid, 'annotator'
         from p, generate_series(1, p.raters) i"),
        step!("insert into rollouts (id, project_id, body, policy)
         select md5('r' || i)::uuid, p.project, 'Answer ' || i || ': ' || repeat('lorem ipsum dolor ', 12),
                case when i % 2 = 0 then 'policy-a' else 'policy-b' end
         from p, generate_series(1, 2 * p.pairs) i"),
        step!("insert into comparisons (id, project_id, external_id, prompt, rollout_a, rollout_b, overlap, taken_count)
         select md5('c' || i)::uuid, p.project, 'q' || i, 'Question ' || i || ': explain this, briefly?',
                md5('r' || (2 * i - 1))::uuid, md5('r' || (2 * i))::uuid, 3, 3
         from p, generate_series(1, p.pairs) i"),
        step!("insert into assignments (id, comparison_id, project_id, rater_id, left_is_a, state, expires_at, judged_at)
         select md5('a' || k)::uuid, md5('c' || ((k - 1) / 3 + 1))::uuid, p.project,
                md5('u' || ((((k - 1) / 3) + (k - 1) % 3) % p.raters + 1))::uuid,
                k % 2 = 0, 'judged', now(), now()
         from p, generate_series(1, p.n) k"),
        step!("insert into judgments (assignment_id, comparison_id, project_id, rater_id, choice, displayed_choice,
                left_is_a, rationale, duration_ms, created_at)
         select md5('a' || k)::uuid, md5('c' || ((k - 1) / 3 + 1))::uuid, p.project,
                md5('u' || ((((k - 1) / 3) + (k - 1) % 3) % p.raters + 1))::uuid,
                ch, case when ch in ('a', 'b') then case when (ch = 'a') = (k % 2 = 0) then 'left' else 'right' end else ch end,
                k % 2 = 0,
                case when k % 4 = 0 then 'clearer, \"shorter\";' || chr(10) || 'and right' end,
                1000 + k % 9000, now() - make_interval(secs => (p.n - k) / 1000.0)
         from p, (select k, case when k % 10 < 4 then 'a' when k % 10 < 8 then 'b'
                              when k % 10 = 8 then 'tie' else 'cant_tell' end as ch
               from generate_series(1, (select n from p)) k) s"),
    ];
    for sql in steps {
        sqlx::query(sql)
            .bind(project)
            .bind(raters)
            .bind(pairs)
            .bind(judgments)
            .execute(pool)
            .await
            .with_context(|| format!("seeding: {}", &sql[..60.min(sql.len())]))?;
    }
    sqlx::query("analyze").execute(pool).await?;
    Ok(())
}
