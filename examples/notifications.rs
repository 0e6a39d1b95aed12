//! Per-user push notifications on warp 0.4, with `SseLayer` around `warp::service`.
//!
//! ```text
//! cargo run --example notifications --features warp,server
//! ```
//!
//! - `GET /` — a page: pick a user id, watch its notifications, send some
//! - `GET /users/{id}/events` — one user's notification stream: it resumes after
//!   `Last-Event-ID` (a reconnect) or the `lastEventId` query parameter (a page opened again);
//!   a first visit gets the user's last 20 notifications
//! - `POST /users/{id}/notify` — `{"title": "...", "body": "..."}` to one user
//! - `POST /notify` — the same to every user with a stream or pending notifications
//!
//! Each user is one hub topic, so a user who was offline gets what arrived meanwhile (up to the
//! history of 100): the page keeps the notifications it showed and the id of the last one in
//! `localStorage`, and opens its stream with `?lastEventId=` so it continues exactly after it,
//! without a duplicate. One away for longer than the history is told (`history-lost`, shown on
//! the page) and gets the newest 20. Set `PORT` to listen elsewhere (`PORT=0`: a free port); `RUST_LOG` sets
//! what is logged.

#[path = "support/log.rs"]
mod log;

use serde::Deserialize;
use std::{convert::Infallible, time::Duration};
use tower::ServiceBuilder;
use tower_sse::{hub::Hub, serve::Server, Event, LastEventId, SseBody, SseLayer};
use warp::{http::StatusCode, Filter};

const USER_PREFIX: &str = "user:";
/// How many of a user's latest notifications a first visit shows.
const RECENT: usize = 20;

#[derive(Deserialize)]
struct Notification {
    title: String,
    body: String,
}

fn user_id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn notification_event(n: &Notification) -> Option<Event> {
    let data = serde_json::json!({ "title": n.title, "body": n.body });
    Event::builder()
        .event("notification")
        .data(data.to_string())
        .build()
        .ok()
}

/// The warp filter tree, without the SSE layer.
pub fn routes(
    hub: Hub,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    use warp::Reply;
    let with_hub = warp::any().map(move || hub.clone());

    let page = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::html(PAGE).into_response());

    let events = warp::path!("users" / String / "events")
        .and(warp::get())
        // The header, or the `lastEventId` query parameter of a page opened again.
        .and(tower_sse::warp::last_event_id())
        .and(with_hub.clone())
        .map(|id: String, last: Option<LastEventId>, hub: Hub| {
            if !user_id_ok(&id) {
                return StatusCode::BAD_REQUEST.into_response();
            }
            let subscription = hub
                .topic(&format!("{USER_PREFIX}{id}"))
                .subscribe_with_recent(last.as_ref(), RECENT);
            SseBody::new(subscription).into_response()
        });

    let notify_one = warp::path!("users" / String / "notify")
        .and(warp::post())
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::json())
        .and(with_hub.clone())
        .map(|id: String, n: Notification, hub: Hub| {
            let Some(event) = notification_event(&n).filter(|_| user_id_ok(&id)) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            match hub
                .topic(&format!("{USER_PREFIX}{id}"))
                .publish(event)
                .now()
            {
                Some(Ok(id)) => warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({ "id": id })),
                    StatusCode::ACCEPTED,
                )
                .into_response(),
                _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        });

    let notify_all = warp::path!("notify")
        .and(warp::post())
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::json())
        .and(with_hub)
        .map(|n: Notification, hub: Hub| {
            let Some(event) = notification_event(&n) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let mut users = 0;
            for name in hub.topic_names() {
                if name.starts_with(USER_PREFIX)
                    && hub
                        .topic(&name)
                        .publish(event.clone())
                        .now()
                        .is_some_and(|r| r.is_ok())
                {
                    users += 1;
                }
            }
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({ "users": users })),
                StatusCode::ACCEPTED,
            )
            .into_response()
        });

    page.or(events)
        .unify()
        .or(notify_one)
        .unify()
        .or(notify_all)
        .unify()
        .recover(|rejection: warp::Rejection| async move {
            let status = if rejection.is_not_found() {
                StatusCode::NOT_FOUND
            } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
                StatusCode::METHOD_NOT_ALLOWED
            } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            Ok::<_, Infallible>(status.into_response())
        })
        .unify()
}

/// Serves the routes behind `SseLayer` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    hub: Hub,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let service = ServiceBuilder::new()
        .layer(SseLayer::new().retry(Duration::from_secs(3)))
        .service(warp::service(routes(hub)));
    // Streams end once the hub is closed (see `main`); then connections finish on their own.
    Server::new(listener)
        .serve_with_graceful_shutdown(service, shutdown)
        .await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    log::init();
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("notifications: open http://{}/", listener.local_addr()?);
    let hub = Hub::builder().history(100).build();
    let closing = hub.clone();
    serve(listener, hub, async move {
        let _ = tokio::signal::ctrl_c().await;
        closing.close(None);
    })
    .await
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>tower-sse notifications</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
  #list { list-style: none; padding: 0; }
  #list li { border: 1px solid #ddd; border-radius: 6px; padding: .5rem; margin: .5rem 0; }
  #list b { display: block; }
  #status, #sent { color: #777; }
</style>
<h1>Notifications for <input id="user" value="alice" size="10"> <button id="watch">watch</button>
  <small id="status">connecting…</small></h1>
<p><input id="title" placeholder="title"> <input id="body" placeholder="message">
  <button id="one">to this user</button> <button id="all">to everyone</button>
  <span id="sent" role="status"></span></p>
<ul id="list"></ul>
<script>
let source;
const list = document.getElementById("list");
const status = document.getElementById("status");
const sent = document.getElementById("sent");
const user = () => document.getElementById("user").value;
// What this page showed a user, and the id of the last one, survive a closed page. Kept under
// the user being watched, not whatever the box says by the time an event arrives.
let watched = "";
const key = (what) => `notifications:${watched}:${what}`;
const shown = () => JSON.parse(localStorage.getItem(key("shown")) || "[]");

function show(n) {
  const li = document.createElement("li");
  const b = document.createElement("b");
  b.textContent = n.title;
  li.append(b, n.body);
  list.prepend(li);
}

function watch() {
  if (source) source.close();
  watched = user();
  list.innerHTML = "";
  shown().forEach(show);
  const last = localStorage.getItem(key("last"));
  const resume = last ? `?lastEventId=${encodeURIComponent(last)}` : "";
  source = new EventSource(`/users/${encodeURIComponent(watched)}/events${resume}`);
  source.onopen = () => { status.textContent = "connected"; };
  source.onerror = () => { status.textContent = "reconnecting…"; };
  source.addEventListener("notification", (e) => {
    const n = JSON.parse(e.data);
    const kept = shown().concat([n]).slice(-50);
    localStorage.setItem(key("shown"), JSON.stringify(kept));
    localStorage.setItem(key("last"), e.lastEventId);
    show(n);
  });
  source.addEventListener("history-lost", () => {
    status.textContent = "connected (you were away longer than the history: the newest are shown)";
  });
}

async function send(path) {
  sent.textContent = "sending…";
  try {
    const answer = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        title: document.getElementById("title").value || "Hello",
        body: document.getElementById("body").value || "(no text)",
      }),
    });
    if (!answer.ok) {
      sent.textContent = `not sent (${answer.status})`;
      return;
    }
    const reply = await answer.json();
    sent.textContent = reply.users === undefined ? "sent" : `sent to ${reply.users} user(s)`;
  } catch (err) {
    sent.textContent = "not sent: the server cannot be reached";
  }
}
document.getElementById("watch").onclick = watch;
document.getElementById("one").onclick = () => send(`/users/${encodeURIComponent(user())}/notify`);
document.getElementById("all").onclick = () => send("/notify");
watch();
</script>
</html>
"#;
