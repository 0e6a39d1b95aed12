//! A ticking SSE stream served by plain hyper 1 through `SseLayer`.
//!
//! ```text
//! cargo run --example hyper_ticker --features server
//! # open http://127.0.0.1:3000/ for a page that shows the ticks, or:
//! curl -N http://127.0.0.1:3000/ticks
//! curl -N -H 'Last-Event-ID: 10' http://127.0.0.1:3000/ticks   # resumes at tick 11
//! ```
//!
//! Set `PORT` to listen elsewhere (`PORT=0` picks a free port).

#[path = "support/log.rs"]
mod log;

use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use std::{convert::Infallible, time::Duration};
use tokio::net::TcpListener;
use tokio_stream::wrappers::IntervalStream;
use tower::ServiceBuilder;
use tower_sse::{serve::Server, Event, LastEventId, SseBody, SseLayer};

async fn handle(
    req: Request<Incoming>,
) -> Result<
    Response<Either<SseBody<impl futures_core::Stream<Item = Event>>, Full<bytes::Bytes>>>,
    Infallible,
> {
    if req.uri().path() == "/" {
        let mut res = Response::new(Either::Right(Full::from(PAGE)));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return Ok(res);
    }
    if req.uri().path() != "/ticks" {
        let mut res = Response::new(Either::Right(Full::from("try /ticks\n")));
        *res.status_mut() = StatusCode::NOT_FOUND;
        return Ok(res);
    }
    // Resume after the last tick the client saw, if it tells us.
    let start = req
        .extensions()
        .get::<LastEventId>()
        .and_then(|id| id.parse::<u64>().ok())
        .map_or(0, |n| n + 1);
    let ticks = IntervalStream::new(tokio::time::interval(Duration::from_secs(1)))
        .enumerate()
        .map(move |(i, _)| {
            let n = start + i as u64;
            Event::builder()
                .event("tick")
                .id(n.to_string())
                .data(format!("tick {n}"))
                .build()
                .expect("digits are a valid id")
        });
    Ok(SseBody::from_request(&req, ticks)
        .into_http_response()
        .map(Either::Left))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    log::init();
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("ticker: open http://{}/", listener.local_addr()?);

    let service = ServiceBuilder::new()
        .layer(SseLayer::new().retry(Duration::from_secs(2)))
        .service_fn(handle);

    // HTTP/1.1 and h2c on one port, with send timeouts and TCP_NODELAY.
    Server::new(listener).serve(service).await;
    Ok(())
}

/// A page that shows the ticks as they come, and its connection state.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>tower-sse ticker</title>
<h1>Ticks <small id="status">connecting…</small></h1>
<ol id="ticks"></ol>
<script>
const status = document.getElementById("status");
const ticks = document.getElementById("ticks");
const source = new EventSource("/ticks");
source.onopen = () => { status.textContent = "live"; };
source.onerror = () => { status.textContent = "reconnecting… (it resumes after the last tick)"; };
source.addEventListener("tick", (e) => {
  const li = document.createElement("li");
  li.textContent = `${e.data} (id ${e.lastEventId})`;
  ticks.prepend(li);
});
</script>
</html>
"#;
