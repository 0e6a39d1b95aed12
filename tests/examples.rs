//! End-to-end tests of the example servers over real sockets, checking the events they send.
// Each example file is included whole, with its own copy of the examples' logging helper.
#![allow(clippy::duplicate_mod)]

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/chat.rs"]
mod chat;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/live_data.rs"]
mod live_data;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/notifications.rs"]
mod notifications;

use common::{eventually, h2_client, h2_get, post_json, RawClient};
use http_body_util::BodyExt;
use std::{net::SocketAddr, time::Duration};
use tower_sse::decode::Message;
use tower_sse::{decode::Decoder, hub::Hub};

async fn start_chat() -> (SocketAddr, tower_sse::hub::Hub) {
    let hub = chat::hub();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = chat::app(hub.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hub)
}

fn json(message: &Message) -> serde_json::Value {
    serde_json::from_str(&message.data).unwrap()
}

#[tokio::test]
async fn chat_room_messages_presence_and_replay() {
    let (addr, hub) = start_chat().await;

    let mut alice = RawClient::get(addr, "/rooms/den/events?user=alice", &[]).await;
    assert_eq!(
        alice.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let joined = alice.events(1).await;
    assert_eq!(joined[0].event, "join");
    assert_eq!(json(&joined[0])["user"], "alice");
    assert_eq!(json(&joined[0])["online"], 1);

    let mut bob = RawClient::get(addr, "/rooms/den/events?user=bob", &[]).await;
    // Bob, a newcomer, sees the recent messages (none yet), then his own join: notices are
    // live only, and carry no id.
    let seen = bob.events(1).await;
    assert_eq!(
        (seen[0].event.as_str(), json(&seen[0])["user"].as_str()),
        ("join", Some("bob"))
    );
    assert_eq!(seen[0].last_event_id, "");
    let got = alice.events(1).await;
    assert_eq!(
        (got[0].event.as_str(), json(&got[0])["user"].as_str()),
        ("join", Some("bob"))
    );
    assert_eq!(json(&got[0])["online"], 2);

    // A POST reaches everyone in the room as a named event with an id.
    let (status, body) = post_json(
        addr,
        "/rooms/den/messages",
        r#"{"user":"bob","text":"hi\nall"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    for client in [&mut alice, &mut bob] {
        let got = client.events(1).await;
        assert_eq!(got[0].event, "message");
        assert_eq!(json(&got[0])["text"], "hi\nall");
        assert_eq!(got[0].last_event_id, id["id"].as_str().unwrap());
    }
    // Other rooms hear nothing; bad input is refused.
    let (status, _) = post_json(addr, "/rooms/den/messages", r#"{"text":"   "}"#).await;
    assert_eq!(status, 422);

    // Bob closes his connection: alice is told, for real.
    let bob_last = id["id"].as_str().unwrap().to_owned();
    drop(bob);
    let got = alice.events(1).await;
    assert_eq!(
        (got[0].event.as_str(), json(&got[0])["user"].as_str()),
        ("leave", Some("bob"))
    );
    assert_eq!(json(&got[0])["online"], 1);

    // Messages while bob is away; he reconnects with Last-Event-ID and gets exactly those.
    for text in ["one", "two"] {
        let body = format!(r#"{{"user":"alice","text":"{text}"}}"#);
        assert_eq!(post_json(addr, "/rooms/den/messages", &body).await.0, 202);
    }
    let mut bob = RawClient::get(
        addr,
        "/rooms/den/events?user=bob",
        &[("last-event-id", &bob_last)],
    )
    .await;
    let missed = bob.events(3).await;
    let texts: Vec<String> = missed
        .iter()
        .map(|m| {
            json(m)
                .get("text")
                .map(|t| t.to_string())
                .unwrap_or_else(|| m.event.clone())
        })
        .collect();
    // The messages he missed (his own leave is no message), then his own (re)join: a stream
    // reads the room before its notices.
    assert_eq!(texts, [r#""one""#, r#""two""#, "join"]);
    assert!(
        eventually(Duration::from_secs(5), || hub.topic("den").subscribers()
            == 2)
        .await
    );
}

#[tokio::test]
async fn chat_page_is_served() {
    let (addr, _hub) = start_chat().await;
    let mut client = RawClient::get(addr, "/", &[]).await;
    assert!(client
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let (page, _) = client.read_to_end().await;
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("new EventSource"));
}

#[tokio::test]
async fn live_data_pushes_json_over_http1_and_h2_and_shuts_down_cleanly() {
    let hub = Hub::builder().history(64).build();
    let feed = hub.topic("feed");
    let producer = tokio::spawn(live_data::produce(feed.clone(), Duration::from_millis(20)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(live_data::serve(listener, feed.clone(), async {
        let _ = stopped.await;
    }));

    let mut client = RawClient::get(addr, "/feed", &[]).await;
    let events = client.events(8).await;
    let mut symbols: Vec<String> = events
        .iter()
        .filter(|m| m.event == "price")
        .map(|m| {
            let v = json(m);
            assert!(v["price"].as_f64().unwrap() > 0.0);
            v["symbol"].as_str().unwrap().to_owned()
        })
        .collect();
    symbols.sort();
    symbols.dedup();
    assert_eq!(symbols, ["ACME", "GLOBEX", "INITECH"]);
    let metrics = events
        .iter()
        .find(|m| m.event == "metrics")
        .expect("a metrics event");
    assert!(json(metrics)["clients"].as_u64().unwrap() >= 1);
    assert!(
        events.iter().all(|m| !m.last_event_id.is_empty()),
        "every event has an id"
    );

    // The same feed over HTTP/2.
    let mut h2 = h2_client(addr).await;
    let response = h2.send_request(h2_get(addr, "/feed")).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let mut body = response.into_body();
    let mut decoder = Decoder::new();
    let mut h2_events = Vec::new();
    while h2_events.len() < 4 {
        let frame = body.frame().await.unwrap().unwrap();
        h2_events.extend(decoder.feed(&frame.into_data().unwrap()));
    }
    assert!(h2_events.iter().any(|m| m.event == "price"));

    // Shutdown: every stream ends with the final event and a come-back retry; the server exits.
    producer.abort();
    stop.send(()).unwrap();
    hub.close(live_data::goodbye());
    let (_, rest) = client.read_to_end().await;
    let last = rest.last().expect("a final event");
    assert_eq!(last.event, "shutdown");
    let retry = client.decoder.retry().expect("a come-back retry");
    assert!((1000..=5000).contains(&retry), "{retry}");
    assert!(client.ended, "the response ended");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server exits in bounded time")
        .unwrap()
        .unwrap();
}

async fn start_notifications_with(
    config: notifications::Config,
) -> (SocketAddr, notifications::App) {
    let app = notifications::App::new(Hub::builder().history(100).build(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(notifications::serve(
        listener,
        app.clone(),
        std::future::pending(),
    ));
    (addr, app)
}

async fn start_notifications() -> SocketAddr {
    start_notifications_with(notifications::Config::default())
        .await
        .0
}

/// One request on a fresh connection: the status, the response head and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// The value of a header in a response head (the first one).
fn header_in(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

/// The `cookie` header that sends the session a notifications answer set.
fn session_cookie(head: &str) -> String {
    let set = header_in(head, "set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_owned()
}

/// Signs in to the notifications example: the `cookie` header of the session.
async fn sign_in(addr: SocketAddr, user: &str) -> String {
    let body = format!(r#"{{"user":"{user}"}}"#);
    let json = [("content-type", "application/json")];
    let (status, head, _) = request(addr, "POST", "/session", &json, &body).await;
    assert_eq!(status, 200, "{head}");
    session_cookie(&head)
}

#[tokio::test]
async fn notifications_reach_one_user_or_all_and_resume() {
    let addr = start_notifications().await;
    let (alice_session, bob_session) = (sign_in(addr, "alice").await, sign_in(addr, "bob").await);
    let alice_cookie = [("cookie", alice_session.as_str())];
    let mut alice = RawClient::get(addr, "/users/alice/events", &alice_cookie).await;
    let mut bob = RawClient::get(addr, "/users/bob/events", &[("cookie", &bob_session)]).await;
    assert_eq!(
        alice.header("content-type").as_deref(),
        Some("text/event-stream")
    );

    let (status, _) = post_json(
        addr,
        "/users/alice/notify",
        r#"{"title":"Hi","body":"for alice"}"#,
    )
    .await;
    assert_eq!(status, 202);
    let (status, body) =
        post_json(addr, "/notify", r#"{"title":"All","body":"for everyone"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["users"],
        2
    );

    let got = alice.events(2).await;
    assert_eq!(
        got.iter()
            .map(|m| json(m)["body"].clone())
            .collect::<Vec<_>>(),
        ["for alice", "for everyone"]
    );
    assert!(got.iter().all(|m| m.event == "notification"));
    let alice_last = got.last().unwrap().last_event_id.clone();
    let got = bob.events(1).await;
    assert_eq!(
        json(&got[0])["body"],
        "for everyone",
        "bob never sees alice's"
    );

    // Bad user ids and bad bodies are refused.
    assert_eq!(
        post_json(addr, "/users/a%20b/notify", r#"{"title":"x","body":"y"}"#)
            .await
            .0,
        400
    );
    assert_eq!(
        post_json(addr, "/users/alice/notify", r#"{"nope":1}"#)
            .await
            .0,
        400
    );

    // Alice goes offline, is notified, comes back with Last-Event-ID.
    drop(alice);
    post_json(
        addr,
        "/users/alice/notify",
        r#"{"title":"Later","body":"while away"}"#,
    )
    .await;
    let mut alice = RawClient::get(
        addr,
        "/users/alice/events",
        &[("cookie", &alice_session), ("last-event-id", &alice_last)],
    )
    .await;
    let got = alice.events(1).await;
    assert_eq!(json(&got[0])["body"], "while away");
}

/// The notifications example's sign-in over HTTP: whose stream a session reads, its cookie, a
/// refresh, signing out (here and everywhere) and tickets for the allowed origin.
#[tokio::test]
async fn notifications_sign_in_decides_whose_stream_is_read() {
    let elsewhere = "http://localhost:9";
    let (addr, app) = start_notifications_with(notifications::Config {
        allow_origin: Some(elsewhere.parse().unwrap()),
        ..notifications::Config::default()
    })
    .await;
    let json = [("content-type", "application/json")];
    let (status, head, body) =
        request(addr, "POST", "/session", &json, r#"{"user":"alice"}"#).await;
    assert_eq!(status, 200, "{head}");
    let set = header_in(&head, "set-cookie").unwrap();
    for part in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"] {
        assert!(set.split("; ").any(|p| p == part), "{part}: {set}");
    }
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["user"], "alice");
    assert!(
        answer["expires_in"].as_u64().unwrap() > 3_590_000,
        "{answer}"
    );
    let alice = session_cookie(&head);
    let as_alice = [("cookie", alice.as_str())];
    for bad in [r#"{"user":"a b"}"#, r#"{"user":""}"#, "{}"] {
        assert_eq!(
            request(addr, "POST", "/session", &json, bad).await.0,
            400,
            "{bad}"
        );
    }

    // Only her own stream: another user's is 403, none at all without the cookie.
    let stream = RawClient::get(addr, "/users/alice/events", &as_alice).await;
    assert_eq!(stream.status(), 200);
    drop(stream);
    let other = RawClient::get(addr, "/users/bob/events", &as_alice).await;
    assert_eq!(other.status(), 403);
    let nobody = RawClient::get(addr, "/users/alice/events", &[]).await;
    assert_eq!(nobody.status(), 401);
    assert_eq!(request(addr, "GET", "/session", &[], "").await.0, 401);
    let (status, _, body) = request(addr, "GET", "/session", &as_alice, "").await;
    assert_eq!((status, body.contains(r#""user":"alice""#)), (200, true));

    // A refresh issues another cookie; the old one no longer signs in.
    let (status, head, _) = request(addr, "POST", "/session/refresh", &as_alice, "").await;
    assert_eq!(status, 200);
    let refreshed = session_cookie(&head);
    assert_ne!(refreshed, alice);
    assert_eq!(request(addr, "GET", "/session", &as_alice, "").await.0, 401);
    let as_alice = [("cookie", refreshed.as_str())];
    assert_eq!(request(addr, "GET", "/session", &as_alice, "").await.0, 200);

    // A ticket, minted with the cookie from the allowed origin, opens one stream from there,
    // and the answers carry CORS headers for it, refusals included.
    let minting = [("cookie", refreshed.as_str()), ("origin", elsewhere)];
    assert_eq!(request(addr, "POST", "/tickets", &[], "").await.0, 401);
    let (status, head, body) = request(addr, "POST", "/tickets", &minting, "").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header_in(&head, "access-control-allow-origin").as_deref(),
        Some(elsewhere)
    );
    assert_eq!(
        header_in(&head, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let ticket: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ticket["user"], "alice");
    let path = format!(
        "/users/alice/events?ticket={}",
        ticket["ticket"].as_str().unwrap()
    );
    let from_there = [("origin", elsewhere)];
    let stream = RawClient::get(addr, &path, &from_there).await;
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.header("access-control-allow-origin").as_deref(),
        Some(elsewhere)
    );
    let spent = RawClient::get(addr, &path, &from_there).await;
    assert_eq!(spent.status(), 401);
    assert_eq!(
        spent.header("access-control-allow-origin").as_deref(),
        Some(elsewhere)
    );
    let foreign = RawClient::get(
        addr,
        "/users/alice/events",
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    drop(stream);
    let streams = || app.hub().get("user:alice").map_or(0, |t| t.subscribers());
    assert!(eventually(Duration::from_secs(10), || streams() == 0).await);

    // Signing out everywhere ends every stream of hers with `revoked`, and every session.
    let other_session = sign_in(addr, "alice").await;
    let mut here = RawClient::get(addr, "/users/alice/events", &as_alice).await;
    let mut there =
        RawClient::get(addr, "/users/alice/events", &[("cookie", &other_session)]).await;
    assert_eq!((here.status(), there.status()), (200, 200));
    let (status, _, body) = request(addr, "POST", "/session/revoke-all", &as_alice, "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"ended":2}"#));
    for stream in [&mut here, &mut there] {
        let (_, messages) = stream.read_to_end().await;
        assert_eq!(messages.last().unwrap().event, "revoked");
    }
    for cookie in [refreshed.as_str(), other_session.as_str()] {
        let again = RawClient::get(addr, "/users/alice/events", &[("cookie", cookie)]).await;
        assert_eq!(again.status(), 401);
    }
    // A new sign-in is let through; signing out ends that session.
    let new = sign_in(addr, "alice").await;
    let stream = RawClient::get(addr, "/users/alice/events", &[("cookie", &new)]).await;
    assert_eq!(stream.status(), 200);
    let (status, head, _) = request(addr, "DELETE", "/session", &[("cookie", &new)], "").await;
    assert_eq!(status, 204);
    assert!(header_in(&head, "set-cookie")
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        request(addr, "GET", "/session", &[("cookie", &new)], "")
            .await
            .0,
        401
    );
}

/// A broker that is down: every publish fails at once (a chat on a Redis that went away).
#[derive(Debug)]
struct Down;

impl tower_sse::hub::Broker for Down {
    fn attach(&self, _feed: tower_sse::hub::broker::Feed) {}

    fn publish(
        &self,
        _topic: &str,
        _event: tower_sse::Event,
    ) -> tower_sse::hub::broker::BrokerFuture {
        Box::pin(async {
            Err(tower_sse::hub::PublishError::Unavailable(
                "connection refused".into(),
            ))
        })
    }

    fn follow(&self, _topic: &str) {}

    fn unfollow(&self, _topic: &str) {}
}

async fn serve_chat(hub: Hub) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, chat::app(hub)).await.unwrap() });
    addr
}

/// The example apps as a person uses them, in Chromium (tests/browser/examples.mjs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node and `npm ci --prefix tests/browser`"]
async fn the_examples_keep_their_promises_in_chromium() {
    let chat = serve_chat(chat::hub()).await;
    let failing = serve_chat(Hub::builder().broker(Down).build()).await;
    let notify = start_notifications().await;
    let args = [chat, failing, notify].map(|a| format!("http://{a}"));
    let results = common::run_in_chromium("examples.mjs", &args).await;
    println!("browser results: {results}");

    // A refused message stays in the box with the reason; nothing is posted.
    let too_long = &results["tooLong"];
    assert_eq!(too_long["kept"], true, "{too_long}");
    let problem = too_long["problem"].as_str().unwrap();
    assert!(
        problem.contains("422") && problem.contains("2000"),
        "{problem}"
    );
    assert_eq!(too_long["messages"], serde_json::json!([]), "{too_long}");
    let unavailable = &results["unavailable"];
    assert_eq!(
        unavailable["kept"], "does this get through?",
        "{unavailable}"
    );
    assert!(
        unavailable["problem"].as_str().unwrap().contains("503"),
        "{unavailable}"
    );

    // Six visitors came and went after three messages: a late joiner sees the three messages,
    // and no old join or leave notice (only its own join).
    let presence = &results["presence"];
    assert_eq!(
        presence["late"],
        serde_json::json!(["host: first", "host: second", "host: third"]),
        "{presence}"
    );
    assert_eq!(
        presence["lateNotices"],
        serde_json::json!(["late joined (2 online on this server)"]),
        "{presence}"
    );
    assert!(
        presence["hostNotices"].as_u64().unwrap() >= 12,
        "{presence}"
    );

    // Carol, never online, finds what was sent to her; back later, exactly one more.
    let offline = &results["offline"];
    assert_eq!(
        offline["first"],
        serde_json::json!(["two", "one"]),
        "{offline}"
    );
    assert_eq!(
        offline["again"],
        serde_json::json!(["three", "two", "one"]),
        "{offline}"
    );
    assert_eq!(offline["sent"], "sent", "{offline}");
}
