//! The client's one error type.
//!
//! The variants mirror the reference Python client's exception classes
//! (`AuthenticationError`, `InvalidRequestError`, `ForbiddenError`,
//! `RateLimitError`, `ServerError`, `ServiceUnavailableError`,
//! `APIConnectionError`, `SecurityError`, `APIError`), and add the failures
//! that only this client detects: pin mismatches and changed server keys.
//!
//! | Python class | status | [`Error`] variant | retried |
//! |---|---|---|---|
//! | `InvalidRequestError` | 400 | [`Error::InvalidRequest`] | no |
//! | `AuthenticationError` | 401 | [`Error::Authentication`] | no |
//! | `ForbiddenError` | 403 | [`Error::Forbidden`] | no |
//! | `APIError` | 404 | [`Error::NotFound`] | no |
//! | `RateLimitError` | 429 | [`Error::RateLimit`] | yes |
//! | `ServerError` / `APIError` | 500, 502, 504 | [`Error::Server`] | yes |
//! | `ServiceUnavailableError` | 503 | [`Error::ServiceUnavailable`] | yes |
//! | `APIError` | any other | [`Error::Api`] | no |
//! | `APIConnectionError` | — | [`Error::Connection`], [`Error::Timeout`] | connection errors: yes |
//! | `SecurityError` | — | [`Error::Security`], [`Error::InvalidServerKey`], [`Error::PinMismatch`], [`Error::ServerKeyChanged`], [`Error::V2Security`], [`Error::KeysSignature`], [`Error::TierDowngrade`], [`Error::Downgrade`], [`Error::TierNeedsV2`], [`Error::NotAttested`], [`Error::AttestationNeedsV2`] | no |
//!
//! No message ever contains a prompt, a completion, a key, a password or an
//! API key. Text the server sends (`detail`) is truncated and stripped of
//! control characters before it is shown.

use std::path::PathBuf;
use std::time::Duration;

use nomyo_core::Fingerprint;

mod api;
mod downgrade;

pub(crate) use api::sanitize;
pub use api::ApiError;
use downgrade::downgrade_message;
pub use downgrade::{Downgrade, KnownBy};

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client is misconfigured (bad base URL, bad option).
    #[error("{0}")]
    Config(String),

    /// A plain `http://` base URL without `allow_http`; refused before any
    /// network I/O.
    #[error("refusing the plain-HTTP URL {url}: API keys and server keys would travel unprotected; use https:// (or allow HTTP explicitly, for local development only)")]
    InsecureUrl {
        /// The URL (without credentials).
        url: String,
    },

    /// The request cannot be sent as it is (checked before sending).
    #[error("invalid request: {0}")]
    InvalidInput(String),

    /// HTTP 400: the server refused the request as malformed.
    #[error("bad request: {}", .0.reason_or("the server refused the request"))]
    InvalidRequest(ApiError),

    /// HTTP 401: missing or wrong API key.
    #[error("authentication failed: {}", .0.detail_or("invalid or missing API key"))]
    Authentication(ApiError),

    /// HTTP 403: e.g. the model is not allowed for the requested security tier.
    #[error("forbidden: {}", .0.detail_or("model not allowed for the requested security tier"))]
    Forbidden(ApiError),

    /// HTTP 404: secure inference not enabled, or unknown model.
    #[error("not found: {}", .0.reason_or("secure inference not enabled on this server"))]
    NotFound(ApiError),

    /// HTTP 429 after all retries.
    #[error("rate limit exceeded: {}{}", .error.detail_or("too many requests"), .error.after_attempts())]
    RateLimit {
        /// The server's answer.
        error: ApiError,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },

    /// HTTP 500, 502 or 504 after all retries.
    #[error("server error (HTTP {}): {}{}", .0.status, .0.detail_or("internal error"), .0.after_attempts())]
    Server(ApiError),

    /// HTTP 503 after all retries: the inference backend is unavailable or saturated.
    #[error("service unavailable: {}{}", .0.detail_or("the inference backend is unavailable"), .0.after_attempts())]
    ServiceUnavailable(ApiError),

    /// Any other unexpected HTTP status (413, 3xx, ...).
    #[error("unexpected answer from the server: {0}")]
    Api(ApiError),

    /// The server could not be reached, or the connection broke, after all retries.
    #[error("cannot reach {origin}: {message}{}", attempts_suffix(*.attempts))]
    Connection {
        /// The server's origin.
        origin: String,
        /// What happened.
        message: String,
        /// How many attempts were made.
        attempts: u32,
        /// The transport error.
        #[source]
        source: Option<reqwest::Error>,
    },

    /// The TLS handshake failed: the server's certificate is not trusted (or
    /// TLS is not spoken there). Not retried.
    #[error("TLS with {origin} failed: {message}")]
    Tls {
        /// The server's origin.
        origin: String,
        /// What the TLS layer said.
        message: String,
        /// The transport error.
        #[source]
        source: Option<reqwest::Error>,
    },

    /// The server did not answer within the configured timeout.
    #[error("{origin} did not answer within {}s", .timeout.as_secs_f32())]
    Timeout {
        /// The server's origin.
        origin: String,
        /// The timeout that expired.
        timeout: Duration,
    },

    /// The response failed a security check: malformed package, unsupported
    /// version or algorithm (downgrade), or decryption failed. Deliberately coarse.
    #[error("security check failed on the response: {0}")]
    Security(#[source] nomyo_core::Error),

    /// The response does not belong to this request.
    #[error("security check failed: {0}")]
    ResponseMismatch(&'static str),

    /// The server's published key is unusable (not an RSA public key, too small).
    #[error("the server's public key is unusable: {0}")]
    InvalidServerKey(String),

    /// The server's key matches none of the configured pins.
    #[error("server key pin mismatch for {origin}: the server presents {found}, which matches none of the pinned keys ({}); refusing to send anything", join(.pins))]
    PinMismatch {
        /// The server's origin.
        origin: String,
        /// Fingerprint of the key the server presented.
        found: Fingerprint,
        /// The configured pins.
        pins: Vec<Fingerprint>,
    },

    /// Trust on first use: the server's key differs from the one recorded
    /// in the known-servers file.
    #[error("THE SERVER KEY OF {origin} HAS CHANGED: {file}:{line} records {known}, the server now presents {found}. \
        This happens when the operator rotates the key, or when someone intercepts the connection. \
        If you have verified the new key with the operator, delete line {line} of {file} (or pin the new key) and try again.",
        file = .file.display())]
    ServerKeyChanged {
        /// The server's origin.
        origin: String,
        /// The fingerprint on record.
        known: Fingerprint,
        /// The fingerprint the server presents now.
        found: Fingerprint,
        /// The known-servers file.
        file: PathBuf,
        /// The line (1-based) of the first record for this origin.
        line: usize,
    },

    /// The known-servers file cannot be read, parsed or written.
    #[error("known-servers file {}: {message}", .path.display())]
    KnownServers {
        /// The file.
        path: PathBuf,
        /// What is wrong (no secret material).
        message: String,
    },

    /// The client key could not be generated, loaded or saved.
    #[error("client key: {0}")]
    ClientKey(#[source] nomyo_core::Error),

    /// The decrypted response is not a chat completion.
    #[error("invalid response: {0}")]
    InvalidResponse(String),

    /// Protocol v2: the answer is not encrypted to this request (no or a bad
    /// `Ehbp-Response-Nonce`), a chunk failed to decrypt, or the body was
    /// cut. Never retried; nothing of the answer is returned.
    #[error("security check failed on the v2 response: {0}")]
    V2Security(#[source] nomyo_core::v2::V2Error),

    /// The sealed answer says it was served at a lower security tier than
    /// the request asked for (or does not say which): the tier header was
    /// lowered on the way, or the server ignored it. The answer is dropped.
    #[error(
        "security check failed: {requested} tier requested, but the answer was served at {}; \
         the X-Security-Tier header may have been changed in transit",
        .served.map_or("an unstated tier".to_owned(), |t| format!("the {t} tier"))
    )]
    TierDowngrade {
        /// The tier the request asked for.
        requested: nomyo_core::SecurityTier,
        /// The tier the answer's `_metadata` names, if any.
        served: Option<nomyo_core::SecurityTier>,
    },

    /// Protocol v2: the server's key list carries a `Nomyo-Keys-Signature`
    /// that is malformed, made by another key than the server's trusted v1
    /// key, or that does not verify over the list (altered keys or
    /// signature). The keys are not used; nothing is sent.
    #[error(
        "security check failed on the v2 keys of {origin}: {reason}; refusing to send anything"
    )]
    KeysSignature {
        /// The server's origin.
        origin: String,
        /// What failed.
        #[source]
        reason: nomyo_core::keys_signature::KeysSignatureError,
    },
    /// The server answered in a way its record rules out: an unsigned v2
    /// key list from a server known to sign its lists, no v2 keys from a
    /// server known to speak v2 (a fall-back to v1), or a signed list from a
    /// server on record only with unsigned keys. Someone in the middle may be
    /// stripping signatures or downgrading the protocol; nothing was sent.
    #[error("{}", downgrade_message(.origin, .refused, .known_by))]
    Downgrade {
        /// The server's origin.
        origin: String,
        /// What was refused.
        refused: Downgrade,
        /// Why the server is known to do better.
        known_by: KnownBy,
    },

    /// Protocol auto found no v2 keys and the request asks for a tier above
    /// `standard`: such a request never goes over v1 unless protocol v1 was
    /// chosen explicitly (v1 answers are only as safe as the TLS path).
    #[error(
        "refusing to send a {tier}-tier request to {origin} over protocol v1: it does not publish \
         protocol v2 keys, and protocol auto never serves the high or maximum tier over v1 (a \
         middleman who terminates TLS can read v1 answers). Choose protocol v1 explicitly \
         (--protocol v1) to accept that, or ask the operator to enable v2."
    )]
    TierNeedsV2 {
        /// The server's origin.
        origin: String,
        /// The tier asked for.
        tier: nomyo_core::SecurityTier,
    },

    /// The client requires attestation ([`ClientBuilder::require_attestation`](crate::ClientBuilder::require_attestation))
    /// and the server's evidence did not pass: nothing was sent.
    #[error("{origin} is not attested ({failed}); refusing to send anything (`nomyo attest` shows each check)")]
    NotAttested {
        /// The server's origin.
        origin: String,
        /// The steps that failed or are unverified, as `name status`.
        failed: String,
    },

    /// The client requires attestation and would speak protocol v1, whose
    /// answers a quote cannot authenticate (docs/PROTOCOL.md §14.2).
    #[error("{origin}: attestation requires protocol v2 (a quote cannot authenticate a v1 answer); refusing to send anything")]
    AttestationNeedsV2 {
        /// The server's origin.
        origin: String,
    },
}

fn attempts_suffix(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (after {attempts} attempts)")
    } else {
        String::new()
    }
}

fn join(pins: &[Fingerprint]) -> String {
    pins.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// The HTTP status behind this error, if the server answered.
    pub fn status(&self) -> Option<u16> {
        self.api_error().map(ApiError::status)
    }

    /// The server's answer behind this error, if any.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::InvalidRequest(e)
            | Error::Authentication(e)
            | Error::Forbidden(e)
            | Error::NotFound(e)
            | Error::RateLimit { error: e, .. }
            | Error::Server(e)
            | Error::ServiceUnavailable(e)
            | Error::Api(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is a security failure (the Python client's
    /// `SecurityError`, plus pins, changed keys, refused key files and
    /// untrusted TLS certificates):
    /// the CLI exits with code 4.
    pub fn is_security(&self) -> bool {
        match self {
            Error::Security(_)
            | Error::ResponseMismatch(_)
            | Error::InvalidServerKey(_)
            | Error::PinMismatch { .. }
            | Error::ServerKeyChanged { .. }
            | Error::Tls { .. }
            | Error::V2Security(_)
            | Error::TierDowngrade { .. }
            | Error::KeysSignature { .. }
            | Error::Downgrade { .. }
            | Error::TierNeedsV2 { .. }
            | Error::NotAttested { .. }
            | Error::AttestationNeedsV2 { .. } => true,
            Error::ClientKey(e) => e.is_security(),
            _ => false,
        }
    }

    /// Whether the server refused the caller (401 or 403).
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Authentication(_) | Error::Forbidden(_))
    }

    /// Whether the server or the network failed (after all retries): 429,
    /// 5xx, connection errors, timeouts.
    pub fn is_server_or_network(&self) -> bool {
        matches!(
            self,
            Error::RateLimit { .. }
                | Error::Server(_)
                | Error::ServiceUnavailable(_)
                | Error::Connection { .. }
                | Error::Timeout { .. }
        )
    }
}

/// Result alias for the client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_actionable() {
        let e = Error::Server(ApiError::new(502, b"", 3));
        assert_eq!(
            e.to_string(),
            "server error (HTTP 502): internal error (after 3 attempts)"
        );
        let e = Error::Authentication(ApiError::new(401, br#"{"detail":"Invalid API key"}"#, 1));
        assert_eq!(e.to_string(), "authentication failed: Invalid API key");
        assert!(e.is_auth() && !e.is_security() && e.status() == Some(401));
        let e = Error::Security(nomyo_core::Error::DecryptionFailed);
        assert!(e.is_security());
        assert_eq!(
            e.to_string(),
            "security check failed on the response: decryption failed"
        );
    }
}
