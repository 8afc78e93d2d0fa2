//! # nomyo-backend
//!
//! Where decrypted requests go: the [`Backend`] trait, and the types it
//! speaks ([`ChatRequest`], [`ChunkStream`], [`BackendError`], [`Rejection`]).
//!
//! A backend receives the plaintext OpenAI chat-completion request (already
//! authorised for its tier and model) and returns the plaintext
//! `chat.completion` object, or a stream of `chat.completion.chunk` objects.
//! The server seals whatever it returns; a backend never sees keys.
//!
//! The contract lives in its own crate so that a backend (the embedded engine)
//! builds without the server's HTTP stack; `nomyo_server::backend` re-exports
//! all of it.

// Tests may unwrap: a panic there is a test failure with a location.
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use nomyo_core::SecurityTier;
use serde_json::{Map, Value};

/// The OpenAI chat shapes a backend answers with (`chat.completion`,
/// `chat.completion.chunk`), re-exported so that a backend needs no other
/// dependency to build them.
pub use nomyo_core::chat;

/// A decrypted chat-completion request.
///
/// `Debug` prints no content: only the id, tier, model and the number of messages.
pub struct ChatRequest {
    /// The OpenAI request object as the client sent it (`model`, `messages`,
    /// and every other parameter, passed through).
    pub body: Map<String, Value>,
    /// The tier the policy applied.
    pub tier: SecurityTier,
    /// The request id (`X-Payload-ID` in v1), for logs.
    pub request_id: String,
}

impl ChatRequest {
    /// The `model` field.
    pub fn model(&self) -> &str {
        self.body.get("model").and_then(Value::as_str).unwrap_or("")
    }
}

impl std::fmt::Debug for ChatRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRequest")
            .field("request_id", &self.request_id)
            .field("tier", &self.tier)
            .field("model", &self.model())
            .field(
                "messages",
                &self
                    .body
                    .get("messages")
                    .and_then(Value::as_array)
                    .map(Vec::len),
            )
            .finish_non_exhaustive()
    }
}

/// A stream of `chat.completion.chunk` objects; it ends after the last chunk
/// (the server adds `data: [DONE]`). An `Err` item cuts the stream.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Value, BackendError>> + Send>>;

/// Why a backend refused a request as invalid, in OpenAI's terms: a `code`
/// (`context_length_exceeded`, `unsupported_parameter`, `invalid_value`, or
/// none), the request field at fault (`param`) and a message for the user.
///
/// The message and the param describe the encrypted request (token counts,
/// parameter names), so the server sends them only inside v2's sealed answer;
/// v1, whose errors travel in clear, gets the code and a generic message
/// ([`Rejection::generic_message`]). A message that came from an upstream may
/// quote the request and is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Rejection {
    /// OpenAI's error code, where one fits.
    pub code: Option<&'static str>,
    /// The request field at fault (`temperature`, `messages`, ...).
    pub param: Option<String>,
    /// What is wrong, for the user.
    pub message: String,
    /// Whether `message` was written by this program (and so describes no
    /// content and may be logged); false for text from an upstream.
    log_safe: bool,
}

impl Rejection {
    /// The conversation does not fit the model's context.
    pub fn context_length(message: impl Into<String>) -> Self {
        Self::new(
            Some("context_length_exceeded"),
            Some("messages"),
            message.into(),
        )
    }

    /// A parameter this backend does not implement.
    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        Self::new(Some("unsupported_parameter"), Some(param), message.into())
    }

    /// A parameter with a value out of range or of the wrong type.
    pub fn invalid_value(param: &str, message: impl Into<String>) -> Self {
        Self::new(Some("invalid_value"), Some(param), message.into())
    }

    /// Anything else wrong with the request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(None, None, message.into())
    }

    fn new(code: Option<&'static str>, param: Option<&str>, message: String) -> Self {
        Self {
            code,
            param: param.map(str::to_owned),
            message,
            log_safe: true,
        }
    }

    /// A rejection an upstream sent: its code, if it is one of OpenAI's this
    /// server knows, its `param` and its message (never logged: it may quote
    /// the request).
    pub fn from_upstream(code: Option<&str>, param: Option<String>, message: String) -> Self {
        let code = code.and_then(known_code);
        Self {
            code,
            param,
            message,
            log_safe: false,
        }
    }

    /// The message sent in clear (v1): it names the kind of problem only.
    pub fn generic_message(&self) -> &'static str {
        match self.code {
            Some("context_length_exceeded") => {
                "the conversation is longer than the model's context (context_length_exceeded)"
            }
            Some("unsupported_parameter") => {
                "the request uses a parameter the model does not support (unsupported_parameter)"
            }
            Some("invalid_value") => {
                "a parameter of the request has an invalid value (invalid_value)"
            }
            Some("model_not_found") => "unknown model (model_not_found)",
            _ => "the inference backend rejected the request as invalid",
        }
    }
}

/// OpenAI error codes passed on from an upstream (others are dropped: the
/// code travels in clear in v1).
fn known_code(code: &str) -> Option<&'static str> {
    [
        "context_length_exceeded",
        "unsupported_parameter",
        "invalid_value",
        "model_not_found",
    ]
    .into_iter()
    .find(|c| *c == code)
}

impl std::fmt::Debug for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Rejection");
        d.field("code", &self.code).field("param", &self.param);
        if self.log_safe {
            d.field("message", &self.message);
        } else {
            d.field("message_len", &self.message.len());
        }
        d.finish()
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.log_safe {
            f.write_str(&self.message)
        } else {
            f.write_str(self.generic_message())
        }
    }
}

/// Why a backend could not answer. Each maps to one HTTP status; the detail
/// strings are logged by the server and only the variant's public message is
/// sent (a [`Rejection`] goes back whole only inside v2's sealed answer).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The request is invalid for this backend (400).
    #[error("invalid request: {0}")]
    InvalidRequest(Rejection),
    /// The model is not served here (404).
    #[error("unknown model")]
    ModelNotFound,
    /// Busy or not ready (503), optionally with a retry hint.
    #[error("inference backend unavailable")]
    Unavailable {
        /// Suggested `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// No answer in time (504).
    #[error("inference backend timed out")]
    Timeout,
    /// The upstream failed or answered garbage (502). The detail is for logs only.
    #[error("inference backend failed")]
    Upstream(String),
    /// This backend cannot stream.
    #[error("streaming is not supported by this backend")]
    StreamingUnsupported,
    /// Anything else (500). The detail is for logs only.
    #[error("internal error")]
    Internal(String),
}

/// Timings a backend that generates tokens itself (the embedded engine)
/// reports for every request it runs: durations only, never content, ids or
/// token values. The server turns them into `/metrics` histograms.
pub trait TokenTimings: Send + Sync {
    /// A request waited `wait` in the backend's queue before it started.
    fn queued(&self, wait: Duration);
    /// A request's first token was generated `after` its arrival.
    fn first_token(&self, after: Duration);
    /// `gap` between two consecutive tokens of one request.
    fn inter_token(&self, gap: Duration);
}

/// An inference backend.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and metrics (`upstream:http://...`, `embedded`).
    fn name(&self) -> &str;

    /// The model ids this backend serves, for `/v1/models` and routing.
    ///
    /// The server reads this once, when it builds its routing table. An empty
    /// list means "any model name": the server forwards whatever model the
    /// tier allows and maps the backend's [`BackendError::ModelNotFound`] to 404
    /// (an upstream whose model list could not be read at start-up).
    fn models(&self) -> Vec<String>;

    /// Whether it can take requests now (`/health` reports not-ready otherwise).
    fn is_ready(&self) -> bool {
        true
    }

    /// One complete chat completion: returns the `chat.completion` object.
    async fn chat(&self, request: ChatRequest) -> Result<Value, BackendError>;

    /// The CUDA device this backend computes on, as the lowercase SHA-256 hex
    /// of the device name (never the raw name), for `_metadata.cuda_device`
    /// (docs/PROTOCOL.md §1.7). `None` (the default) when the backend runs on no
    /// CUDA device it knows of, e.g. a remote upstream.
    fn cuda_device_hash(&self) -> Option<String> {
        None
    }

    /// Where to report per-token timings ([`TokenTimings`]). Backends that do
    /// not generate tokens themselves (an upstream) ignore it, the default.
    fn observe_tokens(&self, timings: std::sync::Arc<dyn TokenTimings>) {
        let _ = timings;
    }

    /// A streamed chat completion. The default refuses.
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, BackendError> {
        let _ = request;
        Err(BackendError::StreamingUnsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "my card number is 4111 1111 1111 1111";

    fn request() -> ChatRequest {
        let body = json!({
            "model": "smollm2",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": SECRET},
            ],
        });
        let Value::Object(body) = body else {
            unreachable!()
        };
        ChatRequest {
            body,
            tier: SecurityTier::High,
            request_id: "req-7".into(),
        }
    }

    #[test]
    fn chat_request_debug_shows_the_shape_not_the_content() {
        let r = request();
        assert_eq!(r.model(), "smollm2");
        let debug = format!("{r:?}");
        assert!(!debug.contains("4111"), "{debug}");
        assert!(!debug.contains("be brief"), "{debug}");
        assert!(debug.contains("req-7"), "{debug}");
        assert!(debug.contains("smollm2"), "{debug}");
        assert!(debug.contains("messages: Some(2)"), "{debug}");
    }

    #[test]
    fn a_request_without_a_model_names_the_empty_model() {
        let mut r = request();
        r.body.remove("model");
        assert_eq!(r.model(), "");
        r.body.insert("model".into(), json!(7));
        assert_eq!(r.model(), "");
    }

    #[test]
    fn own_rejections_carry_code_param_and_message() {
        let r = Rejection::context_length("512 tokens do not fit in 256");
        assert_eq!(r.code, Some("context_length_exceeded"));
        assert_eq!(r.param.as_deref(), Some("messages"));
        assert_eq!(r.to_string(), "512 tokens do not fit in 256");
        assert!(format!("{r:?}").contains("512 tokens"));

        let r = Rejection::unsupported("logprobs", "logprobs is not supported");
        assert_eq!(r.code, Some("unsupported_parameter"));
        assert_eq!(r.param.as_deref(), Some("logprobs"));

        let r = Rejection::invalid_value("temperature", "temperature must be in [0, 2]");
        assert_eq!(r.code, Some("invalid_value"));
        assert_eq!(r.param.as_deref(), Some("temperature"));

        let r = Rejection::invalid("no messages");
        assert_eq!((r.code, r.param.as_deref()), (None, None));
        assert_eq!(
            r.generic_message(),
            "the inference backend rejected the request as invalid"
        );
    }

    #[test]
    fn upstream_rejections_are_never_shown_in_logs() {
        let r = Rejection::from_upstream(
            Some("context_length_exceeded"),
            Some("messages".into()),
            format!("your prompt '{SECRET}' is too long"),
        );
        assert_eq!(r.code, Some("context_length_exceeded"));
        // The whole message stays available for v2's sealed answer...
        assert!(r.message.contains("4111"));
        // ...but neither Debug nor Display (the log forms) show it.
        let debug = format!("{r:?}");
        assert!(!debug.contains("4111"), "{debug}");
        assert!(debug.contains("message_len"), "{debug}");
        assert_eq!(r.to_string(), r.generic_message());
        let err = BackendError::InvalidRequest(r);
        assert!(!err.to_string().contains("4111"), "{err}");
        assert!(!format!("{err:?}").contains("4111"));
    }

    #[test]
    fn unknown_upstream_codes_are_dropped_known_ones_kept() {
        // The code travels in clear in v1: only OpenAI's known codes pass.
        let r = Rejection::from_upstream(Some("user_4111_said"), None, String::new());
        assert_eq!(r.code, None);
        for code in [
            "context_length_exceeded",
            "unsupported_parameter",
            "invalid_value",
            "model_not_found",
        ] {
            let r = Rejection::from_upstream(Some(code), None, String::new());
            assert_eq!(r.code, Some(code));
            assert!(r.generic_message().contains(code), "{code}");
        }
    }

    struct Minimal;

    #[async_trait::async_trait]
    impl Backend for Minimal {
        fn name(&self) -> &str {
            "minimal"
        }
        fn models(&self) -> Vec<String> {
            vec!["m".into()]
        }
        async fn chat(&self, request: ChatRequest) -> Result<Value, BackendError> {
            Ok(json!({"object": "chat.completion", "model": request.model()}))
        }
    }

    #[test]
    fn the_defaults_are_ready_no_cuda_device_and_no_streaming() {
        let b: Box<dyn Backend> = Box::new(Minimal);
        assert!(b.is_ready());
        assert_eq!(b.cuda_device_hash(), None);
        let answer = futures::executor::block_on(b.chat(request())).unwrap();
        assert_eq!(answer["model"], "smollm2");
        let streamed = futures::executor::block_on(b.chat_stream(request()));
        assert!(matches!(streamed, Err(BackendError::StreamingUnsupported)));
    }
}
