//! [`Grants`]: what one request may read.

use crate::shutdown::Shutdown;
use std::{
    error::Error as StdError,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

/// Topic names that begin with this are the crate's own (the revocations an
/// [`Auth`](crate::auth::Auth) shares through a hub): no grant matches them.
pub const RESERVED_PREFIX: &str = "tower-sse:";

/// One rule of [`Grants`]: the topics it lets a request read.
///
/// ```
/// use tower_sse::TopicMatch;
///
/// assert!(TopicMatch::exact("user:alice").matches("user:alice"));
/// assert!(!TopicMatch::exact("user:alice").matches("user:alice2"));
/// assert!(TopicMatch::prefix("team:42/").matches("team:42/news"));
/// assert!(!TopicMatch::prefix("").matches("tower-sse:revocations"), "never the crate's own");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicMatch {
    /// This topic only.
    Exact(Box<str>),
    /// Every topic whose name starts with this (`""`: every topic).
    Prefix(Box<str>),
}

impl TopicMatch {
    /// The topic with this name.
    pub fn exact(name: impl Into<String>) -> TopicMatch {
        TopicMatch::Exact(name.into().into_boxed_str())
    }

    /// Every topic whose name starts with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> TopicMatch {
        TopicMatch::Prefix(prefix.into().into_boxed_str())
    }

    /// Whether this rule lets a request read `topic`; never for a name that starts with
    /// [`RESERVED_PREFIX`].
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with(RESERVED_PREFIX) {
            return false;
        }
        match self {
            TopicMatch::Exact(name) => **name == *topic,
            TopicMatch::Prefix(prefix) => topic.starts_with(&**prefix),
        }
    }

    /// Whether every topic `other` matches, this one matches too.
    fn covers(&self, other: &TopicMatch) -> bool {
        match (self, other) {
            (_, TopicMatch::Exact(name)) => self.matches(name),
            (TopicMatch::Prefix(mine), TopicMatch::Prefix(theirs)) => theirs.starts_with(&**mine),
            (TopicMatch::Exact(_), TopicMatch::Prefix(_)) => false,
        }
    }
}

/// What one request may read: topic rules, the subject (the user) it reads as, and until when.
///
/// An [`Auth`](crate::auth::Auth)'s authorizer makes them from a request (its session cookie, a
/// bearer header, a JWT), or a stream ticket carries them; the layer puts them in the request's
/// extensions, where the handler takes them (the axum extractor, the warp filter,
/// `req.extensions().get::<Grants>()`) and subscribes with them
/// ([`Subscription::granted`](crate::hub::Subscription::granted)): a topic they do not match is
/// refused with [`NotGranted`] (a `403`), and the subscriber receives only the events whose
/// audience holds its subject, or that have none.
///
/// Grants with no topic rule allow nothing. Cloning is cheap (shared).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_sse::Grants;
///
/// let grants = Grants::new()
///     .subject("alice")
///     .exact("user:alice")
///     .prefix("room:")
///     .expires_at(SystemTime::now() + Duration::from_secs(3600));
/// assert!(grants.allows("user:alice") && grants.allows("room:lobby"));
/// assert!(!grants.allows("user:bob"));
/// assert_eq!(grants.subject_name(), Some("alice"));
/// assert!(!grants.is_expired());
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct Grants {
    inner: Arc<Inner>,
    /// The switch that ends this subject's streams when it is revoked, set by the
    /// [`Auth`](crate::auth::Auth) that made the grants.
    revocation: Option<Shutdown>,
    /// Set when an [`SseLayer`](crate::SseLayer) binds the request's streams to the grants,
    /// so that the auth layer can tell when none did.
    bound: Option<Arc<AtomicBool>>,
    /// Made by redeeming a stream ticket: they mint no other ticket.
    from_ticket: bool,
}

#[derive(Clone, Default, PartialEq, Eq)]
struct Inner {
    subject: Option<Box<str>>,
    topics: Vec<TopicMatch>,
    expires: Option<SystemTime>,
    issued: Option<SystemTime>,
}

impl Grants {
    /// Grants that allow nothing, with no subject and no expiry.
    pub fn new() -> Grants {
        Grants::default()
    }

    /// Sets the subject: who the request reads as (a user id). Events with an
    /// [audience](crate::Event::with_audience) reach it only when it is in it, and
    /// [`Auth::revoke`](crate::auth::Auth::revoke) names it.
    pub fn subject(mut self, subject: impl Into<String>) -> Grants {
        self.inner_mut().subject = Some(subject.into().into_boxed_str());
        self
    }

    /// Adds a rule: the topic with this name.
    pub fn exact(self, topic: impl Into<String>) -> Grants {
        self.topic(TopicMatch::exact(topic))
    }

    /// Adds a rule: every topic whose name starts with `prefix`.
    pub fn prefix(self, prefix: impl Into<String>) -> Grants {
        self.topic(TopicMatch::prefix(prefix))
    }

    /// Adds a rule.
    pub fn topic(mut self, rule: TopicMatch) -> Grants {
        self.inner_mut().topics.push(rule);
        self
    }

    /// Sets when the grants expire: a request after it is refused (`401`), and a stream
    /// opened before it ends at it, with a come-back block (`: credential expired,
    /// reconnect`), so that the client comes back with a fresh credential. An expiry more than
    /// about 24.8 days (2³¹−1 ms, the longest timer) after the stream opens ends it then,
    /// early, the same way. Default: never.
    pub fn expires_at(mut self, at: SystemTime) -> Grants {
        self.inner_mut().expires = Some(at);
        self
    }

    /// Sets the expiry `ttl` from now (saturated at about a century).
    pub fn expires_in(self, ttl: Duration) -> Grants {
        let ttl = ttl.min(Duration::from_secs(100 * 365 * 24 * 3600));
        self.expires_at(SystemTime::now() + ttl)
    }

    /// Sets when the credential behind the grants was issued (a session's sign-in, a JWT's
    /// `iat`). A [revocation](crate::auth::Auth::revoke) refuses grants issued at or before it;
    /// grants without this are refused for as long as the revocation is remembered, so set it
    /// to let a subject that signs in again through before then. The comparison fails safe:
    /// a revocation's time is counted in whole milliseconds, rounded up, so a credential issued
    /// in the same millisecond (with a JWT's `iat`, in whole seconds: the same second) counts as
    /// issued before it; an issue time in the future (the issuer's clock is ahead) counts as
    /// none until it has passed: so a credential stamped by a clock `S` ahead escapes a
    /// revocation made less than `S` before its stamp, once that has passed.
    pub fn issued_at(mut self, at: SystemTime) -> Grants {
        self.inner_mut().issued = Some(at);
        self
    }

    /// The subject, if any.
    pub fn subject_name(&self) -> Option<&str> {
        self.inner.subject.as_deref()
    }

    /// The topic rules.
    pub fn topics(&self) -> &[TopicMatch] {
        &self.inner.topics
    }

    /// When the grants expire, if ever.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.inner.expires
    }

    /// When the credential was issued, if known.
    pub fn issued(&self) -> Option<SystemTime> {
        self.inner.issued
    }

    /// Whether a rule matches `topic`.
    pub fn allows(&self, topic: &str) -> bool {
        self.inner.topics.iter().any(|rule| rule.matches(topic))
    }

    /// Whether the expiry has passed.
    pub fn is_expired(&self) -> bool {
        self.inner.expires.is_some_and(|at| at <= SystemTime::now())
    }

    /// The same subject, expiry and issue time, with only these rules: for a stream ticket
    /// that reads one topic, say.
    ///
    /// # Errors
    ///
    /// [`NotGranted`] when one of `rules` reaches a topic these grants do not allow.
    ///
    /// ```
    /// use tower_sse::{Grants, TopicMatch};
    ///
    /// let grants = Grants::new().subject("alice").prefix("user:alice/");
    /// let one = grants.narrowed([TopicMatch::exact("user:alice/inbox")]).unwrap();
    /// assert!(one.allows("user:alice/inbox") && !one.allows("user:alice/drafts"));
    /// assert!(grants.narrowed([TopicMatch::prefix("user:")]).is_err());
    /// ```
    pub fn narrowed(
        &self,
        rules: impl IntoIterator<Item = TopicMatch>,
    ) -> Result<Grants, NotGranted> {
        let rules: Vec<TopicMatch> = rules.into_iter().collect();
        if !rules
            .iter()
            .all(|rule| self.inner.topics.iter().any(|mine| mine.covers(rule)))
        {
            return Err(NotGranted(()));
        }
        let mut narrowed = self.clone();
        narrowed.inner_mut().topics = rules;
        Ok(narrowed)
    }

    /// The switch that ends this subject's streams on revocation.
    pub(crate) fn revocation(&self) -> Option<&Shutdown> {
        self.revocation.as_ref()
    }

    /// These grants, watched by `revocation`.
    pub(crate) fn with_revocation(mut self, revocation: Shutdown) -> Grants {
        self.revocation = Some(revocation);
        self
    }

    /// These grants, as a ticket's redemption makes them.
    pub(crate) fn redeemed(mut self) -> Grants {
        self.from_ticket = true;
        self
    }

    /// Whether these grants came from a ticket.
    pub(crate) fn came_from_ticket(&self) -> bool {
        self.from_ticket
    }

    /// These grants, with a flag that tells whether a layer bound streams to them.
    pub(crate) fn with_binding_flag(mut self) -> Grants {
        self.bound = Some(Arc::default());
        self
    }

    /// A layer bound the request's streams to these grants (their expiry, their revocation).
    pub(crate) fn mark_bound(&self) {
        if let Some(bound) = &self.bound {
            bound.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a layer bound streams to these grants; `true` when nothing asked.
    pub(crate) fn is_bound(&self) -> bool {
        self.bound
            .as_ref()
            .is_none_or(|bound| bound.load(Ordering::Relaxed))
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(&mut self.inner)
    }

    /// The grants as text, for a ticket kept in a shared store: netstrings (`<length>:<bytes>`)
    /// of the subject, the times in milliseconds, and the rules.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        let mut put = |tag: &str, value: &str| {
            out.push_str(tag);
            out.push_str(&value.len().to_string());
            out.push(':');
            out.push_str(value);
        };
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
                .to_string()
        };
        if let Some(subject) = &self.inner.subject {
            put("s", subject);
        }
        if let Some(at) = self.inner.expires {
            put("x", &ms(at));
        }
        if let Some(at) = self.inner.issued {
            put("i", &ms(at));
        }
        for rule in &self.inner.topics {
            match rule {
                TopicMatch::Exact(name) => put("e", name),
                TopicMatch::Prefix(prefix) => put("p", prefix),
            }
        }
        out
    }

    /// Grants read back from [`encode`](Grants::encode); `None` for anything else.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn decode(mut text: &str) -> Option<Grants> {
        let mut inner = Inner::default();
        let time = |v: &str| -> Option<SystemTime> {
            let ms: u64 = v.parse().ok()?;
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
        };
        while !text.is_empty() {
            let tag = text.get(..1)?;
            let colon = text.find(':')?;
            let len: usize = text.get(1..colon)?.parse().ok()?;
            let value = text.get(colon + 1..colon + 1 + len)?;
            text = &text[colon + 1 + len..];
            match tag {
                "s" => inner.subject = Some(value.into()),
                "x" => inner.expires = Some(time(value)?),
                "i" => inner.issued = Some(time(value)?),
                "e" => inner.topics.push(TopicMatch::exact(value)),
                "p" => inner.topics.push(TopicMatch::prefix(value)),
                _ => return None,
            }
        }
        Some(Grants {
            inner: Arc::new(inner),
            revocation: None,
            bound: None,
            from_ticket: false,
        })
    }
}

impl PartialEq for Grants {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grants")
            .field("subject", &self.inner.subject)
            .field("topics", &self.inner.topics)
            .field("expires", &self.inner.expires)
            .field("issued", &self.inner.issued)
            .finish()
    }
}

/// The grants do not allow this topic: answered with `403 Forbidden` and an empty body.
///
/// With feature `axum` it is a response (`impl IntoResponse`), with `warp` a reply, so a
/// handler returns it as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotGranted(pub(crate) ());

impl fmt::Display for NotGranted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("topic not granted")
    }
}

impl StdError for NotGranted {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_come_back_from_their_text() {
        let grants = Grants::new()
            .subject("a:l\ni1:ce")
            .exact("user:1:x")
            .prefix("")
            .expires_at(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
            .issued_at(SystemTime::UNIX_EPOCH + Duration::from_millis(5));
        let back = Grants::decode(&grants.encode()).unwrap();
        assert_eq!(back, grants);
        assert_eq!(Grants::decode("").unwrap(), Grants::new());
        for bad in ["s", "s5:abc", "q1:a", "x3:abc", "s:a", "e-1:a"] {
            assert!(Grants::decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn expiry_saturates_and_expired_grants_open_no_subscription() {
        let far = Grants::new().expires_in(Duration::MAX);
        assert!(!far.is_expired(), "about a century ahead, no overflow");
        let hub = crate::hub::Hub::new();
        let gone = Grants::new()
            .exact("t")
            .expires_at(SystemTime::now() - Duration::from_secs(1));
        assert!(hub.topic("t").subscribe(None).granted(&gone).is_err());
        assert_eq!(hub.stats().forbidden, 1);
    }

    #[test]
    fn rules_cover_what_they_should() {
        let all = TopicMatch::prefix("");
        assert!(all.covers(&TopicMatch::prefix("a")));
        assert!(!all.covers(&TopicMatch::exact("tower-sse:revocations")));
        assert!(TopicMatch::prefix("a").covers(&TopicMatch::exact("ab")));
        assert!(!TopicMatch::prefix("ab").covers(&TopicMatch::prefix("a")));
        assert!(!TopicMatch::exact("a").covers(&TopicMatch::prefix("a")));
        assert!(Grants::new().narrowed([]).unwrap().topics().is_empty());
    }
}
