//! A live dashboard feed on plain hyper 1: JSON pushed every second, several named event types.
//!
//! ```text
//! cargo run --example live_data --features server
//! ```
//!
//! - `GET /` — a page that renders the feed live
//! - `GET /feed` — the event stream: `price` events (one per symbol) and a `metrics` event each
//!   second; a new client first gets the latest values from the history
//!
//! Served with `tower_sse::serve::Server`, so HTTP/1.1 and HTTP/2 (h2c) both work; Ctrl-C ends
//! every stream with a final event and a come-back `retry` (drawn from 1–5 s, so clients do
//! not all return at once), then the server exits. Set `PORT` to listen
//! elsewhere (`PORT=0` picks a free port).

#[path = "support/log.rs"]
mod log;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::{convert::Infallible, future::Future, time::Duration};
use tower::ServiceBuilder;
use tower_sse::{
    hub::{Hub, Subscription, Topic},
    serve::Server,
    Event, LastEventId, SseBody, SseLayer,
};

/// The symbols whose prices the feed publishes.
pub const SYMBOLS: [&str; 3] = ["ACME", "GLOBEX", "INITECH"];

type Body = Either<SseBody<Subscription>, Full<Bytes>>;

fn handle(feed: &Topic, req: &Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/" => {
            let mut res = Response::new(Either::Right(Full::from(PAGE)));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            res
        }
        "/feed" => {
            // Resume after the last event seen, or start from the latest values.
            let last = req.extensions().get::<LastEventId>();
            let subscription = feed.subscribe_with_recent(last, SYMBOLS.len() + 1);
            // From the request: the layer's context reaches the body wherever this runs, and
            // the response carries its SSE headers from here on.
            SseBody::from_request(req, subscription)
                .into_http_response()
                .map(Either::Left)
        }
        _ => {
            let mut res = Response::new(Either::Right(Full::from("not found\n")));
            *res.status_mut() = StatusCode::NOT_FOUND;
            res
        }
    }
}

/// Publishes prices and metrics to `feed` every `period`, until the task is dropped.
pub async fn produce(feed: Topic, period: Duration) {
    let started = tokio::time::Instant::now();
    let mut prices = [100.0_f64, 250.0, 42.0];
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        for (symbol, price) in SYMBOLS.iter().zip(prices.iter_mut()) {
            // A small random walk (xorshift), enough for a demo.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let step = (seed % 2001) as f64 / 1000.0 - 1.0;
            *price = (*price * (1.0 + step / 100.0)).max(0.01);
            let data =
                serde_json::json!({ "symbol": symbol, "price": (*price * 100.0).round() / 100.0 });
            if let Ok(event) = Event::builder()
                .event("price")
                .data(data.to_string())
                .build()
            {
                feed.publish(event).detach();
            }
        }
        let data = serde_json::json!({
            "uptime_s": started.elapsed().as_secs(),
            "clients": feed.subscribers(),
        });
        if let Ok(event) = Event::builder()
            .event("metrics")
            .data(data.to_string())
            .build()
        {
            feed.publish(event).detach();
        }
    }
}

/// Serves until `shutdown` completes, then waits (up to 10 s) for connections to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    feed: Topic,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let service = ServiceBuilder::new()
        .layer(SseLayer::new().retry(Duration::from_secs(2)))
        .service_fn(move |req: Request<Incoming>| {
            let response = handle(&feed, &req);
            async move { Ok::<_, Infallible>(response) }
        });
    // HTTP/1.1 and h2c, send timeouts, graceful shutdown: one call.
    Server::new(listener)
        .serve_with_graceful_shutdown(service, shutdown)
        .await;
    Ok(())
}

/// The final event every stream gets on shutdown.
pub fn goodbye() -> Option<Event> {
    Event::builder()
        .event("shutdown")
        .data("server restarting")
        .build()
        .ok()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    log::init();
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("live data: open http://{}/", listener.local_addr()?);

    let hub = Hub::builder().history(64).build();
    let feed = hub.topic("feed");
    let producer = tokio::spawn(produce(feed.clone(), Duration::from_secs(1)));
    serve(listener, feed, async move {
        let _ = tokio::signal::ctrl_c().await;
        producer.abort();
        hub.close(goodbye());
    })
    .await?;
    println!("bye");
    Ok(())
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>tower-sse live data</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 36rem; margin: 2rem auto; padding: 0 1rem; }
  table { border-collapse: collapse; width: 100%; }
  td, th { border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; }
  td.price { font-variant-numeric: tabular-nums; }
  .up { color: #080; } .down { color: #b00; }
</style>
<h1>Live prices</h1>
<table><thead><tr><th>Symbol</th><th>Price</th></tr></thead><tbody id="rows"></tbody></table>
<p id="metrics">waiting for data…</p>
<script>
const rows = document.getElementById("rows");
const last = {};
const source = new EventSource("/feed");
source.addEventListener("price", (e) => {
  const p = JSON.parse(e.data);
  let row = document.getElementById("row-" + p.symbol);
  if (!row) {
    row = document.createElement("tr");
    row.id = "row-" + p.symbol;
    row.innerHTML = "<td></td><td class=price></td>";
    row.cells[0].textContent = p.symbol;
    rows.appendChild(row);
  }
  const cell = row.cells[1];
  cell.textContent = p.price.toFixed(2);
  cell.className = "price " + (last[p.symbol] === undefined || p.price >= last[p.symbol] ? "up" : "down");
  last[p.symbol] = p.price;
});
source.addEventListener("metrics", (e) => {
  const m = JSON.parse(e.data);
  document.getElementById("metrics").textContent = `up ${m.uptime_s}s, ${m.clients} client(s) watching`;
});
source.addEventListener("shutdown", (e) => {
  document.getElementById("metrics").textContent = e.data;
});
</script>
</html>
"#;
