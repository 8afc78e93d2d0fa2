//! What a server said when it refused a request ([`ApiError`]), and how its
//! text is cleaned before it is shown.

use std::fmt;

/// What a server said when it refused a request: the HTTP status, the
/// `detail` of its `{"detail": "..."}` body and, when it sent OpenAI's error
/// object beside it (`"error": {"message", "type", "param", "code"}`), its
/// code and param. Over protocol v2 a refusal's whole reason arrives sealed
/// (e.g. how many tokens the conversation has); over v1 only the code and a
/// generic message travel.
#[derive(Clone)]
pub struct ApiError {
    pub(crate) status: u16,
    pub(crate) detail: String,
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) attempts: u32,
}

/// Longest server `detail` we repeat.
const MAX_DETAIL_CHARS: usize = 500;

impl ApiError {
    pub(crate) fn new(status: u16, body: &[u8], attempts: u32) -> Self {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let detail = match parsed.as_ref().and_then(|v| v.get("detail")) {
            Some(serde_json::Value::String(s)) => sanitize(s),
            Some(other) => sanitize(&other.to_string()),
            None => match parsed.as_ref().and_then(|v| v.get("error")) {
                // OpenAI-style {"error": {"message": ...}} from a proxy in between.
                Some(e) => sanitize(
                    e.get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or(&e.to_string()),
                ),
                None => String::new(),
            },
        };
        Self {
            status,
            detail,
            body: parsed,
            attempts,
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The server's `detail` message (truncated, control characters removed;
    /// empty when the server sent none).
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// OpenAI's error code the server gave (`context_length_exceeded`,
    /// `unsupported_parameter`, `invalid_value`, `model_not_found`, ...), if any.
    pub fn code(&self) -> Option<&str> {
        self.error_field("code")
    }

    /// The request field at fault, if the server named it (v2 only: over v1
    /// the server never names it).
    pub fn param(&self) -> Option<&str> {
        self.error_field("param")
    }

    fn error_field(&self, key: &str) -> Option<&str> {
        self.body
            .as_ref()?
            .get("error")?
            .get(key)?
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 64 && !s.chars().any(char::is_control))
    }

    /// The detail, with the code appended when the detail does not say it.
    pub(super) fn reason_or(&self, fallback: &'static str) -> String {
        let detail = self.detail_or(fallback);
        match self.code() {
            Some(code) if !detail.contains(code) => format!("{detail} ({code})"),
            _ => detail.to_owned(),
        }
    }

    /// The whole error body when it was JSON (the Python client's
    /// `error_details`).
    pub fn details(&self) -> Option<&serde_json::Value> {
        self.body.as_ref()
    }

    /// How many times the request was sent before this answer (1 when it was
    /// not retried).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub(super) fn detail_or(&self, fallback: &'static str) -> &str {
        if self.detail.is_empty() {
            fallback
        } else {
            &self.detail
        }
    }

    pub(super) fn after_attempts(&self) -> String {
        if self.attempts > 1 {
            format!(" (after {} attempts)", self.attempts)
        } else {
            String::new()
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status)
            .field("detail", &self.detail)
            .field("code", &self.code())
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Strips control characters and truncates text received from a server.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_DETAIL_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > MAX_DETAIL_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::error::Error;

    #[test]
    fn detail_is_extracted_and_sanitised() {
        let e = ApiError::new(400, br#"{"detail":"bad\nthing"}"#, 1);
        assert_eq!(e.detail(), "bad thing");
        assert_eq!(e.status(), 400);
        let long = format!(r#"{{"detail":"{}"}}"#, "x".repeat(1000));
        let e = ApiError::new(500, long.as_bytes(), 3);
        assert_eq!(e.detail().chars().count(), MAX_DETAIL_CHARS + 1);
        let e = ApiError::new(502, b"<html>bad gateway</html>", 1);
        assert_eq!(e.detail(), "");
        assert!(e.details().is_none());
        let e = ApiError::new(422, br#"{"detail":[{"loc":["body"],"msg":"x"}]}"#, 1);
        assert!(e.detail().contains("loc"));
        let e = ApiError::new(429, br#"{"error":{"message":"slow down"}}"#, 1);
        assert_eq!(e.detail(), "slow down");
    }

    #[test]
    fn openai_code_and_param_are_read_and_shown() {
        // v2: the whole reason, sealed.
        let body = br#"{"detail":"the conversation is 4031 tokens long","error":{"message":"the conversation is 4031 tokens long","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let e = ApiError::new(400, body, 1);
        assert_eq!(e.code(), Some("context_length_exceeded"));
        assert_eq!(e.param(), Some("messages"));
        assert_eq!(
            Error::InvalidRequest(e).to_string(),
            "bad request: the conversation is 4031 tokens long (context_length_exceeded)"
        );
        // v1: the generic message already names the code; no param.
        let body = br#"{"detail":"the conversation is longer than the model's context (context_length_exceeded)","error":{"message":"x","type":"invalid_request_error","param":null,"code":"context_length_exceeded"}}"#;
        let e = ApiError::new(400, body, 1);
        assert_eq!(e.param(), None);
        assert_eq!(
            Error::InvalidRequest(e).to_string(),
            "bad request: the conversation is longer than the model's context (context_length_exceeded)"
        );
        // A code that is not a short token is not repeated.
        let e = ApiError::new(
            400,
            br#"{"detail":"d","error":{"code":"a
b"}}"#,
            1,
        );
        assert_eq!(e.code(), None);
    }
}
