//! Authentication: who is on the other end of a socket or a REST call.
//!
//! An [`Authenticator`] turns a bearer token into an [`Identity`]. The bundled
//! [`JwtAuthenticator`] accepts JWTs signed with one configured algorithm (HS256 with a
//! shared secret, or RS256/ES256 with a public key), requires `exp` and `sub`, and
//! refuses everything else — `alg: none` and algorithm confusion included.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::model::{UserId, WorkspaceId};

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's id (`sub`).
    pub user_id: UserId,
    /// When the credentials expire; a socket is disconnected then.
    pub expires_at: Option<DateTime<Utc>>,
    /// Workspaces granted by the token itself. When `Some`, this list is authoritative
    /// for membership and storage is not asked; when `None`, storage decides.
    pub workspaces: Option<Vec<WorkspaceId>>,
}

/// Turns a token into an [`Identity`].
///
/// Implement it to plug in your own sessions; the bundled one is [`JwtAuthenticator`].
pub trait Authenticator: Send + Sync + 'static {
    /// Checks a token. A refusal never says more than [`AuthError`]'s variant to clients.
    fn authenticate(&self, token: &str)
    -> impl Future<Output = Result<Identity, AuthError>> + Send;
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) trait DynAuthenticator: Send + Sync + 'static {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>>;
}

impl<T: Authenticator> DynAuthenticator for T {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(Authenticator::authenticate(self, token))
    }
}

/// The claims of a livechat JWT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch. Required.
    pub exp: i64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Optional workspace grant; see [`Identity::workspaces`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<Vec<WorkspaceId>>,
}

impl Claims {
    /// Claims for `user`, valid for `ttl` from now.
    pub fn new(user: impl Into<String>, ttl: chrono::Duration) -> Self {
        let now = Utc::now();
        Self {
            sub: user.into(),
            exp: (now + ttl).timestamp(),
            iat: Some(now.timestamp()),
            workspaces: None,
        }
    }

    /// Signs the claims with an HS256 secret.
    ///
    /// ```
    /// use livechat_core::auth::Claims;
    /// let token = Claims::new("agent-1", chrono::Duration::hours(1))
    ///     .sign_hs256(b"a secret of at least 32 bytes....")
    ///     .unwrap();
    /// assert_eq!(token.split('.').count(), 3);
    /// ```
    pub fn sign_hs256(&self, secret: &[u8]) -> Result<String, AuthError> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            self,
            &EncodingKey::from_secret(secret),
        )
        .map_err(|e| AuthError::Invalid(Box::new(e)))
    }
}

/// Verifies JWTs with one key and one algorithm.
///
/// ```
/// # tokio_test_block_on(async {
/// use livechat_core::auth::{Authenticator, Claims, JwtAuthenticator};
/// let secret = b"a secret of at least 32 bytes....";
/// let auth = JwtAuthenticator::hs256(secret);
/// let token = Claims::new("agent-1", chrono::Duration::hours(1)).sign_hs256(secret).unwrap();
/// let who = auth.authenticate(&token).await.unwrap();
/// assert_eq!(who.user_id.as_str(), "agent-1");
/// assert!(auth.authenticate("not-a-token").await.is_err());
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct JwtAuthenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret for HS256: never print it.
        f.debug_struct("JwtAuthenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtAuthenticator {
    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        // Expiry is enforced to the second: the socket is cut at `exp`, so the
        // handshake must not accept what the timer would cut at once.
        validation.leeway = 0;
        Self { key, validation }
    }

    /// HS256 with a shared secret. Use at least 32 random bytes.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_key(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// RS256 with an RSA public key in PEM.
    pub fn rs256_pem(public_key: &[u8]) -> Result<Self, AuthError> {
        let key =
            DecodingKey::from_rsa_pem(public_key).map_err(|e| AuthError::Invalid(Box::new(e)))?;
        Ok(Self::with_key(key, Algorithm::RS256))
    }

    /// ES256 with an EC (P-256) public key in PEM.
    pub fn es256_pem(public_key: &[u8]) -> Result<Self, AuthError> {
        let key =
            DecodingKey::from_ec_pem(public_key).map_err(|e| AuthError::Invalid(Box::new(e)))?;
        Ok(Self::with_key(key, Algorithm::ES256))
    }

    /// Verifies a token synchronously.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(Box::new(e)),
            },
        )?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty `sub` claim".into()));
        }
        Ok(Identity {
            user_id: UserId(claims.sub),
            expires_at: Utc.timestamp_opt(claims.exp, 0).single(),
            workspaces: claims.workspaces,
        })
    }
}

impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify(token)
    }
}

/// Finds the token of a handshake: `auth.token`, else `Authorization: Bearer`, else
/// the `token` query parameter.
pub fn token_from_handshake<'a>(
    auth: Option<&'a serde_json::Value>,
    parts: &'a http::request::Parts,
) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(t) = auth.and_then(|a| a.get("token")).and_then(|t| t.as_str()) {
        return Some(t.into());
    }
    if let Some(t) = bearer_token(&parts.headers) {
        return Some(t.into());
    }
    parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
    })
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_a_good_token() {
        let auth = JwtAuthenticator::hs256(SECRET);
        let token = Claims::new("u1", chrono::Duration::minutes(5))
            .sign_hs256(SECRET)
            .unwrap();
        assert_eq!(auth.verify(&token).unwrap().user_id, UserId::from("u1"));
    }

    #[test]
    fn refuses_expired_badly_signed_and_unsigned() {
        let auth = JwtAuthenticator::hs256(SECRET);
        let expired = Claims::new("u1", chrono::Duration::minutes(-5))
            .sign_hs256(SECRET)
            .unwrap();
        assert!(matches!(auth.verify(&expired), Err(AuthError::Expired)));

        let other = Claims::new("u1", chrono::Duration::minutes(5))
            .sign_hs256(b"another secret, another secret!!")
            .unwrap();
        assert!(matches!(auth.verify(&other), Err(AuthError::Invalid(_))));

        // alg: none, hand-made.
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let exp = Utc::now().timestamp() + 300;
        let body = base64_url(format!(r#"{{"sub":"u1","exp":{exp}}}"#).as_bytes());
        let unsigned = format!("{header}.{body}.");
        assert!(matches!(auth.verify(&unsigned), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn requires_exp() {
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoExp { sub: "u1".into() },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        let auth = JwtAuthenticator::hs256(SECRET);
        assert!(matches!(auth.verify(&token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn finds_the_token_in_each_place() {
        let req = http::Request::builder()
            .uri("/socket.io/?EIO=4&token=q.q.q")
            .header("authorization", "Bearer h.h.h")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let auth = serde_json::json!({ "token": "a.a.a" });
        assert_eq!(token_from_handshake(Some(&auth), &parts).unwrap(), "a.a.a");
        assert_eq!(token_from_handshake(None, &parts).unwrap(), "h.h.h");
        let req = http::Request::builder()
            .uri("/socket.io/?EIO=4&token=q.q.q")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(token_from_handshake(None, &parts).unwrap(), "q.q.q");
        let (parts, ()) = http::Request::new(()).into_parts();
        assert!(token_from_handshake(None, &parts).is_none());
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
