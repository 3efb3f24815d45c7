//! The binary itself: `--help`, `user create`, `import`, `migrate`, the embedded
//! PostgreSQL path, and `demo` seeding twice without duplicates.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use crate::common::{app, fresh_database, server_url};

fn backflip() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backflip"));
    c.env_remove("DATABASE_URL").env("RUST_LOG", "warn");
    c
}

#[test]
fn help_answers_questions() {
    let out = backflip().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["serve", "demo", "migrate", "user", "import"] {
        assert!(text.contains(cmd), "{text}");
    }
    assert!(text.contains("DATABASE_URL"));
    let out = backflip().args(["serve", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("--bind")
            && text.contains("BACKFLIP_BIND")
            && text.contains("127.0.0.1:8080"),
        "{text}"
    );
    let out = backflip()
        .args(["user", "create", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("admin") && text.contains("annotator") && text.contains("--password-stdin"),
        "{text}"
    );
}

#[tokio::test]
async fn user_create_prints_only_the_token_and_import_reports_lines() {
    let (pool, url) = fresh_database().await;
    let mut child = backflip()
        .env("DATABASE_URL", &url)
        .args([
            "user",
            "create",
            "--name",
            "cli-lead",
            "--role",
            "lead",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a-long-password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim();
    assert_eq!(stdout.lines().count(), 1);
    assert_eq!(token.len(), 64);
    let user = backflip::auth::user_by_token(&pool, token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.name, "cli-lead");
    assert!(
        backflip::auth::login(&pool, "cli-lead", "a-long-password")
            .await
            .unwrap()
            .user()
            .is_some()
    );

    // A duplicate name is a clear error and a failing exit code.
    let out = backflip()
        .env("DATABASE_URL", &url)
        .args(["user", "create", "--name", "cli-lead", "--role", "admin"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));

    backflip::projects::create(
        &pool,
        &user,
        backflip::projects::ProjectSettings::new("cli", "CLI"),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pairs.jsonl");
    std::fs::write(
        &file,
        format!("{}not json\n", crate::common::text_pairs("c", 2)),
    )
    .unwrap();
    let out = backflip()
        .env("DATABASE_URL", &url)
        .args(["import", "--project", "cli"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pairs.jsonl:3:") && err.contains("nothing was imported"),
        "{err}"
    );
    std::fs::write(&file, crate::common::text_pairs("c", 2)).unwrap();
    for expected in [
        "imported 2 new pair(s) from 2 line(s); 0 already present",
        "imported 0 new pair(s) from 2 line(s); 2 already present",
    ] {
        let out = backflip()
            .env("DATABASE_URL", &url)
            .args(["import", "--project", "cli"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    }
}

#[tokio::test]
async fn import_reads_clips_from_a_folder() {
    let (pool, url) = fresh_database().await;
    let lead = backflip::users::create(&pool, "gl", backflip::auth::Role::Lead, None)
        .await
        .unwrap();
    let user = backflip::auth::user_by_token(&pool, &lead.token)
        .await
        .unwrap()
        .unwrap();
    let mut s = backflip::projects::ProjectSettings::new("cgif", "Clips");
    s.media_kind = "gif".into();
    backflip::projects::create(&pool, &user, s).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.gif"), backflip::clips::demo_clip(5, 1.0)).unwrap();
    std::fs::write(dir.path().join("y.gif"), backflip::clips::demo_clip(6, 0.0)).unwrap();
    let file = dir.path().join("pairs.jsonl");
    std::fs::write(
        &file,
        "{\"prompt\": \"go\", \"a\": {\"clip\": \"x.gif\"}, \"b\": {\"clip\": \"y.gif\"}}\n",
    )
    .unwrap();
    let out = backflip()
        .env("DATABASE_URL", &url)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["import", "--project", "cgif", "--clips"])
        .arg(dir.path())
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: i64 = sqlx::query_scalar("select count(*) from clip_blobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
    // The clip bytes are in the content-addressed store.
    let sha = backflip::clips::sha256_hex(&backflip::clips::demo_clip(5, 1.0));
    let store = backflip::clips::ClipStore::local(&dir.path().join("data/clips")).unwrap();
    assert_eq!(
        store.get(&sha).await.unwrap().len(),
        backflip::clips::demo_clip(5, 1.0).len()
    );
}

/// Without DATABASE_URL the binary runs its own PostgreSQL in the data dir,
/// stops it on exit, and finds the initialised cluster again next time.
#[test]
fn embedded_postgres_when_no_database_url() {
    // /tmp, not the checkout: the postgres user (root runs the cluster as it) may not reach that.
    let parent = std::env::temp_dir();
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("embedded-")
        .tempdir_in(&parent)
        .unwrap();
    // The postgres user (when we run as root) must be able to enter it.
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(dir.path()).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = backflip()
        .arg("--data-dir")
        .arg(&data)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(data.join("postgres/PG_VERSION").exists());
    let out = backflip()
        .arg("--data-dir")
        .arg(&data)
        .args([
            "user",
            "create",
            "--name",
            "embedded-admin",
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim().len(), 64);
    // Stopped on exit: no server left running for this data dir.
    assert!(
        !postgres_running_in(&data),
        "the embedded server should be stopped"
    );
    // The user persisted across runs: creating it again is refused.
    let out = backflip()
        .arg("--data-dir")
        .arg(&data)
        .args([
            "user",
            "create",
            "--name",
            "embedded-admin",
            "--role",
            "admin",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));
}

#[tokio::test]
async fn demo_seeding_is_idempotent() {
    let app = app().await;
    for _ in 0..2 {
        backflip::demo::seed(&app.pool, &app.state.clips)
            .await
            .unwrap();
    }
    assert_eq!(app.count("select count(*) from projects").await, 2);
    assert_eq!(app.count("select count(*) from comparisons c join projects p on p.id = c.project_id where p.slug = 'demo-text'").await, 40);
    assert_eq!(app.count("select count(*) from comparisons c join projects p on p.id = c.project_id where p.slug = 'demo-clips'").await, 20);
    assert_eq!(app.count("select count(*) from users").await, 5);
    assert!(
        backflip::auth::login(&app.pool, "rater1", backflip::demo::DEMO_PASSWORD)
            .await
            .unwrap()
            .user()
            .is_some()
    );
}

/// A command run while the server uses the embedded cluster leaves it running.
#[test]
fn a_command_does_not_stop_the_servers_embedded_database() {
    // /tmp, not the checkout: the postgres user (root runs the cluster as it) may not reach that.
    let parent = std::env::temp_dir();
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("shared-")
        .tempdir_in(&parent)
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = backflip()
        .arg("--data-dir")
        .arg(&data)
        .args([
            "serve",
            "--workers",
            "0",
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .spawn()
        .unwrap();
    let ready = || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                use std::io::Read;
                s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not become ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = backflip()
        .arg("--data-dir")
        .arg(&data)
        .args([
            "user",
            "create",
            "--name",
            "while-serving",
            "--role",
            "lead",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ready(), "the server's database must still be up");
    assert!(postgres_running_in(&data));
    // The server, asked to stop, stops its cluster.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(server.wait().unwrap().success());
    assert!(!postgres_running_in(&data), "stopped with the server");
}

/// Whether a process runs with this data dir on its command line (pg_ctl
/// itself refuses to run as root, so ask /proc).
fn postgres_running_in(dir: &std::path::Path) -> bool {
    let needle = dir.join("postgres").to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(&needle))
}

/// `backflip bench submit` end to end at one rater; its `--before-levels` SQL
/// runs in the benchmark's database before the levels (a check no judgment
/// passes turns every submit into an error), `--combined` judges with one call
/// per judgment, a level that runs out of pairs says so, and SQL that fails
/// stops the run with PostgreSQL's reason.
#[tokio::test]
async fn bench_submit_measures_a_level_and_runs_what_if_sql_first() {
    let url = server_url().await;
    let bench = |extra: &[&str]| {
        let out = backflip()
            .env("DATABASE_URL", url)
            .args(["bench", "submit", "--raters", "1", "--seconds", "0.5"])
            // few pairs, quickly seeded, unless the call says how many
            .args(match extra.contains(&"--pairs") {
                true => &[][..],
                false => &["--pairs", "3000"][..],
            })
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The row of the level: raters, judgments/s, three latency columns, batch,
    // errors, ..., and last the machine's CPU per judgment and the CPU ratio.
    let row = |text: &str| -> (f64, usize, String) {
        let fields: Vec<&str> = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some("1"))
            .unwrap_or_else(|| panic!("no level row in {text}"))
            .split_whitespace()
            .collect();
        (
            fields[1].parse().unwrap(),
            fields[6].parse().unwrap(),
            fields[fields.len() - 2].to_owned(),
        )
    };

    let (ok, text, err) = bench(&[]);
    assert!(ok, "{text}\n{err}");
    assert!(text.contains("two calls per judgment"), "{text}");
    let (rate, errors, cpu) = row(&text);
    assert!(rate > 0.0 && errors == 0, "{text}");
    assert!(
        text.contains("pg inserts/s") && text.contains("ratio") && text.contains("cpu ms/j"),
        "{text}"
    );
    // The machine was busy judging: some CPU time per judgment (read from
    // /proc/stat, which Linux has).
    if std::path::Path::new("/proc/stat").exists() {
        let ms: f64 = cpu
            .parse()
            .unwrap_or_else(|_| panic!("cpu ms/j {cpu:?}: {text}"));
        assert!(ms > 0.0, "{text}");
    }

    let (ok, text, err) = bench(&[
        "--before-levels",
        "alter table judgments add constraint bench_refuses check (false)",
    ]);
    assert!(ok, "{text}\n{err}");
    assert!(
        text.contains("before the levels: alter table judgments"),
        "{text}"
    );
    let (rate, errors, cpu) = row(&text);
    assert!(rate == 0.0 && errors > 0, "{text}");
    assert_eq!(cpu, "-", "no judgment, no CPU per judgment: {text}");

    // One call per judgment: each a 201 with the next pair.
    let (ok, text, err) = bench(&["--combined"]);
    assert!(ok, "{text}\n{err}");
    assert!(text.contains("one call per judgment"), "{text}");
    let (rate, errors, _) = row(&text);
    assert!(rate > 0.0 && errors == 0, "{text}");

    assert!(!text.contains("ran out of pairs"), "{text}");

    // Too few pairs for the level: the run says so.
    let (ok, text, err) = bench(&["--pairs", "5", "--combined"]);
    assert!(ok, "{text}\n{err}");
    let (rate, errors, _) = row(&text);
    assert!(rate > 0.0 && errors > 0, "{text}");
    assert!(
        text.contains("ran out of pairs") && text.contains("seed more with --pairs"),
        "{text}"
    );

    let (ok, text, err) = bench(&["--before-levels", "select * from no_such_table"]);
    assert!(!ok, "{text}");
    assert!(
        err.contains("--before-levels") && err.contains("no_such_table"),
        "{err}"
    );
}
