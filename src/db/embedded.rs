//! A private PostgreSQL cluster for when the operator sets no DATABASE_URL.
//!
//! Layout under the data dir: `postgres/` (the cluster), `run/` (the only way in: a Unix socket),
//! `postgres.log` (server log). PostgreSQL refuses to run as root, so as root every tool runs as
//! the `postgres` system user.

use anyhow::{Context, Result, bail};
use nix::unistd::{User, geteuid};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Only names the socket file (`.s.PGSQL.5432`): the server listens on no TCP address.
const PORT: u16 = 5432;

/// A private PostgreSQL cluster under `<data dir>/postgres`, reachable only through a Unix socket
/// in `<data dir>/run`.
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    cluster: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    run_as: Option<User>,
    running: bool,
    keep: bool,
    adopted: bool,
}

impl EmbeddedPostgres {
    /// Find the binaries, initdb on first use, start the server (or adopt one already running on
    /// this data dir, e.g. after a crash of ours), and wait until it accepts connections.
    pub fn start(data_dir: &Path) -> Result<Self> {
        fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        // pg_ctl starts the server through /bin/sh with the data dir inside double quotes.
        if data_dir
            .to_str()
            .is_none_or(|d| d.contains(['"', '$', '`', '\\', '\n']))
        {
            bail!(
                "the data dir {} must be UTF-8 without \", $, ` or \\ (pg_ctl passes it to /bin/sh): \
                   choose another --data-dir or set DATABASE_URL",
                data_dir.display()
            );
        }
        tracing::info!(data_dir = %data_dir.display(), "starting embedded PostgreSQL");
        let bin_dir = find_bin_dir()?;
        let socket_dir = data_dir.join("run");
        // sun_path holds 108 bytes including the NUL; PostgreSQL refuses longer paths.
        let socket = socket_dir.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > 107 {
            bail!(
                "the socket path {} is longer than the 107 bytes Unix sockets allow: \
                   choose a shorter --data-dir or set DATABASE_URL",
                socket.display()
            );
        }
        let run_as = if geteuid().is_root() {
            let user = User::from_name("postgres")?.context(
                "running as root, which PostgreSQL refuses, and there is no `postgres` system user \
                 to run it as: create one (`useradd --system postgres`) or set DATABASE_URL",
            )?;
            check_reachable(&data_dir, &user)?;
            Some(user)
        } else {
            None
        };
        let (cluster, log_file) = (data_dir.join("postgres"), data_dir.join("postgres.log"));
        let pg = Self {
            bin_dir,
            cluster,
            socket_dir,
            log_file,
            run_as,
            running: false,
            keep: false,
            adopted: false,
        };
        for dir in [&pg.cluster, &pg.socket_dir] {
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, Permissions::from_mode(0o700))?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&pg.log_file)?;
        // The tools run as `postgres` and must own what they write into our root-owned data dir.
        for path in [&pg.cluster, &pg.socket_dir, &pg.log_file] {
            pg.chown(path)?;
        }
        // Parallel test processes may share a data dir: one at a time initialises, starts or adopts.
        let lock = fs::File::create(data_dir.join("postgres.lock"))?;
        lock.lock().context("locking the data dir")?;
        pg.start_or_adopt()
    }

    fn start_or_adopt(mut self) -> Result<Self> {
        if !self.cluster.join("PG_VERSION").exists() {
            self.initdb()?;
        }
        if self.is_running()? && self.wait_until_accepting()? {
            tracing::info!(cluster = %self.cluster.display(), "adopted the running PostgreSQL");
            self.adopted = true;
        } else {
            self.write_conf()?;
            // pg_ctl clears a stale postmaster.pid (crash) by itself: the pid in it is not alive.
            let mut start = self.pg_ctl("start");
            let out = start
                .arg("-l")
                .arg(&self.log_file)
                .args(["-w", "-t", "60"])
                .output()?;
            if !out.status.success() {
                let log = tail(&fs::read_to_string(&self.log_file).unwrap_or_default());
                let (out, file) = (output_text(&out), self.log_file.display());
                bail!("pg_ctl start failed: {out}\n--- end of {file}:\n{log}");
            }
            tracing::info!(socket_dir = %self.socket_dir.display(), "embedded PostgreSQL is ready");
        }
        self.running = true;
        Ok(self)
    }

    /// A connection URL for `database` as the superuser `postgres` over the socket, usable by sqlx.
    pub fn url(&self, database: &str) -> String {
        let host = percent_encode(&self.socket_dir.to_string_lossy(), b"/");
        let database = percent_encode(database, b"");
        format!("postgres://postgres@localhost:{PORT}/{database}?host={host}&sslmode=disable")
    }

    /// Stop the server (`pg_ctl stop -m fast -w`). Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        tracing::info!(cluster = %self.cluster.display(), "stopping embedded PostgreSQL");
        let out = self.pg_ctl("stop").args(["-m", "fast", "-w"]).output()?;
        // A server someone else already stopped (another handle, an operator) is just as stopped.
        if !out.status.success() && self.is_running()? {
            bail!("pg_ctl stop failed: {}", output_text(&out));
        }
        self.running = false;
        Ok(())
    }

    /// Leave the server running when this handle is dropped (e.g. a test cluster shared across
    /// processes); `stop` still stops it.
    pub fn keep_running(&mut self) {
        self.keep = true;
    }

    /// Whether the server was already running when this handle started (another
    /// process of ours runs it, or one crashed and left it running).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The cluster directory (`<data dir>/postgres`).
    pub fn data_dir(&self) -> &Path {
        &self.cluster
    }

    fn initdb(&self) -> Result<()> {
        tracing::info!(cluster = %self.cluster.display(), "initialising a new PostgreSQL cluster");
        let out = (self.command("initdb").arg("-D").arg(&self.cluster))
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=reject"])
            .args(["-E", "UTF8", "--locale=C"])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed ({}):\n{}", out.status, output_text(&out));
        }
        // Our settings live in a file rewritten at every start: a moved data dir gets the right socket.
        let mut conf = OpenOptions::new()
            .append(true)
            .open(self.cluster.join("postgresql.conf"))?;
        writeln!(
            conf,
            "\ninclude 'backflip.conf'  # written by Backflip at every start"
        )?;
        Ok(())
    }

    fn write_conf(&self) -> Result<()> {
        // Double quotes keep a comma inside one list element; `start` ruled out `"` and `\`.
        let dir = format!("\"{}\"", self.socket_dir.display()).replace('\'', "''");
        let path = self.cluster.join("backflip.conf");
        let conf =
            format!("listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{dir}'\n");
        fs::write(&path, conf + "unix_socket_permissions = 0700\n")?;
        self.chown(&path)
    }

    fn is_running(&self) -> Result<bool> {
        Ok(self.pg_ctl("status").output()?.status.success())
    }

    /// `pg_ctl status` only checks that the pid is alive, and a killed postmaster lingers for a
    /// moment: wait for the socket to answer, or return false once the server is gone.
    fn wait_until_accepting(&self) -> Result<bool> {
        let socket = self.socket_dir.join(format!(".s.PGSQL.{PORT}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answers(&socket) {
            if !self.is_running()? {
                return Ok(false);
            }
            if Instant::now() > deadline {
                let (cluster, log) = (self.cluster.display(), self.log_file.display());
                bail!("a PostgreSQL server runs on {cluster} but does not answer: check {log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(true)
    }

    fn pg_ctl(&self, mode: &str) -> Command {
        let mut cmd = self.command("pg_ctl");
        cmd.arg(mode).arg("-D").arg(&self.cluster);
        cmd
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        // Our own cwd (e.g. /root) may be out of the postgres user's reach.
        cmd.current_dir(&self.cluster);
        if let Some(user) = &self.run_as {
            // std also clears supplementary groups when root sets a uid.
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        cmd
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let Some(user) = &self.run_as {
            let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
            chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = self.stop()
        {
            tracing::warn!("stopping embedded PostgreSQL: {e:#}");
        }
    }
}

/// Where initdb/pg_ctl live: `$PATH` first, then the highest version under
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf> {
    let has_tools = |dir: &Path| {
        dir.is_absolute() && ["initdb", "pg_ctl"].iter().all(|t| dir.join(t).is_file())
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d)) {
        return Ok(dir);
    }
    // Debian/Ubuntu keep the server binaries off PATH, one folder per major version.
    let mut versions: Vec<(Vec<u32>, PathBuf)> = (fs::read_dir("/usr/lib/postgresql").into_iter())
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|n| n.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin. \
         Install them (Debian/Ubuntu: `apt-get install postgresql`; \
         macOS: `brew install postgresql@16`) or set DATABASE_URL to an existing PostgreSQL.",
    )
}

/// The server, running as `user`, must be able to traverse every folder down to `dir`.
fn check_reachable(dir: &Path, user: &User) -> Result<()> {
    for folder in dir.ancestors() {
        let meta = fs::metadata(folder)?;
        let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
        let bit = if meta.uid() == uid {
            0o100
        } else if meta.gid() == gid {
            0o010
        } else {
            0o001
        };
        if meta.mode() & bit == 0 {
            bail!(
                "the postgres user cannot reach {} ({} is mode {:o}): choose --data-dir elsewhere \
                   or set DATABASE_URL",
                dir.display(),
                folder.display(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok(())
}

/// A live server answers an SSLRequest with one byte; a dying one may still accept the connect.
fn answers(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let mut reply = [0u8; 1];
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_ok()
        && stream.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).is_ok()
        && stream.read_exact(&mut reply).is_ok()
}

fn output_text(out: &Output) -> String {
    tail(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    ))
}

/// The last 20 lines: where initdb and the server say what went wrong.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn percent_encode(text: &str, keep: &[u8]) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b);
    text.bytes()
        .map(|b| {
            if plain(b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use sqlx::Connection;

    fn temp_dir() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("pg-test-")
            // /tmp, not the checkout: the postgres user may not be able to reach that.
            .tempdir_in(std::env::temp_dir());
        let dir = dir.unwrap();
        // tempfile makes 0700 folders, which the postgres user could not enter.
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        dir
    }

    async fn select_one(pg: &EmbeddedPostgres) {
        let mut conn = sqlx::PgConnection::connect(&pg.url("postgres"))
            .await
            .unwrap();
        let one: i32 = sqlx::query_scalar("select 1")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(one, 1);
        conn.close().await.unwrap();
    }

    fn postmaster_pid(pg: &EmbeddedPostgres) -> i32 {
        let pid_file = fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
        pid_file.lines().next().unwrap().parse().unwrap()
    }

    /// Live processes started on or working in `dir` (server children rename themselves, keep cwd).
    fn processes_in(dir: &Path) -> Vec<String> {
        let dir = dir.canonicalize().unwrap();
        (fs::read_dir("/proc").unwrap().flatten())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .filter_map(|e| {
                let cmdline = fs::read_to_string(e.path().join("cmdline"))
                    .ok()?
                    .replace('\0', " ");
                let cwd = fs::read_link(e.path().join("cwd")).unwrap_or_default();
                (cmdline.contains(dir.to_str()?) || cwd.starts_with(&dir)).then_some(cmdline)
            })
            .collect()
    }

    #[tokio::test]
    async fn start_stop_restart_and_adopt() {
        let tmp = temp_dir();
        let mut pg = EmbeddedPostgres::start(tmp.path()).unwrap();
        select_one(&pg).await;
        let initialised = fs::metadata(pg.data_dir().join("PG_VERSION"))
            .unwrap()
            .modified()
            .unwrap();
        pg.stop().unwrap();
        pg.stop().unwrap();
        assert!(processes_in(tmp.path()).is_empty());

        let mut pg = EmbeddedPostgres::start(tmp.path()).unwrap();
        let version_file = fs::metadata(pg.data_dir().join("PG_VERSION")).unwrap();
        assert_eq!(
            version_file.modified().unwrap(),
            initialised,
            "no second initdb"
        );
        select_one(&pg).await;
        let pid = postmaster_pid(&pg);
        let mut adopted = EmbeddedPostgres::start(tmp.path()).unwrap();
        assert_eq!(postmaster_pid(&adopted), pid, "adopted, not started twice");
        select_one(&adopted).await;
        adopted.stop().unwrap();
        pg.stop().unwrap();
        assert!(
            processes_in(tmp.path()).is_empty(),
            "{:?}",
            processes_in(tmp.path())
        );
    }

    #[tokio::test]
    async fn restarts_after_the_postmaster_was_killed() {
        let tmp = temp_dir();
        let mut pg = EmbeddedPostgres::start(tmp.path()).unwrap();
        let pid = postmaster_pid(&pg);
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        pg.keep_running(); // as if we crashed too: nothing stops anything
        drop(pg);
        // No waiting: `pg_ctl status` may still see the dying postmaster, which must not be adopted.
        let mut pg = EmbeddedPostgres::start(tmp.path()).unwrap();
        assert_ne!(postmaster_pid(&pg), pid);
        select_one(&pg).await;
        pg.stop().unwrap();
        assert!(
            processes_in(tmp.path()).is_empty(),
            "{:?}",
            processes_in(tmp.path())
        );
    }

    #[tokio::test]
    async fn concurrent_starts_share_one_server() {
        let tmp = temp_dir();
        let starts: Vec<_> = (0..3)
            .map(|_| {
                let dir = tmp.path().to_owned();
                std::thread::spawn(move || EmbeddedPostgres::start(&dir).unwrap())
            })
            .collect();
        let mut all: Vec<_> = starts.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            all.iter()
                .all(|pg| postmaster_pid(pg) == postmaster_pid(&all[0]))
        );
        select_one(&all[0]).await;
        all.iter_mut().for_each(|pg| pg.stop().unwrap());
        assert!(
            processes_in(tmp.path()).is_empty(),
            "{:?}",
            processes_in(tmp.path())
        );
    }

    #[test]
    fn url_encodes_the_socket_dir() {
        assert_eq!(percent_encode("/a b/c&d", b"/"), "/a%20b/c%26d");
    }
}
