//! A restart storm, measured (see BENCHMARKS.md): two server processes on one Redis, N SSE
//! connections on node A from a client that, like a load balancer, sends every reconnect to
//! node B, and a publisher posting to B every 100 ms throughout. Node A is then stopped, its
//! streams drained with the chosen policy.
//!
//! ```text
//! cargo run --release --example storm --features axum,server,redis -- --drain waves --wave-s 10
//! cargo run --release --example storm --features axum,server,redis -- --drain immediate
//! cargo run --release --example storm --features axum,server,redis -- --drain immediate --come-back-ms 1000-1000
//! cargo run --release --example storm --features axum,server,redis -- --lifetime-s 60 --ramp-s 60 --run-s 180
//! ```
//!
//! It starts its own `redis-server` (free loopback port, no persistence), two node processes
//! (`serve::Server`, one Redis hub each, topic `storm`), and one client process holding the
//! connections (source addresses 127.0.1.x spread the ports). Each client checks every event's
//! id: the same epoch, the offset one more than the last; it reconnects after the `retry:` its
//! stream ended with, sending `Last-Event-ID`, as a browser does. It prints, per second: the
//! reconnects arriving at B, Redis commands (from `INFO commandstats`), and B's history reads;
//! then peak reconnects per second, gaps, duplicates, history-lost, clients that gave up (a
//! non-200 answer or no connection for 30 s), and whether every client ends on the last event.
//!
//! With `--lifetime-s L` there is no restart: both nodes rotate every stream at `L`, the clients
//! connect over `--ramp-s` seconds (as on a running service) and alternate between the nodes; it
//! reports the reconnect rate per second after the first `L`, against N / L.
//!
//! Options: `--connections N` (10000), `--drain waves|immediate` (waves), `--wave-s W` (10),
//! `--come-back-ms LOW-HIGH` (1000-5000), `--lifetime-s L`, `--ramp-s R` (0), `--run-s S`
//! (40 for a restart, 180 with a lifetime).

use axum::{
    extract::State,
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tower_sse::{
    decode::Decoder, hub::Hub, serve::Server, DrainPolicy, Event, LastEventId, Shutdown, SseBody,
    SseLayer,
};

#[allow(dead_code, unreachable_pub)]
#[path = "support/load.rs"]
mod load;
#[allow(dead_code, unreachable_pub)]
#[path = "support/procs.rs"]
mod procs;

use procs::{redis_query, spawn, start_redis, text};

#[derive(Clone)]
struct Options {
    connections: usize,
    waves: bool,
    wave: Duration,
    come_back: (u64, u64),
    lifetime: Option<Duration>,
    ramp: Duration,
    run: Duration,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let mut o = Options {
            connections: 10_000,
            waves: true,
            wave: Duration::from_secs(10),
            come_back: (1000, 5000),
            lifetime: None,
            ramp: Duration::ZERO,
            run: Duration::ZERO,
        };
        let mut i = 0;
        while i < args.len() {
            let value = args.get(i + 1).cloned().unwrap_or_default();
            let secs = || Duration::from_secs(value.parse().expect("seconds"));
            match args[i].as_str() {
                "--connections" => o.connections = value.parse().expect("a count"),
                "--drain" => o.waves = value == "waves",
                "--wave-s" => o.wave = secs(),
                "--come-back-ms" => {
                    let (low, high) = value.split_once('-').expect("LOW-HIGH");
                    o.come_back = (low.parse().unwrap(), high.parse().unwrap());
                }
                "--lifetime-s" => o.lifetime = Some(secs()),
                "--ramp-s" => o.ramp = secs(),
                "--run-s" => o.run = secs(),
                other => panic!("unknown option {other}"),
            }
            i += 2;
        }
        if o.run.is_zero() {
            o.run = Duration::from_secs(if o.lifetime.is_some() { 180 } else { 40 });
        }
        assert!(
            o.connections <= 19_000,
            "one process holds at most ~19,900 connections"
        );
        o
    }

    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--connections".into(),
            self.connections.to_string(),
            "--drain".into(),
            if self.waves { "waves" } else { "immediate" }.into(),
            "--wave-s".into(),
            self.wave.as_secs().to_string(),
            "--come-back-ms".into(),
            format!("{}-{}", self.come_back.0, self.come_back.1),
            "--ramp-s".into(),
            self.ramp.as_secs().to_string(),
            "--run-s".into(),
            self.run.as_secs().to_string(),
        ];
        if let Some(lifetime) = self.lifetime {
            args.extend(["--lifetime-s".into(), lifetime.as_secs().to_string()]);
        }
        args
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------------
// A node: `GET /sse` streams the topic, `POST /publish` publishes, `GET /stats` counts; stops
// (draining with the policy) when its stdin says `stop`.

async fn node(redis: String, o: Options) {
    let hub = Hub::builder()
        .history(4096)
        .redis(redis::Client::open(redis).expect("redis url"))
        .build();
    let shutdown = Shutdown::new();
    let policy = if o.waves {
        DrainPolicy::Waves(o.wave)
    } else {
        DrainPolicy::Immediate
    };
    let mut layer = SseLayer::new()
        .shutdown(&shutdown)
        .drain(policy)
        .come_back(Duration::from_millis(o.come_back.0)..=Duration::from_millis(o.come_back.1));
    if let Some(lifetime) = o.lifetime {
        layer = layer.max_lifetime(lifetime);
    }
    let app = Router::new()
        .route(
            "/sse",
            get(
                |State(hub): State<Hub>, last: Option<LastEventId>| async move {
                    SseBody::new(hub.topic("storm").subscribe(last.as_ref()))
                },
            ),
        )
        .route(
            "/publish",
            post(|State(hub): State<Hub>, body: String| async move {
                match hub.topic("storm").publish(Event::message(body)).await {
                    Ok(id) => id,
                    Err(_) => "failed".to_owned(),
                }
            }),
        )
        .route(
            "/stats",
            get(|State(hub): State<Hub>| async move { hub.stats().history_reads.to_string() }),
        )
        .with_state(hub);
    let app = tower_layer::Layer::layer(&layer, app);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    println!("LISTENING {}", listener.local_addr().unwrap());
    let stop = async {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            if line == "stop" {
                break;
            }
        }
        println!("DRAINING");
    };
    Server::new(listener)
        .max_connections(19_500)
        .shutdown(&shutdown, None)
        .graceful_timeout(Duration::from_secs(5))
        .serve_with_graceful_shutdown(app, stop)
        .await;
    println!("EXITED");
}

// ---------------------------------------------------------------------------------------------
// The client process: N browser-like clients.

struct Tally {
    open: AtomicUsize,
    /// Clients that connected at least once.
    started: AtomicUsize,
    received: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    epoch_changes: AtomicU64,
    history_lost: AtomicU64,
    gave_up: AtomicU64,
    connect_errors: AtomicU64,
    /// Reconnects (not first connects) per wall-clock second, by the node they reached.
    reconnects: Mutex<BTreeMap<(u64, usize), u64>>,
    /// Each client's last offset.
    last: Vec<AtomicU64>,
}

/// One SSE request to `target` with `Last-Event-ID`; the body, or why not.
async fn open(
    target: SocketAddr,
    source: IpAddr,
    last: Option<&str>,
) -> Result<hyper::body::Incoming, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| e.to_string())?;
    let tcp = socket.connect(target).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).ok();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut request = http::Request::get("/sse")
        .header("host", target.to_string())
        .header("accept", "text/event-stream");
    if let Some(id) = last {
        request = request.header("last-event-id", id);
    }
    let response = send
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    Ok(response.into_body())
}

async fn client(k: usize, nodes: [SocketAddr; 2], lifetime: bool, tally: Arc<Tally>) {
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        1 + (k / 5000) as u8,
        2 + (k % 200) as u8,
    ));
    // Restart: A first, every reconnect to B. Lifetime: alternate.
    let mut at = if lifetime { k % 2 } else { 0 };
    let mut last: Option<(String, u64)> = None;
    let mut first = true;
    let mut down_since: Option<tokio::time::Instant> = None;
    loop {
        let id = last.as_ref().map(|(epoch, n)| format!("{epoch}-{n}"));
        let body = match open(nodes[at], source, id.as_deref()).await {
            Ok(body) => body,
            Err(why) => {
                tally.connect_errors.fetch_add(1, Ordering::Relaxed);
                let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
                if why.starts_with("status") || since.elapsed() > Duration::from_secs(30) {
                    tally.gave_up.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                if !lifetime {
                    at = 1;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        down_since = None;
        if first {
            tally.started.fetch_add(1, Ordering::Relaxed);
        } else {
            *tally
                .reconnects
                .lock()
                .unwrap()
                .entry((unix_secs(), at))
                .or_default() += 1;
        }
        first = false;
        tally.open.fetch_add(1, Ordering::Relaxed);
        let mut decoder = Decoder::new();
        let mut body = body;
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for message in decoder.feed(&data) {
                if message.event == "history-lost" {
                    tally.history_lost.fetch_add(1, Ordering::Relaxed);
                }
                let Some((epoch, n)) = message.last_event_id.rsplit_once('-') else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                if message.event != "message" {
                    continue;
                }
                match &last {
                    Some((e, _)) if e != epoch => {
                        tally.epoch_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    Some((_, m)) if n <= *m => {
                        tally.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Some((_, m)) if n > m + 1 => {
                        tally.gaps.fetch_add(n - m - 1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                tally.received.fetch_add(1, Ordering::Relaxed);
                tally.last[k].store(n, Ordering::Relaxed);
                last = Some((epoch.to_owned(), n));
            }
        }
        tally.open.fetch_sub(1, Ordering::Relaxed);
        let retry = decoder.retry().unwrap_or(3000);
        tokio::time::sleep(Duration::from_millis(retry)).await;
        at = if lifetime { 1 - at } else { 1 };
    }
}

async fn clients(nodes: [SocketAddr; 2], o: Options) {
    let tally = Arc::new(Tally {
        open: AtomicUsize::new(0),
        started: AtomicUsize::new(0),
        received: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        epoch_changes: AtomicU64::new(0),
        history_lost: AtomicU64::new(0),
        gave_up: AtomicU64::new(0),
        connect_errors: AtomicU64::new(0),
        reconnects: Mutex::default(),
        last: (0..o.connections).map(|_| AtomicU64::new(0)).collect(),
    });
    let lifetime = o.lifetime.is_some();
    let gap = o.ramp.checked_div(o.connections as u32).unwrap_or_default();
    let connecting = Arc::new(tokio::sync::Semaphore::new(256));
    let ramp_start = tokio::time::Instant::now();
    for k in 0..o.connections {
        let permit = connecting.clone().acquire_owned().await.unwrap();
        let tally = tally.clone();
        tokio::spawn(async move {
            drop(permit);
            client(k, nodes, lifetime, tally).await;
        });
        // On a schedule, not a sleep per client: sleeps round up to the timer's millisecond,
        // which would stretch the ramp.
        if !gap.is_zero() {
            tokio::time::sleep_until(ramp_start + gap * (k as u32 + 1)).await;
        }
    }
    while tally.started.load(Ordering::Relaxed) < o.connections {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("CONNECTED {}", o.connections);
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => println!(
                "OPEN {} RECEIVED {}",
                tally.open.load(Ordering::Relaxed),
                tally.received.load(Ordering::Relaxed)
            ),
            line = stdin.next_line() => {
                if !matches!(line, Ok(Some(ref l)) if l != "stop") {
                    break;
                }
            }
        }
    }
    for ((sec, at), n) in tally.reconnects.lock().unwrap().iter() {
        println!("R {sec} {at} {n}");
    }
    let t = &*tally;
    let open = t.open.load(Ordering::Relaxed);
    let lasts = t.last.iter().map(|l| l.load(Ordering::Relaxed));
    let (low, high) = lasts.fold((u64::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
    println!(
        "SUMMARY open={open} last_offset_min={low} last_offset_max={high} received={} gaps={} duplicates={} epoch_changes={} history_lost={} gave_up={} connect_errors={}",
        t.received.load(Ordering::Relaxed),
        t.gaps.load(Ordering::Relaxed),
        t.duplicates.load(Ordering::Relaxed),
        t.epoch_changes.load(Ordering::Relaxed),
        t.history_lost.load(Ordering::Relaxed),
        t.gave_up.load(Ordering::Relaxed),
        t.connect_errors.load(Ordering::Relaxed),
    );
    println!("END");
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------------------
// The driver.

/// Total Redis commands so far (those run inside scripts included), from `INFO commandstats`.
async fn redis_calls(port: u16) -> u64 {
    let info = text(&redis_query(port, &["INFO", "commandstats"]).await);
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .filter_map(|(_, rest)| rest.split(',').find_map(|f| f.strip_prefix("calls=")))
        .filter_map(|calls| calls.parse::<u64>().ok())
        .sum()
}

/// B's history reads, from `GET /stats` (0 when it does not answer in time).
async fn node_reads(node: SocketAddr) -> u64 {
    let get = async {
        let tcp = tokio::net::TcpStream::connect(node).await.ok()?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .ok()?;
        tokio::spawn(conn);
        let request = http::Request::get("/stats")
            .header("host", node.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let body = send.send_request(request).await.ok()?.into_body();
        let bytes = body.collect().await.ok()?.to_bytes();
        String::from_utf8_lossy(&bytes).parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

async fn drive(o: Options) {
    let redis = start_redis().await;
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let mut args = vec!["node".to_owned(), url.clone()];
        args.extend(o.to_args());
        let mut proc = spawn(&args).await;
        addrs.push(
            proc.line_starting("LISTENING")
                .await
                .parse::<SocketAddr>()
                .unwrap(),
        );
        nodes.push(proc);
    }
    let (a, b) = (addrs[0], addrs[1]);
    let mut args = vec!["clients".to_owned(), a.to_string(), b.to_string()];
    args.extend(o.to_args());
    let mut clients = spawn(&args).await;
    let connected = tokio::time::timeout(
        Duration::from_secs(120) + o.ramp,
        clients.line_starting("CONNECTED"),
    )
    .await
    .expect("the clients connect");
    println!("{connected} connections open");

    // The publisher: one event to B every 100 ms, from now to the end.
    let published = Arc::new(AtomicU64::new(0));
    let newest = Arc::new(Mutex::new(String::new()));
    let publisher = {
        let (published, newest) = (published.clone(), newest.clone());
        tokio::spawn(async move {
            let mut conn = None;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let n = published.fetch_add(1, Ordering::Relaxed);
                let id = load::publish(b, &mut conn, &format!("event {n}")).await;
                *newest.lock().unwrap() = String::from_utf8_lossy(&id).into_owned();
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = unix_secs();
    let restart = o.lifetime.is_none();
    if restart {
        println!(
            "stopping node A ({})",
            if o.waves {
                format!("Waves({:?})", o.wave)
            } else {
                "Immediate".to_owned()
            }
        );
        let stdin = nodes[0].child.stdin.as_mut().unwrap();
        stdin.write_all(b"stop\n").await.unwrap();
        stdin.flush().await.unwrap();
    }
    println!(
        "{:>4} {:>11} {:>12} {:>14} {:>15}",
        "s", "open (all)", "reconnects", "Redis calls/s", "B history reads"
    );
    let mut calls = redis_calls(redis.port).await;
    let mut reads = node_reads(b).await;
    let reads_at_start = reads;
    // Samples by the wall-clock second they were taken in (a sample under load may take more
    // than a second; the reconnect counts come from the clients, by the same clock).
    let mut samples: BTreeMap<u64, (String, u64, u64)> = BTreeMap::new();
    let mut open_now = String::new();
    let end = tokio::time::Instant::now() + o.run;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        // Drain the client's progress lines; keep the last.
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(1), clients.lines.next_line()).await
        {
            if let Some(rest) = line.strip_prefix("OPEN ") {
                open_now = rest.split_whitespace().next().unwrap_or("").to_owned();
            }
        }
        let now_calls = redis_calls(redis.port).await;
        let now_reads = node_reads(b).await;
        let sample = (
            open_now.clone(),
            now_calls - calls,
            now_reads.saturating_sub(reads),
        );
        samples.insert(unix_secs() - start, sample);
        calls = now_calls;
        reads = now_reads.max(reads);
    }
    // Quiet: the last events reach everyone.
    publisher.abort();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stdin = clients.child.stdin.as_mut().unwrap();
    stdin.write_all(b"stop\n").await.unwrap();
    stdin.flush().await.unwrap();
    let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
    let mut summary = String::new();
    loop {
        let line = clients
            .lines
            .next_line()
            .await
            .unwrap()
            .expect("client output");
        if let Some(rest) = line.strip_prefix("R ") {
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            *per_second.entry(f[0]).or_default() += f[2];
        } else if let Some(rest) = line.strip_prefix("SUMMARY ") {
            summary = rest.to_owned();
        } else if line == "END" {
            break;
        }
    }
    for s in 0..o.run.as_secs() {
        let reconnects = per_second.get(&(start + s)).copied().unwrap_or(0);
        match samples.get(&s) {
            Some((open, calls, reads)) => {
                println!("{s:>4} {open:>11} {reconnects:>12} {calls:>14} {reads:>15}")
            }
            None => println!(
                "{s:>4} {:>11} {reconnects:>12} {:>14} {:>15}",
                "-", "-", "-"
            ),
        }
    }
    let total: u64 = per_second.values().sum();
    let peak = per_second.values().max().copied().unwrap_or(0);
    println!("\nreconnects: {total} in all, peak {peak} per second");
    if restart {
        let wave = o.wave.as_secs_f64().max(1.0);
        println!(
            "peak / (N / wave) = {:.2} (N = {}, wave {:?})",
            peak as f64 / (o.connections as f64 / wave),
            o.connections,
            o.wave
        );
        println!(
            "B's history reads during the run: {}",
            reads - reads_at_start
        );
    } else if let Some(lifetime) = o.lifetime {
        let after = start + lifetime.as_secs();
        let steady: Vec<u64> = (after..start + o.run.as_secs())
            .map(|s| per_second.get(&s).copied().unwrap_or(0))
            .collect();
        let expect = o.connections as f64 / lifetime.as_secs_f64();
        let (min, max) = (
            steady.iter().min().unwrap_or(&0),
            steady.iter().max().unwrap_or(&0),
        );
        println!(
            "after the first {lifetime:?}: {} s, reconnects per second min {min}, max {max}, mean {:.1}; N / L = {expect:.1} (min {:.2}x, max {:.2}x)",
            steady.len(),
            steady.iter().sum::<u64>() as f64 / steady.len().max(1) as f64,
            *min as f64 / expect,
            *max as f64 / expect
        );
    }
    println!(
        "published: {}, the last with id {}",
        published.load(Ordering::Relaxed),
        newest.lock().unwrap()
    );
    println!("clients: {summary}");
    drop(nodes);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("node") => return node(args[2].clone(), Options::parse(&args[3..])).await,
        Some("clients") => {
            let nodes = [args[2].parse().unwrap(), args[3].parse().unwrap()];
            return clients(nodes, Options::parse(&args[4..])).await;
        }
        _ => {}
    }
    let o = Options::parse(&args[1..]);
    println!(
        "{} connections, {}, come-back {}-{} ms, lifetime {:?}; machine: {} cores",
        o.connections,
        if o.waves {
            format!("Waves({:?})", o.wave)
        } else {
            "Immediate".into()
        },
        o.come_back.0,
        o.come_back.1,
        o.lifetime,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    drive(o).await;
}
