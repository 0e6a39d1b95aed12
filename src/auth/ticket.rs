//! One-time stream tickets: for a client that can send neither a cookie nor a header.

use crate::{grants::Grants, sync::lock};
use http::{request::Parts, HeaderMap};
use std::{
    collections::HashMap,
    error::Error as StdError,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// The longest a ticket lives.
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(60);

/// Bytes of a ticket's lookup half and of its secret half: 64 + 128 bits of randomness.
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 16;
/// Length of a ticket's text: both halves in lower-case hex.
const TEXT_LEN: usize = 2 * (ID_LEN + SECRET_LEN);

/// Where tickets are kept: in this process, or (feature `redis`) in Redis, shared by every
/// node, so that a ticket minted on one is redeemed once on any.
///
/// A ticket is opaque (192 random bits from the operating system), lives at most
/// [`lifetime`](Tickets::lifetime) (≤ 60 s), is bound to the `Origin` of the request that
/// minted it, and is spent by its first redemption, whatever its outcome. Its value is never
/// logged. A store finds a ticket by its first half and compares the second (the secret) in
/// constant time.
///
/// ```
/// use std::time::Duration;
/// use tower_sse::auth::Tickets;
///
/// let tickets = Tickets::memory().lifetime(Duration::from_secs(20));
/// assert_eq!(tickets.ttl(), Duration::from_secs(20));
/// assert_eq!(Tickets::memory().lifetime(Duration::from_secs(600)).ttl(), Duration::from_secs(60));
/// ```
#[derive(Clone)]
#[must_use]
pub struct Tickets {
    pub(crate) engine: Engine,
    lifetime: Duration,
}

#[derive(Clone)]
pub(crate) enum Engine {
    Memory(Arc<Memory>),
    #[cfg(feature = "redis")]
    Redis(Arc<super::ticket_redis::RedisTickets>),
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let engine = match &self.engine {
            Engine::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Engine::Redis(_) => "redis",
        };
        f.debug_struct("Tickets")
            .field("engine", &engine)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl Tickets {
    /// Tickets kept in this process: for one server process (or sticky sessions).
    pub fn memory() -> Tickets {
        Tickets {
            engine: Engine::Memory(Arc::default()),
            lifetime: DEFAULT_LIFETIME,
        }
    }

    /// Tickets kept in Redis, under keys `<prefix>:t:<first half>` (prefix `tower-sse` by
    /// default, as the hub's), each with its lifetime as expiry: a ticket minted on one node
    /// is redeemed on any, and of two nodes redeeming it at once exactly one wins (`GETDEL`,
    /// Redis ≥ 6.2). The connection is made on first use and remade when lost; a ticket that
    /// cannot be checked because Redis cannot be reached is refused with `503`.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(client: ::redis::Client) -> Tickets {
        Tickets::redis_with_prefix(client, "tower-sse")
    }

    /// [`redis`](Tickets::redis) with another key prefix.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_with_prefix(client: ::redis::Client, prefix: impl Into<String>) -> Tickets {
        Tickets {
            engine: Engine::Redis(Arc::new(super::ticket_redis::RedisTickets::new(
                client,
                prefix.into(),
            ))),
            lifetime: DEFAULT_LIFETIME,
        }
    }

    /// How long a ticket lives, between 1 s and [`MAX_TICKET_LIFETIME`] (60 s). Default: 30 s.
    pub fn lifetime(mut self, lifetime: Duration) -> Tickets {
        self.lifetime = lifetime.clamp(Duration::from_secs(1), MAX_TICKET_LIFETIME);
        self
    }

    /// How long a ticket lives.
    pub fn ttl(&self) -> Duration {
        self.lifetime
    }

    /// Mints a ticket for `grants`, bound to the `Origin` in `headers` (the minting request's).
    pub(crate) async fn mint(
        &self,
        grants: &Grants,
        headers: &HeaderMap,
    ) -> Result<Ticket, TicketError> {
        let origin = origin_of(headers);
        if origin.as_deref() == Some(b"null") {
            // An opaque origin (a sandboxed frame, a `data:` page): every such page sends the
            // same `null`, so a ticket bound to it would be bound to nothing.
            return Err(TicketError::OpaqueOrigin);
        }
        let (id, secret) = random_halves()?;
        let record = Record {
            secret,
            origin,
            grants: grants.clone(),
        };
        match &self.engine {
            Engine::Memory(memory) => memory.put(id, record, self.lifetime)?,
            #[cfg(feature = "redis")]
            Engine::Redis(redis) => redis.put(id, record, self.lifetime).await?,
        }
        Ok(Ticket {
            text: text_of(&id, &secret),
            lifetime: self.lifetime,
        })
    }

    /// Redeems `text` for the request with these parts: spends it, whatever comes of it.
    pub(crate) async fn redeem(&self, text: &str, request: &Parts) -> Result<Grants, Spoilt> {
        let (id, secret) = parse(text).ok_or(Spoilt::Malformed)?;
        let record = match &self.engine {
            Engine::Memory(memory) => memory.take(&id),
            #[cfg(feature = "redis")]
            Engine::Redis(redis) => redis.take(&id).await?,
        };
        let record = record.ok_or(Spoilt::Unknown)?;
        // Constant-time: how much of a guess matched never shows in the time taken.
        if !bool::from(record.secret.ct_eq(&secret)) {
            return Err(Spoilt::Unknown);
        }
        if !same_origin(record.origin.as_deref(), request) {
            return Err(Spoilt::WrongOrigin);
        }
        Ok(record.grants.redeemed())
    }
}

/// Default of [`Tickets::lifetime`].
const DEFAULT_LIFETIME: Duration = Duration::from_secs(30);

/// A minted ticket: hand its [`value`](Ticket::value) to the client, which opens its stream
/// with it (`?ticket=<value>`). Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Ticket {
    text: String,
    lifetime: Duration,
}

impl Ticket {
    /// The ticket's text: 48 lower-case hex digits.
    pub fn value(&self) -> &str {
        &self.text
    }

    /// How long it lives from its minting.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("value", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// A ticket could not be minted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketError {
    /// The [`Auth`](super::Auth) has no [`Tickets`].
    NoTickets,
    /// The grants have expired, or were revoked, or came from a ticket: there is nothing to
    /// mint a ticket for.
    Refused,
    /// The minting request's `Origin` is `null` (a sandboxed frame, a `data:` page), which
    /// every such page sends: a ticket cannot be bound to it.
    OpaqueOrigin,
    /// The in-memory store holds its most live tickets (100,000).
    Full,
    /// The operating system's random source failed.
    Random,
    /// The shared store cannot be reached (the text says why).
    Unavailable(String),
}

impl fmt::Display for TicketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TicketError::NoTickets => f.write_str("no ticket store is configured"),
            TicketError::Refused => f.write_str("the grants are expired, revoked or a ticket's"),
            TicketError::OpaqueOrigin => {
                f.write_str("a ticket cannot be bound to an opaque origin")
            }
            TicketError::Full => f.write_str("too many live tickets"),
            TicketError::Random => f.write_str("the random source failed"),
            TicketError::Unavailable(why) => write!(f, "ticket store unavailable: {why}"),
        }
    }
}

impl StdError for TicketError {}

/// Why a ticket was not taken; counted and logged, never told the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Spoilt {
    /// Not 48 lower-case hex digits (truncated, padded, forged by hand).
    Malformed,
    /// Never minted, already spent, expired, or a wrong secret half.
    Unknown,
    /// Redeemed from another `Origin` than the one that minted it.
    WrongOrigin,
    /// Sent with a method other than `GET` or `HEAD`: a ticket opens a stream, nothing else.
    NotAStream,
    /// The shared store cannot be reached.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Unavailable(String),
}

impl Spoilt {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Spoilt::Malformed => "malformed ticket",
            Spoilt::Unknown => "unknown, spent or expired ticket",
            Spoilt::WrongOrigin => "ticket redeemed from another origin",
            Spoilt::NotAStream => "ticket sent with a method that opens no stream",
            Spoilt::Unavailable(_) => "ticket store unavailable",
        }
    }
}

/// What the store keeps for a ticket.
pub(crate) struct Record {
    pub(crate) secret: [u8; SECRET_LEN],
    /// The minting request's `Origin`, as its bytes (compared as they are, never decoded).
    pub(crate) origin: Option<Box<[u8]>>,
    pub(crate) grants: Grants,
}

impl Record {
    /// The record as text, for a shared store: the secret in hex, the origin (`-` for none,
    /// `+<origin in hex>` else), the grants.
    #[cfg(feature = "redis")]
    pub(crate) fn encode(&self) -> String {
        let origin = match &self.origin {
            Some(origin) => format!("+{}", hex(origin)),
            None => "-".into(),
        };
        format!("{}\n{origin}\n{}", hex(&self.secret), self.grants.encode())
    }

    /// A record read back from [`encode`](Record::encode).
    #[cfg(feature = "redis")]
    pub(crate) fn decode(text: &str) -> Option<Record> {
        let mut parts = text.splitn(3, '\n');
        let secret = unhex::<SECRET_LEN>(parts.next()?)?;
        let origin = match parts.next()? {
            "-" => None,
            other => Some(unhex_vec(other.strip_prefix('+')?)?.into()),
        };
        let grants = Grants::decode(parts.next()?)?;
        Some(Record {
            secret,
            origin,
            grants,
        })
    }
}

/// The most live tickets the in-memory store holds.
const MAX_LIVE: usize = 100_000;

/// The in-memory store: records by lookup half, each with its deadline.
#[derive(Default)]
pub(crate) struct Memory {
    records: Mutex<Live>,
}

#[derive(Default)]
struct Live {
    records: HashMap<[u8; ID_LEN], (Record, Instant)>,
    /// When the map is this large, expired records are swept first.
    sweep_at: usize,
}

impl Memory {
    fn put(&self, id: [u8; ID_LEN], record: Record, lifetime: Duration) -> Result<(), TicketError> {
        let mut live = lock(&self.records);
        let now = Instant::now();
        // Now and then, and whenever the store is full: dead tickets never keep it full.
        if live.records.len() >= live.sweep_at.min(MAX_LIVE) {
            live.records.retain(|_, (_, until)| *until > now);
            live.sweep_at = (2 * live.records.len()).max(1024);
        }
        if live.records.len() >= MAX_LIVE {
            return Err(TicketError::Full);
        }
        live.records.insert(id, (record, now + lifetime));
        Ok(())
    }

    fn take(&self, id: &[u8; ID_LEN]) -> Option<Record> {
        let (record, until) = lock(&self.records).records.remove(id)?;
        (Instant::now() < until).then_some(record)
    }
}

/// Whether the request comes from `minted`, the origin of the request that minted the ticket.
///
/// Its `Origin` header must be exactly that. A browser sends none on a same-origin `GET` (an
/// `EventSource` on the page's own origin): such a request is taken when the browser says it is
/// same-origin (`Sec-Fetch-Site: same-origin`, which no page can set) and its host is the
/// minted origin's. Without an origin at minting, the request must carry none either.
fn same_origin(minted: Option<&[u8]>, request: &Parts) -> bool {
    let headers = &request.headers;
    match (minted, headers.get(http::header::ORIGIN)) {
        (minted, Some(origin)) => minted == Some(origin.as_bytes()),
        (None, None) => true,
        (Some(minted), None) => {
            let same_site = headers
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes() == b"same-origin");
            let host = request
                .uri
                .authority()
                .map(|a| a.as_str().as_bytes())
                .or_else(|| headers.get(http::header::HOST).map(|h| h.as_bytes()));
            let Some(split) = minted.windows(3).position(|w| w == b"://") else {
                return false;
            };
            let (minted_scheme, minted_host) = (&minted[..split], &minted[split + 3..]);
            // A request that states its scheme (HTTP/2, an absolute URI) must state the same.
            let scheme_ok = request
                .uri
                .scheme_str()
                .is_none_or(|scheme| scheme.as_bytes() == minted_scheme);
            same_site && scheme_ok && host == Some(minted_host)
        }
    }
}

/// The origin a request carries (its first `Origin` header), as its bytes.
fn origin_of(headers: &HeaderMap) -> Option<Box<[u8]>> {
    let origin = headers.get(http::header::ORIGIN)?;
    Some(origin.as_bytes().into())
}

fn random_halves() -> Result<([u8; ID_LEN], [u8; SECRET_LEN]), TicketError> {
    let mut id = [0u8; ID_LEN];
    let mut secret = [0u8; SECRET_LEN];
    getrandom::getrandom(&mut id).map_err(|_| TicketError::Random)?;
    getrandom::getrandom(&mut secret).map_err(|_| TicketError::Random)?;
    Ok((id, secret))
}

fn text_of(id: &[u8; ID_LEN], secret: &[u8; SECRET_LEN]) -> String {
    let mut text = hex(id);
    text.push_str(&hex(secret));
    text
}

/// A ticket's two halves, from exactly [`TEXT_LEN`] lower-case hex digits.
fn parse(text: &str) -> Option<([u8; ID_LEN], [u8; SECRET_LEN])> {
    if text.len() != TEXT_LEN {
        return None;
    }
    let (id, secret) = text.split_at(2 * ID_LEN);
    Some((unhex(id)?, unhex(secret)?))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    text
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    unhex_vec(text)?.try_into().ok()
}

/// Bytes from lower-case hex digits.
pub(crate) fn unhex_vec(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(http::header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    /// A stream request with these headers, to `host`.
    fn request(host: &str, headers: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::get("/events").header("host", host);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap().into_parts().0
    }

    fn from(origin: Option<&str>) -> Parts {
        match origin {
            Some(origin) => request("app.example", &[("origin", origin)]),
            None => request("app.example", &[]),
        }
    }

    #[tokio::test]
    async fn a_ticket_is_spent_by_its_first_redemption_whatever_comes_of_it() {
        let tickets = Tickets::memory();
        let grants = Grants::new().subject("alice").exact("user:alice");
        let from = headers(Some("https://app.example"));
        let ticket = tickets.mint(&grants, &from).await.unwrap();
        assert_eq!(ticket.value().len(), 48);
        assert!(!format!("{ticket:?}").contains(ticket.value()));
        let there = super::tests::from(Some("https://app.example"));
        assert_eq!(
            tickets.redeem(ticket.value(), &there).await.unwrap(),
            grants
        );
        assert_eq!(
            tickets.redeem(ticket.value(), &there).await,
            Err(Spoilt::Unknown)
        );

        let other = tickets.mint(&grants, &from).await.unwrap();
        let elsewhere = super::tests::from(Some("https://evil.example"));
        assert_eq!(
            tickets.redeem(other.value(), &elsewhere).await,
            Err(Spoilt::WrongOrigin)
        );
        assert_eq!(
            tickets.redeem(other.value(), &there).await,
            Err(Spoilt::Unknown),
            "spent by the failed attempt"
        );
    }

    #[tokio::test]
    async fn forged_truncated_and_odd_texts_are_refused() {
        let tickets = Tickets::memory();
        let grants = Grants::new().exact("t");
        let ticket = tickets.mint(&grants, &HeaderMap::new()).await.unwrap();
        let value = ticket.value();
        let mut flipped = value.to_owned().into_bytes();
        flipped[47] = if flipped[47] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            tickets.redeem(&flipped, &from(None)).await,
            Err(Spoilt::Unknown),
            "a wrong secret half"
        );
        let other = tickets.mint(&grants, &HeaderMap::new()).await.unwrap();
        for bad in [
            &other.value()[..47],
            &other.value().to_uppercase(),
            &format!("{} ", other.value()),
            "",
            "zz",
        ] {
            assert_eq!(
                tickets.redeem(bad, &from(None)).await,
                Err(Spoilt::Malformed),
                "{bad:?}"
            );
        }
        assert!(tickets.redeem(other.value(), &from(None)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_dies_at_its_lifetime() {
        let tickets = Tickets::memory().lifetime(Duration::from_secs(5));
        let ticket = tickets
            .mint(&Grants::new(), &HeaderMap::new())
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            tickets.redeem(ticket.value(), &from(None)).await,
            Err(Spoilt::Unknown)
        );
    }

    #[tokio::test]
    async fn a_same_origin_event_source_redeems_what_its_page_minted() {
        let tickets = Tickets::memory();
        let page = headers(Some("http://app.example:3000"));
        let grants = Grants::new();
        let mint = || tickets.mint(&grants, &page);
        let same = [("sec-fetch-site", "same-origin")];
        let cases = [
            (request("app.example:3000", &same), true),
            (request("app.example:3000", &[]), false),
            (
                request("app.example:3000", &[("sec-fetch-site", "same-site")]),
                false,
            ),
            (request("other.example:3000", &same), false),
            (request("app.example", &same), false),
        ];
        for (i, (parts, taken)) in cases.iter().enumerate() {
            let ticket = mint().await.unwrap();
            let got = tickets.redeem(ticket.value(), parts).await;
            assert_eq!(got.is_ok(), *taken, "case {i}: {got:?}");
        }
        let ticket = mint().await.unwrap();
        let h2 = http::Request::get("http://app.example:3000/events")
            .header("sec-fetch-site", "same-origin")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert!(
            tickets.redeem(ticket.value(), &h2).await.is_ok(),
            "HTTP/2: the authority"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_store_holds_at_most_its_live_tickets_then_sweeps_the_dead() {
        let tickets = Tickets::memory().lifetime(Duration::from_secs(1));
        let grants = Grants::new();
        for _ in 0..MAX_LIVE {
            tickets.mint(&grants, &HeaderMap::new()).await.unwrap();
        }
        assert_eq!(
            tickets.mint(&grants, &HeaderMap::new()).await.unwrap_err(),
            TicketError::Full
        );
        // Once they are dead, the next mint sweeps them and succeeds.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(tickets.mint(&grants, &HeaderMap::new()).await.is_ok());
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex::<4>("0001abff"), Some(bytes));
        assert_eq!(unhex::<4>("0001abfg"), None);
        assert_eq!(unhex::<4>("0001ABFF"), None);
    }
}
