//! Authorization over real HTTP: an axum app behind `SseLayer` and `Auth::layer`, with a
//! cookie authorizer, stream tickets, audiences, expiry and revocation; and two nodes on one
//! `redis-server` (those tests are `#[ignore]`d: they need it).

mod common;

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    routing::{get, post as post_route},
    Json, Router,
};
use common::{come_back_retry, RawClient};
use http::request::Parts;
use std::{net::SocketAddr, time::Duration};
use tower_sse::{
    auth::{Auth, Denied, Tickets, REVOKED},
    hub::Hub,
    Event, Grants, LastEventId, NotGranted, SseBody, SseLayer, TopicMatch,
};

#[derive(Clone)]
struct App {
    hub: Hub,
    auth: Auth,
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    let header = parts.headers.get(http::header::COOKIE)?.to_str().ok()?;
    header
        .split(';')
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

/// `session=<user>` is the user; `session=short-<user>` expires in a second.
fn authorizer(parts: &Parts) -> impl std::future::Future<Output = Result<Grants, Denied>> {
    let session = cookie(parts, "session");
    async move {
        let session = session.ok_or(Denied::Unauthenticated)?;
        let (user, short) = match session.strip_prefix("short-") {
            Some(user) => (user.to_owned(), true),
            None => (session, false),
        };
        if user == "banned" {
            return Err(Denied::Forbidden);
        }
        let grants = Grants::new()
            .subject(user.clone())
            .exact(format!("user:{user}"))
            .exact("team");
        Ok(if short {
            grants.expires_in(Duration::from_secs(1))
        } else {
            grants
        })
    }
}

async fn events(
    State(app): State<App>,
    Path(topic): Path<String>,
    grants: Grants,
    last: Option<LastEventId>,
) -> Result<SseBody<tower_sse::hub::Subscription>, NotGranted> {
    let subscription = app.hub.topic(&topic).subscribe(last.as_ref());
    Ok(SseBody::new(subscription.granted(&grants)?))
}

async fn mint(
    State(app): State<App>,
    Path(topic): Path<String>,
    grants: Grants,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, http::StatusCode> {
    let one = grants
        .narrowed([TopicMatch::exact(topic)])
        .map_err(|_| http::StatusCode::FORBIDDEN)?;
    let ticket = app
        .auth
        .mint_ticket(&one, &headers)
        .await
        .map_err(|_| http::StatusCode::SERVICE_UNAVAILABLE)?;
    Ok(Json(serde_json::json!({ "ticket": ticket.value() })))
}

fn app(hub: Hub, auth: Auth) -> Router {
    Router::new()
        .route("/events/{topic}", get(events))
        .route("/tickets/{topic}", post_route(mint))
        .with_state(App {
            hub,
            auth: auth.clone(),
        })
        .layer(auth.layer())
        .layer(SseLayer::new().open_frame(false))
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

fn memory_auth() -> Auth {
    Auth::builder(authorizer).tickets(Tickets::memory()).build()
}

async fn start() -> (SocketAddr, Hub, Auth) {
    let hub = Hub::new();
    let auth = memory_auth();
    (serve(app(hub.clone(), auth.clone())).await, hub, auth)
}

fn session(user: &str) -> String {
    format!("session={user}")
}

/// A POST with these headers; the status and the body.
async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n"
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8(answer).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

async fn ticket_for(addr: SocketAddr, topic: &str, user: &str, origin: Option<&str>) -> String {
    let cookie = session(user);
    let mut headers = vec![("cookie", cookie.as_str())];
    if let Some(origin) = origin {
        headers.push(("origin", origin));
    }
    let (status, body) = post(addr, &format!("/tickets/{topic}"), &headers).await;
    assert_eq!(status, 200, "{body}");
    let body = body.trim();
    // axum answers with a content-length body here (no chunking).
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    json["ticket"].as_str().unwrap().to_owned()
}

/// The whole refusal: status, and that nothing but an empty body follows.
async fn refused(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut headers = headers.to_vec();
    headers.push(("connection", "close"));
    let mut client = RawClient::get(addr, path, &headers).await;
    assert_eq!(client.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(client.header("content-length").as_deref(), Some("0"));
    assert_ne!(
        client.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let (raw, _) = client.read_to_end().await;
    assert!(raw.is_empty(), "nothing streamed: {raw:?}");
    client.status()
}

#[tokio::test]
async fn only_the_signed_in_user_reads_their_stream() {
    let (addr, hub, auth) = start().await;
    let alice = session("alice");
    let mut stream = RawClient::get(addr, "/events/user:alice", &[("cookie", &alice)]).await;
    assert_eq!(stream.status(), 200);
    hub.topic("user:alice")
        .publish(Event::message("for alice"))
        .await
        .unwrap();
    assert_eq!(stream.events(1).await[0].data, "for alice");

    let bob = session("bob");
    assert_eq!(
        refused(addr, "/events/user:alice", &[("cookie", &bob)]).await,
        403
    );
    assert_eq!(refused(addr, "/events/user:alice", &[]).await, 401);
    let banned = session("banned");
    assert_eq!(
        refused(addr, "/events/user:banned", &[("cookie", &banned)]).await,
        403
    );
    let stats = auth.stats();
    assert_eq!((stats.unauthenticated, stats.forbidden), (1, 1));
    assert_eq!(hub.stats().forbidden, 1, "bob's topic refusal, by the hub");
}

#[tokio::test]
async fn a_ticket_opens_one_stream_once_from_its_origin() {
    let (addr, hub, auth) = start().await;
    let origin = "https://app.example";
    let ticket = ticket_for(addr, "user:alice", "alice", Some(origin)).await;
    let path = format!("/events/user:alice?ticket={ticket}");
    let mut stream = RawClient::get(addr, &path, &[("origin", origin)]).await;
    assert_eq!(stream.status(), 200);
    hub.topic("user:alice")
        .publish(Event::message("by ticket"))
        .await
        .unwrap();
    assert_eq!(stream.events(1).await[0].data, "by ticket");

    assert_eq!(
        refused(addr, &path, &[("origin", origin)]).await,
        401,
        "spent"
    );
    let other = ticket_for(addr, "user:alice", "alice", Some(origin)).await;
    let path = format!("/events/user:alice?ticket={other}");
    assert_eq!(
        refused(addr, &path, &[("origin", "https://evil.example")]).await,
        401,
        "another origin"
    );
    let team = ticket_for(addr, "team", "alice", Some(origin)).await;
    let path = format!("/events/user:alice?ticket={team}");
    assert_eq!(
        refused(addr, &path, &[("origin", origin)]).await,
        403,
        "a ticket for another topic"
    );
    // A page on the server's own origin: its `EventSource` sends no `Origin`, but its browser
    // says it is same-origin, to the same host.
    let own = format!("http://{addr}");
    let same = ticket_for(addr, "user:alice", "alice", Some(&own)).await;
    let path = format!("/events/user:alice?ticket={same}");
    let stream = RawClient::get(addr, &path, &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(stream.status(), 200);
    let again = ticket_for(addr, "user:alice", "alice", Some(&own)).await;
    let path = format!("/events/user:alice?ticket={again}");
    assert_eq!(
        refused(addr, &path, &[("sec-fetch-site", "cross-site")]).await,
        401,
        "no Origin and not same-origin"
    );
    let stats = auth.stats();
    assert_eq!(stats.tickets_minted, 5);
    assert_eq!(stats.tickets_redeemed, 3);
    assert_eq!(stats.bad_tickets, 3);
}

#[tokio::test]
async fn an_audience_reaches_its_subjects_live_and_from_history() {
    let (addr, hub, _auth) = start().await;
    let team = hub.topic("team");
    let (alice, bob) = (session("alice"), session("bob"));
    let mut a = RawClient::get(addr, "/events/team", &[("cookie", &alice)]).await;
    let mut b = RawClient::get(addr, "/events/team", &[("cookie", &bob)]).await;
    let first = team.publish(Event::message("all")).await.unwrap();
    team.publish(Event::message("alice only").with_audience(["alice"]))
        .await
        .unwrap();
    team.publish(Event::message("bob only").with_audience(["bob"]))
        .await
        .unwrap();
    team.publish(Event::message("end")).await.unwrap();
    let data =
        |m: Vec<tower_sse::decode::Message>| m.into_iter().map(|m| m.data).collect::<Vec<_>>();
    assert_eq!(data(a.events(3).await), ["all", "alice only", "end"]);
    assert_eq!(data(b.events(3).await), ["all", "bob only", "end"]);

    // Bob resumes from before alice's event: the history holds it, he never gets it.
    let mut again = RawClient::get(
        addr,
        "/events/team",
        &[("cookie", &bob), ("last-event-id", &first)],
    )
    .await;
    assert_eq!(data(again.events(2).await), ["bob only", "end"]);
}

#[tokio::test]
async fn a_stream_ends_at_its_credential_s_expiry_with_a_come_back_block() {
    let (addr, _hub, auth) = start().await;
    let short = session("short-alice");
    let mut stream = RawClient::get(addr, "/events/user:alice", &[("cookie", &short)]).await;
    assert_eq!(stream.status(), 200);
    let (raw, messages) = stream.read_to_end().await;
    assert!(messages.is_empty());
    let retry = come_back_retry(&raw, "credential expired, reconnect");
    assert!((1000..=5000).contains(&retry), "{retry}");
    assert_eq!(auth.stats().authorized, 1);
}

#[tokio::test]
async fn revocation_ends_the_stream_and_refuses_the_reconnect() {
    let (addr, hub, auth) = start().await;
    let alice = session("alice");
    let mut stream = RawClient::get(addr, "/events/user:alice", &[("cookie", &alice)]).await;
    let mut team = RawClient::get(addr, "/events/team", &[("cookie", &alice)]).await;
    let bob = session("bob");
    let mut bystander = RawClient::get(addr, "/events/team", &[("cookie", &bob)]).await;
    hub.topic("user:alice")
        .publish(Event::message("before"))
        .await
        .unwrap();
    assert_eq!(stream.events(1).await[0].data, "before");

    let revocation = auth.revoke("alice");
    assert_eq!(revocation.ended_here(), 2);
    revocation.shared().await.unwrap();
    for client in [&mut stream, &mut team] {
        let (raw, messages) = client.read_to_end().await;
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].event, REVOKED);
        assert_eq!(messages[0].data, r#"{"reason":"revoked"}"#);
        come_back_retry(&raw, "access revoked");
    }
    assert_eq!(
        refused(addr, "/events/user:alice", &[("cookie", &alice)]).await,
        401
    );
    hub.topic("team")
        .publish(Event::message("still here"))
        .await
        .unwrap();
    assert_eq!(bystander.events(1).await[0].data, "still here");
    let stats = auth.stats();
    assert_eq!(
        (stats.revocations, stats.streams_revoked, stats.revoked),
        (1, 2, 1)
    );
}

/// Without an `SseLayer`, nothing can end a stream at its expiry or on revocation: the server
/// is told, and a refusal is still answered.
#[tokio::test(flavor = "current_thread")]
async fn an_auth_layer_without_an_sse_layer_says_what_cannot_apply() {
    use tower::{ServiceBuilder, ServiceExt};
    let hub = Hub::new();
    let auth = memory_auth();
    let service =
        ServiceBuilder::new()
            .layer(auth.layer())
            .service_fn(move |req: http::Request<()>| {
                let grants = req
                    .extensions()
                    .get::<Grants>()
                    .cloned()
                    .unwrap_or_default();
                let subscription = hub.topic("user:alice").subscribe(None).granted(&grants);
                async move {
                    Ok::<_, std::convert::Infallible>(
                        SseBody::new(subscription.unwrap()).into_http_response(),
                    )
                }
            });
    let request = |cookie: Option<&str>| {
        let mut req = http::Request::get("/").header("accept", "text/event-stream");
        if let Some(cookie) = cookie {
            req = req.header("cookie", cookie);
        }
        req.body(()).unwrap()
    };
    let (response, logs) =
        common::logs_of(service.clone().oneshot(request(Some("session=alice")))).await;
    assert_eq!(response.unwrap().status(), 200);
    assert!(logs.contains("without an SseLayer"), "{logs}");
    let (response, logs) = common::logs_of(service.oneshot(request(None))).await;
    assert_eq!(response.unwrap().status(), 401);
    assert!(!logs.contains("without an SseLayer"), "{logs}");
    assert!(logs.contains("no valid credential"), "{logs}");
}

#[cfg(feature = "redis")]
mod two_nodes {
    use super::*;
    use common::redis::RedisServer;

    async fn node(redis: &RedisServer) -> (SocketAddr, Hub, Auth) {
        let hub = Hub::builder().redis(redis.client()).build();
        let auth = Auth::builder(authorizer)
            .tickets(Tickets::redis(redis.client()))
            .share_through(&hub)
            .build();
        (serve(app(hub.clone(), auth.clone())).await, hub, auth)
    }

    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn a_revocation_on_one_node_ends_the_streams_on_the_other() {
        let redis = RedisServer::start().await;
        let (a, _hub_a, auth_a) = node(&redis).await;
        let (b, hub_b, auth_b) = node(&redis).await;
        let alice = session("alice");
        let mut on_b = RawClient::get(b, "/events/user:alice", &[("cookie", &alice)]).await;
        assert_eq!(on_b.status(), 200);
        // Both nodes follow the revocations topic before the revocation is published.
        assert!(
            common::eventually(Duration::from_secs(10), || hub_b.stats().subscribers >= 2).await
        );
        auth_a.revoke("alice").shared().await.unwrap();
        let (_, messages) = on_b.read_to_end().await;
        assert_eq!(messages.last().unwrap().event, REVOKED);
        assert_eq!(
            refused(b, "/events/user:alice", &[("cookie", &alice)]).await,
            401
        );
        assert_eq!(
            refused(a, "/events/user:alice", &[("cookie", &alice)]).await,
            401
        );
        assert_eq!(auth_b.stats().streams_revoked, 1);
        assert_eq!(auth_a.stats().revocations, 1, "its own, once");
    }

    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn a_ticket_minted_on_one_node_is_redeemed_once_on_either() {
        let redis = RedisServer::start().await;
        let (a, _hub_a, _auth_a) = node(&redis).await;
        let (b, hub_b, _auth_b) = node(&redis).await;
        for round in 0..10 {
            let ticket = ticket_for(a, "user:alice", "alice", None).await;
            let path = format!("/events/user:alice?ticket={ticket}");
            let (one, two) =
                tokio::join!(RawClient::get(a, &path, &[]), RawClient::get(b, &path, &[]));
            let mut statuses = [one.status(), two.status()];
            statuses.sort_unstable();
            assert_eq!(statuses, [200, 401], "round {round}: exactly one wins");
        }
        // An audience crosses Redis: bob on node B never sees alice's event.
        let bob = session("bob");
        let reads = hub_b.stats().history_reads;
        let mut team_b = RawClient::get(b, "/events/team", &[("cookie", &bob)]).await;
        // Joined, and B has read the topic's history: what is published from now on is after
        // bob's start (what is published before that read counts as before it).
        assert!(
            common::eventually(Duration::from_secs(10), || {
                let stats = hub_b.stats();
                stats.subscribers >= 2 && stats.history_reads > reads
            })
            .await
        );
        let team = team_on_a_third_node(&redis).await;
        team.publish(Event::message("alice only").with_audience(["alice"]))
            .await
            .unwrap();
        team.publish(Event::message("all")).await.unwrap();
        assert_eq!(team_b.events(1).await[0].data, "all");
    }

    /// The team topic on a third node, publishing only.
    async fn team_on_a_third_node(redis: &RedisServer) -> tower_sse::hub::Topic {
        let hub = Hub::builder().redis(redis.client()).build();
        hub.topic("team")
    }
}

#[cfg(feature = "jwt")]
mod jwt {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use tower_sse::auth::Jwt;

    const SECRET: &[u8] = b"the app's signing secret, 32 bytes+";

    fn bearer(claims: serde_json::Value) -> String {
        let token = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        format!("Bearer {token}")
    }

    #[tokio::test]
    async fn a_bearer_jwt_opens_its_topics_until_its_exp() {
        let hub = Hub::new();
        let auth = Auth::builder(Jwt::hs256(SECRET)).build();
        let addr = serve(app(hub.clone(), auth.clone())).await;
        let now = jsonwebtoken::get_current_timestamp();
        // Long enough that a busy machine still connects before it; the stream ends at it.
        let token =
            bearer(serde_json::json!({ "sub": "alice", "exp": now + 5, "topics": ["user:alice"] }));
        let long = bearer(
            serde_json::json!({ "sub": "alice", "exp": now + 600, "topics": ["user:alice"] }),
        );
        let mut stream =
            RawClient::get(addr, "/events/user:alice", &[("authorization", &token)]).await;
        assert_eq!(stream.status(), 200);
        hub.topic("user:alice")
            .publish(Event::message("signed"))
            .await
            .unwrap();
        assert_eq!(
            refused(addr, "/events/user:bob", &[("authorization", &long)]).await,
            403
        );
        let forged = format!(
            "{}x",
            bearer(serde_json::json!({ "exp": now + 60, "topics": ["user:bob"] }))
        );
        assert_eq!(
            refused(addr, "/events/user:bob", &[("authorization", &forged)]).await,
            401
        );
        let raw_token = long.trim_start_matches("Bearer ");
        let in_url = format!("/events/user:alice?token={raw_token}");
        assert_eq!(refused(addr, &in_url, &[]).await, 401, "never from the URL");
        let (raw, messages) = stream.read_to_end().await;
        assert_eq!(messages[0].data, "signed");
        come_back_retry(&raw, "credential expired, reconnect");
    }
}
