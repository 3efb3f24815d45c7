//! `backflip bench next`: the `next` → judgment hot path at the scale of
//! issue 5 — a million open candidate pairs and a thousand raters — over real
//! HTTP against the service in this process, in phases that change the queue:
//!
//! 1. `fresh`: every pair open, no rater has a history yet;
//! 2. `consumed`: pairs closed by SQL (each judged by `overlap` raters), so
//!    judged assignments and judgments pile up behind the queue's head;
//! 3. `priorities`: open pairs re-scored as the uncertainty strategy writes
//!    them (generated, priority 1..=1,000,001), so the head is ordered by priority;
//! 4. `seen head`: one rater alone, who has already judged the first pairs of
//!    the queue (they stay open for others), so `next` must skip them.
//!
//! Seeding is SQL (`generate_series`), not API imports. It works in a throwaway
//! database (`backflip_bench_next`), dropped afterwards unless `--keep`.

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Harness, in_throwaway};
use crate::{
    auth::{Role, User},
    db, projects, users,
};

const BENCH_DB: &str = "backflip_bench_next";

/// Settings of one `bench next` run.
#[derive(clap::Args, Debug, Clone)]
pub struct NextBenchOpts {
    /// Open candidate pairs to seed.
    #[arg(long, default_value_t = 1_000_000)]
    pub pairs: i64,
    /// Annotators in the project, each with an API token.
    #[arg(long, default_value_t = 1000)]
    pub raters: usize,
    /// Concurrent rater loops per level; each loop takes turns with its share
    /// of the annotators.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    pub concurrency: Vec<usize>,
    /// Seconds each level runs.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Each simulated rater's pause between a judgment and its next `next`, in ms.
    /// 0 (default): closed loops, each as fast as the server answers, which on
    /// this machine measures saturation. With e.g. `--think-ms 5000 --concurrency
    /// 1000`, 1,000 raters each answer every ~5 s plus the calls' time: an
    /// offered load of ~200 judgments/s, below the server's capacity, measuring
    /// the latency raters feel. The `seen head` rater never pauses.
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
    /// Connections in the server's pool.
    #[arg(long, default_value_t = 16)]
    pub db_pool: u32,
    /// Pairs closed by SQL before the `consumed` phase.
    #[arg(long, default_value_t = 100_000)]
    pub consumed: i64,
    /// Open pairs given an uncertainty priority before the `priorities` phase
    /// (100,000 is the most a project keeps open, `open_target`).
    #[arg(long, default_value_t = 100_000)]
    pub prioritised: i64,
    /// Pairs at the head of the queue the `seen head` rater has already judged.
    #[arg(long, default_value_t = 5_000)]
    pub seen_head: i64,
    /// Keep the database afterwards, for EXPLAIN (`drop database backflip_bench_next`).
    #[arg(long)]
    pub keep: bool,
}

/// Run the phases against a fresh database on the server `admin_url` points at.
pub async fn run(admin_url: &str, opts: &NextBenchOpts) -> anyhow::Result<()> {
    in_throwaway(admin_url, BENCH_DB, opts.keep, |url| async move {
        phases(&url, opts).await
    })
    .await
}

async fn phases(url: &str, opts: &NextBenchOpts) -> anyhow::Result<()> {
    let pool = db::pool(url, opts.db_pool).await?;
    db::migrate(&pool).await?;
    let t = std::time::Instant::now();
    let (project, raters) = seed(&pool, opts).await?;
    let tokens: Vec<String> = raters.iter().map(|(_, t)| t.clone()).collect();
    println!(
        "backflip bench next: {} open pairs, {} raters seeded in {:.0}s; {}s per level, \
         think time {} ms, server pool {} connections; client, server and PostgreSQL share \
         this machine",
        opts.pairs,
        opts.raters,
        t.elapsed().as_secs_f64(),
        opts.seconds,
        opts.think_ms,
        opts.db_pool
    );
    println!(
        "{:<11} {:>5} {:>12} {:>20} {:>20} {:>15} {:>6}",
        "phase",
        "conc",
        "judgments/s",
        "next p50/p95/p99",
        "submit p50/p95/p99",
        "both p50/p99",
        "errors"
    );
    let harness =
        Harness::start(&pool, opts.concurrency.iter().copied().max().unwrap_or(1)).await?;
    let levels = |phase: &'static str| {
        let (harness, tokens) = (&harness, &tokens);
        async move {
            for &c in &opts.concurrency {
                let think = std::time::Duration::from_millis(opts.think_ms);
                let r = harness.level(tokens, c, opts.seconds, think, false).await;
                row(phase, c, &r);
            }
        }
    };
    levels("fresh").await;
    consume(&pool, project, opts.consumed).await?;
    levels("consumed").await;
    prioritise(&pool, project, opts.prioritised).await?;
    levels("priorities").await;
    let (rater, token) = &raters[0];
    see_head(&pool, project, *rater, opts.seen_head).await?;
    let r = harness
        .level(
            std::slice::from_ref(token),
            1,
            opts.seconds,
            std::time::Duration::ZERO,
            false,
        )
        .await;
    row("seen head", 1, &r);
    harness.stop().await?;
    pool.close().await;
    Ok(())
}

fn row(phase: &str, concurrency: usize, r: &super::harness::LevelResult) {
    let [next, submit, both] = r.latencies();
    println!(
        "{:<11} {:>5} {:>12.0} {:>20} {:>20} {:>15} {:>6}",
        phase,
        concurrency,
        r.rate(),
        next,
        submit,
        both,
        r.errors
    );
}

/// A project with the default settings (overlap 3), `pairs` open text pairs over
/// the fewest rollouts that make that many distinct pairs, and the annotators
/// with their tokens.
async fn seed(pool: &PgPool, opts: &NextBenchOpts) -> anyhow::Result<(Uuid, Vec<(Uuid, String)>)> {
    let lead = users::create(pool, "bench-lead", Role::Lead, None).await?;
    let lead = User {
        id: lead.id,
        name: lead.name,
        role: Role::Lead,
    };
    projects::create(
        pool,
        &lead,
        projects::ProjectSettings::new("bench", "Benchmark"),
    )
    .await?;
    let access = projects::access(pool, &lead, "bench").await?;
    let project = access.project.id;
    let rollouts = ((1.0 + (1.0 + 8.0 * opts.pairs as f64).sqrt()) / 2.0).ceil() as i64;
    sqlx::query(
        "insert into rollouts (project_id, body)
         select $1, 'response ' || i || ': ' || repeat('words ', 40) from generate_series(1, $2) i",
    )
    .bind(project)
    .bind(rollouts)
    .execute(pool)
    .await?;
    sqlx::query(
        "with r as (select id, row_number() over (order by id) as n from rollouts where project_id = $1)
         insert into comparisons (project_id, prompt, rollout_a, rollout_b, overlap)
         select $1, 'prompt ' || a.n || ' vs ' || b.n, a.id, b.id, $3
         from r a join r b on a.n < b.n
         limit $2",
    )
    .bind(project)
    .bind(opts.pairs)
    .bind(access.project.overlap)
    .execute(pool)
    .await
    .context("seeding pairs")?;
    let mut raters = Vec::with_capacity(opts.raters);
    for i in 0..opts.raters {
        let name = format!("bench-rater-{i}");
        let u = users::create(pool, &name, Role::Annotator, None).await?;
        projects::add_member(pool, &access, &name, projects::MemberRole::Annotator).await?;
        raters.push((u.id, u.token));
    }
    // Only the tables the seed loaded: autovacuum leaves the others alone. An
    // empty table analyzed as such gets plans for no rows (a scan of the whole
    // table to find a rater's leases), which the server's prepared statements
    // then keep while the `fresh` levels fill it, until autovacuum next looks
    // (every minute): the levels slowed down one after the other (p50 of
    // `next` 17, 33, 49 ms in three 5 s levels) on a state no deployment is in.
    analyze(pool, &["comparisons", "rollouts"]).await?;
    Ok((project, raters))
}

/// The tables a phase's bulk change touches.
const ANALYZED: &[&str] = &["comparisons", "assignments", "judgments", "rollouts"];

/// What autovacuum would do soon after a bulk load, so plans see real sizes.
async fn analyze(pool: &PgPool, tables: &[&str]) -> anyhow::Result<()> {
    for table in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!("vacuum analyze {table}")))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Close the first `n` untouched pairs of the queue as if `overlap` raters had
/// judged each (raters spread evenly), with their assignments and judgments.
async fn consume(pool: &PgPool, project: Uuid, n: i64) -> anyhow::Result<()> {
    sqlx::query(
        "with r as (select array_agg(user_id order by user_id) as ids from project_members
                    where project_id = $1 and role = 'annotator'),
         c as (select id, overlap, row_number() over (order by priority desc, seq) as n
               from comparisons where project_id = $1 and taken_count = 0
               order by priority desc, seq limit $2),
         a as (insert into assignments (comparison_id, project_id, rater_id, left_is_a, state,
                                        created_at, expires_at, judged_at)
               select c.id, $1, r.ids[1 + (c.n * c.overlap + k) % cardinality(r.ids)],
                      (c.n + k) % 2 = 0, 'judged', now() - interval '1 day',
                      now() - interval '1 day' + interval '10 minutes', now() - interval '1 day'
               from c, r, generate_series(0, c.overlap - 1) k
               returning id, comparison_id, rater_id, left_is_a, judged_at),
         j as (insert into judgments (assignment_id, comparison_id, project_id, rater_id, choice,
                                      displayed_choice, left_is_a, duration_ms, created_at)
               select id, comparison_id, $1, rater_id, case when left_is_a then 'a' else 'b' end,
                      'left', left_is_a, 3000, judged_at from a)
         update comparisons set taken_count = overlap where id in (select id from c)",
    )
    .bind(project)
    .bind(n)
    .execute(pool)
    .await
    .context("closing pairs")?;
    analyze(pool, ANALYZED).await
}

/// Give `n` open pairs, spread over the queue, a priority as the uncertainty
/// strategy writes it, as if the generator had made them.
async fn prioritise(pool: &PgPool, project: Uuid, n: i64) -> anyhow::Result<()> {
    sqlx::query(
        "update comparisons set priority = 1 + (random() * 1000000)::int, generated = true
         where id in (select id from comparisons
                      where project_id = $1 and is_open
                        and seq % 7 = 0
                      limit $2)",
    )
    .bind(project)
    .bind(n)
    .execute(pool)
    .await?;
    analyze(pool, ANALYZED).await
}

/// `rater` has judged the first `n` pairs of the queue they had not seen, and
/// those pairs stay open for the others.
async fn see_head(pool: &PgPool, project: Uuid, rater: Uuid, n: i64) -> anyhow::Result<()> {
    sqlx::query(
        "with c as (select c.id from comparisons c
                    where c.project_id = $1 and c.taken_count + 1 < c.overlap
                      and not exists (select 1 from assignments a
                                      where a.comparison_id = c.id and a.rater_id = $2)
                    order by c.priority desc, c.seq limit $3),
         a as (insert into assignments (comparison_id, project_id, rater_id, left_is_a, state,
                                        expires_at, judged_at)
               select id, $1, $2, true, 'judged', now(), now() from c
               returning id, comparison_id),
         j as (insert into judgments (assignment_id, comparison_id, project_id, rater_id, choice,
                                      displayed_choice, left_is_a, duration_ms)
               select id, comparison_id, $1, $2, 'a', 'left', true, 3000 from a)
         update comparisons set taken_count = taken_count + 1 where id in (select id from c)",
    )
    .bind(project)
    .bind(rater)
    .bind(n)
    .execute(pool)
    .await?;
    analyze(pool, ANALYZED).await
}
