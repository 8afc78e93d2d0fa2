//! The one table that maps every server error to the wire.
//!
//! Each [`ApiError`] variant has exactly one HTTP status and one stable
//! message (docs/PROTOCOL.md §1.5 and §3.7: plain JSON `{"detail": "..."}`, never
//! encrypted). Internals (upstream status lines, I/O errors, backend detail
//! strings) are logged where the error arises and never sent: error bodies
//! travel in clear, so nothing from inside the encrypted channel (prompt,
//! completion, upstream error text that may quote them) may appear here.
//!
//! A refused request and an unknown model also carry OpenAI's error object,
//! `"error": {"message", "type", "param", "code"}`, beside `detail`. In clear
//! (v1, and v2 before the request is opened) it holds the code and the
//! generic message only ([`ApiError::detail`]); the reason itself (token
//! counts, the parameter, the model's name, the served models) goes back only
//! inside v2's sealed answer ([`ApiError::sealed_body`]).

use std::borrow::Cow;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::backend::{BackendError, Rejection};

/// Everything a request can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// A required header is absent (400).
    MissingHeader(&'static str),
    /// `X-Payload-ID` is not 1–128 characters of `[A-Za-z0-9._-]` (400).
    InvalidPayloadId,
    /// `X-Public-Key` is not a percent-encoded RSA public key PEM of at least 2048 bits (400).
    InvalidPublicKey,
    /// `X-Security-Tier` is not `standard`, `high` or `maximum` (400).
    InvalidTier,
    /// The request body is empty (400).
    EmptyBody,
    /// The body could not be read (client reset, bad chunking) (400).
    UnreadableBody,
    /// The package is malformed or names an unsupported version/algorithm (400).
    /// The message comes from the core and describes structure only (field
    /// names, lengths), never content.
    MalformedPackage(String),
    /// Wrong key, bad padding, tampered tag: one opaque error (400).
    DecryptionFailed,
    /// The decrypted payload is not a valid chat-completion request (400).
    InvalidChatRequest(&'static str),
    /// `"stream": true` on v1 (400).
    StreamingUnsupported,
    /// The backend refused the request as invalid (400). In clear only its
    /// code and a generic message are sent; the whole reason only sealed.
    BackendRejected(Rejection),
    /// v2: a request on an EHBP route without `Ehbp-Encapsulated-Key` (400):
    /// plaintext chat is never accepted.
    EncryptionRequired,
    /// v2: `Ehbp-Encapsulated-Key` is not hex or fits no suite (400).
    InvalidEncapsulatedKey,
    /// v2: `Nomyo-Key-Id` is not a number 0–255 (400).
    InvalidKeyId,
    /// v2: the key id names no current key (422, `application/problem+json`,
    /// type `urn:ietf:params:ehbp:error:key-config`, EHBP §5.4.2).
    UnknownKeyConfig,
    /// The tier requires post-quantum encryption (`require_post_quantum`)
    /// and the request is v1 (RSA) or v2 with X25519 (403).
    PostQuantumRequired,
    /// This caller holds its whole share of the replay window (429).
    ReplayShareExceeded,
    /// A loopback listener got a request for another host name (403): a
    /// DNS-rebinding page, or a name missing from `allowed_hosts`.
    HostNotAllowed,
    /// Missing or wrong API key (401). Deliberately does not say which.
    Unauthorized,
    /// The model is not allowed for the requested tier (403).
    ModelForbidden,
    /// No backend serves this model (404).
    UnknownModel,
    /// No backend serves `model` (404), with what is served: in clear the
    /// same as [`ApiError::UnknownModel`]; sealed, the model and the list.
    ModelNotFound {
        /// The model the request named.
        model: String,
        /// The models this server serves (empty when a backend takes any name).
        served: Vec<String>,
    },
    /// No such route (404).
    NotFound,
    /// Route exists, method does not (405).
    MethodNotAllowed,
    /// The body did not arrive in time (408).
    BodyTimeout,
    /// This `X-Payload-ID` or this exact package was already answered (409).
    Replayed,
    /// The body exceeds the configured limit (413).
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Per-key rate limit (429 + `Retry-After`).
    RateLimited {
        /// When the next request will be admitted.
        retry_after: Duration,
    },
    /// A bug or an impossible state (500). The detail is logged only.
    Internal(String),
    /// The backend failed or answered garbage (502).
    BackendFailed,
    /// Every worker busy and the queue full, or the queue wait expired (503 + `Retry-After`).
    Saturated,
    /// The shared replay store (Redis) could not be asked; replay
    /// protection fails closed (503 + `Retry-After`).
    ReplayStoreUnavailable,
    /// No backend able to answer now (503, `Retry-After` when known).
    BackendUnavailable {
        /// Suggested wait.
        retry_after: Option<Duration>,
    },
    /// The backend did not answer in time (504).
    BackendTimeout,
    /// The TPM's queue is full (503 + `Retry-After: 1`): a request that
    /// needs a quote is never answered without one (docs/PROTOCOL.md §14.5).
    TpmBusy,
    /// The configfs-tsm provider has too many reports waiting (503).
    EvidenceBusy,
    /// The request's tier requires TPM attestation (`require_attestation`)
    /// and this server has no TPM (503).
    AttestationRequired,
    /// An attestation route on a server without a TPM (404).
    NoAttestation,
    /// A bad request to an attestation route (400): the reason is structural.
    InvalidAttestationRequest(&'static str),
    /// The TPM refused a credential to activate (400); nothing more is said.
    ActivationFailed,
    /// The whole request exceeded the server's request timeout (504).
    RequestTimeout,
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            MissingHeader(_)
            | InvalidPayloadId
            | InvalidPublicKey
            | InvalidTier
            | EmptyBody
            | UnreadableBody
            | MalformedPackage(_)
            | DecryptionFailed
            | InvalidChatRequest(_)
            | StreamingUnsupported
            | BackendRejected(_)
            | EncryptionRequired
            | InvalidEncapsulatedKey
            | InvalidKeyId
            | InvalidAttestationRequest(_)
            | ActivationFailed => StatusCode::BAD_REQUEST,
            UnknownKeyConfig => StatusCode::UNPROCESSABLE_ENTITY,
            PostQuantumRequired | HostNotAllowed => StatusCode::FORBIDDEN,
            Unauthorized => StatusCode::UNAUTHORIZED,
            ModelForbidden => StatusCode::FORBIDDEN,
            UnknownModel | ModelNotFound { .. } | NotFound | NoAttestation => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Replayed => StatusCode::CONFLICT,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RateLimited { .. } | ReplayShareExceeded => StatusCode::TOO_MANY_REQUESTS,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            BackendFailed => StatusCode::BAD_GATEWAY,
            Saturated
            | ReplayStoreUnavailable
            | BackendUnavailable { .. }
            | TpmBusy
            | EvidenceBusy
            | AttestationRequired => StatusCode::SERVICE_UNAVAILABLE,
            BackendTimeout | RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable message sent as `detail`.
    pub fn detail(&self) -> Cow<'static, str> {
        use ApiError::*;
        match self {
            MissingHeader(h) => Cow::Owned(format!("missing {h} header")),
            InvalidPayloadId => "invalid X-Payload-ID header: expected 1 to 128 characters of A-Z a-z 0-9 . _ - (a UUID)".into(),
            InvalidPublicKey => "invalid X-Public-Key header: expected the percent-encoded PEM of an RSA public key of at least 2048 bits".into(),
            InvalidTier => "invalid X-Security-Tier header: must be one of standard, high, maximum".into(),
            EmptyBody => "empty request body: expected a v1 package (JSON)".into(),
            UnreadableBody => "the request body could not be read".into(),
            MalformedPackage(m) => Cow::Owned(m.clone()),
            DecryptionFailed => "decryption failed".into(),
            InvalidChatRequest(why) => Cow::Owned(format!("invalid chat completion request: {why}")),
            StreamingUnsupported => "streaming is not supported by protocol v1: send \"stream\": false (or use protocol v2)".into(),
            BackendRejected(r) => r.generic_message().into(),
            EncryptionRequired => ENCRYPTION_REQUIRED.into(),
            InvalidEncapsulatedKey => "invalid Ehbp-Encapsulated-Key header: expected the hex of a 32-byte (X25519) or 1120-byte (X-Wing) encapsulated key".into(),
            InvalidKeyId => "invalid Nomyo-Key-Id header: expected a key id from 0 to 255".into(),
            UnknownKeyConfig => "unknown or retired key id: fetch GET /.well-known/hpke-keys and seal the request again".into(),
            PostQuantumRequired => "the security tier requires post-quantum encryption (require_post_quantum): protocol v1 (RSA) and the v2 X25519 suite are refused; seal the request with protocol v2's X-Wing key config".into(),
            HostNotAllowed => "this server listens on loopback and only answers requests addressed to localhost or a loopback address (add other names to allowed_hosts / --allowed-host)".into(),
            ReplayShareExceeded => "too many requests from this caller within the replay window; retry later".into(),
            Unauthorized => "invalid or missing API key".into(),
            ModelForbidden => "model not allowed for the requested security tier".into(),
            UnknownModel | ModelNotFound { .. } => "unknown model".into(),
            NotFound => "not found".into(),
            MethodNotAllowed => "method not allowed".into(),
            BodyTimeout => "the request body was not received in time".into(),
            Replayed => "replayed request: this X-Payload-ID or package was already used; seal a fresh request".into(),
            PayloadTooLarge { limit } => Cow::Owned(format!("request body too large (limit {limit} bytes)")),
            RateLimited { .. } => "rate limit exceeded; retry after the time in Retry-After".into(),
            Internal(_) => "internal server error".into(),
            BackendFailed => "the inference backend failed".into(),
            Saturated => "server busy; retry later".into(),
            ReplayStoreUnavailable => "replay protection is unavailable right now; retry later".into(),
            BackendUnavailable { .. } => "inference backend unavailable; retry later".into(),
            BackendTimeout => "the inference backend timed out".into(),
            RequestTimeout => "request timed out".into(),
            TpmBusy => "the TPM is busy; retry later".into(),
            EvidenceBusy => "the attestation report provider is busy; retry later".into(),
            AttestationRequired => "the security tier requires TPM attestation (require_attestation) and this server has none".into(),
            NoAttestation => "this server has no TPM attestation".into(),
            InvalidAttestationRequest(why) => Cow::Owned(format!("invalid attestation request: {why}")),
            ActivationFailed => "credential activation failed".into(),
        }
    }

    /// OpenAI's error object for this error, where it has one: `sealed`
    /// selects the whole reason (v2's sealed answer) over the code and
    /// generic message that may travel in clear.
    pub fn openai_error(&self, sealed: bool) -> Option<serde_json::Value> {
        let (message, param, code): (Cow<'_, str>, Option<&str>, Option<&str>) = match self {
            ApiError::BackendRejected(r) if sealed => {
                (r.message.as_str().into(), r.param.as_deref(), r.code)
            }
            ApiError::BackendRejected(r) => (r.generic_message().into(), None, r.code),
            ApiError::ModelNotFound { model, served } if sealed => (
                model_not_found_message(model, served).into(),
                Some("model"),
                Some("model_not_found"),
            ),
            ApiError::ModelNotFound { .. } | ApiError::UnknownModel => {
                (self.detail(), None, Some("model_not_found"))
            }
            ApiError::EncryptionRequired => (self.detail(), None, Some("encryption_required")),
            _ => return None,
        };
        Some(serde_json::json!({
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }))
    }

    /// The body of this error inside v2's sealed answer: `detail` and, where
    /// it has one, OpenAI's `error` object, both with the whole reason.
    pub fn sealed_body(&self) -> serde_json::Value {
        match self.openai_error(true) {
            Some(e) => serde_json::json!({ "detail": e["message"].clone(), "error": e }),
            None => serde_json::json!({ "detail": self.detail() }),
        }
    }

    /// The body of this error in clear: `detail` and, where it has one,
    /// OpenAI's `error` object with the code and the generic message only.
    pub fn clear_body(&self) -> serde_json::Value {
        match self.openai_error(false) {
            Some(e) => serde_json::json!({ "detail": self.detail(), "error": e }),
            None => serde_json::json!({ "detail": self.detail() }),
        }
    }

    /// The `Retry-After` hint, where one fits.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            ApiError::Saturated
            | ApiError::ReplayStoreUnavailable
            | ApiError::ReplayShareExceeded
            | ApiError::TpmBusy
            | ApiError::EvidenceBusy => Some(Duration::from_secs(1)),
            ApiError::BackendUnavailable { retry_after } => {
                Some(retry_after.unwrap_or(Duration::from_secs(5)))
            }
            _ => None,
        }
    }

    /// Whether a client may retry the very same request (429 and 5xx, as the
    /// reference client does). Whether the retry is served depends on where
    /// the request failed: refused before the backend was given it, its
    /// replay entries are given back; after, they are kept (409).
    pub fn is_retryable(&self) -> bool {
        let s = self.status();
        s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
    }
}

/// The answer to a plaintext request on v2's route, which is what an OpenAI
/// SDK pointed at the server sends.
const ENCRYPTION_REQUIRED: &str = "this route accepts only EHBP-encrypted requests (protocol v2): seal the body to a key from GET /.well-known/hpke-keys and send Ehbp-Encapsulated-Key; plaintext chat is never accepted. To use an OpenAI SDK or tool, run `nomyo proxy --base-url URL-OF-THIS-SERVER` on the client machine and point the SDK's base URL at the proxy (`http://127.0.0.1:PORT/v1`, PORT from `nomyo proxy --listen`): it seals each request and opens each answer";

/// Longest list of served models named in a sealed 404.
const MAX_LISTED_MODELS: usize = 20;

fn model_not_found_message(model: &str, served: &[String]) -> String {
    let shown: String = model.chars().take(200).collect();
    let mut m = format!("the model `{shown}` does not exist or is not served here");
    if !served.is_empty() {
        let list = served
            .iter()
            .take(MAX_LISTED_MODELS)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        m.push_str(&format!("; served models: {list}"));
        if served.len() > MAX_LISTED_MODELS {
            m.push_str(&format!(" (and {} more)", served.len() - MAX_LISTED_MODELS));
        }
    }
    m
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail())
    }
}

impl std::error::Error for ApiError {}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        // The detail strings of `Upstream`, `Internal` and `InvalidRequest` are
        // for logs; the caller logs them before converting.
        match e {
            BackendError::InvalidRequest(r) => ApiError::BackendRejected(r),
            BackendError::ModelNotFound => ApiError::UnknownModel,
            BackendError::Unavailable { retry_after } => {
                ApiError::BackendUnavailable { retry_after }
            }
            BackendError::Timeout => ApiError::BackendTimeout,
            BackendError::Upstream(_) => ApiError::BackendFailed,
            BackendError::StreamingUnsupported => ApiError::StreamingUnsupported,
            BackendError::Internal(d) => ApiError::Internal(d),
            // `BackendError` is non-exhaustive; a future variant is a 502
            // until it gets its own row here.
            #[allow(unreachable_patterns)]
            _ => ApiError::BackendFailed,
        }
    }
}

/// Seconds for `Retry-After`: rounded up, at least 1.
fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            // Internal details are for the operator only.
            tracing::error!(detail = %detail, "internal error");
        }
        let status = self.status();
        if let ApiError::UnknownKeyConfig = &self {
            // EHBP §5.4.2: a problem document clients recognise by its type.
            let body = serde_json::json!({
                "type": nomyo_core::v2::KEY_CONFIG_PROBLEM_TYPE,
                "title": "key configuration mismatch",
                "status": status.as_u16(),
                "detail": self.detail(),
            });
            return (
                status,
                [(header::CONTENT_TYPE, "application/problem+json")],
                body.to_string(),
            )
                .into_response();
        }
        let mut resp = (status, axum::Json(self.clear_body())).into_response();
        if let Some(d) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(d)));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn retryable_matches_reference_client() {
        assert!(ApiError::Saturated.is_retryable());
        assert!(ApiError::RateLimited {
            retry_after: Duration::from_secs(1)
        }
        .is_retryable());
        assert!(ApiError::BackendFailed.is_retryable());
        assert!(!ApiError::DecryptionFailed.is_retryable());
        assert!(!ApiError::Replayed.is_retryable());
        assert!(!ApiError::ModelForbidden.is_retryable());
    }

    #[test]
    fn internal_detail_is_never_sent() {
        let e = ApiError::Internal("secret upstream text".into());
        assert_eq!(e.detail(), "internal server error");
        let e: ApiError = BackendError::Upstream("prompt fragment".into()).into();
        assert!(!e.detail().contains("prompt"));
        let e: ApiError =
            BackendError::InvalidRequest(Rejection::invalid("prompt fragment")).into();
        assert!(!e.detail().contains("prompt"));
        assert!(!e.clear_body().to_string().contains("prompt"));
    }

    #[test]
    fn rejection_reason_only_sealed() {
        let e: ApiError = BackendError::InvalidRequest(Rejection::context_length(
            "the conversation is 4031 tokens long; the embedded model's context holds 2048",
        ))
        .into();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let clear = e.clear_body();
        assert_eq!(clear["error"]["code"], "context_length_exceeded");
        assert_eq!(clear["error"]["type"], "invalid_request_error");
        assert!(clear["error"]["param"].is_null());
        assert!(!clear.to_string().contains("4031"), "{clear}");
        let sealed = e.sealed_body();
        assert_eq!(sealed["error"]["code"], "context_length_exceeded");
        assert_eq!(sealed["error"]["param"], "messages");
        assert!(sealed["detail"].as_str().unwrap().contains("4031"));

        let e = ApiError::ModelNotFound {
            model: "nope".into(),
            served: vec!["a".into(), "b".into()],
        };
        assert_eq!(e.clear_body()["detail"], "unknown model");
        assert!(!e.clear_body().to_string().contains("nope"));
        let sealed = e.sealed_body();
        assert_eq!(sealed["error"]["code"], "model_not_found");
        let msg = sealed["error"]["message"].as_str().unwrap();
        assert!(msg.contains("`nope`") && msg.contains("a, b"), "{msg}");
    }
}
