//! Fan-out across server processes sharing a Redis, against one process with the in-memory hub,
//! in the same run (see BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --example cluster_load --features axum,server,redis -- --nodes 4 --connections 4000
//! cargo run --release --example cluster_load --features axum,server,redis -- --nodes 5 --connections 19000 --events 5 --interval-ms 1000 --no-baseline
//! ```
//!
//! It starts its own `redis-server` (on a free loopback port, no persistence), K server
//! processes (`tower_sse::serve::Server`, one hub each, `Hub::builder().redis(..)`), and one
//! client process per server holding N SSE connections to it (so no process holds more than
//! ~19,000 descriptors; source addresses 127.0.0.2.. spread the ports). After the connections
//! idle, it publishes M events to the first server (each POST waits for Redis's answer), and
//! reports:
//!
//! - events per second: M over the time from the first publish to the last delivery;
//! - fan-out latency p50 / p99 over the events: publish to the **last** client receiving it;
//! - delivery latency p50 / p99 over every delivery;
//! - server RSS, total and per connection; Redis connections (`CLIENT LIST`);
//! - then Redis's own cost per event (CPU time, script time, stream bytes) as the number of
//!   following nodes grows, over bursts of 5,000 events (the main run's events are too few for
//!   /proc's 10 ms CPU ticks).
//!
//! The baseline is one server process with the in-memory hub and all K × N connections (when
//! they fit in one process), measured first in the same run. Everything is on loopback, bounded,
//! and every process it started is killed at the end.
//!
//! Options: `--nodes K` (4), `--connections N` per node (4000), `--events M` (200),
//! `--interval-ms T` (10), `--payload BYTES` (256), `--idle-s S` (3), `--no-baseline`,
//! `--no-redis-cost` (skip the last table: Redis's cost per event with 1, 4, 20 and 100 nodes
//! following a topic, each node a hub with its own connections).

use axum::{
    routing::{get, post},
    Router,
};
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tower_sse::{decode::Decoder, hub::Hub, Event, LastEventId, SseBody, SseLayer};

#[allow(dead_code, unreachable_pub)]
#[path = "support/load.rs"]
mod load;
#[allow(dead_code, unreachable_pub)]
#[path = "support/procs.rs"]
mod procs;

use load::{now_ns, open_stream, proc_cpu_us, proc_rss_kib, publish, timestamp};
use procs::{redis_query, spawn, start_redis, text, RedisProc};

struct Options {
    nodes: usize,
    connections: usize,
    events: usize,
    interval: Duration,
    payload: usize,
    idle: Duration,
    baseline: bool,
    redis_cost: bool,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            nodes: 4,
            connections: 4000,
            events: 200,
            interval: Duration::from_millis(10),
            payload: 256,
            idle: Duration::from_secs(3),
            baseline: true,
            redis_cost: true,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let value = args.get(i + 1).cloned().unwrap_or_default();
            match args[i].as_str() {
                "--nodes" => o.nodes = value.parse().expect("--nodes K"),
                "--connections" => o.connections = value.parse().expect("--connections N"),
                "--events" => o.events = value.parse().expect("--events M"),
                "--interval-ms" => {
                    o.interval = Duration::from_millis(value.parse().expect("--interval-ms T"))
                }
                "--payload" => o.payload = value.parse().expect("--payload BYTES"),
                "--idle-s" => o.idle = Duration::from_secs(value.parse().expect("--idle-s S")),
                "--no-baseline" => {
                    o.baseline = false;
                    i += 1;
                    continue;
                }
                "--no-redis-cost" => {
                    o.redis_cost = false;
                    i += 1;
                    continue;
                }
                other => panic!("unknown option {other}"),
            }
            i += 2;
        }
        assert!(
            o.connections <= 19_000,
            "one process holds at most ~19,900 connections"
        );
        o
    }
}

// ---------------------------------------------------------------------------------------------
// The server: one route to stream, one to publish.

async fn serve(redis: Option<String>) {
    let hub = match redis {
        Some(url) => Hub::builder()
            .redis(redis::Client::open(url).expect("redis url"))
            .build(),
        None => Hub::new(),
    };
    let app = Router::new()
        .route(
            "/sse",
            get(
                |axum::extract::State(hub): axum::extract::State<Hub>,
                 last: Option<LastEventId>| async move {
                    SseBody::new(hub.topic("all").subscribe(last.as_ref()))
                },
            ),
        )
        .route(
            "/publish",
            post(
                |axum::extract::State(hub): axum::extract::State<Hub>, body: String| async move {
                    match hub.topic("all").publish(Event::message(body)).await {
                        Ok(_) => "ok",
                        Err(_) => "failed",
                    }
                },
            ),
        )
        .with_state(hub);
    let app = tower_layer::Layer::layer(&SseLayer::new(), app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap());
    tower_sse::serve::Server::new(listener).serve(app).await;
}

// ---------------------------------------------------------------------------------------------
// A client process: N connections to one server.

/// Latencies per event timestamp, in microseconds.
type Seen = Arc<Mutex<HashMap<u64, Vec<u32>>>>;

async fn one_client(
    server: SocketAddr,
    source: IpAddr,
    connected: Arc<AtomicUsize>,
    received: Arc<AtomicU64>,
    seen: Seen,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut attempt = 0u64;
    let (mut tcp, mut chunk) = loop {
        match open_stream(server, source).await {
            Ok(opened) => break opened,
            Err(_) if attempt < 30 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(err) => panic!("connect: {err}"),
        }
    };
    connected.fetch_add(1, Ordering::Relaxed);
    drop(permit);
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; 4096];
    loop {
        for message in decoder.feed(&chunk) {
            if let Some(ts) = timestamp(&message.data) {
                let micros = (now_ns().saturating_sub(ts) / 1_000).min(u64::from(u32::MAX));
                seen.lock()
                    .unwrap()
                    .entry(ts)
                    .or_default()
                    .push(micros as u32);
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => chunk = buf[..n].to_vec(),
        }
    }
}

/// Opens `n` connections, says `CONNECTED`, reports `RECEIVED k` as events arrive, and on
/// `stop` (stdin) prints every latency as `L <ts> <us>` and `END`.
async fn clients(server: SocketAddr, n: usize, first_source: u8) {
    let connected = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let seen: Seen = Arc::default();
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    for i in 0..n {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, first_source, 2 + (i % 16) as u8));
        let permit = connecting.clone().acquire_owned().await.unwrap();
        tokio::spawn(one_client(
            server,
            source,
            connected.clone(),
            received.clone(),
            seen.clone(),
            permit,
        ));
    }
    while connected.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("CONNECTED {n}");
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => println!("RECEIVED {}", received.load(Ordering::Relaxed)),
            line = stdin.next_line() => {
                if !matches!(line, Ok(Some(ref l)) if l != "stop") {
                    break;
                }
            }
        }
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut out = String::new();
    for (ts, lats) in seen {
        for us in lats {
            out.push_str(&format!("L {ts} {us}\n"));
        }
    }
    out.push_str("END\n");
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes()).unwrap();
    stdout.flush().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The driver.

#[derive(Debug, Default)]
struct Figures {
    connections: usize,
    events_per_s: f64,
    fanout_p50_ms: f64,
    fanout_p99_ms: f64,
    delivery_p50_ms: f64,
    delivery_p99_ms: f64,
    rss_mib: f64,
    rss_kib_per_conn: f64,
    delivered: u64,
    redis_clients: Option<usize>,
}

fn quantile(sorted: &[u32], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .map_or(f64::NAN, |&us| us as f64 / 1000.0)
}

/// One measurement: `nodes` servers (with Redis when `redis` is set), `per_node` clients each.
async fn measure(o: &Options, nodes: usize, per_node: usize, redis: Option<&RedisProc>) -> Figures {
    let mut servers = Vec::new();
    for _ in 0..nodes {
        let mut args = vec!["serve".to_owned()];
        if let Some(redis) = redis {
            args.push(format!("redis://127.0.0.1:{}/", redis.port));
        }
        let mut server = spawn(&args).await;
        let addr: SocketAddr = server.line_starting("LISTENING").await.parse().unwrap();
        servers.push((server, addr));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before: u64 = servers
        .iter()
        .map(|(s, _)| proc_rss_kib(s.child.id().unwrap()))
        .sum();

    // Client processes: at most 19,000 connections each.
    let mut workers = Vec::new();
    let mut source = 0u8;
    for (_, addr) in &servers {
        let mut left = per_node;
        while left > 0 {
            let n = left.min(19_000);
            left -= n;
            let worker = spawn(&[
                "clients".to_owned(),
                addr.to_string(),
                n.to_string(),
                source.to_string(),
            ])
            .await;
            source += 1;
            workers.push(worker);
        }
    }
    for worker in &mut workers {
        let _ = tokio::time::timeout(Duration::from_secs(300), worker.line_starting("CONNECTED"))
            .await
            .expect("clients connected in time");
    }
    let connections = nodes * per_node;
    tokio::time::sleep(o.idle).await;
    let rss_idle: u64 = servers
        .iter()
        .map(|(s, _)| proc_rss_kib(s.child.id().unwrap()))
        .sum();

    let publish_to = servers[0].1;
    let filler = "x".repeat(o.payload.saturating_sub(22));
    let mut conn = None;
    let started = Instant::now();
    let mut failed = 0;
    for _ in 0..o.events {
        let body = format!("T{}|{filler}", now_ns());
        if publish(publish_to, &mut conn, &body).await != b"ok" {
            failed += 1;
        }
        tokio::time::sleep(o.interval).await;
    }
    assert_eq!(failed, 0, "every publish succeeded");
    // Wait until every client has every event (bounded).
    let expected = (connections * o.events) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut totals = vec![0u64; workers.len()];
    loop {
        for (i, worker) in workers.iter_mut().enumerate() {
            if let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_millis(5), worker.lines.next_line()).await
            {
                if let Some(n) = line.strip_prefix("RECEIVED ") {
                    totals[i] = n.parse().unwrap_or(0);
                }
            }
        }
        if totals.iter().sum::<u64>() >= expected || Instant::now() > deadline {
            break;
        }
    }
    let elapsed = started.elapsed();
    // Connections to Redis, our own query's left out.
    let redis_after = match redis {
        Some(r) => Some(
            text(&redis_query(r.port, &["CLIENT", "LIST"]).await)
                .lines()
                .count()
                .saturating_sub(1),
        ),
        None => None,
    };

    // Collect latencies.
    let mut per_event: HashMap<u64, (u32, usize)> = HashMap::new();
    let mut all = Vec::with_capacity(expected as usize);
    for worker in &mut workers {
        let stdin = worker.child.stdin.as_mut().unwrap();
        stdin.write_all(b"stop\n").await.unwrap();
        loop {
            let line = worker.lines.next_line().await.unwrap().unwrap_or_default();
            if line == "END" || line.is_empty() && worker.child.try_wait().ok().flatten().is_some()
            {
                break;
            }
            let mut parts = line.split_whitespace();
            if parts.next() != Some("L") {
                continue;
            }
            let ts: u64 = parts.next().unwrap().parse().unwrap();
            let us: u32 = parts.next().unwrap().parse().unwrap();
            all.push(us);
            let entry = per_event.entry(ts).or_default();
            entry.0 = entry.0.max(us);
            entry.1 += 1;
        }
    }
    for (mut server, _) in servers {
        let _ = server.child.start_kill();
        let _ = server.child.wait().await;
    }
    for mut worker in workers {
        let _ = worker.child.start_kill();
        let _ = worker.child.wait().await;
    }
    all.sort_unstable();
    let mut fanout: Vec<u32> = per_event.values().map(|(max, _)| *max).collect();
    fanout.sort_unstable();
    let complete = per_event
        .values()
        .filter(|(_, n)| *n == connections)
        .count();
    if complete < o.events {
        println!(
            "  (only {complete} of {} events reached every client)",
            o.events
        );
    }
    Figures {
        connections,
        events_per_s: o.events as f64 / elapsed.as_secs_f64(),
        fanout_p50_ms: quantile(&fanout, 0.5),
        fanout_p99_ms: quantile(&fanout, 0.99),
        delivery_p50_ms: quantile(&all, 0.5),
        delivery_p99_ms: quantile(&all, 0.99),
        rss_mib: rss_idle as f64 / 1024.0,
        rss_kib_per_conn: rss_idle.saturating_sub(rss_before) as f64 / connections as f64,
        delivered: all.len() as u64,
        redis_clients: redis_after,
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<22} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>8.2} {:>10} {:>6}",
        f.connections,
        f.events_per_s,
        f.fanout_p50_ms,
        f.fanout_p99_ms,
        f.delivery_p50_ms,
        f.delivery_p99_ms,
        f.rss_mib,
        f.rss_kib_per_conn,
        f.delivered,
        f.redis_clients.map_or("-".to_owned(), |n| n.to_string()),
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => return serve(args.get(2).cloned()).await,
        Some("clients") => {
            let server = args[2].parse().unwrap();
            let n = args[3].parse().unwrap();
            let source = args[4].parse().unwrap();
            return clients(server, n, source).await;
        }
        _ => {}
    }
    let o = Options::parse();
    println!(
        "{} nodes x {} connections, {} events of {} bytes every {:?}, idle {:?}; machine: {} cores",
        o.nodes,
        o.connections,
        o.events,
        o.payload,
        o.interval,
        o.idle,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<22} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10} {:>6}",
        "setup",
        "conns",
        "events/s",
        "fan p50",
        "fan p99",
        "del p50",
        "del p99",
        "RSS MiB",
        "KiB/conn",
        "delivered",
        "redis"
    );
    let total = o.nodes * o.connections;
    let baseline = if o.baseline && total <= 19_000 {
        let f = measure(&o, 1, total, None).await;
        print("1 process, in-memory", &f);
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some(f)
    } else {
        None
    };
    let redis = start_redis().await;
    let f = measure(&o, o.nodes, o.connections, Some(&redis)).await;
    print(&format!("{} processes, Redis", o.nodes), &f);
    if let Some(base) = baseline {
        println!(
            "\nRedis cluster against one process: events/s {:.2}x, fan-out p50 {:.2}x, p99 {:.2}x, RSS {:.2}x",
            f.events_per_s / base.events_per_s,
            f.fanout_p50_ms / base.fanout_p50_ms,
            f.fanout_p99_ms / base.fanout_p99_ms,
            f.rss_mib / base.rss_mib
        );
    }
    println!(
        "Redis: {} pub/sub messages per event (one per node with subscribers)",
        o.nodes
    );
    if o.redis_cost {
        redis_cost(&redis).await;
    }
}

/// What one event costs Redis as the number of following nodes grows: K hubs (each with its own
/// pub/sub connection and one subscriber that reads everything) follow a topic; another hub
/// publishes 5,000 events, 32 at a time. Redis's CPU time (from /proc) over the burst, per
/// event; the script's own time from `INFO commandstats`; the stream's bytes per event.
async fn redis_cost(redis: &RedisProc) {
    use futures_util::StreamExt;
    const EVENTS: usize = 5_000;
    println!("\nRedis cost per event, 256-byte events, {EVENTS} per row");
    println!(
        "{:>6} {:>12} {:>14} {:>14} {:>12}",
        "nodes", "CPU us/evt", "script us/evt", "stream B/evt", "events/s"
    );
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let publisher = Hub::builder()
        .redis(redis::Client::open(url.clone()).unwrap())
        .build();
    for nodes in [1usize, 4, 20, 100] {
        let topic = format!("cost-{nodes}");
        let received = Arc::new(AtomicU64::new(0));
        let mut hubs = Vec::new();
        for _ in 0..nodes {
            let hub = Hub::builder()
                .redis(redis::Client::open(url.clone()).unwrap())
                .build();
            let mut sub = hub.topic(&topic).subscribe(None);
            sub.join();
            let received = received.clone();
            tokio::spawn(async move {
                while sub.next().await.is_some() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
            hubs.push(hub);
        }
        // Every node follows once a marker reaches all of them.
        loop {
            let _ = publisher
                .topic(&topic)
                .publish(Event::message("marker"))
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if received.load(Ordering::Relaxed) >= nodes as u64 {
                break;
            }
        }
        let _ = redis_query(redis.port, &["CONFIG", "RESETSTAT"]).await;
        let base = received.load(Ordering::Relaxed);
        let (user, sys) = proc_cpu_us(redis.child.id());
        let cpu = user + sys;
        let started = Instant::now();
        let body = format!("T0|{}", "x".repeat(252));
        let gate = Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = Vec::new();
        for _ in 0..EVENTS {
            let permit = gate.clone().acquire_owned().await.unwrap();
            let publish = publisher.topic(&topic).publish(Event::message(&body));
            tasks.push(tokio::spawn(async move {
                let ok = publish.await.is_ok();
                drop(permit);
                ok
            }));
        }
        for task in tasks {
            assert!(task.await.unwrap(), "publish failed");
        }
        let want = base + (EVENTS * nodes) as u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed();
        let (user, sys) = proc_cpu_us(redis.child.id());
        let cpu = user + sys - cpu;
        let stats = text(&redis_query(redis.port, &["INFO", "commandstats"]).await);
        let script_us: f64 = stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("usec=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum();
        let key = format!("tower-sse:s:{topic}");
        let bytes = match redis_query(redis.port, &["MEMORY", "USAGE", &key]).await {
            redis::Value::Int(n) => n as f64,
            _ => f64::NAN,
        };
        let len = match redis_query(redis.port, &["XLEN", &key]).await {
            redis::Value::Int(n) => n as f64,
            _ => f64::NAN,
        };
        println!(
            "{nodes:>6} {:>12.1} {:>14.1} {:>14.0} {:>12.0}",
            cpu as f64 / EVENTS as f64,
            script_us / EVENTS as f64,
            bytes / len,
            EVENTS as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(
            received.load(Ordering::Relaxed),
            want,
            "every node got every event"
        );
        drop(hubs);
    }
}
