//! A chat server with rooms, on axum: the main example.
//!
//! ```text
//! cargo run --example chat --features axum
//! ```
//!
//! Open the printed URL in two browser windows. POST a message and everyone in the room receives
//! it as a named `message` event with an id; joining and leaving (a closed tab, a lost network)
//! are announced to the room; a client that reconnects sends `Last-Event-ID` and gets the
//! messages it missed. A newcomer sees the room's last 50 messages: join and leave notices are
//! live only (they carry no id and are kept in no history), so they never push messages out.
//! A message the server refuses (too long, or Redis down) stays in the input, with the reason.
//! Set `PORT` to listen elsewhere (`PORT=0` picks a free port); `RUST_LOG` sets what is logged
//! (default `info`).
//!
//! Many servers, one chat: with feature `redis`, `--redis URL` (or `REDIS_URL`) shares the rooms
//! through Redis. A message posted to any server reaches every room member on every server, and a
//! client that reconnects to another server resumes there without a gap.
//!
//! ```text
//! cargo run --example chat --features axum,redis -- --redis redis://127.0.0.1:6379 &
//! PORT=3001 cargo run --example chat --features axum,redis -- --redis redis://127.0.0.1:6379
//! ```
//!
//! With feature `postgres`, `--postgres URL` (or `DATABASE_URL`) shares the rooms through
//! PostgreSQL instead, and every message is stored in a table `chat_messages` and published **in
//! one transaction** (`Topic::publish_in`): a message is in the table if and only if the room
//! received it.
//!
//! ```text
//! cargo run --example chat --features axum,postgres -- --postgres postgres://app@127.0.0.1/app &
//! PORT=3001 cargo run --example chat --features axum,postgres -- --postgres postgres://app@127.0.0.1/app
//! ```
//!
//! The online count in join and leave notices is the server's own, and the page says so ("online
//! on this server"): a count across servers would cost a heartbeat write per server per room on
//! Redis and stay stale for a period after a server dies (see `tower_sse::hub::redis`).
//!
//! - `GET /` — the page
//! - `GET /rooms/{room}/events?user=NAME` — the room's event stream
//! - `POST /rooms/{room}/messages` — `{"user": "...", "text": "..."}`

#[path = "support/log.rs"]
mod log;

use axum::{
    extract::{FromRef, Path, Query, State},
    http::StatusCode,
    response::Html,
    routing::{get, post},
    Json, Router,
};
use futures_util::{stream, Stream, StreamExt};
use serde::Deserialize;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    task::Poll,
    time::Duration,
};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tower_sse::{
    axum::SendTimeoutListener,
    hub::{Hub, Subscription, Topic},
    Disconnect, Event, KeepAlive, LastEventId, SseBody, SseLayer,
};

/// How many past messages a newcomer sees.
const RECENT: usize = 50;
const MAX_TEXT: usize = 2000;
const MAX_NAME: usize = 32;

/// Join and leave notices of each room on this server: live only, no history, no ids.
#[derive(Clone, Default)]
struct Presence(Arc<Mutex<HashMap<String, broadcast::Sender<Event>>>>);

impl Presence {
    fn sender(&self, room: &str) -> broadcast::Sender<Event> {
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        rooms.retain(|_, sender| sender.receiver_count() > 0);
        rooms
            .entry(room.to_owned())
            .or_insert_with(|| broadcast::channel(64).0)
            .clone()
    }
}

/// Where messages are stored as they are published: nowhere, or (feature `postgres`) a table
/// written in the publish's own transaction.
#[derive(Clone, Default)]
struct Store {
    #[cfg(feature = "postgres")]
    pool: Option<sqlx::PgPool>,
}

#[derive(Clone, FromRef)]
struct AppState {
    hub: Hub,
    presence: Presence,
    store: Store,
}

/// The application: every SSE route is configured by the one `SseLayer` at the bottom.
pub fn app(hub: Hub) -> Router {
    router(hub, Store::default())
}

/// The hub shared with every other server on the Postgres at `url`, and the application on it
/// that stores each message in `chat_messages` in the transaction that publishes it.
///
/// # Errors
///
/// Postgres cannot be reached, or the table cannot be made.
#[cfg(feature = "postgres")]
pub async fn postgres_app(url: &str) -> Result<(Hub, Router), sqlx::Error> {
    let pool = sqlx::PgPool::connect(url).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS chat_messages (\
         id bigserial PRIMARY KEY, room text NOT NULL, author text NOT NULL, \
         body text NOT NULL, event_id text NOT NULL, at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    let hub = Hub::builder().history(500).postgres(pool.clone()).build();
    let app = router(hub.clone(), Store { pool: Some(pool) });
    Ok((hub, app))
}

fn router(hub: Hub, store: Store) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/rooms/{room}/events", get(events))
        .route("/rooms/{room}/messages", post(send))
        .with_state(AppState {
            hub,
            presence: Presence::default(),
            store,
        })
        .layer(
            SseLayer::new()
                .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
                .retry(Duration::from_secs(1)),
        )
}

/// The hub every room lives in: a history of 500 events a room for replay.
pub fn hub() -> Hub {
    Hub::builder().history(500).build()
}

/// The same hub, shared with every other server on the Redis at `url`.
///
/// # Errors
///
/// A `url` that is not a Redis URL.
#[cfg(feature = "redis")]
pub fn redis_hub(url: &str) -> Result<Hub, redis::RedisError> {
    Ok(Hub::builder()
        .history(500)
        .redis(redis::Client::open(url)?)
        .build())
}

/// `--<flag> URL` (or `--<flag>=URL`), or the environment variable `var`.
fn url_of(flag: &str, var: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    let long = format!("--{flag}");
    while let Some(arg) = args.next() {
        if arg == long {
            return args.next();
        }
        if let Some(url) = arg.strip_prefix(&format!("{long}=")) {
            return Some(url.to_owned());
        }
    }
    std::env::var(var).ok().filter(|url| !url.is_empty())
}

#[derive(Deserialize)]
struct Who {
    user: Option<String>,
}

fn clean_name(name: Option<String>) -> String {
    let name: String = name
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    if name.trim().is_empty() {
        "anonymous".to_owned()
    } else {
        name
    }
}

/// Announces a join or a leave to the room's members on this server.
fn announce(notices: &broadcast::Sender<Event>, topic: &Topic, kind: &str, user: &str) {
    let data = serde_json::json!({ "user": user, "online": topic.subscribers() });
    if let Ok(event) = Event::builder().event(kind).data(data.to_string()).build() {
        let _ = notices.send(event); // nobody left to tell is fine
    }
}

async fn events(
    State(hub): State<Hub>,
    State(presence): State<Presence>,
    Path(room): Path<String>,
    Query(who): Query<Who>,
    last: Option<LastEventId>,
    disconnect: Disconnect,
) -> SseBody<impl Stream<Item = Event>> {
    let user = clean_name(who.user);
    let topic = hub.topic(&room);
    // A reconnecting client resumes after its last event; a newcomer sees recent messages.
    let subscription = topic.subscribe_with_recent(last.as_ref(), RECENT);
    let notices = presence.sender(&room);
    SseBody::new(with_presence(
        topic,
        notices,
        user,
        subscription,
        disconnect,
    ))
}

/// One user's stream of the room: its messages, with the room's join and leave notices woven
/// in. The user is announced as joining once the stream starts and as leaving when it ends,
/// however it ends; a response the layer refuses never starts, so it is never announced. The
/// stream ends when the room's subscription does (a shutdown, an eviction).
fn with_presence(
    topic: Topic,
    notices: broadcast::Sender<Event>,
    user: String,
    mut subscription: Subscription,
    disconnect: Disconnect,
) -> impl Stream<Item = Event> {
    let start = async move {
        let mut heard = BroadcastStream::new(notices.subscribe());
        subscription.join(); // counted in the announcement
        announce(&notices, &topic, "join", &user);
        tokio::spawn(async move {
            disconnect.closed().await;
            announce(&notices, &topic, "leave", &user);
        });
        stream::poll_fn(move |cx| {
            if let Poll::Ready(item) = subscription.poll_next_unpin(cx) {
                return Poll::Ready(item);
            }
            loop {
                match heard.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(notice))) => return Poll::Ready(Some(notice)),
                    // Notices missed by a slow reader are only notices: skip on.
                    Poll::Ready(Some(Err(_))) => continue,
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            }
        })
    };
    stream::once(start).flatten()
}

#[derive(Deserialize)]
struct Message {
    user: Option<String>,
    text: String,
}

async fn send(
    State(hub): State<Hub>,
    State(store): State<Store>,
    Path(room): Path<String>,
    Json(message): Json<Message>,
) -> Result<(StatusCode, Json<serde_json::Value>), (StatusCode, &'static str)> {
    let text = message.text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "text must be 1 to 2000 characters",
        ));
    }
    let user = clean_name(message.user);
    let data = serde_json::json!({ "user": user, "text": text });
    let event = Event::builder()
        .event("message")
        .data(data.to_string())
        .build()
        .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "bad event"))?;
    #[cfg(feature = "postgres")]
    if let Some(pool) = &store.pool {
        let id = store_and_publish(pool, &hub.topic(&room), &user, text, event)
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "message not stored");
                (StatusCode::SERVICE_UNAVAILABLE, "publish failed")
            })?;
        return Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "id": id }))));
    }
    let _ = store;
    let id = hub
        .topic(&room)
        .publish(event)
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "publish failed"))?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "id": id }))))
}

/// Stores the message and publishes its event in one transaction: both happen, or neither.
#[cfg(feature = "postgres")]
async fn store_and_publish(
    pool: &sqlx::PgPool,
    topic: &Topic,
    user: &str,
    text: &str,
    event: Event,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let mut tx = pool.begin().await?;
    let id = topic.publish_in(&mut tx, event).await?;
    sqlx::query("INSERT INTO chat_messages (room, author, body, event_id) VALUES ($1, $2, $3, $4)")
        .bind(topic.name())
        .bind(user)
        .bind(text)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    log::init();
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!(
        "chat: open http://{}/ in two windows",
        listener.local_addr()?
    );

    let (app, hub) = match (url_of("postgres", "DATABASE_URL"), url_of("redis", "REDIS_URL")) {
        (Some(_), Some(_)) => {
            return Err(std::io::Error::other(
                "--postgres and --redis: choose one engine",
            ))
        }
        #[cfg(feature = "postgres")]
        (Some(url), None) => {
            println!("chat: rooms shared, and messages stored, through Postgres");
            let (hub, app) = postgres_app(&url).await.map_err(std::io::Error::other)?;
            (app, hub)
        }
        #[cfg(not(feature = "postgres"))]
        (Some(_), None) => return Err(std::io::Error::other(
            "--postgres needs the `postgres` feature: cargo run --example chat --features axum,postgres",
        )),
        #[cfg(feature = "redis")]
        (None, Some(url)) => {
            println!("chat: rooms shared through {url}");
            let hub = redis_hub(&url).map_err(std::io::Error::other)?;
            (app(hub.clone()), hub)
        }
        #[cfg(not(feature = "redis"))]
        (None, Some(_)) => return Err(std::io::Error::other(
            "--redis needs the `redis` feature: cargo run --example chat --features axum,redis",
        )),
        (None, None) => {
            let hub = hub();
            (app(hub.clone()), hub)
        }
    };
    let shutdown_hub = hub;
    // Close clients that accept nothing for 30 s (stalled or vanished peers).
    let listener = SendTimeoutListener::new(listener, Duration::from_secs(30));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            // End every stream, so the server can exit: a final event, then the block that
            // tells each client to come back after 1 to 5 s (each its own delay).
            let bye = Event::builder()
                .event("shutdown")
                .data("server restarting")
                .build()
                .ok();
            shutdown_hub.close(bye);
        })
        .await
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>tower-sse chat</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
  #log { list-style: none; padding: 0; border: 1px solid #ccc; height: 24rem; overflow-y: auto; }
  #log li { padding: .25rem .5rem; border-bottom: 1px solid #eee; white-space: pre-wrap; }
  #log li.notice { color: #777; font-style: italic; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  #text { flex: 1; }
  #status { color: #777; }
  #problem { color: #b00020; min-height: 1.2em; margin: .25rem 0; }
</style>
<h1>Room <span id="room"></span> <small id="status">connecting…</small></h1>
<ul id="log"></ul>
<form id="form">
  <input id="user" placeholder="your name" size="10">
  <input id="text" placeholder="say something" autocomplete="off">
  <button>Send</button>
</form>
<p id="problem" role="alert"></p>
<script>
const params = new URLSearchParams(location.search);
const room = params.get("room") || "lobby";
const user = document.getElementById("user");
user.value = params.get("user") || "guest" + Math.floor(Math.random() * 1000);
document.getElementById("room").textContent = room;
const log = document.getElementById("log");
const status = document.getElementById("status");

function add(text, notice) {
  const li = document.createElement("li");
  li.textContent = text;
  if (notice) li.className = "notice";
  log.appendChild(li);
  log.scrollTop = log.scrollHeight;
}

let source;
let lastId = "";
// (Re)connects as the name in the box: presence follows a rename, and the new connection
// resumes after the last message this page showed (a new EventSource sends no Last-Event-ID,
// so the page passes it in the URL).
function connect() {
  if (source) source.close();
  const resume = lastId ? `&lastEventId=${encodeURIComponent(lastId)}` : "";
  source = new EventSource(`/rooms/${encodeURIComponent(room)}/events?user=${encodeURIComponent(user.value)}${resume}`);
  source.onopen = () => { status.textContent = "online"; };
  source.onerror = () => { status.textContent = "reconnecting…"; };
  source.addEventListener("message", (e) => {
    lastId = e.lastEventId;
    const m = JSON.parse(e.data);
    add(`${m.user}: ${m.text}`);
  });
  source.addEventListener("join", (e) => {
    const m = JSON.parse(e.data);
    add(`${m.user} joined (${m.online} online on this server)`, true);
  });
  source.addEventListener("leave", (e) => {
    const m = JSON.parse(e.data);
    add(`${m.user} left (${m.online} online on this server)`, true);
  });
  source.addEventListener("history-lost", () => add("(the room's history was reset or is shorter than the time you were away: earlier messages may be missing)", true));
  source.addEventListener("evicted", () => add("(connection too slow, reconnecting)", true));
  source.addEventListener("shutdown", (e) => add(`(${e.data})`, true));
}
connect();
user.addEventListener("change", connect);

const problem = document.getElementById("problem");
document.getElementById("form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = document.getElementById("text");
  if (!text.value.trim()) return;
  problem.textContent = "";
  let answer;
  try {
    answer = await fetch(`/rooms/${encodeURIComponent(room)}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: user.value, text: text.value }),
    });
  } catch (err) {
    problem.textContent = "not sent: the server cannot be reached; your message is still here";
    return;
  }
  if (answer.ok) {
    text.value = "";
  } else {
    // The text stays in the box, with the reason, so nothing typed is lost.
    const why = (await answer.text()) || answer.statusText;
    problem.textContent = `not sent (${answer.status}): ${why}`;
  }
});
</script>
</html>
"#;
