//! Fan-out across server processes sharing a Redis, or a PostgreSQL, against one process with the
//! in-memory hub, in the same run (see BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --example cluster_load --features axum,server,redis,postgres -- --nodes 4 --connections 4000
//! cargo run --release --example cluster_load --features axum,server,redis,postgres -- --nodes 5 --connections 19000 --events 5 --interval-ms 1000 --no-baseline --engines redis
//! ```
//!
//! It starts its own `redis-server` (on a free loopback port, no persistence) and its own
//! PostgreSQL cluster (`initdb` in a temporary directory, loopback only, fsync off, run as
//! `nobody` under root), and for each engine K server processes (`tower_sse::serve::Server`, one
//! hub each, `Hub::builder().redis(..)` or `Hub::builder().postgres(pool)`), and one client
//! process per server holding N SSE connections to it (so no process holds more than ~19,000
//! descriptors; source addresses 127.0.0.2.. spread the ports). After the connections idle, it
//! publishes M events to the first server (each POST waits for Redis's answer, or for the
//! commit), and reports:
//!
//! - events per second: M over the time from the first publish to the last delivery;
//! - fan-out latency p50 / p99 over the events: publish to the **last** client receiving it;
//! - delivery latency p50 / p99 over every delivery;
//! - server RSS, total and per connection; the engine's connections (Redis's `CLIENT LIST`,
//!   Postgres's `pg_stat_activity`);
//! - then Redis's own cost per event (CPU time, script time, stream bytes) as the number of
//!   following nodes grows, over bursts of 5,000 events (the main run's events are too few for
//!   /proc's 10 ms CPU ticks);
//! - then Postgres's: transactional publishes (`publish_in` then commit) from C tasks (16), one or
//!   ten per transaction, to one topic or spread over 100, with 1 or 4 nodes following and a
//!   batch window of 0 or 5 ms: publishes and transactions per second, the cluster's CPU per
//!   event, and the followers' reads and wake-ups per event.
//!
//! The baseline is one server process with the in-memory hub and all K × N connections (when
//! they fit in one process), measured first in the same run. Everything is on loopback, bounded,
//! and every process it started is killed at the end.
//!
//! Options: `--nodes K` (4), `--connections N` per node (4000), `--events M` (200),
//! `--interval-ms T` (10), `--payload BYTES` (256), `--idle-s S` (3), `--no-baseline`,
//! `--engines redis,postgres` (both), `--no-redis-cost` (skip Redis's cost table: 1, 4, 20 and
//! 100 nodes following a topic, each node a hub with its own connections), `--no-postgres-cost`
//! (skip Postgres's), `--cost-publishes P` (publishes per row of Postgres's table, 8,000),
//! `--cost-tasks C` (the tasks publishing at once in it, 16).

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
use tower_sse::{
    decode::Decoder,
    hub::{postgres::PostgresBroker, Hub},
    Event, LastEventId, SseBody, SseLayer,
};

#[allow(dead_code, unreachable_pub)]
#[path = "support/load.rs"]
mod load;
#[allow(dead_code, unreachable_pub)]
#[path = "support/procs.rs"]
mod procs;

use load::{now_ns, open_stream, proc_cpu_us, proc_rss_kib, publish, timestamp};
use procs::{
    postgres_cpu_us, redis_query, spawn, start_postgres, start_redis, text, PgProc, RedisProc,
};

struct Options {
    nodes: usize,
    connections: usize,
    events: usize,
    interval: Duration,
    payload: usize,
    idle: Duration,
    baseline: bool,
    redis: bool,
    postgres: bool,
    redis_cost: bool,
    postgres_cost: bool,
    cost_publishes: usize,
    cost_tasks: usize,
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
            redis: true,
            postgres: true,
            redis_cost: true,
            postgres_cost: true,
            cost_publishes: 8_000,
            cost_tasks: 16,
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
                "--no-postgres-cost" => {
                    o.postgres_cost = false;
                    i += 1;
                    continue;
                }
                "--engines" => {
                    let engines: Vec<&str> = value.split(',').map(str::trim).collect();
                    for engine in &engines {
                        assert!(
                            matches!(*engine, "redis" | "postgres"),
                            "--engines redis,postgres (one or both), not {engine}"
                        );
                    }
                    o.redis = engines.contains(&"redis");
                    o.postgres = engines.contains(&"postgres");
                }
                "--cost-publishes" => o.cost_publishes = value.parse().expect("--cost-publishes P"),
                "--cost-tasks" => o.cost_tasks = value.parse().expect("--cost-tasks C"),
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

async fn serve(engine: Option<String>) {
    let hub = match engine {
        Some(url) if url.starts_with("postgres://") => Hub::builder()
            .postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(8)
                    .connect_lazy(&url)
                    .expect("postgres url"),
            )
            .build(),
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
    /// The engine's connections, as its own listing counts them.
    engine_clients: Option<String>,
}

/// The engine the servers share, if any.
#[derive(Clone, Copy)]
enum Engine<'a> {
    Memory,
    Redis(&'a RedisProc),
    Postgres(&'a PgProc),
}

impl Engine<'_> {
    fn url(&self) -> Option<String> {
        match self {
            Engine::Memory => None,
            Engine::Redis(r) => Some(format!("redis://127.0.0.1:{}/", r.port)),
            Engine::Postgres(pg) => Some(pg.url()),
        }
    }

    /// Connections to the engine, our own query's left out.
    async fn clients(&self) -> Option<String> {
        match self {
            Engine::Memory => None,
            Engine::Redis(r) => Some(
                text(&redis_query(r.port, &["CLIENT", "LIST"]).await)
                    .lines()
                    .count()
                    .saturating_sub(1)
                    .to_string(),
            ),
            Engine::Postgres(pg) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
                let (all, listening): (i64, i64) = sqlx::query_as(
                    "SELECT count(*), count(*) FILTER (WHERE application_name = 'tower-sse') \
                     FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                )
                .fetch_one(&mut conn)
                .await
                .unwrap();
                let _ = conn.close().await;
                Some(format!("{all}({listening}L)"))
            }
        }
    }
}

fn quantile(sorted: &[u32], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .map_or(f64::NAN, |&us| us as f64 / 1000.0)
}

/// One measurement: `nodes` servers sharing `engine`, `per_node` clients each.
async fn measure(o: &Options, nodes: usize, per_node: usize, engine: Engine<'_>) -> Figures {
    let mut servers = Vec::new();
    for _ in 0..nodes {
        let mut args = vec!["serve".to_owned()];
        if let Some(url) = engine.url() {
            args.push(url);
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
    let engine_clients = engine.clients().await;

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
        engine_clients,
    }
}

fn print(name: &str, f: &Figures) {
    println!(
        "{name:<22} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.1} {:>8.2} {:>10} {:>9}",
        f.connections,
        f.events_per_s,
        f.fanout_p50_ms,
        f.fanout_p99_ms,
        f.delivery_p50_ms,
        f.delivery_p99_ms,
        f.rss_mib,
        f.rss_kib_per_conn,
        f.delivered,
        f.engine_clients.as_deref().unwrap_or("-"),
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
        "{:<22} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10} {:>9}",
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
        "eng conns"
    );
    let total = o.nodes * o.connections;
    let baseline = if o.baseline && total <= 19_000 {
        let f = measure(&o, 1, total, Engine::Memory).await;
        print("1 process, in-memory", &f);
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some(f)
    } else {
        None
    };
    let redis = if o.redis {
        let redis = start_redis().await;
        let f = measure(&o, o.nodes, o.connections, Engine::Redis(&redis)).await;
        print(&format!("{} processes, Redis", o.nodes), &f);
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some((redis, f))
    } else {
        None
    };
    let postgres = if o.postgres {
        let pg = start_postgres().await;
        let f = measure(&o, o.nodes, o.connections, Engine::Postgres(&pg)).await;
        print(&format!("{} processes, Postgres", o.nodes), &f);
        Some((pg, f))
    } else {
        None
    };
    println!("(eng conns: Redis's CLIENT LIST; Postgres's client backends, L: listening)");
    if let Some(base) = &baseline {
        for (name, f) in [
            ("Redis", redis.as_ref().map(|r| &r.1)),
            ("Postgres", postgres.as_ref().map(|p| &p.1)),
        ] {
            let Some(f) = f else { continue };
            println!(
                "{name} cluster against one process: events/s {:.2}x, fan-out p50 {:.2}x, p99 {:.2}x, delivery p50 {:.2}x, p99 {:.2}x, RSS {:.2}x",
                f.events_per_s / base.events_per_s,
                f.fanout_p50_ms / base.fanout_p50_ms,
                f.fanout_p99_ms / base.fanout_p99_ms,
                f.delivery_p50_ms / base.delivery_p50_ms,
                f.delivery_p99_ms / base.delivery_p99_ms,
                f.rss_mib / base.rss_mib
            );
        }
    }
    if let Some((redis, _)) = &redis {
        println!(
            "Redis: {} pub/sub messages per event (one per node with subscribers)",
            o.nodes
        );
        if o.redis_cost {
            redis_cost(redis).await;
        }
    }
    if let Some((pg, _)) = &postgres {
        if o.postgres_cost {
            postgres_cost(pg, o.cost_tasks.max(1), o.cost_publishes).await;
        }
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

/// One row of Postgres's cost table.
struct CostRow {
    nodes: usize,
    window_ms: u64,
    topics: usize,
    per_tx: usize,
}

/// What transactional publishes cost one Postgres: `tasks` tasks each run
/// `begin; publish_in × per_tx (one topic); commit` until `publishes` are made, spread over
/// `topics` topics (a transaction's topic turns round), while `nodes` hubs (each with its own
/// broker, with the row's batch window, and one subscriber per topic) follow every topic. The
/// cluster's CPU (every `postgres` process, /proc) from the first publish to the last delivery,
/// per event; the followers' reads and wake-ups per event and node.
async fn postgres_cost(pg: &PgProc, tasks: usize, publishes: usize) {
    use futures_util::StreamExt;
    use sqlx::postgres::PgPoolOptions;
    println!(
        "\nPostgres cost per event, 256-byte events, {publishes} transactional publishes per row, {tasks} tasks"
    );
    println!(
        "{:>5} {:>9} {:>6} {:>6} {:>10} {:>8} {:>11} {:>14} {:>14} {:>9}",
        "nodes",
        "window ms",
        "topics",
        "per tx",
        "publish/s",
        "tx/s",
        "CPU us/evt",
        "reads/evt/node",
        "wakes/evt/node",
        "deliv ms"
    );
    let pool = PgPoolOptions::new()
        .max_connections(tasks as u32 + 2)
        .min_connections(tasks as u32)
        .connect(&pg.url())
        .await
        .expect("connect to the benchmark's postgres");
    let publisher = Hub::builder().postgres(pool.clone()).build();
    // The tables exist once a publish went through.
    let _ = publisher
        .topic("warm-up")
        .publish(Event::message("warm-up"))
        .await;
    plain_transactions(pg, &pool, tasks, publishes).await;
    let mut rows = Vec::new();
    for nodes in [1usize, 4] {
        for window_ms in [0u64, 5] {
            for topics in [1usize, 100] {
                for per_tx in [1usize, 10] {
                    rows.push(CostRow {
                        nodes,
                        window_ms,
                        topics,
                        per_tx,
                    });
                }
            }
        }
    }
    let body = format!("B|{}", "x".repeat(254));
    for (n, row) in rows.iter().enumerate() {
        let names: Vec<String> = (0..row.topics).map(|t| format!("cost{n}-{t}")).collect();
        let received = Arc::new(AtomicU64::new(0));
        let following = Arc::new(AtomicUsize::new(0));
        let mut hubs = Vec::new();
        let mut brokers = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..row.nodes {
            let broker = PostgresBroker::new(
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect_lazy(&pg.url())
                    .unwrap(),
            )
            .batch_window(Duration::from_millis(row.window_ms));
            brokers.push(broker.clone());
            let hub = Hub::builder().broker(broker).build();
            for name in &names {
                let mut sub = hub.topic(name).subscribe(None);
                sub.join();
                let received = received.clone();
                let following = following.clone();
                readers.push(tokio::spawn(async move {
                    let mut first = true;
                    while let Some(event) = sub.next().await {
                        if first {
                            first = false;
                            following.fetch_add(1, Ordering::Relaxed);
                        }
                        if event.as_bytes().windows(8).any(|w| w == b"data: B|") {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            hubs.push(hub);
        }
        // Every node follows every topic once a marker reached all of them.
        let subscribers = row.nodes * row.topics;
        let deadline = Instant::now() + Duration::from_secs(60);
        while following.load(Ordering::Relaxed) < subscribers {
            assert!(Instant::now() < deadline, "the followers did not follow");
            for name in &names {
                let _ = publisher
                    .topic(name)
                    .publish(Event::message("marker"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reads: u64 = brokers.iter().map(PostgresBroker::reads).sum();
        let wakeups: u64 = brokers.iter().map(PostgresBroker::wakeups).sum();
        let cpu = postgres_cpu_us(pg.child.id());
        let txs_per_task = publishes / tasks / row.per_tx;
        let started = Instant::now();
        let mut handles = Vec::new();
        for task in 0..tasks {
            let pool = pool.clone();
            let publisher = publisher.clone();
            let names = names.clone();
            let body = body.clone();
            let per_tx = row.per_tx;
            handles.push(tokio::spawn(async move {
                for i in 0..txs_per_task {
                    let topic = publisher.topic(&names[(task + i * tasks) % names.len()]);
                    let mut tx = pool.begin().await.expect("begin");
                    for _ in 0..per_tx {
                        topic
                            .publish_in(&mut tx, Event::message(&body))
                            .await
                            .expect("publish_in");
                    }
                    tx.commit().await.expect("commit");
                }
            }));
        }
        for task in handles {
            task.await.unwrap();
        }
        let committed = started.elapsed();
        let made = (txs_per_task * tasks * row.per_tx) as u64;
        let want = made * row.nodes as u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let delivered = started.elapsed();
        let cpu = postgres_cpu_us(pg.child.id()) - cpu;
        let reads = brokers.iter().map(PostgresBroker::reads).sum::<u64>() - reads;
        let wakeups = brokers.iter().map(PostgresBroker::wakeups).sum::<u64>() - wakeups;
        let per_node_event = (made * row.nodes as u64) as f64;
        println!(
            "{:>5} {:>9} {:>6} {:>6} {:>10.0} {:>8.0} {:>11.1} {:>14.3} {:>14.3} {:>9.0}",
            row.nodes,
            row.window_ms,
            row.topics,
            row.per_tx,
            made as f64 / committed.as_secs_f64(),
            (txs_per_task * tasks) as f64 / committed.as_secs_f64(),
            cpu as f64 / made as f64,
            reads as f64 / per_node_event,
            wakeups as f64 / per_node_event,
            delivered.as_secs_f64() * 1000.0,
        );
        assert_eq!(
            received.load(Ordering::Relaxed),
            want,
            "every node got every event"
        );
        // The subscriptions end, then the hubs: each node's session and connection go.
        for reader in readers {
            reader.abort();
        }
        drop(hubs);
        drop(brokers);
        // A node's session ends within its poll interval (5 s) of its hub: wait until only the
        // publisher's listening connection is left, so the next row's notifications reach only
        // its own nodes.
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let (listening,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tower-sse'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if listening <= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The floor under the cost table, from the same tasks with no hub: `begin; INSERT a 256-byte
/// row; commit` into a table of its own, then the same with a `pg_notify` on a channel nobody
/// listens to (a transaction that notified takes Postgres's notification lock at commit).
async fn plain_transactions(pg: &PgProc, pool: &sqlx::PgPool, tasks: usize, count: usize) {
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_plain (id bigserial PRIMARY KEY, payload bytea)")
        .execute(pool)
        .await
        .unwrap();
    let payload = vec![b'x'; 256];
    for (name, sql) in [
        (
            "BEGIN; INSERT; COMMIT",
            "INSERT INTO bench_plain (payload) VALUES ($1)",
        ),
        (
            "BEGIN; INSERT + pg_notify; COMMIT",
            "WITH i AS (INSERT INTO bench_plain (payload) VALUES ($1) RETURNING id) \
             SELECT pg_notify('bench_plain', id::text) FROM i",
        ),
    ] {
        let cpu = postgres_cpu_us(pg.child.id());
        let started = Instant::now();
        let per_task = count / tasks;
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let pool = pool.clone();
            let payload = payload.clone();
            handles.push(tokio::spawn(async move {
                for _ in 0..per_task {
                    let mut tx = pool.begin().await.expect("begin");
                    sqlx::query(sql)
                        .bind(&payload)
                        .execute(&mut *tx)
                        .await
                        .expect("insert");
                    tx.commit().await.expect("commit");
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let elapsed = started.elapsed();
        let cpu = postgres_cpu_us(pg.child.id()) - cpu;
        let made = (per_task * tasks) as f64;
        println!(
            "reference, no hub: {name:<34} {:>7.0} tx/s {:>7.1} CPU us/tx",
            made / elapsed.as_secs_f64(),
            cpu as f64 / made
        );
    }
}
