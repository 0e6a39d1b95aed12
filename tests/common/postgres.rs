//! A PostgreSQL cluster of the test's own (Debian's `postgresql`), in a temporary directory, on
//! a free loopback port, that it can kill and restart. Postgres refuses to run as root: under
//! root the cluster runs as `nobody`.

use super::free_port;
use sqlx::{postgres::PgPoolOptions, Connection, PgConnection, PgPool};
use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running cluster; stopped (immediately) and deleted when dropped.
pub struct PgServer {
    port: u16,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

/// Where Debian puts the server's programs: the newest `/usr/lib/postgresql/<n>/bin`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The user id this process runs as (from `/proc`).
fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `nobody` on Debian.
const NOBODY: u32 = 65534;

impl PgServer {
    /// Makes a cluster and starts it. Tests that need it are `#[ignore = "needs postgres"]`,
    /// so a plain `cargo test` reports them as ignored; run with `-- --ignored` (as `.ci/run`
    /// does), a missing Postgres fails the test with the line that installs it.
    pub async fn start() -> PgServer {
        let Some(bin) = bin_dir() else {
            panic!("PostgreSQL is not installed: apt-get install -y postgresql");
        };
        use std::sync::atomic::{AtomicU64, Ordering};
        static MADE: AtomicU64 = AtomicU64::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tower-sse-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if euid() == 0 {
            std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let data = dir.join("data");
        let out = as_postgres(Command::new(bin.join("initdb")))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            port: 0,
            bin,
            dir,
            child: None,
        };
        for attempt in 0..20u64 {
            server.port = free_port(attempt + n * 100);
            if server.try_start().await {
                return server;
            }
        }
        panic!("no free port for postgres");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A pool of the app's, of up to `size` connections, that gives up waiting after 10 s.
    pub fn pool(&self, size: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy(&self.url())
            .unwrap()
    }

    /// A connection of the test's own, for admin statements.
    pub async fn admin(&self) -> PgConnection {
        PgConnection::connect(&self.url()).await.unwrap()
    }

    /// Stops the server at once (an immediate shutdown: every backend is cut, nothing is
    /// flushed), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = as_postgres(Command::new(self.bin.join("pg_ctl")))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with what it had, and waits until it answers.
    pub async fn restart(&mut self) {
        for _ in 0..40 {
            if self.try_start().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("postgres could not listen on port {} again", self.port);
    }

    async fn try_start(&mut self) -> bool {
        self.kill();
        let log = std::fs::File::create(self.dir.join(format!("log-{}", self.port))).ok();
        let child = as_postgres(Command::new(self.bin.join("postgres")))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .stdout(Stdio::null())
            .stderr(log.map_or_else(Stdio::null, Stdio::from))
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        for _ in 0..300 {
            if let Some(child) = &mut self.child {
                if child.try_wait().ok().flatten().is_some() {
                    // It exited: the port was taken (or the last run's shutdown is not done).
                    self.child = None;
                    return false;
                }
            }
            if let Ok(mut conn) = PgConnection::connect(&self.url()).await {
                if sqlx::query("SELECT 1").execute(&mut conn).await.is_ok() {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("postgres on port {} did not answer", self.port);
    }

    /// Where the server writes its log (for a failing test's message).
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("log-{}", self.port))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The command, run as an unprivileged user when this process is root.
fn as_postgres(mut command: Command) -> Command {
    if euid() == 0 {
        command.uid(NOBODY).gid(NOBODY);
    }
    command.current_dir(Path::new("/"));
    command
}
