//! Connection-scale load generator: tower-sse against axum's `Sse`, same load, same run.
//!
//! ```text
//! cargo run --release --example loadgen --features axum,server -- --connections 10000 --events 100 --runs 3
//! ```
//!
//! For each run and each implementation (see `scale_server.rs`), it starts the server as a child
//! process (this same binary, `serve <impl>`), opens N SSE connections from several source
//! addresses (127.0.0.2, 127.0.0.3, ...), lets them idle, then publishes M events with a send
//! timestamp in their data, and reports per server:
//!
//! - connect rate (connections whose response head arrived, per second);
//! - server RSS per idle connection (from /proc, minus the RSS before connecting);
//! - server CPU time per delivered event (utime + stime from /proc over the publishing phase,
//!   divided by N × M);
//! - delivery latency p50 / p99 / max, from the timestamp to the client's read.
//!
//! Then the medians over the runs, and tower-sse's ratios to axum. Loopback only; every count
//! and wait is bounded, and the servers are killed at the end.
//!
//! Options: `--connections N` (default 10000), `--events M` (100), `--interval-ms T` (50, between
//! events), `--payload BYTES` (256), `--runs R` (3), `--idle-s S` (17: idle time before the
//! memory reading, longer than the 15 s keep-alive), `--impls a,b,c` (all of them).

#[allow(dead_code, unreachable_pub)]
#[path = "support/load.rs"]
mod load;
#[allow(dead_code, unreachable_pub)]
#[path = "scale_server.rs"]
mod scale_server;

use load::{now_ns, open_stream, proc_cpu_us, proc_rss_kib, publish, timestamp};

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Stdio,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    sync::Semaphore,
};
use tower_sse::decode::Decoder;

struct Options {
    connections: usize,
    events: usize,
    interval: Duration,
    payload: usize,
    runs: usize,
    idle: Duration,
    impls: Vec<String>,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            connections: 10_000,
            events: 100,
            interval: Duration::from_millis(50),
            payload: 256,
            runs: 3,
            // Longer than the 15 s keep-alive interval, so every server has written to every
            // connection once: "idle with keep-alive on" in steady state.
            idle: Duration::from_secs(17),
            impls: scale_server::IMPLS.iter().map(|s| s.to_string()).collect(),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let value = args.get(i + 1).cloned().unwrap_or_default();
            match args[i].as_str() {
                "--connections" => o.connections = value.parse().expect("--connections N"),
                "--events" => o.events = value.parse().expect("--events M"),
                "--interval-ms" => {
                    o.interval = Duration::from_millis(value.parse().expect("--interval-ms T"))
                }
                "--payload" => o.payload = value.parse().expect("--payload BYTES"),
                "--runs" => o.runs = value.parse().expect("--runs R"),
                "--idle-s" => o.idle = Duration::from_secs(value.parse().expect("--idle-s S")),
                "--impls" => o.impls = value.split(',').map(str::to_owned).collect(),
                other => panic!("unknown option {other}"),
            }
            i += 2;
        }
        assert!(
            o.connections <= 19_000,
            "one server process holds at most ~19,900 connections"
        );
        o
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    connect_per_s: f64,
    rss_per_conn_kib: f64,
    cpu_us_per_event: f64,
    user_us_per_event: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    delivered: u64,
}

/// One SSE client: connect from `source`, read the head, then record each event's latency.
async fn client(
    server: SocketAddr,
    source: IpAddr,
    connected: Arc<AtomicUsize>,
    received: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<u32>>>,
    stop: Arc<tokio::sync::Notify>,
    connecting: tokio::sync::OwnedSemaphorePermit,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    // A connection the kernel resets (a full listen queue under a burst of connects) is
    // retried, with a growing pause, rather than failing the run.
    let mut attempt = 0u32;
    let (mut tcp, mut chunk) = loop {
        match open_stream(server, source).await {
            Ok(opened) => break opened,
            Err(_) if attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(err) => return Err(err),
        }
    };
    connected.fetch_add(1, Ordering::Relaxed);
    drop(connecting);
    let mut decoder = Decoder::new();
    let mut local = Vec::new();
    // The body is chunked; chunk-size lines never contain "T<digits>|", so feeding the raw
    // bytes to the decoder is enough to find each event's timestamp.
    loop {
        for message in decoder.feed(&chunk) {
            if let Some(ts) = timestamp(&message.data) {
                let micros = now_ns().saturating_sub(ts) / 1_000;
                local.push(micros.min(u64::from(u32::MAX)) as u32);
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::select! {
            n = tcp.read(&mut buf) => {
                let n = n?;
                if n == 0 { break; }
                chunk = buf[..n].to_vec();
            }
            () = stop.notified() => break,
        }
    }
    latencies.lock().unwrap().extend(local);
    Ok(())
}

async fn measure(which: &str, o: &Options) -> Figures {
    let exe = std::env::current_exe().expect("own path");
    let mut child = tokio::process::Command::new(exe)
        .args(["serve", which])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let pid = child.id().expect("server pid");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let server: SocketAddr = loop {
        let line = lines.next_line().await.unwrap().expect("server output");
        if let Some(addr) = line.strip_prefix("LISTENING ") {
            break addr.parse().unwrap();
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = proc_rss_kib(pid);

    let connected = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(o.connections * o.events)));
    let stop = Arc::new(tokio::sync::Notify::new());
    let in_flight = Arc::new(Semaphore::new(512));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(o.connections);
    for i in 0..o.connections {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8));
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let (connected, received, latencies, stop) = (
            connected.clone(),
            received.clone(),
            latencies.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(client(
            server, source, connected, received, latencies, stop, permit,
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while connected.load(Ordering::Relaxed) < o.connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_time = started.elapsed();
    let n = connected.load(Ordering::Relaxed);
    assert_eq!(n, o.connections, "{which}: only {n} connections came up");

    // Idle with keep-alive on, then memory.
    tokio::time::sleep(o.idle).await;
    let rss_idle = proc_rss_kib(pid);

    let cpu_before = proc_cpu_us(pid);
    let mut publisher = None;
    let filler = "x".repeat(o.payload.saturating_sub(22));
    for _ in 0..o.events {
        let body = format!("T{}|{filler}", now_ns());
        publish(server, &mut publisher, &body).await;
        tokio::time::sleep(o.interval).await;
    }
    let expected = (o.connections * o.events) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_after = proc_cpu_us(pid);
    let delivered = received.load(Ordering::Relaxed);
    let user_us = cpu_after.0.saturating_sub(cpu_before.0);
    let sys_us = cpu_after.1.saturating_sub(cpu_before.1);

    // Stop the server first: every client then reads EOF, leaves its loop and hands in its
    // latencies; then wait for them (bounded).
    let _ = child.start_kill();
    let _ = child.wait().await;
    stop.notify_waiters();
    for c in clients {
        let _ = tokio::time::timeout(Duration::from_secs(10), c).await;
    }

    let mut lat = std::mem::take(&mut *latencies.lock().unwrap());
    lat.sort_unstable();
    let pick = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    };
    Figures {
        connect_per_s: o.connections as f64 / connect_time.as_secs_f64(),
        rss_per_conn_kib: rss_idle.saturating_sub(rss_before) as f64 / o.connections as f64,
        cpu_us_per_event: (user_us + sys_us) as f64 / delivered.max(1) as f64,
        user_us_per_event: user_us as f64 / delivered.max(1) as f64,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: lat.last().map_or(f64::NAN, |&us| us as f64 / 1000.0),
        delivered,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn print_row(name: &str, f: &Figures) {
    println!(
        "{name:<17} {:>10.0} {:>12.2} {:>12.2} {:>11.2} {:>9.2} {:>9.2} {:>9.2} {:>10}",
        f.connect_per_s,
        f.rss_per_conn_kib,
        f.cpu_us_per_event,
        f.user_us_per_event,
        f.p50_ms,
        f.p99_ms,
        f.max_ms,
        f.delivered
    );
}

fn header() {
    println!(
        "{:<17} {:>10} {:>12} {:>12} {:>11} {:>9} {:>9} {:>9} {:>10}",
        "server",
        "conn/s",
        "KiB/conn",
        "CPU us/evt",
        "user us/evt",
        "p50 ms",
        "p99 ms",
        "max ms",
        "delivered"
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        let which = args.get(2).cloned().unwrap_or_else(|| "tower-sse".into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        scale_server::run(&which, listener).await.unwrap();
        return;
    }
    let o = Options::parse();
    println!(
        "{} connections, idle {:?}, then {} events of {} bytes every {:?}, {} run(s); machine: {} cores",
        o.connections,
        o.idle,
        o.events,
        o.payload,
        o.interval,
        o.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut all: Vec<(String, Vec<Figures>)> =
        o.impls.iter().map(|i| (i.clone(), Vec::new())).collect();
    for run in 1..=o.runs {
        println!("\nrun {run}");
        header();
        for (which, results) in &mut all {
            let f = measure(which, &o).await;
            print_row(which, &f);
            results.push(f);
            // Let TIME_WAIT sockets and the kernel settle between servers.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    println!("\nmedians over {} run(s)", o.runs);
    header();
    let mut medians = Vec::new();
    for (which, results) in &all {
        let m = |f: fn(&Figures) -> f64| median(results.iter().map(f).collect());
        let fig = Figures {
            connect_per_s: m(|f| f.connect_per_s),
            rss_per_conn_kib: m(|f| f.rss_per_conn_kib),
            cpu_us_per_event: m(|f| f.cpu_us_per_event),
            user_us_per_event: m(|f| f.user_us_per_event),
            p50_ms: m(|f| f.p50_ms),
            p99_ms: m(|f| f.p99_ms),
            max_ms: m(|f| f.max_ms),
            delivered: results.iter().map(|f| f.delivered).min().unwrap_or(0),
        };
        print_row(which, &fig);
        medians.push((which.clone(), fig));
    }
    if let Some((_, base)) = medians.iter().find(|(w, _)| w == "axum") {
        println!("\nratios to axum (median figures; lower is better)");
        println!(
            "{:<17} {:>12} {:>12} {:>12} {:>9} {:>9}",
            "server", "KiB/conn", "CPU/evt", "user/evt", "p50", "p99"
        );
        for (which, f) in medians.iter().filter(|(w, _)| w != "axum") {
            println!(
                "{which:<17} {:>12.2} {:>12.2} {:>12.2} {:>9.2} {:>9.2}",
                f.rss_per_conn_kib / base.rss_per_conn_kib,
                f.cpu_us_per_event / base.cpu_us_per_event,
                f.user_us_per_event / base.user_us_per_event,
                f.p50_ms / base.p50_ms,
                f.p99_ms / base.p99_ms
            );
        }
    }
    if let Some((_, floor)) = medians.iter().find(|(w, _)| w == "floor") {
        println!("\nCPU per delivered event against the floor (lower is better; 1.00 is the kernel alone)");
        for (which, f) in medians.iter().filter(|(w, _)| w != "floor") {
            println!(
                "{which:<17} {:>12.2}",
                f.cpu_us_per_event / floor.cpu_us_per_event
            );
        }
    }
}
