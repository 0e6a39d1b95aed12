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
///   then. `nbf` is checked when present (a whole number of seconds, else the token is
///   refused); `iss` and `aud` are required when [`issuer`](Jwt::issuer) and
///   [`audience`](Jwt::audience) are set; `sub` is the [subject](Grants::subject); `iat` the
///   [issue time](Grants::issued_at). A header with a `crit` extension is refused.
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
    /// The signature, the algorithm and `exp` (jsonwebtoken's checks); the other claims are
    /// checked here, strictly (a claim of the wrong type is a refusal, never skipped).
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
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
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        Jwt {
            inner: Arc::new(Config {
                key,
                validation,
                issuer: None,
                audience: None,
                leeway: 0,
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

    /// Requires `iss` to be this string: a token without it, or with another, is refused.
    pub fn issuer(mut self, issuer: &str) -> Jwt {
        self.config().issuer = Some(issuer.to_owned());
        self
    }

    /// Requires `aud` to be this string, or a list that holds it: a token without it is
    /// refused.
    pub fn audience(mut self, audience: &str) -> Jwt {
        self.config().audience = Some(audience.to_owned());
        self
    }

    /// Tolerance for clock skew on `exp` and `nbf`, in whole seconds: a token is taken up to
    /// this long after its `exp` (and its stream ends then), and this long before its `nbf`.
    /// Default: none.
    pub fn leeway(mut self, leeway: Duration) -> Jwt {
        let config = self.config();
        config.leeway = leeway.as_secs();
        config.validation.leeway = leeway.as_secs();
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
        if has_critical_extension(token) {
            // RFC 7515: an extension the recipient must understand, and this one does not.
            return Err("token with a critical header extension");
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &self.inner.key,
            &self.inner.validation,
        )
        .map_err(|_| "token not valid")?;
        let claims = &data.claims;
        let typed = Claims::deserialize(serde_json::Value::Object(claims.clone()))
            .map_err(|_| "claims of the wrong type")?;
        let config = &*self.inner;
        if let Some(issuer) = &config.issuer {
            if claims.get("iss").and_then(|v| v.as_str()) != Some(issuer.as_str()) {
                return Err("token from another issuer");
            }
        }
        if let Some(audience) = &config.audience {
            let ours = |v: &serde_json::Value| v.as_str() == Some(audience.as_str());
            let taken = match claims.get("aud") {
                Some(serde_json::Value::Array(list)) => list.iter().any(ours),
                Some(one) => ours(one),
                None => false,
            };
            if !taken {
                return Err("token for another audience");
            }
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_u64().ok_or("nbf not a whole number of seconds")?;
            if nbf > now.saturating_add(config.leeway) {
                return Err("token not valid yet");
            }
        }
        let at = |secs: u64| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs));
        let expiry = at(typed.exp.saturating_add(config.leeway)).ok_or("exp out of range")?;
        let mut grants = Grants::new().expires_at(expiry);
        if let Some(sub) = typed.sub {
            grants = grants.subject(sub);
        }
        if let Some(iat) = typed.iat {
            grants = grants.issued_at(at(iat).ok_or("iat out of range")?);
        }
        let topics = match claims.get(&config.topics_claim) {
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

/// Whether the token's header names a `crit` extension (this authorizer understands none).
/// A header that does not decode is left to the verification, which refuses it.
fn has_critical_extension(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|header| header.get("crit").is_some())
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
