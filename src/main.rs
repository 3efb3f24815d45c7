//! The `backflip` binary: configuration → logging → database → command.
#![forbid(unsafe_code)]

use std::{io::BufRead, process::ExitCode, sync::Arc};

use anyhow::Context;
use backflip::{
    auth::User,
    clips::ClipStore,
    config::{
        BenchCommand, Cli, Command, ExportOpts, GlobalOpts, ImportOpts, ModelCommand,
        ModelExportOpts, ScoreOpts, ServeOpts, TrainOpts, UserCommand, WorkerOpts,
    },
    db::Database,
    demo,
    error::Error,
    http::{self, AppState, Settings},
    import,
    jobs::{Runner, WorkerConfig, storage},
    projects, reward, users,
};
use clap::Parser;

/// mimalloc rather than glibc's allocator: the server allocates per request
/// (docs/benchmarks.md, "The release build, mimalloc, and one task per kind").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr so that stdout carries only a command's result (a token).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Serve(opts) => serve(&global, opts, false).await,
        Command::Demo(opts) => serve(&global, opts, true).await,
        Command::Migrate => {
            let db = Database::open(&global).await?;
            eprintln!("migrations applied");
            db.close().await;
            Ok(())
        }
        Command::User(UserCommand::Create(opts)) => {
            let password = if opts.password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let db = Database::open(&global).await?;
            let result = users::create(&db.pool, &opts.name, opts.role, password.as_deref()).await;
            db.close().await;
            println!("{}", result.map_err(user_error)?.token);
            Ok(())
        }
        Command::Import(opts) => import_file(&global, opts).await,
        Command::Bench(BenchCommand::Submit(opts)) => bench_submit(&global, &opts).await,
        Command::Bench(BenchCommand::Reward(opts)) => {
            // Training is blocking work on its own thread pool: keep it off the runtime.
            let rows = tokio::task::spawn_blocking({
                let opts = opts.clone();
                move || backflip::bench::reward::run(&opts)
            })
            .await??;
            backflip::bench::reward::print(&opts, &rows);
            Ok(())
        }
        Command::Bench(BenchCommand::Select(opts)) => {
            let curves = tokio::task::spawn_blocking({
                let opts = opts.clone();
                move || backflip::bench::select::run(&opts)
            })
            .await??;
            backflip::bench::select::print(&opts, &curves);
            if let Some(path) = &opts.svg {
                std::fs::write(path, backflip::bench::select::chart(&opts, &curves)?)?;
                println!("chart: {}", path.display());
            }
            Ok(())
        }
        Command::Bench(BenchCommand::Next(opts)) => {
            with_admin_url(&global, |url| async move {
                backflip::bench::next::run(&url, &opts).await
            })
            .await
        }
        Command::Bench(BenchCommand::Export(opts)) => {
            with_admin_url(&global, |url| async move {
                backflip::bench::export::run(&url, &opts).await
            })
            .await
        }
        Command::Export(opts) => export(&global, opts).await,
        Command::Simulate(opts) => simulate(&global, opts).await,
        Command::Worker(opts) => worker(&global, opts).await,
        Command::Train(opts) => train(&global, opts).await,
        Command::Score(opts) => score(&global, opts).await,
        Command::Model(ModelCommand::Export(opts)) => export_model(&global, opts).await,
    }
}

/// Domain errors as the CLI shows them: the message, not a debug dump.
fn user_error(e: Error) -> anyhow::Error {
    match e {
        Error::Internal(e) => e,
        e => anyhow::anyhow!("{e}"),
    }
}

fn clip_store(global: &GlobalOpts) -> anyhow::Result<ClipStore> {
    ClipStore::local(&global.data_dir.join("clips"))
}

use backflip::jobs::every_handler as job_handlers;

/// `backflip export`: check the filters (nothing is written if one is bad), then
/// write the data file, its card and its manifest. It runs as the operator, who
/// holds the database anyway, so --real-identities is allowed here.
async fn export(global: &GlobalOpts, opts: ExportOpts) -> anyhow::Result<()> {
    let db = Database::open(global).await?;
    let result = async {
        let project = projects::by_slug(&db.pool, &opts.project)
            .await
            .map_err(user_error)?;
        let plan = backflip::export::plan(&db.pool, project, opts.args, true)
            .await
            .map_err(user_error)?;
        let layout = backflip::export::files::Layout::for_out(&opts.out, plan.args.format);
        let store = clip_store(global)?;
        let manifest = backflip::export::files::write(
            &db.pool,
            Some(&store),
            Arc::new(plan),
            &layout,
            &mut |_| {},
        )
        .await?;
        println!(
            "wrote {} row(s) to {} (card {}, manifest {})",
            manifest.rows,
            layout.data.display(),
            layout.readme.display(),
            layout.manifest.display()
        );
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    result
}

/// Run `f` with an admin URL: DATABASE_URL, or the embedded cluster (started for
/// the call and stopped after, unless a server of ours already runs it).
async fn with_admin_url<F, Fut>(global: &GlobalOpts, f: F) -> anyhow::Result<()>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    match &global.database_url {
        Some(url) => f(url.clone()).await,
        None => {
            let dir = global.data_dir.clone();
            let mut pg = tokio::task::spawn_blocking(move || {
                backflip::db::embedded::EmbeddedPostgres::start(&dir)
            })
            .await??;
            let result = f(pg.url("postgres")).await;
            if pg.adopted() {
                pg.keep_running();
            } else {
                tokio::task::spawn_blocking(move || pg.stop()).await??;
            }
            result
        }
    }
}

async fn serve(global: &GlobalOpts, opts: ServeOpts, with_demo: bool) -> anyhow::Result<()> {
    let db = Database::open_server(global).await?;
    let clips = clip_store(global)?;
    if with_demo {
        demo::seed(&db.pool, &clips)
            .await
            .context("creating the demo projects")?;
    }
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .with_context(|| format!("listening on {}", opts.bind))?;
    let addr = listener.local_addr()?;
    let state = AppState {
        pool: db.pool.clone(),
        clips,
        inner: Arc::new(Settings {
            clip_limits: opts.clips.limits(),
            public_url: opts.public_url.clone(),
            max_import_bytes: opts.max_import_bytes,
        }),
        models: Default::default(),
        judgments: backflip::labeling::Writer::spawn(db.pool.clone()),
        leases: backflip::labeling::Leaser::spawn(db.pool.clone()),
    };
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let workers = (opts.workers > 0).then(|| {
        let runner = Runner::new(
            db.pool.clone(),
            job_handlers(state.clips.clone()),
            WorkerConfig::new(opts.workers, opts.jobs.job_lease_seconds),
        );
        tokio::spawn(async move { runner.run(workers_stopped).await })
    });
    eprintln!("Backflip is listening on http://{addr}");
    if with_demo {
        eprintln!(
            "Demo logins (password {:?}): {}",
            demo::DEMO_PASSWORD,
            demo::DEMO_USERS
                .iter()
                .map(|(n, r)| format!("{n} ({})", r.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        eprintln!(
            "Projects: http://{addr}/projects/demo-text and http://{addr}/projects/demo-clips"
        );
    }
    let result = http::serve(listener, state, http::shutdown_signal()).await;
    let _ = stop_workers.send(true);
    if let Some(w) = workers {
        let _ = w.await;
    }
    db.close().await;
    result.context("serving HTTP")
}

async fn import_file(global: &GlobalOpts, opts: ImportOpts) -> anyhow::Result<()> {
    let body =
        std::fs::read(&opts.file).with_context(|| format!("reading {}", opts.file.display()))?;
    let db = Database::open(global).await?;
    let result = async {
        let project = projects::by_slug(&db.pool, &opts.project).await?;
        let access = projects::Access {
            project,
            user: User::system(),
            member: None,
        };
        if let Some(dir) = &opts.clips {
            let store = clip_store(global)?;
            let limits = opts.clip_opts.limits();
            for name in import::clip_names(&body) {
                let path = dir.join(&name);
                if let Ok(bytes) = std::fs::read(&path) {
                    import::ingest_clip(&db.pool, &store, &access, &name, bytes.into(), &limits)
                        .await?;
                }
            }
        }
        import::import(&db.pool, &access, &body).await
    }
    .await;
    db.close().await;
    match result {
        Ok(r) => {
            match r.generated {
                None => println!(
                    "imported {} new pair(s) from {} line(s); {} already present",
                    r.imported, r.lines, r.duplicates
                ),
                Some(g) => println!(
                    "imported {} new rollout(s) from {} line(s); {} already present; {g} pair(s) generated",
                    r.imported, r.lines, r.duplicates
                ),
            }
            Ok(())
        }
        Err(Error::Import(lines)) => {
            for l in &lines {
                eprintln!("{}:{}: {}", opts.file.display(), l.line, l.message);
            }
            anyhow::bail!("{} bad line(s); nothing was imported", lines.len())
        }
        Err(e) => Err(user_error(e)),
    }
}

async fn bench_submit(
    global: &GlobalOpts,
    opts: &backflip::bench::BenchOpts,
) -> anyhow::Result<()> {
    with_admin_url(global, |url| async move {
        backflip::bench::submit(&url, opts).await
    })
    .await
}

async fn simulate(global: &GlobalOpts, opts: backflip::simulate::SimOpts) -> anyhow::Result<()> {
    let db = Database::open(global).await?;
    let result = backflip::simulate::project::run(&db.pool, &clip_store(global)?, &opts).await;
    db.close().await;
    let report = result?;
    println!(
        "project {}: {} new pair(s) imported",
        report.slug, report.imported
    );
    if let Some(t) = &report.training {
        let held_out = &t["metrics"]["held_out"];
        // Held out: agreement with the raters' labels (noise and bias included), not the truth.
        let num = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |x| format!("{x:.3}"));
        println!(
            "trained version {} ({}): held-out accuracy {}, log-loss {}, {} train / {} held-out pairs",
            t["version"],
            t["kind"].as_str().unwrap_or("?"),
            num(&held_out["accuracy"]),
            num(&held_out["log_loss"]),
            t["metrics"]["train_pairs"],
            t["metrics"]["held_out_pairs"]
        );
    }
    println!(
        "{:<32} {:<12} {:>8} {:>9} {:>6}",
        "rater", "profile", "this run", "judgments", "left %"
    );
    for r in &report.raters {
        let left = 100.0 * r.left as f64 / r.judgments.max(1) as f64;
        println!(
            "{:<32} {:<12} {:>8} {:>9} {:>6.1}",
            r.name, r.profile, r.this_run, r.judgments, left
        );
    }
    Ok(())
}

async fn worker(global: &GlobalOpts, opts: WorkerOpts) -> anyhow::Result<()> {
    let db = Database::open(global).await?;
    let runner = Runner::new(
        db.pool.clone(),
        job_handlers(clip_store(global)?),
        WorkerConfig::new(opts.concurrency.max(1), opts.jobs.job_lease_seconds),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        http::shutdown_signal().await;
        let _ = stop.send(true);
    });
    eprintln!(
        "worker running ({} at once); Ctrl-C to stop",
        opts.concurrency.max(1)
    );
    runner.run(stopped).await;
    db.close().await;
    Ok(())
}

async fn train(global: &GlobalOpts, opts: TrainOpts) -> anyhow::Result<()> {
    let db = Database::open(global).await?;
    let result = async {
        let project = projects::by_slug(&db.pool, &opts.project).await.map_err(user_error)?;
        let access = projects::Access { project, user: User::system(), member: None };
        let job = reward::request_training(&db.pool, &access).await.map_err(user_error)?;
        println!("training job {job} queued");
        if !(opts.wait || opts.here) {
            return Ok(());
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let local = opts.here.then(|| {
            let runner = Runner::new(
                db.pool.clone(),
                job_handlers(clip_store(global)?),
                WorkerConfig::new(1, opts.jobs.job_lease_seconds),
            );
            anyhow::Ok(tokio::spawn(async move { runner.run(stopped).await }))
        });
        let local = local.transpose()?;
        let started = std::time::Instant::now();
        let mut hinted = false;
        let row = loop {
            let row = storage::get(&db.pool, job).await?.context("the job disappeared")?;
            if row.status == "done" || row.status == "failed" {
                break row;
            }
            if let Some(p) = &row.progress {
                eprint!("\r{} step {}/{}  loss {:.4}   ", row.status, p["step"], p["total"], p["loss"].as_f64().unwrap_or(f64::NAN));
            }
            if row.status == "queued" && !hinted && local.is_none() && started.elapsed().as_secs() > 10 {
                eprintln!("still queued: is a worker running (`backflip serve` or `backflip worker`)? Or use --here.");
                hinted = true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        eprintln!();
        let _ = stop.send(true);
        if let Some(l) = local {
            let _ = l.await;
        }
        let result: Option<serde_json::Value> =
            sqlx::query_scalar("select result from jobs where id = $1").bind(job).fetch_one(&db.pool).await?;
        match row.status.as_str() {
            "done" => {
                println!("{}", serde_json::to_string_pretty(&result.unwrap_or_default())?);
                Ok(())
            }
            _ => anyhow::bail!("training failed: {}", row.error.unwrap_or_default()),
        }
    }
    .await;
    db.close().await;
    result
}

async fn score(global: &GlobalOpts, opts: ScoreOpts) -> anyhow::Result<()> {
    use backflip::reward::score::{self, ScoreInput, ScoreRequest};
    let input: Box<dyn BufRead> = match opts.file.as_deref() {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
    };
    // Every line is checked before anything is scored or written.
    let mut rollouts = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("line {}: cannot read", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let r: ScoreInput = serde_json::from_str(&line).with_context(|| {
            format!(
                "line {}: expected {{\"text\"}}, {{\"features\"}} or {{\"rollout_id\"}}",
                n + 1
            )
        })?;
        rollouts.push((n + 1, r));
    }
    anyhow::ensure!(!rollouts.is_empty(), "no rollouts to score");
    let db = Database::open(global).await?;
    let result = async {
        let project = projects::by_slug(&db.pool, &opts.project)
            .await
            .map_err(user_error)?;
        let (store, cache) = (clip_store(global)?, reward::ModelCache::default());
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut shown = false;
        let mut rest = rollouts;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(score::MAX_SCORE));
            let first_line = rest[0].0;
            let lines: Vec<usize> = rest.iter().map(|(n, _)| *n).collect();
            let req = ScoreRequest {
                rollouts: rest.into_iter().map(|(_, r)| r).collect(),
            };
            let res = score::score(&db.pool, &store, &cache, &project, req)
                .await
                .map_err(|e| {
                    // Errors name rollouts[i] of the batch: say which line that was.
                    let msg = e.to_string();
                    let line = msg
                        .strip_prefix("rollouts[")
                        .and_then(|m| m.split(']').next())
                        .and_then(|i| i.parse::<usize>().ok())
                        .and_then(|i| lines.get(i));
                    match line {
                        Some(l) => anyhow::anyhow!(
                            "line {l}: {}",
                            msg.split_once(": ").map_or(&*msg, |x| x.1)
                        ),
                        None => anyhow::anyhow!("{msg} (batch from line {first_line})"),
                    }
                })?;
            if !shown {
                eprintln!(
                    "model {} (version {}, {})",
                    res.model.id, res.model.version, res.model.kind
                );
                shown = true;
            }
            for r in &res.rewards {
                serde_json::to_writer(&mut out, r)?;
                std::io::Write::write_all(&mut out, b"\n")?;
            }
            rest = tail;
        }
        std::io::Write::flush(&mut out)?;
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    result
}

async fn export_model(global: &GlobalOpts, opts: ModelExportOpts) -> anyhow::Result<()> {
    let db = Database::open(global).await?;
    let result = async {
        let project = projects::by_slug(&db.pool, &opts.project)
            .await
            .map_err(user_error)?;
        let export = reward::export::export(&db.pool, &clip_store(global)?, &project, opts.version)
            .await
            .map_err(user_error)?;
        std::fs::create_dir_all(&opts.out)
            .with_context(|| format!("cannot create {}", opts.out.display()))?;
        let files: [(&str, Vec<u8>); 3] = [
            ("model.safetensors", export.safetensors),
            ("config.json", serde_json::to_vec_pretty(&export.config)?),
            ("README.md", reward::export::README.as_bytes().to_vec()),
        ];
        for (name, bytes) in files {
            let path = opts.out.join(name);
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("{}", path.display());
        }
        eprintln!("exported version {} of {}", export.version, project.slug);
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    result
}
