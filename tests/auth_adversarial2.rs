//! A second hostile pass over the authorization promises, over real sockets: `auth::Jwt`
//! (algorithm pinning, `exp`/`nbf`/`iss`/`aud`/`iat`, topics, where the token is read from,
//! far-future expiries on a paused clock), the tickets' origin rule (hosts, ports, schemes,
//! IPv6, `Sec-Fetch-Site`, HTTP/2 authorities), tickets' methods and their parameter, the
//! revocation's time, a node whose Redis is down at start, `Hub::close`'s final event and
//! audiences, and an `AuthLayer` without an `SseLayer`. Redis tests are
//! `#[ignore = "needs redis-server"]`.
//!
//! Every test quotes the promise it checks. A test that fails because the library breaks its
//! promise is kept: it is the point. `tests/auth_adversarial.rs` is the first pass; nothing
//! here repeats it.

mod common;

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, Uri},
    routing::{get, post},
    Json, Router,
};
use bytes::Bytes;
use common::{come_back_retry, RawClient};
use http::{request::Parts, StatusCode};
use http_body_util::Empty;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tower_sse::{
    auth::{Auth, AuthBuilder, Authorize, Denied, Jwt, TicketError, Tickets, REVOKED},
    hub::{Hub, Subscription},
    Event, Grants, KeepAlive, NotGranted, SseBody, SseLayer, TopicMatch,
};

/// Long enough that only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(20);

/// The HMAC secret of the JWT nodes.
const SECRET: &[u8] = b"the app's HMAC secret, 32 bytes and more";

// =============================================================================================
// The app: an axum router behind `Auth::layer` and (or not) `SseLayer`.
// =============================================================================================

#[derive(Clone)]
struct App {
    hub: Hub,
    auth: Auth,
    /// Every URI the handlers saw.
    seen: Arc<Mutex<Vec<String>>>,
}

async fn events(
    State(app): State<App>,
    Path(topic): Path<String>,
    uri: Uri,
    grants: Grants,
) -> Result<SseBody<Subscription>, NotGranted> {
    app.seen.lock().unwrap().push(uri.to_string());
    let subscription = app.hub.topic(&topic).subscribe(None).granted(&grants)?;
    Ok(SseBody::new(subscription))
}

/// A handler that subscribes without grants: an anonymous subscriber.
async fn anon(State(app): State<App>, Path(topic): Path<String>) -> SseBody<Subscription> {
    SseBody::new(app.hub.topic(&topic).subscribe(None))
}

/// Mints a ticket for one topic (as a POST and, here, as a GET too).
async fn mint(
    State(app): State<App>,
    Path(topic): Path<String>,
    grants: Grants,
    headers: HeaderMap,
) -> Result<Json<Value>, StatusCode> {
    let one = grants
        .narrowed([TopicMatch::exact(topic)])
        .map_err(|_| StatusCode::FORBIDDEN)?;
    match app.auth.mint_ticket(&one, &headers).await {
        Ok(ticket) => Ok(Json(json!({ "ticket": ticket.value() }))),
        Err(TicketError::Refused) => Err(StatusCode::CONFLICT),
        Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE),
    }
}

/// What the handler sees of the query: the URI and the decoded parameter names.
async fn query(
    State(app): State<App>,
    uri: Uri,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Json<Value> {
    app.seen.lock().unwrap().push(uri.to_string());
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    Json(json!({ "uri": uri.to_string(), "keys": keys }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layers {
    /// `SseLayer` outermost, `AuthLayer` inside it.
    Inside,
    /// `AuthLayer` outermost, `SseLayer` inside it.
    Outside,
    /// `AuthLayer` alone.
    Alone,
}

fn router(app: App, layers: Layers, sse: SseLayer) -> Router {
    let auth = app.auth.clone();
    let routes = Router::new()
        .route("/events/{topic}", get(events))
        .route("/anon/{topic}", get(anon))
        .route("/tickets/{topic}", post(mint))
        .route("/mint/{topic}", get(mint))
        .route("/query", get(query))
        .with_state(app);
    match layers {
        Layers::Inside => routes.layer(auth.layer()).layer(sse),
        Layers::Outside => routes.layer(sse).layer(auth.layer()),
        Layers::Alone => routes.layer(auth.layer()),
    }
}

fn sse() -> SseLayer {
    SseLayer::new().open_frame(false)
}

struct Node {
    addr: SocketAddr,
    hub: Hub,
    auth: Auth,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn start_node(
    authorizer: impl Authorize,
    hub: Hub,
    layers: Layers,
    sse: SseLayer,
    configure: impl FnOnce(AuthBuilder) -> AuthBuilder,
) -> Node {
    let auth = configure(Auth::builder(authorizer)).build();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = App {
        hub: hub.clone(),
        auth: auth.clone(),
        seen: seen.clone(),
    };
    let addr = common::serve(router(app, layers, sse)).await;
    Node {
        addr,
        hub,
        auth,
        seen,
    }
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    let header = parts.headers.get(http::header::COOKIE)?.to_str().ok()?;
    header
        .split(';')
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

/// Sign-in times by user, for the cookie authorizer.
#[derive(Clone, Default)]
struct Issued(Arc<Mutex<HashMap<String, SystemTime>>>);

/// `session=<user>` is the user: grants `user:<user>` and `team`, issued when `issued` says.
fn cookie_authorizer(issued: Issued) -> impl Authorize {
    move |parts: &Parts| {
        let user = cookie(parts, "session");
        let at = user
            .as_ref()
            .and_then(|u| issued.0.lock().unwrap().get(u).copied());
        async move {
            let user = user.ok_or(Denied::Unauthenticated)?;
            let mut grants = Grants::new()
                .subject(user.clone())
                .exact(format!("user:{user}"))
                .exact("team");
            if let Some(at) = at {
                grants = grants.issued_at(at);
            }
            Ok(grants)
        }
    }
}

async fn cookie_node(layers: Layers) -> (Node, Issued) {
    let issued = Issued::default();
    let node = start_node(
        cookie_authorizer(issued.clone()),
        Hub::new(),
        layers,
        sse(),
        |b| b.tickets(Tickets::memory()),
    )
    .await;
    (node, issued)
}

async fn jwt_node(jwt: Jwt, sse: SseLayer) -> Node {
    start_node(jwt, Hub::new(), Layers::Inside, sse, |b| b).await
}

// =============================================================================================
// Raw HTTP/1.1 and h2c.
// =============================================================================================

/// A response read on a fresh connection (`connection: close`): everything until the server
/// closes it, or only the head for an event stream. `status` 0: closed before any head.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A request: this request line target, these header lines (none added but `connection:
/// close`).
fn raw(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("connection: close\r\n\r\n");
    req.into_bytes()
}

async fn send(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            if head.contains("content-type: text/event-stream") {
                break;
            }
        }
    }
    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Reply {
            status: 0,
            head: String::from_utf8_lossy(&got).into_owned(),
            body: Vec::new(),
        };
    };
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head,
        body: got[end + 4..].to_vec(),
    }
}

/// A GET (`Host` the server's address, `Accept: text/event-stream` unless one is given).
async fn ask(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Reply {
    let host = addr.to_string();
    let mut all = vec![("host", host.as_str())];
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
    {
        all.push(("accept", "text/event-stream"));
    }
    all.extend_from_slice(headers);
    send(addr, &raw("GET", target, &all)).await
}

/// The refusal promise: this status, an empty body, `Cache-Control: no-store`.
#[track_caller]
fn assert_refused(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
    assert_eq!(
        reply.header("cache-control"),
        Some("no-store"),
        "{what}: {reply:?}"
    );
    assert!(reply.body.is_empty(), "{what}: {reply:?}");
}

/// The status of an h2c request on a fresh connection (0 if the request failed).
async fn h2_status(addr: SocketAddr, req: http::Request<Empty<Bytes>>) -> u16 {
    let mut client = common::h2_client(addr).await;
    match tokio::time::timeout(PATIENCE, client.send_request(req)).await {
        Ok(Ok(response)) => response.status().as_u16(),
        _ => 0,
    }
}

// =============================================================================================
// JWTs.
// =============================================================================================

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn b64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(table[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if !url {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A JWS over these exact header and claims texts, signed with `key` by `alg`.
fn sign_raw(header: &str, claims: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        b64(header.as_bytes(), true),
        b64(claims.as_bytes(), true)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

/// An HS256 token over these claims, with the nodes' secret.
fn hs(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// An HS256 token over this exact claims text (numbers serde_json would rewrite, say).
fn hs_text(claims: &str) -> String {
    sign_raw(
        r#"{"typ":"JWT","alg":"HS256"}"#,
        claims,
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Claims of alice for `user:alice`, alive for ten minutes.
fn alice() -> Value {
    json!({ "sub": "alice", "exp": now() + 600, "topics": ["user:alice"] })
}

/// The status of a stream request to `user:alice` with this `Authorization`.
async fn with_bearer(addr: SocketAddr, authorization: &str) -> u16 {
    ask(
        addr,
        "/events/user:alice",
        &[("authorization", authorization)],
    )
    .await
    .status
}

/// A 2048-bit RSA key made for these tests with `openssl genrsa` (ring, which rcgen uses here,
/// cannot generate RSA keys): PKCS#1 DER, private and public.
const RSA_PRIV_HEX: &str = concat!(
    "308204a30201000282010100b55d371f1432e5ec7258cfd7d1fc21a9479f85e016462f813ae3679fad7ecea5945d2cf9",
    "b6c8222227bbed8a3dbc5873e8f54cacfeea145e34058e76fd2430e8eb78399b69a952777c5e885b1add9342357b337f",
    "f758a82d240ce65528c63595ec45e06988eedf3ff66d585cf96437214a293daad6c5e65139b135a1073022c341e329a6",
    "c72a7f2aa18b0809fdd253ec21d4ff3d94c58aad3a1386331ade733f6f57ab9eec5e1461fbabd1ff0401d3133114cf79",
    "35e2d1d517df1905df7de170276ad1ef9a5d3247dfe5ece6b4768418ac9f133d70e828b5da8b1812747b31b26d7f3004",
    "945c38fe1a04d773bbe4efb1471217e881ea382f14bd638811026efb0203010001028201005479920a9e5064cac0aa00",
    "4940abe50be169faa3d90c20e55b05ffc69ebb814a1b7458d6091e67d3abd93b379830c9ac5776261c2ff1dcc1d20e42",
    "80c6c0dc2d293c4aecca06cd7c0d08450fd6501d5e89e59423c7145ae507b52075caf3a392ecc5d154a6acc87c94edf2",
    "69ffd97f5a389e43f4766c202e762645d9f6aca38baf2ad9f964d3f84315c16b355ae9db8cc42e299b57ae472a3c1fe0",
    "b39584effdac7aad326600f6380b8c746134433f290746b3885748ed5c25f5dd4f724801f322b6889aea961ba93c3352",
    "18014030c8cf2bb1c8d72cadc561527fed3f4c3937ef8fa7ace1a896ed66e5d431dbbf42159b8f720065acd69eb21101",
    "756b46b84902818100f8ec6c77fcf1d226fe3e509ededa6146711498052d62a98021d36e63a89c7bb9b696368763c43e",
    "b99ec6e79fa65ca99d99ba1b55662795a005d211e3cdad05b8f57ce7ed88bf3c010437c92f3fda09125146b5b3fbb260",
    "7431059320dd36cde4699496f5786472bf6df550008a71ed8d4e695d706451cac326f86706cfcfa01902818100ba851e",
    "521c6d23fdf6ddc1836ea57030e961ad12247da9b7717900270c938323833d2b190a9def06ccdb74cb1e1f5fb5778e23",
    "a653aa1acca09dacbcc1acedc9838a5d4f3169fb189a9af1d80f1f0826d569f1973867738b6ec243ab886f9d0739a5c2",
    "947699ab66610f123e6c0a42519cfeb5b2da49c3b14986134877db1a3302818100ca2414218c4344096e45646adf462f",
    "e0684bf4f79f579395fde218aecd69e5ff760a9dd56c6b1d14d79f66d0fae41cc962e102f962af9a8e0cabfee3234ef2",
    "6ab4cfedf7b328b8ad8aa352b90ffd1b88c87fc766956ad17109ae21407ae3da673665f800f6f77b47811fc90be76185",
    "2b4f15b94f5fe81be4466d4a1cf9fcfd610281803123b51348edf0178e9c69c928b3695559872443ad5d76032060128c",
    "3721fde0b348c03bfeb21131277381d7a97df68726924a0e1de8a8dad44df61e5ca0249d7c8c4d7cf9b5c4337d37e913",
    "551885db454a7e1daafc86526bc1be7648a1af2b2222eb9a958c72bdac407e3bf7d6d416105882a236244cec3e44967b",
    "f727c045028180285fc552b9c510f1fbea9775bf4a4016d380c1ec43de969ce0667b5a48a56c84ca0584540f33b3cd27",
    "10b51d14692de8b5b4ce31c8851d4f7b05e2718e4a346403893eb80b81b7f717f3382a4c4eb5f5f539e97452e8b0c990",
    "66993a2f78cccb6d9409c1fd816a3b5b0b6d5b190455eeff902d9f2a4242c9e5e917a9e0e566ab",
);
const RSA_PUB_HEX: &str = concat!(
    "3082010a0282010100b55d371f1432e5ec7258cfd7d1fc21a9479f85e016462f813ae3679fad7ecea5945d2cf9b6c822",
    "2227bbed8a3dbc5873e8f54cacfeea145e34058e76fd2430e8eb78399b69a952777c5e885b1add9342357b337ff758a8",
    "2d240ce65528c63595ec45e06988eedf3ff66d585cf96437214a293daad6c5e65139b135a1073022c341e329a6c72a7f",
    "2aa18b0809fdd253ec21d4ff3d94c58aad3a1386331ade733f6f57ab9eec5e1461fbabd1ff0401d3133114cf7935e2d1",
    "d517df1905df7de170276ad1ef9a5d3247dfe5ece6b4768418ac9f133d70e828b5da8b1812747b31b26d7f3004945c38",
    "fe1a04d773bbe4efb1471217e881ea382f14bd638811026efb0203010001",
);

/// `alg` is pinned by configuration: "The algorithm is the one given here, never the one the
/// token's header names: a token signed with another (`none` included) is refused" — the
/// classic confusions: an HS256 token whose HMAC secret is the verifier's public key (raw,
/// SPKI DER, PEM, PKCS#1), `none` in any case with or without a signature, a header that
/// names a neighbour algorithm, a header that embeds the attacker's own key (`jwk`), for an
/// ES256 node (rcgen key) and an RS256 node.
#[tokio::test]
async fn jwt_algorithm_confusion_none_and_embedded_keys_are_refused() {
    let claims = alice();
    let claims_text = claims.to_string();
    // ES256, an rcgen P-256 key.
    let ec = rcgen::KeyPair::generate().unwrap();
    let ec_sign = EncodingKey::from_ec_der(&ec.serialize_der());
    let es = jwt_node(
        Jwt::new(
            DecodingKey::from_ec_der(ec.public_key_raw()),
            Algorithm::ES256,
        ),
        sse(),
    )
    .await;
    let genuine = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &ec_sign).unwrap();
    assert_eq!(
        with_bearer(es.addr, &bearer(&genuine)).await,
        200,
        "ES256 control"
    );
    // RS256, the embedded key.
    let rsa_priv = unhex(RSA_PRIV_HEX);
    let rsa_pub = unhex(RSA_PUB_HEX);
    let rs = jwt_node(
        Jwt::new(DecodingKey::from_rsa_der(&rsa_pub), Algorithm::RS256),
        sse(),
    )
    .await;
    let rs_genuine = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_der(&rsa_priv),
    )
    .unwrap();
    assert_eq!(
        with_bearer(rs.addr, &bearer(&rs_genuine)).await,
        200,
        "RS256 control"
    );

    let pem = |label: &str, der: &[u8]| {
        let body = b64(der, false);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let ec_secrets: Vec<Vec<u8>> = vec![
        ec.public_key_raw().to_vec(),
        ec.public_key_der(),
        ec.public_key_pem().into_bytes(),
        ec.public_key_pem().trim_end().as_bytes().to_vec(),
    ];
    let rs_secrets: Vec<Vec<u8>> = vec![
        rsa_pub.clone(),
        pem("RSA PUBLIC KEY", &rsa_pub).into_bytes(),
        pem("RSA PUBLIC KEY", &rsa_pub)
            .trim_end()
            .as_bytes()
            .to_vec(),
    ];
    let mut attacks: Vec<(SocketAddr, String, String)> = Vec::new();
    for (addr, secrets, name) in [
        (es.addr, &ec_secrets, "ES256"),
        (rs.addr, &rs_secrets, "RS256"),
    ] {
        for (i, secret) in secrets.iter().enumerate() {
            for (alg, alg_name) in [
                (Algorithm::HS256, "HS256"),
                (Algorithm::HS384, "HS384"),
                (Algorithm::HS512, "HS512"),
            ] {
                let header = format!(r#"{{"typ":"JWT","alg":"{alg_name}"}}"#);
                let token = sign_raw(
                    &header,
                    &claims_text,
                    &EncodingKey::from_secret(secret),
                    alg,
                );
                attacks.push((
                    addr,
                    token,
                    format!("{name} node, {alg_name} with public key #{i}"),
                ));
            }
        }
        let genuine = if name == "ES256" {
            &genuine
        } else {
            &rs_genuine
        };
        let mut parts = genuine.split('.');
        let (_, payload, signature) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        for none in ["none", "None", "NONE", "nOnE"] {
            let header = b64(
                format!(r#"{{"typ":"JWT","alg":"{none}"}}"#).as_bytes(),
                true,
            );
            attacks.push((
                addr,
                format!("{header}.{payload}."),
                format!("{name} node, alg {none}"),
            ));
            attacks.push((
                addr,
                format!("{header}.{payload}.{signature}"),
                format!("{name} node, alg {none} with the genuine signature"),
            ));
        }
        for other in ["ES384", "RS384", "PS256", "EdDSA"] {
            let header = b64(
                format!(r#"{{"typ":"JWT","alg":"{other}"}}"#).as_bytes(),
                true,
            );
            attacks.push((
                addr,
                format!("{header}.{payload}.{signature}"),
                format!("{name} node, header {other} over the genuine signature"),
            ));
        }
        // The genuine signature over other claims.
        let bob = b64(
            json!({ "sub": "bob", "exp": now() + 600, "topics": ["user:alice"] })
                .to_string()
                .as_bytes(),
            true,
        );
        let header = genuine.split('.').next().unwrap();
        attacks.push((
            addr,
            format!("{header}.{bob}.{signature}"),
            format!("{name} node, other claims under the genuine signature"),
        ));
    }
    // The attacker's own P-256 key, embedded in the header it signs.
    let mine = rcgen::KeyPair::generate().unwrap();
    let point = mine.public_key_raw();
    let (x, y) = (b64(&point[1..33], true), b64(&point[33..65], true));
    let header = format!(
        r#"{{"typ":"JWT","alg":"ES256","jwk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}}}"#
    );
    let token = sign_raw(
        &header,
        &claims_text,
        &EncodingKey::from_ec_der(&mine.serialize_der()),
        Algorithm::ES256,
    );
    attacks.push((
        es.addr,
        token,
        "ES256 node, the attacker's key in `jwk`".into(),
    ));
    let mut let_in = Vec::new();
    for (addr, token, what) in &attacks {
        let status = with_bearer(*addr, &bearer(token)).await;
        if status != 401 {
            let_in.push(format!("{what}: {status}"));
        }
    }
    assert!(let_in.is_empty(), "not refused with 401: {let_in:#?}");
}

/// RFC 7515 §4.1.11 (JWS, which a JWT is): "If any of the listed extension Header Parameters
/// are not understood and supported by the recipient, then the JWS is invalid." `Jwt` is "an
/// Authorize that reads a JWT and makes its grants from the claims"; "Any failure is a `401`".
/// A token whose `crit` lists an extension nobody here understands must not be let in.
#[tokio::test]
async fn jwt_a_crit_extension_it_does_not_understand_is_refused() {
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    let claims = alice().to_string();
    let key = EncodingKey::from_secret(SECRET);
    let control = sign_raw(
        r#"{"typ":"JWT","alg":"HS256"}"#,
        &claims,
        &key,
        Algorithm::HS256,
    );
    assert_eq!(
        with_bearer(node.addr, &bearer(&control)).await,
        200,
        "control"
    );
    let header = r#"{"typ":"JWT","alg":"HS256","crit":["https://app.example/must-check-binding"],"https://app.example/must-check-binding":"tls-exporter"}"#;
    let token = sign_raw(header, &claims, &key, Algorithm::HS256);
    assert_eq!(
        with_bearer(node.addr, &bearer(&token)).await,
        401,
        "a token with `crit: [\"https://app.example/must-check-binding\"]` was let in"
    );
}

/// "The algorithm is the one given here, never the one the token's header names": the key is
/// the one given here too — `kid`, `jku`, `x5u`, `x5c` name no other key, for a token signed
/// with another secret; and they do not stop the right token.
#[tokio::test]
async fn jwt_kid_jku_and_x5u_headers_choose_no_key() {
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    let claims = alice().to_string();
    let right = EncodingKey::from_secret(SECRET);
    let wrong = EncodingKey::from_secret(b"");
    let headers = [
        r#"{"alg":"HS256","kid":"../../../../../../dev/null"}"#,
        r#"{"alg":"HS256","kid":"' OR '1'='1"}"#,
        r#"{"alg":"HS256","jku":"http://127.0.0.1:9/keys.json","kid":"k"}"#,
        r#"{"alg":"HS256","x5u":"http://127.0.0.1:9/cert.pem"}"#,
        r#"{"alg":"HS256","x5c":["MIIB"]}"#,
    ];
    for header in headers {
        let forged = sign_raw(header, &claims, &wrong, Algorithm::HS256);
        assert_eq!(
            with_bearer(node.addr, &bearer(&forged)).await,
            401,
            "{header}, empty secret"
        );
        let good = sign_raw(header, &claims, &right, Algorithm::HS256);
        assert_eq!(
            with_bearer(node.addr, &bearer(&good)).await,
            200,
            "{header}, the secret"
        );
    }
}

/// "`exp` is required and becomes the grants' expiry: the stream ends then"; "Any failure is a
/// `401`": an `exp` that is absent, past, of the wrong type, negative, out of range, or a
/// float, is refused — or, if let in, ends the stream at it.
#[tokio::test]
async fn jwt_exp_of_every_odd_type_is_refused_or_ends_the_stream() {
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    let n = now();
    let cases = [
        r#"{"sub":"alice","topics":["user:alice"]}"#.to_owned(),
        format!(
            r#"{{"sub":"alice","exp":{},"topics":["user:alice"]}}"#,
            n - 1
        ),
        r#"{"sub":"alice","exp":0,"topics":["user:alice"]}"#.to_owned(),
        r#"{"sub":"alice","exp":-1,"topics":["user:alice"]}"#.to_owned(),
        format!(
            r#"{{"sub":"alice","exp":-{},"topics":["user:alice"]}}"#,
            n + 600
        ),
        format!(
            r#"{{"sub":"alice","exp":"{}","topics":["user:alice"]}}"#,
            n + 600
        ),
        r#"{"sub":"alice","exp":null,"topics":["user:alice"]}"#.to_owned(),
        r#"{"sub":"alice","exp":true,"topics":["user:alice"]}"#.to_owned(),
        format!(
            r#"{{"sub":"alice","exp":[{}],"topics":["user:alice"]}}"#,
            n + 600
        ),
        format!(
            r#"{{"sub":"alice","exp":{{"at":{}}},"topics":["user:alice"]}}"#,
            n + 600
        ),
        r#"{"sub":"alice","exp":1e400,"topics":["user:alice"]}"#.to_owned(),
        r#"{"sub":"alice","exp":1.5e9,"topics":["user:alice"]}"#.to_owned(),
        format!(
            r#"{{"sub":"alice","exp":{}.9,"topics":["user:alice"]}}"#,
            n - 2
        ),
        // Two `exp`: a JSON parser may keep either.
        format!(
            r#"{{"sub":"alice","exp":{},"exp":{},"topics":["user:alice"]}}"#,
            n - 10,
            n + 600
        ),
        format!(
            r#"{{"sub":"alice","exp":{},"exp":{},"topics":["user:alice"]}}"#,
            n + 600,
            n - 10
        ),
    ];
    let mut let_in = Vec::new();
    for claims in &cases {
        let status = with_bearer(node.addr, &bearer(&hs_text(claims))).await;
        if status != 401 {
            let_in.push(format!("{claims}: {status}"));
        }
    }
    assert!(let_in.is_empty(), "not refused: {let_in:#?}");
    // A float in the future (a valid NumericDate): refused, or the stream ends at it.
    let claims = format!(
        r#"{{"sub":"alice","exp":{}.5,"topics":["user:alice"]}}"#,
        n + 3
    );
    let auth = bearer(&hs_text(&claims));
    let mut c = RawClient::get(node.addr, "/events/user:alice", &[("authorization", &auth)]).await;
    if c.status() == 200 {
        let (raw, _) = tokio::time::timeout(PATIENCE, c.read_to_end())
            .await
            .unwrap();
        come_back_retry(&raw, "credential expired, reconnect");
    } else {
        assert_eq!(c.status(), 401, "a float exp");
    }
}

/// "Any failure is a `401`, without detail": a token whose `exp` or `iat` is a valid JSON
/// number past what a system time holds (2⁶³ seconds and more) is answered — `401`, or let in
/// with grants that never expire — not by a dropped connection (a panic in the authorizer).
#[tokio::test]
async fn jwt_an_exp_or_iat_past_i64_seconds_is_answered_not_a_dropped_connection() {
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    let n = now();
    let cases = [
        json!({ "sub": "alice", "exp": u64::MAX, "topics": ["user:alice"] }),
        json!({ "sub": "alice", "exp": 1u64 << 63, "topics": ["user:alice"] }),
        json!({ "sub": "alice", "exp": n + 600, "iat": u64::MAX, "topics": ["user:alice"] }),
    ];
    let mut dropped = Vec::new();
    for claims in &cases {
        let reply = ask(
            node.addr,
            "/events/user:alice",
            &[("authorization", &bearer(&hs(claims)))],
        )
        .await;
        if reply.status != 200 && reply.status != 401 {
            dropped.push(format!(
                "{claims}: status {} ({:?})",
                reply.status, reply.head
            ));
        }
    }
    assert_eq!(
        with_bearer(node.addr, &bearer(&hs(&alice()))).await,
        200,
        "the server serves on"
    );
    assert!(dropped.is_empty(), "no answer: {dropped:#?}");
}

/// "`nbf` is checked when present": a token not valid before a time far ahead is refused,
/// whatever form the time takes — an integer, a float (JSON numbers, all valid NumericDates,
/// RFC 7519 §2), a float too large for an integer, a string.
#[tokio::test]
async fn jwt_an_nbf_in_the_future_is_refused_whatever_its_form() {
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    let n = now();
    let exp = n + 600;
    let cases = [
        format!(
            r#"{{"sub":"alice","exp":{exp},"nbf":{},"topics":["user:alice"]}}"#,
            n + 300
        ),
        format!(
            r#"{{"sub":"alice","exp":{exp},"nbf":{}.5,"topics":["user:alice"]}}"#,
            n + 300
        ),
        format!(r#"{{"sub":"alice","exp":{exp},"nbf":1e300,"topics":["user:alice"]}}"#),
        format!(
            r#"{{"sub":"alice","exp":{exp},"nbf":"{}","topics":["user:alice"]}}"#,
            n + 300
        ),
        format!(
            r#"{{"sub":"alice","exp":{exp},"nbf":[{}],"topics":["user:alice"]}}"#,
            n + 300
        ),
    ];
    let control = format!(
        r#"{{"sub":"alice","exp":{exp},"nbf":{},"topics":["user:alice"]}}"#,
        n - 5
    );
    assert_eq!(
        with_bearer(node.addr, &bearer(&hs_text(&control))).await,
        200,
        "control"
    );
    let mut let_in = Vec::new();
    for claims in &cases {
        let status = with_bearer(node.addr, &bearer(&hs_text(claims))).await;
        if status != 401 {
            let_in.push(format!("{claims}: {status}"));
        }
    }
    assert!(let_in.is_empty(), "let in before its nbf: {let_in:#?}");
}

/// `Jwt::issuer`: "Requires this `iss`." A token with no `iss`, with one of the wrong type,
/// or with a list of issuers (RFC 7519 §4.1.1: "a case-sensitive string"), is not from it.
#[tokio::test]
async fn jwt_a_configured_issuer_is_required() {
    let node = jwt_node(Jwt::hs256(SECRET).issuer("https://app.example"), sse()).await;
    let exp = now() + 600;
    let with = |iss: Option<Value>| {
        let mut claims = json!({ "sub": "alice", "exp": exp, "topics": ["user:alice"] });
        if let Some(iss) = iss {
            claims["iss"] = iss;
        }
        bearer(&hs(&claims))
    };
    assert_eq!(
        with_bearer(node.addr, &with(Some(json!("https://app.example")))).await,
        200
    );
    assert_eq!(
        with_bearer(node.addr, &with(Some(json!("https://evil.example")))).await,
        401
    );
    let mut let_in = Vec::new();
    for (what, iss) in [
        ("no iss", None),
        ("iss: 42", Some(json!(42))),
        ("iss: null", Some(Value::Null)),
        (
            "iss: a list",
            Some(json!(["https://evil.example", "https://app.example"])),
        ),
    ] {
        let status = with_bearer(node.addr, &with(iss)).await;
        if status != 401 {
            let_in.push(format!("{what}: {status}"));
        }
    }
    assert!(
        let_in.is_empty(),
        "let in by an issuer-pinned Jwt: {let_in:?}"
    );
}

/// `Jwt::audience`: "Requires this `aud` (one of the token's)." A token with no `aud`, or
/// one of the wrong type, has not this one among its audiences.
#[tokio::test]
async fn jwt_a_configured_audience_is_required() {
    let node = jwt_node(Jwt::hs256(SECRET).audience("sse"), sse()).await;
    let exp = now() + 600;
    let with = |aud: Option<Value>| {
        let mut claims = json!({ "sub": "alice", "exp": exp, "topics": ["user:alice"] });
        if let Some(aud) = aud {
            claims["aud"] = aud;
        }
        bearer(&hs(&claims))
    };
    assert_eq!(with_bearer(node.addr, &with(Some(json!("sse")))).await, 200);
    assert_eq!(
        with_bearer(node.addr, &with(Some(json!(["api", "sse"])))).await,
        200
    );
    assert_eq!(with_bearer(node.addr, &with(Some(json!("api")))).await, 401);
    let mut let_in = Vec::new();
    for (what, aud) in [
        ("no aud", None),
        ("aud: 7", Some(json!(7))),
        ("aud: {}", Some(json!({ "sse": true }))),
    ] {
        let status = with_bearer(node.addr, &with(aud)).await;
        if status != 401 {
            let_in.push(format!("{what}: {status}"));
        }
    }
    assert!(
        let_in.is_empty(),
        "let in by an audience-pinned Jwt: {let_in:?}"
    );
}

/// `Jwt::leeway`: "Tolerance for clock skew on `exp` and `nbf`." With a minute of it, a token
/// whose `nbf` is 30 s ahead, and one whose `exp` passed 30 s ago (an issuer whose clock is
/// behind), are let in.
#[tokio::test]
async fn jwt_leeway_tolerates_skew_on_exp_as_on_nbf() {
    let node = jwt_node(Jwt::hs256(SECRET).leeway(Duration::from_secs(60)), sse()).await;
    let n = now();
    let early = json!({ "sub": "alice", "nbf": n + 30, "exp": n + 600, "topics": ["user:alice"] });
    assert_eq!(
        with_bearer(node.addr, &bearer(&hs(&early))).await,
        200,
        "nbf within the leeway"
    );
    let late = json!({ "sub": "alice", "exp": n - 30, "topics": ["user:alice"] });
    assert_eq!(
        with_bearer(node.addr, &bearer(&hs(&late))).await,
        200,
        "an exp 30 s past, within a 60 s leeway"
    );
}

/// "The topics claim (`topics` by default) is a list of topic names; one that ends with `*` is
/// a prefix; a token without it allows nothing"; "Any failure is a `401`": topics of odd types
/// are refused, `*` alone is every topic but the crate's own ("no grant matches"
/// `tower-sse:revocations`), a `*` inside a name is a letter, and a custom claim is the only
/// one read.
#[tokio::test]
async fn jwt_topics_of_odd_types_and_wildcards() {
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    let exp = now() + 600;
    let token = |topics: Value| {
        bearer(&hs(
            &json!({ "sub": "alice", "exp": exp, "topics": topics }),
        ))
    };
    let mut wrong = Vec::new();
    for topics in [
        json!([1, 2]),
        Value::Null,
        json!("user:alice"),
        json!({ "user:alice": true }),
        json!([["user:alice"]]),
        json!([null]),
        json!(["user:alice", 5]),
        json!(true),
    ] {
        let status = with_bearer(node.addr, &token(topics.clone())).await;
        if status != 401 {
            wrong.push(format!("{topics}: {status}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "topics of odd types not refused: {wrong:?}"
    );
    let none = bearer(&hs(&json!({ "sub": "alice", "exp": exp })));
    assert_refused(
        &ask(node.addr, "/events/user:alice", &[("authorization", &none)]).await,
        403,
        "no topics claim",
    );
    let star = token(json!(["*"]));
    for (path, status) in [
        ("/events/user:bob", 200),
        ("/events/anything", 200),
        ("/events/tower-sse:revocations", 403),
        ("/events/tower-sse:", 403),
    ] {
        assert_eq!(
            ask(node.addr, path, &[("authorization", &star)])
                .await
                .status,
            status,
            "* {path}"
        );
    }
    let mixed = token(json!(["user:*", "a*b", "**"]));
    for (path, status) in [
        ("/events/user:bob", 200),
        ("/events/users:x", 403),
        ("/events/a*b", 200),
        ("/events/ab", 403),
        ("/events/axb", 403),
        ("/events/*x", 200),
        ("/events/x", 403),
    ] {
        assert_eq!(
            ask(node.addr, path, &[("authorization", &mixed)])
                .await
                .status,
            status,
            "{path}"
        );
    }
    let custom = jwt_node(Jwt::hs256(SECRET).topics_claim("perms"), sse()).await;
    let both = bearer(&hs(&json!({
        "sub": "alice", "exp": exp, "topics": ["*"], "perms": ["user:alice"],
    })));
    assert_eq!(
        ask(
            custom.addr,
            "/events/user:alice",
            &[("authorization", &both)]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        ask(custom.addr, "/events/user:bob", &[("authorization", &both)])
            .await
            .status,
        403,
        "`topics` is not read when the claim is `perms`"
    );
}

/// "The token comes from `Authorization: Bearer <token>`, or from a cookie (`from_cookie`). It
/// is never read from the URL ... unless the app says so with `from_query_unsafe`" — the
/// scheme in any case, spaces around the token, but no other scheme, no token without one,
/// and a token in the query never rescues (or replaces) a bad header; a cookie Jwt reads
/// only its cookie (also split over two `Cookie` headers, as HTTP/2 clients send), never a
/// cookie whose name merely contains it, and of two tokens in cookies of its name it takes
/// one, never both grants.
#[tokio::test]
async fn jwt_where_the_token_is_read_from() {
    let exp = now() + 600;
    let good = hs(&alice());
    let bob = hs(&json!({ "sub": "bob", "exp": exp, "topics": ["user:bob"] }));
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    for auth in [
        format!("Bearer {good}"),
        format!("bearer {good}"),
        format!("BEARER {good}"),
        format!("Bearer    {good}   "),
    ] {
        assert_eq!(with_bearer(node.addr, &auth).await, 200, "{auth:.12}");
    }
    for auth in [
        format!("Bearer\t{good}"),
        format!("Bearer{good}"),
        format!("Basic {good}"),
        format!("Token {good}"),
        good.clone(),
        format!("Bearer {good}x"),
        format!("Bearer {good} {good}"),
    ] {
        assert_eq!(with_bearer(node.addr, &auth).await, 401, "{auth:.12}");
    }
    for param in ["token", "access_token", "jwt", "authorization", "bearer"] {
        let target = format!("/events/user:alice?{param}={good}");
        assert_eq!(ask(node.addr, &target, &[]).await.status, 401, "?{param}=");
        let with_bad = ask(node.addr, &target, &[("authorization", "Bearer x.y.z")]).await;
        assert_eq!(with_bad.status, 401, "?{param}= beside a bad header");
    }
    let target = "/events/user:alice?token=x.y.z";
    assert_eq!(
        ask(node.addr, target, &[("authorization", &bearer(&good))])
            .await
            .status,
        200
    );
    let cookie_for = format!("jwt={good}");
    assert_eq!(
        ask(node.addr, "/events/user:alice", &[("cookie", &cookie_for)])
            .await
            .status,
        401
    );

    let by_cookie = jwt_node(Jwt::hs256(SECRET).from_cookie("jwt"), sse()).await;
    let at = by_cookie.addr;
    assert_eq!(
        ask(
            at,
            "/events/user:alice",
            &[("cookie", &format!("jwt={good}"))]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        ask(
            at,
            "/events/user:alice",
            &[("cookie", &format!("a=1; jwt={good}; b=2"))]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        ask(
            at,
            "/events/user:alice",
            &[("cookie", "a=1"), ("cookie", &format!("jwt={good}"))]
        )
        .await
        .status,
        200,
        "two Cookie headers"
    );
    for cookie in [
        format!("xjwt={good}"),
        format!("jwtx={good}"),
        format!("JWT={good}"),
    ] {
        assert_eq!(
            ask(at, "/events/user:alice", &[("cookie", &cookie)])
                .await
                .status,
            401,
            "{cookie:.6}"
        );
    }
    assert_eq!(
        ask(
            at,
            "/events/user:alice",
            &[("authorization", &bearer(&good))]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        ask(at, &format!("/events/user:alice?jwt={good}"), &[])
            .await
            .status,
        401
    );
    let two = format!("jwt={good}; jwt={bob}");
    let opened: Vec<u16> = [
        ask(at, "/events/user:alice", &[("cookie", &two)])
            .await
            .status,
        ask(at, "/events/user:bob", &[("cookie", &two)])
            .await
            .status,
    ]
    .into();
    assert!(
        opened == [200, 403] || opened == [403, 200],
        "two tokens in `jwt` cookies: {opened:?}"
    );
    let mut h2 = common::h2_get(at, "/events/user:alice");
    h2.headers_mut().append("cookie", "a=1".parse().unwrap());
    h2.headers_mut()
        .append("cookie", format!("jwt={good}").parse().unwrap());
    assert_eq!(
        h2_status(at, h2).await,
        200,
        "HTTP/2, the cookie in a second field"
    );

    let by_query = jwt_node(Jwt::hs256(SECRET).from_query_unsafe("token"), sse()).await;
    let at = by_query.addr;
    assert_eq!(
        ask(at, &format!("/events/user:alice?token={good}"), &[])
            .await
            .status,
        200
    );
    assert_eq!(
        ask(at, &format!("/events/user:alice?xtoken={good}"), &[])
            .await
            .status,
        401
    );
    assert_eq!(
        ask(
            at,
            "/events/user:alice",
            &[("authorization", &bearer(&good))]
        )
        .await
        .status,
        401
    );
}

/// "Any failure is a `401`, without detail": tokens of tens of kilobytes of junk, claims
/// nested thousands deep, a forged header nested 100,000 deep (read before the signature is
/// checked), and a header too large for the server are refused (not `200`), and the server
/// serves on; a genuine token with 3,000 topics works.
#[tokio::test]
async fn jwt_huge_and_deep_tokens_are_refused_and_the_server_serves_on() {
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    let junk = "a".repeat(64 * 1024);
    assert_eq!(
        with_bearer(node.addr, &format!("Bearer {junk}")).await,
        401,
        "64 KB of junk"
    );
    let dotted = format!(
        "Bearer {}.{}.{}",
        "e".repeat(20_000),
        "f".repeat(20_000),
        "g".repeat(20_000)
    );
    assert_eq!(
        with_bearer(node.addr, &dotted).await,
        401,
        "three 20 KB segments"
    );
    let deep = format!(
        r#"{{"sub":"alice","exp":{},"topics":["user:alice"],"x":{}{}}}"#,
        now() + 600,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert_eq!(
        with_bearer(node.addr, &bearer(&hs_text(&deep))).await,
        401,
        "claims 5,000 deep"
    );
    // The header is read before the signature is checked: anyone can send this one.
    let deep_header = format!(
        r#"{{"alg":"HS256","x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let token = sign_raw(
        &deep_header,
        &alice().to_string(),
        &EncodingKey::from_secret(b"not the secret"),
        Algorithm::HS256,
    );
    assert_eq!(
        with_bearer(node.addr, &bearer(&token)).await,
        401,
        "a forged header 100,000 deep"
    );
    let huge = format!("Bearer {}", "a".repeat(2 << 20));
    let reply = ask(node.addr, "/events/user:alice", &[("authorization", &huge)]).await;
    assert_ne!(reply.status, 200, "a 2 MB header");
    let topics: Vec<String> = (0..3000).map(|i| format!("room:{i:05}")).collect();
    let many = bearer(&hs(
        &json!({ "sub": "alice", "exp": now() + 600, "topics": topics }),
    ));
    assert_eq!(
        ask(node.addr, "/events/room:02999", &[("authorization", &many)])
            .await
            .status,
        200
    );
    assert_eq!(
        ask(node.addr, "/events/room:3000", &[("authorization", &many)])
            .await
            .status,
        403
    );
    assert_eq!(
        with_bearer(node.addr, &bearer(&hs(&alice()))).await,
        200,
        "serves on"
    );
}

/// Opens a stream to `user:alice` with this `Authorization` and reads it until it ends with
/// the expiry's come-back block (`Ok` with the time it took on tokio's clock), ends otherwise,
/// or is still open after `within` on that clock.
async fn until_expiry_block(
    addr: SocketAddr,
    authorization: &str,
    within: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let host = addr.to_string();
    let req = raw(
        "GET",
        "/events/user:alice",
        &[
            ("host", &host),
            ("accept", "text/event-stream"),
            ("authorization", authorization),
        ],
    );
    tcp.write_all(&req).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = started + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(_) => {
                return Err(format!(
                    "ended otherwise: {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
            Err(_) => {
                return Err(format!(
                    "still open after {within:?} on tokio's clock: {:?}",
                    String::from_utf8_lossy(&got)
                ))
            }
        }
        if got
            .windows(29)
            .any(|w| w == b"credential expired, reconnect")
        {
            return Ok(started.elapsed());
        }
    }
}

const DAY: u64 = 24 * 3600;

/// On a paused clock, the control of the next test: "`exp` ... becomes the grants' expiry: the
/// stream ends then" for an `exp` 20 days ahead (within the 2³¹−1 ms a timer takes).
#[tokio::test(start_paused = true)]
async fn jwt_an_exp_20_days_ahead_ends_the_stream_then_on_a_paused_clock() {
    let node = jwt_node(Jwt::hs256(SECRET), sse().keep_alive(KeepAlive::disabled())).await;
    let token = hs(&json!({ "sub": "alice", "exp": now() + 20 * DAY, "topics": ["user:alice"] }));
    let took = until_expiry_block(node.addr, &bearer(&token), Duration::from_secs(21 * DAY))
        .await
        .unwrap();
    assert!(
        took >= Duration::from_secs(20 * DAY - 60),
        "ended early: {took:?}"
    );
}

/// `Jwt`: "`exp` is required and becomes the grants' expiry: the stream ends then";
/// `Grants::expires_at`: "a stream opened before it ends at it" — for an `exp` 30 days ahead
/// too. (Every other long delay of the crate saturates at 2³¹−1 ms, about 24.8 days; a stream
/// that ended then would reconnect with its still-valid token. Here on a paused clock.)
#[tokio::test(start_paused = true)]
async fn jwt_an_exp_30_days_ahead_still_ends_the_stream_on_a_paused_clock() {
    let node = jwt_node(Jwt::hs256(SECRET), sse().keep_alive(KeepAlive::disabled())).await;
    let token = hs(&json!({ "sub": "alice", "exp": now() + 30 * DAY, "topics": ["user:alice"] }));
    let outcome =
        until_expiry_block(node.addr, &bearer(&token), Duration::from_secs(31 * DAY)).await;
    assert!(
        outcome.is_ok(),
        "a stream whose JWT expires in 30 days: {outcome:?}"
    );
}

/// `Auth::revoke`: "its requests are refused with `401` for `remember_revocations` (those with
/// grants issued after now excepted, counted in whole milliseconds, so that one issued in the
/// same millisecond is refused)"; `Grants::issued_at`: "with a JWT's `iat`, in whole seconds:
/// the same second" counts as issued before it. A JWT whose `iat` is the revocation's second is
/// refused; one issued in a later second (a user who signs out everywhere and signs in again,
/// an app that rotates a credential) is let in.
#[tokio::test]
async fn jwt_a_token_issued_in_a_later_second_than_the_revocation_is_let_in() {
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    let before = hs(
        &json!({ "sub": "alice", "exp": now() + 600, "iat": now() - 60, "topics": ["user:alice"] }),
    );
    // The second the revocation is made in (read before it, so never after it).
    let second = now();
    let _ = node.auth.revoke("alice");
    let same =
        hs(&json!({ "sub": "alice", "exp": now() + 600, "iat": second, "topics": ["user:alice"] }));
    assert_eq!(
        with_bearer(node.addr, &bearer(&before)).await,
        401,
        "the old token"
    );
    assert_eq!(
        with_bearer(node.addr, &bearer(&same)).await,
        401,
        "issued in the revocation's second: fails safe"
    );
    // Into the next whole second, then a token issued then.
    while now() <= second {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after =
        hs(&json!({ "sub": "alice", "exp": now() + 600, "iat": now(), "topics": ["user:alice"] }));
    assert_eq!(
        with_bearer(node.addr, &bearer(&after)).await,
        200,
        "a token issued in a later second"
    );
}

/// `Auth::revoke`: "its open streams on this node end at once with a final `REVOKED` event
/// ... its requests are refused with `401`" — also a stream whose JWT came from an issuer
/// whose clock runs two minutes ahead (`iat` in this server's future, which `exp`/`nbf` skew
/// is tolerated for).
#[tokio::test]
async fn jwt_an_issuer_clock_ahead_does_not_outlive_a_revocation() {
    let node = jwt_node(Jwt::hs256(SECRET), sse()).await;
    let token = hs(&json!({
        "sub": "alice", "exp": now() + 600, "iat": now() + 120, "topics": ["user:alice"],
    }));
    let auth = bearer(&token);
    let mut c = RawClient::get(node.addr, "/events/user:alice", &[("authorization", &auth)]).await;
    assert_eq!(c.status(), 200);
    assert!(common::eventually(PATIENCE, || node.hub.stats().subscribers == 1).await);
    let ended = node.auth.revoke("alice").ended_here();
    let reconnect = with_bearer(node.addr, &auth).await;
    assert_eq!(
        (ended, reconnect),
        (1, 401),
        "streams ended by the revocation, and the reconnect's status"
    );
    let (_, messages) = tokio::time::timeout(PATIENCE, c.read_to_end())
        .await
        .unwrap();
    assert_eq!(messages.last().map(|m| m.event.as_str()), Some(REVOKED));
}

// =============================================================================================
// Tickets: the origin rule.
// =============================================================================================

fn alice_grants() -> Grants {
    Grants::new().subject("alice").exact("user:alice")
}

/// Mints a ticket for alice's topic, bound to this `Origin` (none: no header).
async fn mint_from(auth: &Auth, origin: Option<&str>) -> String {
    let mut headers = HeaderMap::new();
    if let Some(origin) = origin {
        headers.insert("origin", origin.parse().unwrap());
    }
    auth.mint_ticket(&alice_grants(), &headers)
        .await
        .unwrap()
        .value()
        .to_owned()
}

/// A ticket's minting origin, and the header lines of the request that redeems it.
type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>);

/// The status of a stream request with a fresh ticket minted from `minted`, sent with these
/// header lines exactly (`Host` included, or not).
async fn redeem_h1(node: &Node, minted: Option<&str>, headers: &[(&str, &str)]) -> u16 {
    let ticket = mint_from(&node.auth, minted).await;
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    let target = format!("/events/user:alice?ticket={ticket}");
    send(node.addr, &raw("GET", &target, &all)).await.status
}

/// "a ticket minted with `Origin: O` is taken from a request with `Origin: O`, or with no
/// `Origin` when `Sec-Fetch-Site: same-origin` and the request's host (HTTP/1.1 `Host`,
/// HTTP/2 authority) is O's host" — and from nowhere else: other hosts, ports, a trailing
/// dot, userinfo, lists, IPv6 spellings, no `Host`, `Sec-Fetch-Site` of another value or
/// case or first listed as another, an `Origin` that only starts like O; and a ticket minted
/// with no `Origin` is not taken with one.
#[tokio::test]
async fn tickets_are_taken_from_their_origin_and_its_host_only() {
    let (node, _) = cookie_node(Layers::Inside).await;
    let o = Some("http://app.example:3000");
    let same = ("sec-fetch-site", "same-origin");
    let h = |host| ("host", host);
    let taken: [Case<'_>; 5] = [
        (o, vec![h("app.example:3000"), same]),
        (
            o,
            vec![
                h("elsewhere.example"),
                ("origin", "http://app.example:3000"),
            ],
        ),
        (Some("http://[::1]:3000"), vec![h("[::1]:3000"), same]),
        (Some("https://app.example"), vec![h("app.example"), same]),
        (None, vec![h("anything.example")]),
    ];
    for (i, (minted, headers)) in taken.iter().enumerate() {
        assert_eq!(
            redeem_h1(&node, *minted, headers).await,
            200,
            "taken case {i}: {minted:?} {headers:?}"
        );
    }
    let refused: Vec<Case<'_>> = vec![
        (o, vec![h("app.example:3000")]),
        (
            o,
            vec![h("app.example:3000"), ("sec-fetch-site", "same-site")],
        ),
        (
            o,
            vec![h("app.example:3000"), ("sec-fetch-site", "cross-site")],
        ),
        (o, vec![h("app.example:3000"), ("sec-fetch-site", "none")]),
        (
            o,
            vec![h("app.example:3000"), ("sec-fetch-site", "Same-Origin")],
        ),
        // Compared as bytes, by design ("as its bytes (compared as they are, never decoded)").
        (o, vec![h("APP.EXAMPLE:3000"), same]),
        (
            o,
            vec![h("app.example:3000"), ("origin", "HTTP://APP.EXAMPLE:3000")],
        ),
        (
            o,
            vec![
                h("app.example:3000"),
                ("sec-fetch-site", "same-origin, cross-site"),
            ],
        ),
        (
            o,
            vec![
                h("app.example:3000"),
                ("sec-fetch-site", "cross-site"),
                same,
            ],
        ),
        (o, vec![h("app.example:3000"), ("sec-fetch-site", "")]),
        (o, vec![h("other.example:3000"), same]),
        (o, vec![h("app.example:3001"), same]),
        (o, vec![h("app.example"), same]),
        (o, vec![h("app.example.:3000"), same]),
        (o, vec![h("evil@app.example:3000"), same]),
        (o, vec![h("app.example:3000@evil.example"), same]),
        (o, vec![h("app.example:3000.evil.example"), same]),
        (o, vec![h("evil.example"), h("app.example:3000"), same]),
        (o, vec![h("app.example:3000,evil.example"), same]),
        (o, vec![h("http://app.example:3000"), same]),
        (o, vec![same]),
        (
            o,
            vec![
                h("app.example:3000"),
                same,
                ("origin", "http://evil.example"),
            ],
        ),
        (
            o,
            vec![
                h("app.example:3000"),
                same,
                ("origin", "http://app.example:3000/"),
            ],
        ),
        (
            o,
            vec![
                h("app.example:3000"),
                same,
                ("origin", "http://app.example:3000.evil.example"),
            ],
        ),
        (
            o,
            vec![
                h("app.example:3000"),
                same,
                ("origin", "http://app.example"),
            ],
        ),
        (o, vec![h("app.example:3000"), same, ("origin", "null")]),
        (o, vec![h("app.example:3000"), same, ("origin", "")]),
        (
            Some("http://[::1]:3000"),
            vec![h("[0:0:0:0:0:0:0:1]:3000"), same],
        ),
        (Some("http://[::1]:3000"), vec![h("[::1]:3001"), same]),
        (Some("http://[::1]:3000"), vec![h("[::2]:3000"), same]),
        (Some("http://[::1]:3000"), vec![h("::1:3000"), same]),
        (
            Some("http://127.0.0.1:3000"),
            vec![h("127.0.0.2:3000"), same],
        ),
        (
            Some("http://127.0.0.1:3000"),
            vec![h("2130706433:3000"), same],
        ),
        (
            None,
            vec![h("app.example:3000"), ("origin", "http://app.example:3000")],
        ),
    ];
    let mut let_in = Vec::new();
    for (minted, headers) in &refused {
        let status = redeem_h1(&node, *minted, headers).await;
        // A `400` from the HTTP server (two `Host` lines, say) lets nothing in either.
        if status != 401 && status != 400 {
            let_in.push(format!("minted {minted:?}, sent {headers:?}: {status}"));
        }
    }
    // HTTP/1.0 without any Host.
    let ticket = mint_from(&node.auth, o).await;
    let req = format!(
        "GET /events/user:alice?ticket={ticket} HTTP/1.0\r\naccept: text/event-stream\r\nsec-fetch-site: same-origin\r\n\r\n"
    );
    let status = send(node.addr, req.as_bytes()).await.status;
    if status != 401 {
        let_in.push(format!("HTTP/1.0 without Host: {status}"));
    }
    assert!(
        let_in.is_empty(),
        "tickets taken from elsewhere: {let_in:#?}"
    );
}

/// "the request's host (HTTP/1.1 `Host`, HTTP/2 authority)": a request that names its
/// authority (HTTP/2's `:authority`, HTTP/1.1's absolute form) is judged by it, not by a
/// `Host` header that says otherwise; and the rule holds over HTTP/2 as over HTTP/1.1.
#[tokio::test]
async fn tickets_judge_a_request_by_its_authority_not_a_contrary_host() {
    let (node, _) = cookie_node(Layers::Outside).await;
    let o = Some("http://app.example:3000");
    let h2 = |uri: String, headers: &[(&str, &str)]| {
        let mut req = http::Request::get(uri).header("accept", "text/event-stream");
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.body(Empty::<Bytes>::new()).unwrap()
    };
    let same = ("sec-fetch-site", "same-origin");
    let t = mint_from(&node.auth, o).await;
    let ok = h2(
        format!("http://app.example:3000/events/user:alice?ticket={t}"),
        &[same],
    );
    assert_eq!(h2_status(node.addr, ok).await, 200, "HTTP/2, its authority");
    let mut let_in = Vec::new();
    for (uri_host, headers) in [
        (
            "evil.example:3000",
            vec![same, ("host", "app.example:3000")],
        ),
        ("app.example:3001", vec![same]),
        ("app.example:3000", vec![("sec-fetch-site", "cross-site")]),
        ("app.example:3000", vec![]),
        (
            "app.example:3000",
            vec![same, ("origin", "http://evil.example")],
        ),
    ] {
        let t = mint_from(&node.auth, o).await;
        let req = h2(
            format!("http://{uri_host}/events/user:alice?ticket={t}"),
            &headers,
        );
        let status = h2_status(node.addr, req).await;
        if status != 401 {
            let_in.push(format!("HTTP/2 {uri_host} {headers:?}: {status}"));
        }
    }
    let t = mint_from(&node.auth, o).await;
    let target = format!("http://evil.example:3000/events/user:alice?ticket={t}");
    let status = send(
        node.addr,
        &raw(
            "GET",
            &target,
            &[
                ("host", "app.example:3000"),
                same,
                ("accept", "text/event-stream"),
            ],
        ),
    )
    .await
    .status;
    if status != 401 {
        let_in.push(format!(
            "HTTP/1.1 absolute form to evil.example, Host app: {status}"
        ));
    }
    assert!(
        let_in.is_empty(),
        "tickets taken from elsewhere: {let_in:#?}"
    );
}

/// Module docs: a ticket is "taken only from the `Origin` that minted it (a same-origin
/// `EventSource`, which sends no `Origin`, by its `Sec-Fetch-Site: same-origin` and its
/// host)". An origin is scheme, host and port (RFC 6454): a request that states its scheme
/// (h2c's `:scheme: http`, an absolute-form `http://` target) on the minted host is from
/// `http://app.example`, not from the `https://app.example` that minted the ticket (a page
/// an active attacker injects on the plain-HTTP site, say).
#[tokio::test]
async fn tickets_minted_on_https_are_not_taken_by_a_request_that_states_http() {
    let (node, _) = cookie_node(Layers::Inside).await;
    let o = Some("https://app.example");
    let t = mint_from(&node.auth, o).await;
    let req = http::Request::get(format!("http://app.example/events/user:alice?ticket={t}"))
        .header("accept", "text/event-stream")
        .header("sec-fetch-site", "same-origin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let h2 = h2_status(node.addr, req).await;
    let t = mint_from(&node.auth, o).await;
    let target = format!("http://app.example/events/user:alice?ticket={t}");
    let h1 = send(
        node.addr,
        &raw(
            "GET",
            &target,
            &[
                ("host", "app.example"),
                ("sec-fetch-site", "same-origin"),
                ("accept", "text/event-stream"),
            ],
        ),
    )
    .await
    .status;
    assert_eq!(
        (h2, h1),
        (401, 401),
        "(h2c `:scheme: http`, HTTP/1.1 `GET http://...`) redeeming a ticket minted by https://app.example"
    );
}

/// Module docs: a ticket is "taken only from the `Origin` that minted it". `Origin: null` is
/// no origin: every sandboxed iframe, `data:` page and opaque redirect on every site sends
/// it (RFC 6454 §7.3, the Fetch standard). A ticket minted from `null` must not be taken by
/// another `null` (it cannot be told apart), or minting for it must be refused.
#[tokio::test]
async fn tickets_an_opaque_null_origin_binds_nothing() {
    let (node, _) = cookie_node(Layers::Inside).await;
    let mut headers = HeaderMap::new();
    headers.insert("origin", "null".parse().unwrap());
    let Ok(ticket) = node.auth.mint_ticket(&alice_grants(), &headers).await else {
        return; // refused at minting: nothing to redeem
    };
    let target = format!("/events/user:alice?ticket={}", ticket.value());
    let status = ask(node.addr, &target, &[("origin", "null")]).await.status;
    assert_eq!(
        status, 401,
        "a ticket minted from `Origin: null` was taken by a request from `Origin: null`"
    );
}

// =============================================================================================
// Tickets: methods, successors, the parameter.
// =============================================================================================

/// "only by a `GET` (or `HEAD`)"; "a ticket ... that comes with another method, is refused with
/// `401`" — every other method, custom ones too, with or without a good cookie beside it,
/// over HTTP/1.1 and HTTP/2, whatever the `Accept`.
#[tokio::test]
async fn tickets_open_nothing_with_any_method_but_get_and_head() {
    let (node, _) = cookie_node(Layers::Inside).await;
    let host = node.addr.to_string();
    let mut let_in = Vec::new();
    for method in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "FOO", "TRACE",
    ] {
        for (cookie, accept) in [(None, "text/event-stream"), (Some("session=alice"), "*/*")] {
            let t = mint_from(&node.auth, None).await;
            let mut headers = vec![
                ("host", host.as_str()),
                ("accept", accept),
                ("content-length", "0"),
            ];
            if let Some(cookie) = cookie {
                headers.push(("cookie", cookie));
            }
            for path in ["/events/user:alice", "/tickets/user:alice", "/query"] {
                let target = format!("{path}?ticket={t}");
                let reply = send(node.addr, &raw(method, &target, &headers)).await;
                if reply.status != 401 || !reply.body.is_empty() {
                    let_in.push(format!(
                        "{method} {path} cookie {cookie:?}: {}",
                        reply.status
                    ));
                }
            }
        }
    }
    let t = mint_from(&node.auth, None).await;
    let req = http::Request::post(format!("http://{host}/tickets/user:alice?ticket={t}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let status = h2_status(node.addr, req).await;
    if status != 401 {
        let_in.push(format!("HTTP/2 POST: {status}"));
    }
    assert!(
        let_in.is_empty(),
        "a ticket with another method: {let_in:#?}"
    );
    let t = mint_from(&node.auth, None).await;
    assert_eq!(
        ask(node.addr, &format!("/events/user:alice?ticket={t}"), &[])
            .await
            .status,
        200,
        "GET"
    );
}

/// `mint_ticket`: "[`TicketError::Refused`] for grants ... that came from a ticket (a ticket
/// never mints its successor: the page mints with its own credential)" — also at a minting
/// endpoint an app serves by `GET` (which a ticket may reach), also for grants narrowed from
/// the ticket's; the endpoint mints with a cookie.
#[tokio::test]
async fn tickets_mint_no_successor_even_at_a_get_endpoint() {
    let (node, _) = cookie_node(Layers::Outside).await;
    let ok = ask(
        node.addr,
        "/mint/user:alice",
        &[("cookie", "session=alice"), ("accept", "*/*")],
    )
    .await;
    assert_eq!(ok.status, 200, "a cookie mints");
    let mut ticket: String = serde_json::from_slice::<Value>(&ok.body).unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut hops = Vec::new();
    for _ in 0..3 {
        let reply = ask(
            node.addr,
            &format!("/mint/user:alice?ticket={ticket}"),
            &[("accept", "*/*")],
        )
        .await;
        hops.push(reply.status);
        if reply.status != 200 {
            break;
        }
        ticket = serde_json::from_slice::<Value>(&reply.body).unwrap()["ticket"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    assert_eq!(hops[0], 409, "a ticket at a GET minting endpoint: {hops:?}");
}

/// "every `ticket` parameter is removed from the URI before the handler sees it" — a
/// parameter whose name is `ticket` once percent-decoded (`ti%63ket`, `%74icket`), as every
/// query parser of the handler (axum's `Query` here) reads it, is a `ticket` parameter.
#[tokio::test]
async fn tickets_a_percent_encoded_ticket_parameter_never_reaches_the_handler() {
    let (node, _) = cookie_node(Layers::Inside).await;
    let mut reached = Vec::new();
    for name in ["ti%63ket", "%74icket", "%74%69%63%6B%65%74"] {
        let t = mint_from(&node.auth, None).await;
        let target = format!("/query?{name}={t}&x=1");
        let reply = ask(
            node.addr,
            &target,
            &[("cookie", "session=alice"), ("accept", "*/*")],
        )
        .await;
        assert_eq!(reply.status, 200, "{name}");
        let seen: Value = serde_json::from_slice(&reply.body).unwrap();
        let keys = seen["keys"].as_array().unwrap();
        if keys.iter().any(|k| k == "ticket") || seen["uri"].as_str().unwrap().contains(&t) {
            reached.push(format!("?{name}=: the handler saw {seen}"));
        }
    }
    assert!(reached.is_empty(), "{reached:#?}");
}

/// "every `ticket` parameter is removed from the URI before the handler sees it" — bare,
/// empty and repeated ones around other parameters, over HTTP/1.1 and HTTP/2 (whose URI is
/// absolute), and for a `HEAD`.
#[tokio::test]
async fn tickets_every_odd_ticket_parameter_leaves_the_uri() {
    let (node, _) = cookie_node(Layers::Inside).await;
    let t = mint_from(&node.auth, None).await;
    let target = format!("/events/user:alice?a=1&ticket={t}&b=2&ticket&ticket=&ticket=zz&c=3");
    assert_eq!(ask(node.addr, &target, &[]).await.status, 200);
    let t = mint_from(&node.auth, None).await;
    let uri = format!(
        "http://{}/events/user:alice?ticket={t}&ticket={t}&lastEventId=x",
        node.addr
    );
    let req = http::Request::get(uri)
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(h2_status(node.addr, req).await, 200);
    let t = mint_from(&node.auth, None).await;
    let host = node.addr.to_string();
    let head = send(
        node.addr,
        &raw(
            "HEAD",
            &format!("/events/user:alice?ticket={t}&z=9"),
            &[("host", &host), ("accept", "text/event-stream")],
        ),
    )
    .await;
    assert_eq!(head.status, 200, "HEAD");
    let seen = node.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|uri| !uri.contains("ticket")), "{seen:#?}");
    assert_eq!(seen[0], "/events/user:alice?a=1&b=2&c=3");
}

// =============================================================================================
// Revocation's time.
// =============================================================================================

/// `Auth::revoke`: "(those with grants issued after now excepted, counted in whole
/// milliseconds, so that one issued in the same millisecond is refused)"; `Grants::issued_at`:
/// "set it to let a subject that signs in again through before then". A credential issued
/// before the revocation began is refused; one issued a millisecond after it returned (past the
/// millisecond the revocation's time is rounded up to) is let in.
#[tokio::test]
async fn a_sign_in_a_millisecond_after_a_revocation_is_let_in_and_one_before_is_not() {
    let (node, issued) = cookie_node(Layers::Inside).await;
    let t0 = SystemTime::now();
    let _ = node.auth.revoke("carol");
    let t1 = SystemTime::now();
    let ask_as = |at: SystemTime| {
        issued.0.lock().unwrap().insert("carol".into(), at);
        ask(
            node.addr,
            "/events/user:carol",
            &[("cookie", "session=carol")],
        )
    };
    assert_eq!(
        ask_as(t0 - Duration::from_micros(1)).await.status,
        401,
        "issued before"
    );
    // After `t1 + 1 ms` has passed, so that the issue time is not in the future (which would
    // count as the time the request is let in).
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert_eq!(
        ask_as(t1 + Duration::from_millis(1)).await.status,
        200,
        "issued a millisecond after the revocation returned"
    );
}

// =============================================================================================
// Audiences: the closing hub's final event.
// =============================================================================================

/// `Hub::close`: "each first delivers the events already published, then `final_event` ...
/// Subscriptions made afterwards end the same way at once"; `with_audience`: "a hub
/// subscriber made with `granted` receives it ... only when its grants' subject is one of
/// them; an anonymous subscriber (one made without grants) never does ... An empty audience
/// is nobody" — for the final event: named, other, anonymous, and late subscribers.
#[tokio::test]
async fn hub_close_final_event_respects_audiences_for_every_kind_of_subscriber() {
    let (node, _) = cookie_node(Layers::Outside).await;
    let addr = node.addr;
    let open = |path: &'static str, who: &'static str| async move {
        let cookie = format!("session={who}");
        let c = RawClient::get(addr, path, &[("cookie", &cookie)]).await;
        assert_eq!(c.status(), 200, "{path} as {who}");
        c
    };
    let mut a = open("/events/team", "alice").await;
    let mut b = open("/events/team", "bob").await;
    let mut anon = open("/anon/team", "alice").await;
    let team = node.hub.topic("team");
    assert!(common::eventually(PATIENCE, || team.subscribers() == 3).await);
    node.hub
        .close(Some(Event::message("for alice").with_audience(["alice"])));
    let a2 = open("/events/team", "alice").await;
    let b2 = open("/events/team", "bob").await;
    let anon2 = open("/anon/team", "alice").await;
    let mut got = Vec::new();
    for (mut c, what) in [
        (a2, "alice late"),
        (b2, "bob late"),
        (anon2, "anonymous late"),
    ] {
        let (raw, messages) = tokio::time::timeout(PATIENCE, c.read_to_end())
            .await
            .unwrap();
        come_back_retry(&raw, "server shutting down, reconnect");
        got.push((what, messages.iter().any(|m| m.data == "for alice")));
    }
    for (c, what) in [(&mut a, "alice"), (&mut b, "bob"), (&mut anon, "anonymous")] {
        let (raw, messages) = tokio::time::timeout(PATIENCE, c.read_to_end())
            .await
            .unwrap();
        come_back_retry(&raw, "server shutting down, reconnect");
        got.push((what, messages.iter().any(|m| m.data == "for alice")));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("alice", true),
            ("alice late", true),
            ("anonymous", false),
            ("anonymous late", false),
            ("bob", false),
            ("bob late", false),
        ],
        "who received the final event for alice"
    );
    let (other, _) = cookie_node(Layers::Inside).await;
    let cookie = "session=alice";
    let mut c = RawClient::get(other.addr, "/events/team", &[("cookie", cookie)]).await;
    assert!(common::eventually(PATIENCE, || other.hub.topic("team").subscribers() == 1).await);
    other.hub.close(Some(
        Event::message("for nobody").with_audience(Vec::<String>::new()),
    ));
    let (raw, messages) = tokio::time::timeout(PATIENCE, c.read_to_end())
        .await
        .unwrap();
    come_back_retry(&raw, "server shutting down, reconnect");
    assert!(
        messages.iter().all(|m| m.data != "for nobody"),
        "an empty audience is nobody"
    );
}

// =============================================================================================
// An AuthLayer without an SseLayer.
// =============================================================================================

/// `AuthService`: an event stream authorized without an `SseLayer` is warned about ("will not
/// end at its grants' expiry nor on its subject's revocation; add SseLayer beside
/// Auth::layer()"), over HTTP/1.1 and HTTP/2, and by ticket; refusals are still answered
/// ("`401` or `403`, an empty body, `Cache-Control: no-store`"), revocations still refuse
/// the reconnect; with an `SseLayer` in either order no such warning.
#[tokio::test]
async fn an_auth_layer_without_an_sse_layer_warns_and_still_refuses() {
    let (statuses, logs) = common::logs_of(async {
        let (node, _) = cookie_node(Layers::Alone).await;
        let alice = [("cookie", "session=alice")];
        let c = RawClient::get(node.addr, "/events/user:alice", &alice).await;
        let mut h2 = common::h2_get(node.addr, "/events/user:alice");
        h2.headers_mut()
            .insert("cookie", "session=alice".parse().unwrap());
        let h2 = h2_status(node.addr, h2).await;
        let t = mint_from(&node.auth, None).await;
        let by_ticket = ask(node.addr, &format!("/events/user:alice?ticket={t}"), &[]).await;
        assert_refused(
            &ask(node.addr, "/events/user:alice", &[]).await,
            401,
            "no credential",
        );
        assert_refused(
            &ask(
                node.addr,
                "/events/user:alice",
                &[("cookie", "session=bob")],
            )
            .await,
            403,
            "bob on alice's topic",
        );
        assert_refused(
            &ask(node.addr, &format!("/events/user:alice?ticket={t}"), &[]).await,
            401,
            "a spent ticket",
        );
        let _ = node.auth.revoke("alice");
        assert_refused(
            &ask(node.addr, "/events/user:alice", &alice).await,
            401,
            "revoked",
        );
        drop(c);
        [200, h2, by_ticket.status]
    })
    .await;
    assert_eq!(statuses, [200, 200, 200], "h1, h2, by ticket");
    let warned = logs.matches("without an SseLayer").count();
    assert!(warned >= 3, "{warned} warnings for 3 such streams:\n{logs}");
    let ((), logs) = common::logs_of(async {
        for layers in [Layers::Inside, Layers::Outside] {
            let (node, _) = cookie_node(layers).await;
            let c = RawClient::get(
                node.addr,
                "/events/user:alice",
                &[("cookie", "session=alice")],
            )
            .await;
            assert_eq!(c.status(), 200);
            let mut h2 = common::h2_get(node.addr, "/events/user:alice");
            h2.headers_mut()
                .insert("cookie", "session=alice".parse().unwrap());
            assert_eq!(h2_status(node.addr, h2).await, 200);
        }
    })
    .await;
    assert!(
        !logs.contains("without an SseLayer"),
        "a false warning:\n{logs}"
    );
}

// =============================================================================================
// Nodes sharing revocations through Redis.
// =============================================================================================

mod on_redis {
    use super::*;
    use common::redis::RedisServer;

    async fn node_on(client: redis::Client, remember: Option<Duration>) -> Node {
        let hub = Hub::builder().redis(client).build();
        let share = hub.clone();
        start_node(
            cookie_authorizer(Issued::default()),
            hub,
            Layers::Inside,
            sse(),
            move |b| {
                let b = b.tickets(Tickets::memory()).share_through(&share);
                match remember {
                    Some(remember) => b.remember_revocations(remember),
                    None => b,
                }
            },
        )
        .await
    }

    /// `share_through`: a starting node "holds requests until it has read them (a round trip
    /// to the broker); one that cannot read them within 10 s refuses stream requests with
    /// `503`, and mints no ticket" — here its Redis is down at start: the stream request and
    /// the mint wait, then are refused (`503`, logged); once Redis is back, the node reads the
    /// revocations and lets requests in.
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_down_at_start_holds_requests_then_503_then_lets_in_once_read() {
        let mut redis = RedisServer::start().await;
        redis.kill();
        let client = redis.client();
        let ((node, reply, minted, held), logs) = common::logs_of(async {
            let node = node_on(client, None).await;
            let (grants, headers) = (alice_grants(), HeaderMap::new());
            let started = Instant::now();
            let (reply, minted) = tokio::join!(
                ask(
                    node.addr,
                    "/events/user:alice",
                    &[("cookie", "session=alice")]
                ),
                node.auth.mint_ticket(&grants, &headers),
            );
            (node, reply, minted.map(|t| t.lifetime()), started.elapsed())
        })
        .await;
        assert_refused(
            &reply,
            503,
            "a stream request while the revocations cannot be read",
        );
        assert!(
            matches!(minted, Err(TicketError::Unavailable(_))),
            "minting: {minted:?}"
        );
        assert!(
            held >= Duration::from_secs(9),
            "answered after {held:?}, not held"
        );
        assert!(
            logs.contains("the revocations shared through the hub could not be read"),
            "the refusal is logged:\n{logs}"
        );
        redis.restart().await;
        let deadline = Instant::now() + 3 * PATIENCE;
        let mut last = None;
        while Instant::now() < deadline {
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                ask(
                    node.addr,
                    "/events/user:alice",
                    &[("cookie", "session=alice")],
                ),
            )
            .await;
            if let Ok(reply) = attempt {
                if reply.status == 200 {
                    return;
                }
                last = Some(reply.status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("never let in once Redis was back (last status {last:?})");
    }

    /// `Auth::revoke`/`Revocations`: a revocation ends the subject's open streams "even one
    /// remembered for no time"; `share_through`: "a revocation on one ends the subject's
    /// streams on all, and each remembers it" (for as long as it remembers). A node that
    /// remembers nothing ends alice's stream on another node's revocation, then lets her back
    /// in; the revoking node refuses her.
    #[tokio::test]
    #[ignore = "needs redis-server"]
    async fn redis_a_node_remembering_nothing_still_ends_streams_on_a_shared_revocation() {
        let redis = RedisServer::start().await;
        let a = node_on(redis.client(), None).await;
        let b = node_on(redis.client(), Some(Duration::ZERO)).await;
        let cookie = [("cookie", "session=alice")];
        let mut c = RawClient::get(b.addr, "/events/user:alice", &cookie).await;
        assert_eq!(c.status(), 200);
        let topic = b.hub.topic("user:alice");
        assert!(common::eventually(PATIENCE, || topic.subscribers() == 1).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.auth.revoke("alice").shared().await.unwrap();
        let (raw, messages) = tokio::time::timeout(PATIENCE, c.read_to_end())
            .await
            .unwrap();
        assert_eq!(
            messages.last().map(|m| m.event.as_str()),
            Some(REVOKED),
            "{raw:?}"
        );
        come_back_retry(&raw, "access revoked");
        assert_refused(
            &ask(a.addr, "/events/user:alice", &cookie).await,
            401,
            "A remembers",
        );
        assert_eq!(
            ask(b.addr, "/events/user:alice", &cookie).await.status,
            200,
            "B forgot"
        );
        let stats = b.auth.stats();
        assert_eq!(
            (stats.revocations, stats.streams_revoked),
            (1, 1),
            "{stats:?}"
        );
    }
}
