//! The error model.
//!
//! Clients only ever see an [`ErrorCode`] (a stable string from the wire contract) and a
//! human-readable message. Causes — database errors, token parse errors — stay on the
//! server side as `#[source]`s and are logged once where the request ends.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The stable error codes of the wire contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No valid token.
    Unauthorized,
    /// Valid token, but not allowed to touch this workspace or contact.
    Forbidden,
    /// The payload does not parse or breaks a rule (missing id, empty body…).
    InvalidPayload,
    /// The payload is larger than the configured limit.
    PayloadTooLarge,
    /// The contact, workspace or message does not exist.
    NotFound,
    /// Over budget; retry after `retry_after_ms`.
    RateLimited,
    /// A plugin refused the message, with its reason.
    Rejected,
    /// The server cannot take it now (storage down, queue full); retry later.
    Unavailable,
    /// A bug or an unexpected failure on the server.
    Internal,
}

impl ErrorCode {
    /// The wire spelling, e.g. `"invalid_payload"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::InvalidPayload => "invalid_payload",
            Self::PayloadTooLarge => "payload_too_large",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::Rejected => "rejected",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status that fits the code, for REST hosts.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::InvalidPayload => 400,
            Self::PayloadTooLarge => 413,
            Self::NotFound => 404,
            Self::RateLimited => 429,
            Self::Rejected => 422,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request failed: what the client is told, and what the server logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// No valid identity.
    #[error("unauthorized")]
    Unauthorized,
    /// The user is not a member of the workspace the request touches.
    #[error("not a member of this workspace")]
    Forbidden,
    /// A per-socket limit (rooms) was reached.
    #[error("{0}")]
    LimitReached(String),
    /// The payload is malformed; the message says what is wrong.
    #[error("{0}")]
    InvalidPayload(String),
    /// The payload (or one of its fields) is over its limit.
    #[error("{what} is {actual} bytes, over the limit of {limit}")]
    PayloadTooLarge {
        /// Which part.
        what: &'static str,
        /// Its size.
        actual: usize,
        /// The limit.
        limit: usize,
    },
    /// Something named in the request does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Over the rate budget.
    #[error("rate limit exceeded")]
    RateLimited {
        /// When the next request would be allowed.
        retry_after: Duration,
    },
    /// A plugin refused the message.
    #[error("{0}")]
    Rejected(String),
    /// Too much work queued (the commit queue is full, or a closed-policy moderator had
    /// no free slot in time); retry after the hint.
    #[error("the server is busy, retry later")]
    Overloaded {
        /// When to retry.
        retry_after: Duration,
    },
    /// The node is draining for a shutdown and takes no new sends; send again once
    /// reconnected (with the same `clientId`, so nothing is stored twice).
    #[error("the server is shutting down: send again once reconnected")]
    ShuttingDown,
    /// Storage failed; the cause is logged, never sent.
    #[error("storage is unavailable, retry later")]
    Store(#[from] StoreError),
}

impl ChatError {
    /// [`ChatError::Overloaded`] with the retry hint every bounded queue gives.
    pub(crate) fn busy() -> Self {
        Self::Overloaded {
            retry_after: Duration::from_millis(200),
        }
    }

    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::Forbidden | Self::LimitReached(_) => ErrorCode::Forbidden,
            Self::InvalidPayload(_) => ErrorCode::InvalidPayload,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Rejected(_) => ErrorCode::Rejected,
            Self::Overloaded { .. } | Self::ShuttingDown => ErrorCode::Unavailable,
            Self::Store(StoreError::Unavailable(_)) => ErrorCode::Unavailable,
            Self::Store(StoreError::NotFound(_)) => ErrorCode::NotFound,
            Self::Store(_) => ErrorCode::Internal,
        }
    }

    /// The message shown to the client: never a database or parser internal.
    pub fn client_message(&self) -> String {
        match self {
            Self::Store(StoreError::NotFound(what)) => format!("{what} not found"),
            Self::Store(StoreError::Unavailable(_)) => "storage is unavailable, retry later".into(),
            Self::Store(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// How long to wait before retrying, for `rate_limited` and `unavailable`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } | Self::Overloaded { retry_after } => {
                Some(*retry_after)
            }
            Self::Store(StoreError::Unavailable(_)) | Self::ShuttingDown => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// The wire shape of this error.
    pub fn to_wire(&self) -> crate::protocol::WireError {
        crate::protocol::WireError {
            code: self.code(),
            message: self.client_message(),
            retry_after_ms: self
                .retry_after()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)),
        }
    }
}

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or is overloaded (pool time-out, connection refused).
    #[error("store unavailable")]
    Unavailable(#[source] BoxError),
    /// A referenced row does not exist (e.g. the contact of a new message).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule other than idempotency was broken (e.g. a taken phone number).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// Stored data that does not decode: a bug or a foreign write.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other backend failure.
    #[error("store backend error")]
    Backend(#[source] BoxError),
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token in `auth.token`, the `Authorization` header or `?token=`.
    #[error("no token")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token is malformed, badly signed, uses a refused algorithm or lacks a claim.
    #[error("invalid token")]
    Invalid(#[source] BoxError),
}
