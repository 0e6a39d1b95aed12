//! Serving over real sockets: a loopback listener, small apps, and a self-signed TLS setup.

use futures_util::{stream, StreamExt};
use http::Request;
use hyper::body::Incoming;
use std::{convert::Infallible, net::SocketAddr, sync::Arc};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_sse::{serve::Server, Event, SseBody, SseLayer};

/// The 24-byte HTTP/2 preface and an empty SETTINGS frame: all an HTTP/2 client sends before
/// its first request (33 bytes).
pub const PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A listener on a free loopback port, and its address.
pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A hyper service under `layer` whose every stream sends `live`, then stays open with nothing
/// to send.
pub fn live_app(
    layer: SseLayer,
) -> impl tower::Service<
    Request<Incoming>,
    Response = http::Response<SseBody<impl futures_core::Stream<Item = Event> + Send + 'static>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Request<Incoming>| async move {
            let events = stream::iter([Event::message("live")]).chain(stream::pending());
            Ok::<_, Infallible>(SseBody::from_request(&req, events).into_http_response())
        })
}

/// Two servers of [`live_app`] with this header-read timeout: one plain (HTTP/1.1 and h2c),
/// one over TLS with `tls`'s certificate. Their addresses, in that order.
pub async fn plain_and_tls(
    tls: &SelfSigned,
    header_read_timeout: std::time::Duration,
) -> (SocketAddr, SocketAddr) {
    let (listener, plain) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .header_read_timeout(header_read_timeout)
            .serve(live_app(SseLayer::new())),
    );
    let (listener, https) = bind().await;
    tokio::spawn(
        Server::new(listener)
            .rustls(tls.server.clone())
            .header_read_timeout(header_read_timeout)
            .serve(live_app(SseLayer::new())),
    );
    (plain, https)
}

/// An app that answers every request with a short body.
pub fn plain_app() -> impl tower::Service<
    Request<Incoming>,
    Response = http::Response<http_body_util::Full<bytes::Bytes>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    tower::service_fn(|_: Request<Incoming>| async {
        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"plain"));
        Ok::<_, Infallible>(http::Response::new(body))
    })
}

/// A self-signed certificate for `localhost`: the server's TLS config, and clients that trust it.
pub struct SelfSigned {
    pub server: Arc<rustls::ServerConfig>,
    pub cert: rustls::pki_types::CertificateDer<'static>,
}

impl SelfSigned {
    pub fn new() -> Arc<Self> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        Arc::new(SelfSigned {
            server: Arc::new(server),
            cert,
        })
    }

    pub fn client_config(&self, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(client)
    }

    /// A TLS client offering `alpn` on `tcp`.
    pub async fn connect_on(
        &self,
        tcp: TcpStream,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(self.client_config(alpn))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    pub async fn connect(
        &self,
        addr: SocketAddr,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        self.connect_on(TcpStream::connect(addr).await.unwrap(), alpn)
            .await
    }

    /// The bytes of a real ClientHello (what a client sends first).
    pub fn client_hello(&self) -> Vec<u8> {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(self.client_config(b"h2"), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }
}
