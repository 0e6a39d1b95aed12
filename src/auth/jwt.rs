//! [`Jwt`]: an authorizer that makes grants from a JSON Web Token's claims (feature `jwt`).

use super::authorize::{Authorize, Denied};
use crate::grants::{Grants, TopicMatch};
use http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::{
    fmt,
    future::{ready, Ready},
    sync::Arc,
    time::{Duration, SystemTime},
};

/// An [`Authorize`]r that reads a JWT and makes its grants from the claims (feature `jwt`).
///
/// - The algorithm is the one given here, never the one the token's header names: a token
///   signed with another (`none` included) is refused.
/// - `exp` is required and becomes the grants' [expiry](Grants::expires_at): the stream ends
///   then. `nbf` is checked when present; `sub` is the [subject](Grants::subject); `iat`
///   the [issue time](Grants::issued_at).
/// - The topics claim (`topics` by default) is a list of topic names; one that ends with `*`
///   is a prefix (`"team:42/*"`); a token without it allows nothing.
/// - The token comes from `Authorization: Bearer <token>`, or from a cookie
///   ([`from_cookie`](Jwt::from_cookie), what an `EventSource` can send). It is never read
///   from the URL, where it would reach logs and `Referer`, unless the app says so with
///   [`from_query_unsafe`](Jwt::from_query_unsafe).
///
/// Any failure is a `401`, without detail; the reason is logged at `DEBUG`, never the token.
///
/// ```
/// use jsonwebtoken::{encode, EncodingKey, Header};
/// use tower_sse::auth::{Authorize, Jwt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let secret = b"a secret of the app, 32 bytes or more!";
/// let jwt = Jwt::hs256(secret).issuer("https://app.example");
/// let claims = serde_json::json!({
///     "sub": "alice", "iss": "https://app.example",
///     "exp": jsonwebtoken::get_current_timestamp() + 600,
///     "topics": ["user:alice", "team:42/*"],
/// });
/// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(secret)).unwrap();
/// let (parts, ()) = http::Request::get("/events")
///     .header("authorization", format!("Bearer {token}"))
///     .body(())
///     .unwrap()
///     .into_parts();
/// let grants = jwt.authorize(&parts).await.unwrap();
/// assert_eq!(grants.subject_name(), Some("alice"));
/// assert!(grants.allows("user:alice") && grants.allows("team:42/news"));
/// assert!(!grants.allows("user:bob"));
/// # }
/// ```
#[derive(Clone)]
#[must_use]
pub struct Jwt {
    inner: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    key: DecodingKey,
    validation: Validation,
    source: Source,
    topics_claim: String,
}

#[derive(Clone, Debug)]
enum Source {
    Bearer,
    Cookie(String),
    Query(String),
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt")
            .field("algorithms", &self.inner.validation.algorithms)
            .field("source", &self.inner.source)
            .field("topics_claim", &self.inner.topics_claim)
            .finish_non_exhaustive()
    }
}

impl Jwt {
    /// Tokens signed with `algorithm` and verified with `key`, read from
    /// `Authorization: Bearer`.
    pub fn new(key: DecodingKey, algorithm: Algorithm) -> Jwt {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        Jwt {
            inner: Arc::new(Config {
                key,
                validation,
                source: Source::Bearer,
                topics_claim: "topics".into(),
            }),
        }
    }

    /// Tokens signed with HMAC-SHA256 and this secret.
    pub fn hs256(secret: &[u8]) -> Jwt {
        Jwt::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// Reads the token from this cookie instead of the `Authorization` header.
    pub fn from_cookie(mut self, name: impl Into<String>) -> Jwt {
        self.config().source = Source::Cookie(name.into());
        self
    }

    /// Reads the token from this query parameter: the app's explicit choice to accept a
    /// long-lived credential in the URL, where logs, history and `Referer` keep it. Prefer a
    /// cookie or a stream [ticket](super::Tickets).
    pub fn from_query_unsafe(mut self, name: impl Into<String>) -> Jwt {
        self.config().source = Source::Query(name.into());
        self
    }

    /// Requires this `iss`.
    pub fn issuer(mut self, issuer: &str) -> Jwt {
        self.config().validation.set_issuer(&[issuer]);
        self
    }

    /// Requires this `aud` (one of the token's).
    pub fn audience(mut self, audience: &str) -> Jwt {
        self.config().validation.set_audience(&[audience]);
        self
    }

    /// Tolerance for clock skew on `exp` and `nbf`. Default: none.
    pub fn leeway(mut self, leeway: Duration) -> Jwt {
        self.config().validation.leeway = leeway.as_secs();
        self
    }

    /// The claim that lists the topics. Default: `topics`.
    pub fn topics_claim(mut self, name: impl Into<String>) -> Jwt {
        self.config().topics_claim = name.into();
        self
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.inner)
    }

    /// The token the request carries, from the configured place.
    fn token<'a>(&self, parts: &'a Parts) -> Option<&'a str> {
        match &self.inner.source {
            Source::Bearer => {
                let value = parts.headers.get(http::header::AUTHORIZATION)?;
                let value = value.to_str().ok()?;
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            }
            Source::Cookie(name) => parts
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| c.trim().strip_prefix(name.as_str())?.strip_prefix('=')),
            Source::Query(name) => parts
                .uri
                .query()?
                .split('&')
                .find_map(|pair| pair.strip_prefix(name.as_str())?.strip_prefix('=')),
        }
    }

    fn grants(&self, parts: &Parts) -> Result<Grants, &'static str> {
        let token = self.token(parts).ok_or("no token")?;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &self.inner.key,
            &self.inner.validation,
        )
        .map_err(|_| "token not valid")?;
        let claims = Claims::deserialize(serde_json::Value::Object(data.claims.clone()))
            .map_err(|_| "claims of the wrong type")?;
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let mut grants = Grants::new().expires_at(at(claims.exp));
        if let Some(sub) = claims.sub {
            grants = grants.subject(sub);
        }
        if let Some(iat) = claims.iat {
            grants = grants.issued_at(at(iat));
        }
        let topics = match data.claims.get(&self.inner.topics_claim) {
            None => Vec::new(),
            Some(value) => Vec::<String>::deserialize(value).map_err(|_| "topics not a list")?,
        };
        for topic in topics {
            grants = grants.topic(match topic.strip_suffix('*') {
                Some(prefix) => TopicMatch::prefix(prefix),
                None => TopicMatch::exact(topic),
            });
        }
        Ok(grants)
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    sub: Option<String>,
    iat: Option<u64>,
}

impl Authorize for Jwt {
    type Future = Ready<Result<Grants, Denied>>;

    fn authorize(&self, parts: &Parts) -> Self::Future {
        ready(self.grants(parts).map_err(|reason| {
            tracing::debug!(reason, "JWT refused");
            Denied::Unauthenticated
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(header: &Header, claims: serde_json::Value, secret: &[u8]) -> String {
        encode(header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn parts(authorization: &str) -> Parts {
        http::Request::get("/e")
            .header("authorization", authorization)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn later() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[test]
    fn only_the_pinned_algorithm_and_a_live_token_pass() {
        let jwt = Jwt::hs256(SECRET);
        let good = serde_json::json!({ "sub": "a", "exp": later(), "topics": ["x"] });
        let ok = token(&Header::default(), good.clone(), SECRET);
        assert!(jwt.grants(&parts(&format!("Bearer {ok}"))).is_ok());
        assert!(jwt.grants(&parts(&format!("bearer {ok}"))).is_ok());

        let other_alg = token(&Header::new(Algorithm::HS384), good.clone(), SECRET);
        let wrong_key = token(
            &Header::default(),
            good.clone(),
            b"another secret, also long enough",
        );
        let expired = token(
            &Header::default(),
            serde_json::json!({ "sub": "a", "exp": 1_000_000 }),
            SECRET,
        );
        let no_exp = token(
            &Header::default(),
            serde_json::json!({ "sub": "a" }),
            SECRET,
        );
        let future = token(
            &Header::default(),
            serde_json::json!({ "exp": later(), "nbf": later() }),
            SECRET,
        );
        // A token with `alg: none` and no signature.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            ok.split('.').nth(1).unwrap()
        );
        for bad in [
            other_alg,
            wrong_key,
            expired,
            no_exp,
            future,
            none,
            "x.y.z".into(),
        ] {
            assert!(
                jwt.grants(&parts(&format!("Bearer {bad}"))).is_err(),
                "{bad}"
            );
        }
        assert!(jwt.grants(&parts(&format!("Basic {ok}"))).is_err());
    }

    #[test]
    fn claims_become_grants() {
        let iat = jsonwebtoken::get_current_timestamp() - 5;
        let claims = serde_json::json!({
            "sub": "alice", "exp": later(), "iat": iat, "perms": ["user:alice", "room:*"],
        });
        let jwt = Jwt::hs256(SECRET).topics_claim("perms");
        let grants = jwt
            .grants(&parts(&format!(
                "Bearer {}",
                token(&Header::default(), claims, SECRET)
            )))
            .unwrap();
        assert_eq!(grants.subject_name(), Some("alice"));
        assert!(grants.allows("user:alice") && grants.allows("room:1"));
        assert!(!grants.allows("user:alice2") && !grants.allows("roo"));
        assert_eq!(
            grants.issued(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(iat))
        );
        assert!(grants.expiry().is_some());

        let bad_topics = serde_json::json!({ "exp": later(), "topics": "user:alice" });
        let token = token(&Header::default(), bad_topics, SECRET);
        assert!(jwt
            .clone()
            .topics_claim("topics")
            .grants(&parts(&format!("Bearer {token}")))
            .is_err());
    }

    #[test]
    fn a_cookie_or_an_explicit_query_parameter() {
        let ok = token(
            &Header::default(),
            serde_json::json!({ "exp": later(), "topics": ["t"] }),
            SECRET,
        );
        let request = |uri: &str, cookie: Option<&str>| {
            let mut req = http::Request::get(uri);
            if let Some(cookie) = cookie {
                req = req.header("cookie", cookie);
            }
            req.body(()).unwrap().into_parts().0
        };
        let cookie = Jwt::hs256(SECRET).from_cookie("jwt");
        assert!(cookie
            .grants(&request("/", Some(&format!("a=1; jwt={ok}"))))
            .is_ok());
        assert!(cookie.grants(&request("/", Some("jwtx=1"))).is_err());
        let in_url = format!("/?token={ok}");
        assert!(
            Jwt::hs256(SECRET).grants(&request(&in_url, None)).is_err(),
            "never from the URL by default"
        );
        assert!(Jwt::hs256(SECRET)
            .from_query_unsafe("token")
            .grants(&request(&in_url, None))
            .is_ok());
    }
}
