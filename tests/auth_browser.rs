//! The notifications example's sign-in in a real browser: headless Chromium, driven by
//! tests/browser/auth.mjs, signs in with the session cookie, reads across a server restart,
//! reads from another origin with one-time tickets, outlives its session's expiry by refreshing
//! it, and signs out everywhere.
//!
//! Needs `/usr/bin/chromium`, `node` and `npm ci --prefix tests/browser`; the tests are
//! `#[ignore]`d (`cargo test --all-features -- --ignored` runs them).
// The example file is included whole, with its own copy of the examples' logging helper.
#![allow(clippy::duplicate_mod)]

mod common;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/notifications.rs"]
mod notifications;

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use notifications::{App, Config};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_sse::{hub::Hub, serve::Server, Event, Shutdown};

/// One Chromium at a time: the machine's two cores are shared with the servers under test.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The example's server on one port: stopped and started again there on demand, with the same
/// app (sessions, hub, auth), counting the requests it gets by path.
struct Node {
    app: App,
    addr: SocketAddr,
    requests: Arc<Mutex<HashMap<String, usize>>>,
    running: tokio::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl Node {
    async fn start(config: Config) -> Arc<Node> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = Arc::new(Node {
            app: App::new(Hub::builder().history(100).build(), config),
            addr: listener.local_addr().unwrap(),
            requests: Arc::default(),
            running: tokio::sync::Mutex::default(),
        });
        node.run(listener).await;
        node
    }

    /// As the page calls it: `localhost`, the site the cookie belongs to.
    fn base(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }

    async fn run(&self, listener: TcpListener) {
        let shutdown = Shutdown::new();
        let requests = self.requests.clone();
        let service = tower::ServiceBuilder::new()
            .map_request(move |req: http::Request<hyper::body::Incoming>| {
                let mut requests = requests.lock().unwrap();
                *requests.entry(req.uri().path().to_owned()).or_default() += 1;
                req
            })
            .service(notifications::service(&self.app, &shutdown));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            Server::new(listener)
                .shutdown(&shutdown, None)
                .serve_with_graceful_shutdown(service, async {
                    let _ = stopped.await;
                })
                .await;
        });
        *self.running.lock().await = Some((stop, task));
    }

    /// Stops the server (its streams end, each telling its browser to come back), runs
    /// `meanwhile`, and starts the server again on the same port.
    async fn restart(&self, meanwhile: impl Future<Output = ()>) {
        if let Some((stop, task)) = self.running.lock().await.take() {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the server stopped in time")
                .unwrap();
        }
        meanwhile.await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.run(listener).await;
    }

    fn requests(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    async fn publish(&self, user: &str, title: &str) {
        let data = json!({ "title": title, "body": "b" }).to_string();
        let event = Event::builder()
            .event("notification")
            .data(data)
            .build()
            .unwrap();
        self.app
            .hub()
            .topic(&format!("user:{user}"))
            .publish(event)
            .await
            .unwrap();
    }
}

/// What the script may ask of the test: restart the node (publishing while it is down), and
/// how many requests a user's stream route got.
async fn control(node: Arc<Node>) -> String {
    async fn restart(
        State(node): State<Arc<Node>>,
        Path(user): Path<String>,
        Json(titles): Json<Vec<String>>,
    ) -> &'static str {
        let down = node.clone();
        node.restart(async move {
            for title in &titles {
                down.publish(&user, title).await;
            }
        })
        .await;
        "restarted"
    }
    async fn requests(State(node): State<Arc<Node>>, Path(user): Path<String>) -> String {
        node.requests(&format!("/users/{user}/events")).to_string()
    }
    let router = Router::new()
        .route("/restart/{user}", post(restart))
        .route("/requests/{user}", get(requests))
        .with_state(node);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// The script's arguments for `scenario` on `node`, with a control server for it.
async fn args(scenario: &str, node: &Arc<Node>, elsewhere: Option<String>) -> Vec<String> {
    let mut args = vec![
        scenario.to_owned(),
        node.base(),
        control(node.clone()).await,
    ];
    args.extend(elsewhere);
    args
}

/// What the script printed for `scenario`.
fn shown(results: Value, scenario: &str) -> Value {
    println!("browser results: {results}");
    results[scenario].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node and `npm ci --prefix tests/browser`"]
async fn a_signed_in_page_reads_its_own_stream_across_a_restart() {
    let _alone = BROWSER.lock().await;
    let node = Node::start(Config::default()).await;
    let results = common::run_in_chromium("auth.mjs", &args("cookies", &node, None).await).await;
    let got = shown(results, "cookies");

    // Each page reads its user's notifications and the ones to everyone, never the other's.
    let before = &got["before"];
    assert_eq!(
        before["alice"],
        json!(["for everyone", "for alice"]),
        "{got}"
    );
    assert_eq!(before["bob"], json!(["for everyone", "for bob"]), "{got}");
    assert_eq!(before["who"], json!(["alice", "bob"]), "{got}");
    assert_eq!(before["bobAsksForAlice"], 403, "{got}");
    assert_eq!(before["nobodyAsksForAlice"], 401, "{got}");
    assert_eq!(
        before["cookie"],
        json!({ "httpOnly": true, "sameSite": "Lax" }),
        "{got}"
    );
    assert_eq!(before["scriptSeesCookie"], false, "{got}");

    // After the restart, each page came back by itself with its cookie and got what was
    // published while the server was down, then the live one: no gap, no duplicate.
    assert_eq!(got["restart"], 200, "{got}");
    assert_eq!(
        got["alice"],
        json!([
            "after the restart",
            "while down 2",
            "while down 1",
            "for everyone",
            "for alice"
        ]),
        "{got}"
    );
    assert_eq!(
        got["bob"],
        json!(["bob after the restart", "for everyone", "for bob"]),
        "{got}"
    );
    assert_eq!(got["statuses"], json!(["connected", "connected"]), "{got}");
    assert!(node.requests("/users/alice/events") >= 2, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node and `npm ci --prefix tests/browser`"]
async fn a_page_on_another_origin_reads_with_tickets_and_mints_a_new_one_each_time() {
    let _alone = BROWSER.lock().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let node = Node::start(Config {
        allow_origin: Some(elsewhere.parse().unwrap()),
        stream_lifetime: Some(Duration::from_secs(2)),
        ..Config::default()
    })
    .await;
    tokio::spawn(notifications::serve_widget(
        listener,
        node.base(),
        std::future::pending(),
    ));
    let results =
        common::run_in_chromium("auth.mjs", &args("tickets", &node, Some(elsewhere)).await).await;
    let got = shown(results, "tickets");

    // Every notification once, in order, across streams that each ended at their lifetime.
    let expected: Vec<String> = (1..=8).rev().map(|i| format!("n{i}")).collect();
    assert_eq!(got["titles"], json!(expected), "{got}");
    assert_eq!(got["who"], "alice", "{got}");
    assert_eq!(got["foreignTicket"], 401, "{got}");
    let stats = node.app.auth().stats();
    // The page minted one ticket per stream; the browser's reconnects with a spent ticket, and
    // the one redeemed from no origin, were refused.
    assert!(stats.tickets_redeemed >= 2, "{stats:?}");
    assert!(stats.tickets_minted > stats.tickets_redeemed, "{stats:?}");
    assert!(stats.bad_tickets >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node and `npm ci --prefix tests/browser`"]
async fn a_stream_ends_at_its_session_s_expiry_and_comes_back_with_the_refreshed_cookie() {
    let _alone = BROWSER.lock().await;
    let node = Node::start(Config {
        session_ttl: Duration::from_secs(6),
        ..Config::default()
    })
    .await;
    let results = common::run_in_chromium("auth.mjs", &args("expiry", &node, None).await).await;
    let got = shown(results, "expiry");

    let expected: Vec<String> = (1..=12).rev().map(|i| format!("n{i}")).collect();
    assert_eq!(got["titles"], json!(expected), "{got}");
    assert_eq!(got["who"], "alice", "{got}");
    // Nothing else ends these streams: a second one means the first reached its expiry.
    assert!(node.requests("/users/alice/events") >= 2, "{got}");
    assert!(node.requests("/session/refresh") >= 1, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node and `npm ci --prefix tests/browser`"]
async fn signing_out_everywhere_stops_every_page_of_the_user_for_good() {
    let _alone = BROWSER.lock().await;
    let node = Node::start(Config::default()).await;
    let results = common::run_in_chromium("auth.mjs", &args("revocation", &node, None).await).await;
    let got = shown(results, "revocation");

    let gone = "signed out everywhere: this page stopped reading";
    let stopped = &got["stopped"];
    assert_eq!(stopped["statuses"], json!([gone, gone]), "{got}");
    assert_eq!(stopped["closed"], true, "{got}");
    assert_eq!(stopped["signedInShown"], false, "{got}");
    // No page came back: the stream route got no request for alice for six seconds.
    let after = &got["after"];
    assert!(
        after[0].as_u64().unwrap() >= 2,
        "both pages had opened: {got}"
    );
    assert_eq!(after[0], after[1], "{got}");
    assert_eq!(got["bob"], json!(["still here"]), "{got}");
    assert_eq!(got["again"][0], "signed in again", "{got}");
    let stats = node.app.auth().stats();
    assert_eq!(
        (stats.revocations, stats.streams_revoked),
        (1, 2),
        "{stats:?}"
    );
}
