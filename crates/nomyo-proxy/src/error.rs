//! One table from failures to OpenAI-shaped error answers.
//!
//! The OpenAI SDKs pick their exception class from the HTTP status alone
//! (400 `BadRequestError`, 401 `AuthenticationError`, 403
//! `PermissionDeniedError`, 404 `NotFoundError`, 429 `RateLimitError`, 5xx
//! `InternalServerError`), and read `error.message`, `error.type` and
//! `error.code` from the body. So the endpoint's status passes through
//! unchanged, and the message is the client library's (which never contains
//! a prompt, a completion or a key). When the server said why it refused a
//! request (OpenAI's `error.code` and `error.param`, and over protocol v2 the
//! whole reason in its sealed answer), the code and param pass through too.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nomyo_client::Error as ClientError;
use serde_json::json;

/// A failure answered to the proxy's caller.
#[derive(Debug)]
#[non_exhaustive]
pub struct ProxyError {
    /// The HTTP status.
    pub status: StatusCode,
    /// OpenAI `error.type`.
    pub kind: &'static str,
    /// OpenAI `error.code`.
    pub code: Option<String>,
    /// OpenAI `error.param`: the request field at fault, when the server named it.
    pub param: Option<String>,
    /// A message a person can act on (no content, no secrets).
    pub message: String,
    /// `Retry-After` for 429/503.
    pub retry_after: Option<Duration>,
    /// Tells the OpenAI SDKs not to retry (`x-should-retry: false`): a
    /// security failure will fail the same way again.
    pub no_retry: bool,
}

impl ProxyError {
    /// An error with this status, type and message.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            code: None,
            param: None,
            message: message.into(),
            retry_after: None,
            no_retry: false,
        }
    }

    /// 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub(crate) fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// The code and param the server sent, where it sent them.
    fn with_server_reason(mut self, api: Option<&nomyo_client::ApiError>) -> Self {
        if let Some(api) = api {
            if let Some(code) = api.code() {
                self.code = Some(code.to_owned());
            }
            self.param = api.param().map(str::to_owned);
        }
        self
    }

    /// The error body, `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status.as_u16())
    }
}

impl std::error::Error for ProxyError {}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        let h = resp.headers_mut();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                h.insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        if self.no_retry {
            h.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        resp
    }
}

fn status_or(status: u16, fallback: StatusCode) -> StatusCode {
    StatusCode::from_u16(status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(fallback)
}

impl From<&ClientError> for ProxyError {
    fn from(e: &ClientError) -> Self {
        let message = e.to_string();
        let status = e.status();
        let api = |fallback: StatusCode, kind: &'static str| {
            ProxyError::new(status_or(status.unwrap_or(0), fallback), kind, &message)
                .with_server_reason(e.api_error())
        };
        match e {
            ClientError::InvalidRequest(_) => api(StatusCode::BAD_REQUEST, "invalid_request_error"),
            ClientError::Authentication(_) => {
                api(StatusCode::UNAUTHORIZED, "authentication_error").code("invalid_api_key")
            }
            ClientError::Forbidden(_) => api(StatusCode::FORBIDDEN, "permission_error"),
            ClientError::NotFound(a) => {
                let p = api(StatusCode::NOT_FOUND, "not_found_error");
                if a.code().is_some() {
                    p
                } else {
                    p.code("model_not_found")
                }
            }
            ClientError::RateLimit { retry_after, .. } => {
                let mut p = api(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
                    .code("rate_limit_exceeded");
                p.retry_after = Some(retry_after.unwrap_or(Duration::from_secs(1)));
                p
            }
            ClientError::ServiceUnavailable(_) => {
                let mut p = api(StatusCode::SERVICE_UNAVAILABLE, "server_error");
                p.retry_after = Some(Duration::from_secs(1));
                p
            }
            ClientError::Server(_) => api(StatusCode::BAD_GATEWAY, "server_error"),
            ClientError::Api(_) => api(StatusCode::BAD_GATEWAY, "api_error"),
            ClientError::InvalidInput(_) => ProxyError::bad_request(message),
            ClientError::Timeout { .. } => {
                ProxyError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message)
                    .code("upstream_timeout")
            }
            ClientError::Connection { .. } => {
                ProxyError::new(StatusCode::BAD_GATEWAY, "server_error", message)
                    .code("upstream_unreachable")
            }
            _ if e.is_security() => {
                let mut p = ProxyError::new(
                    StatusCode::BAD_GATEWAY,
                    "nomyo_security_error",
                    format!("{message} (nothing was sent or returned in clear)"),
                )
                .code("nomyo_security");
                p.no_retry = true;
                p
            }
            ClientError::InvalidResponse(_) => {
                ProxyError::new(StatusCode::BAD_GATEWAY, "server_error", message)
                    .code("invalid_upstream_response")
            }
            // Config, known-servers file, client key: the proxy's own setup.
            _ => {
                let mut p =
                    ProxyError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
                        .code("proxy_misconfigured");
                p.no_retry = true;
                p
            }
        }
    }
}
