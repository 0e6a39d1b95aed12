//! What the multi-process benchmarks (`cluster_load`, `storm`) share: child processes of the
//! example's own binary, and a `redis-server` or a PostgreSQL cluster of their own on a free
//! loopback port.

use std::{os::unix::process::CommandExt, path::PathBuf, process::Stdio, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

pub struct Proc {
    pub child: Child,
    pub lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

pub async fn spawn(args: &[String]) -> Proc {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start a child");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    Proc { child, lines }
}

impl Proc {
    pub async fn line_starting(&mut self, prefix: &str) -> String {
        loop {
            let line = self.lines.next_line().await.unwrap().expect("child output");
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }
}

pub struct RedisProc {
    pub child: std::process::Child,
    pub port: u16,
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn start_redis() -> RedisProc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--maxclients", "1000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed (apt-get install redis-server)");
    let redis = RedisProc { child, port };
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return redis;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start");
}

pub async fn redis_query(port: u16, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

pub fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// A PostgreSQL cluster of the benchmark's own: made by `initdb` in a temporary directory,
/// listening on loopback only, fsync off; stopped at once and deleted when dropped.
pub struct PgProc {
    pub child: std::process::Child,
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
}

impl PgProc {
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgProc {
    fn drop(&mut self) {
        // An immediate shutdown stops every backend; then the postmaster is surely gone.
        let _ = as_postgres(std::process::Command::new(self.bin.join("pg_ctl")))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Postgres refuses to run as root: under root the cluster runs as `nobody` (65534).
const NOBODY: u32 = 65534;

fn euid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn as_postgres(mut command: std::process::Command) -> std::process::Command {
    if euid() == 0 {
        command.uid(NOBODY).gid(NOBODY);
    }
    command.current_dir("/");
    command
}

/// The newest `/usr/lib/postgresql/<n>/bin` (Debian's layout), or `$PG_BIN`.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql)")
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL is installed (apt-get install postgresql)")
        .1
}

/// Makes a cluster and starts it on a free loopback port; returns once it answers.
pub async fn start_postgres() -> PgProc {
    let bin = pg_bin();
    let dir = std::env::temp_dir().join(format!("tower-sse-bench-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if euid() == 0 {
        std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let data = dir.join("data");
    let out = as_postgres(std::process::Command::new(bin.join("initdb")))
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for _ in 0..10 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = as_postgres(std::process::Command::new(bin.join("postgres")))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(["-c", "shared_buffers=128MB"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        for _ in 0..200 {
            if child.try_wait().ok().flatten().is_some() {
                break; // the port was taken meanwhile: try another
            }
            let ready = std::process::Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return PgProc {
                    child,
                    port,
                    bin,
                    dir,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    panic!("postgres did not start");
}

/// CPU time (utime + stime, µs) of a Postgres cluster: the postmaster, every live process it
/// started, and (its cutime + cstime) those that ended and were reaped.
pub fn postgres_cpu_us(postmaster: u32) -> u64 {
    let fields = |pid: &str| -> Vec<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect()
    };
    // After the ')': state, ppid, ..., utime (11), stime (12), cutime (13), cstime (14); USER_HZ
    // is 100.
    let tick = 10_000u64;
    let own = fields(&postmaster.to_string());
    let mut total = own.get(11..15).map_or(0, |f| f.iter().sum::<u64>()) * tick;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let f = fields(pid);
        if f.get(1) == Some(&u64::from(postmaster)) {
            total += (f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0)) * tick;
        }
    }
    total
}
