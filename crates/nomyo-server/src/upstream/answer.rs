//! Reading an upstream's answer: a non-2xx status mapped to a
//! [`BackendError`] (only a refusal's body is read, bounded, for its
//! reason), and a whole JSON answer read under the size limit.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;
use secrecy::zeroize::Zeroizing;
use serde_json::Value;

use super::{map_send_error, MAX_RESPONSE_BYTES};
use crate::backend::{BackendError, Rejection};

/// Largest upstream error body read for its reason.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Maps a non-2xx upstream status. Only a refusal's body is read (bounded),
/// for its reason; other bodies are dropped unread (they may quote the prompt).
pub(super) async fn check_status(
    resp: reqwest::Response,
) -> Result<reqwest::Response, BackendError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let hint = retry_after(&resp);
    Err(match status {
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::PAYLOAD_TOO_LARGE => {
            BackendError::InvalidRequest(upstream_rejection(resp).await)
        }
        StatusCode::NOT_FOUND => BackendError::ModelNotFound,
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => BackendError::Timeout,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
            BackendError::Unavailable { retry_after: hint }
        }
        s => BackendError::Upstream(format!("upstream status {}", s.as_u16())),
    })
}

/// The reason of an upstream refusal: OpenAI's `{"error": {"message", "code",
/// "param"}}` (llama.cpp, vLLM, OpenAI), `{"error": "text"}` (Ollama) or
/// `{"detail": "text"}`; a generic rejection when the body says nothing usable.
async fn upstream_rejection(mut resp: reqwest::Response) -> Rejection {
    let status = resp.status().as_u16();
    let generic = || Rejection::invalid(format!("the upstream refused the request ({status})"));
    let mut buf = Zeroizing::new(Vec::new());
    loop {
        match resp.chunk().await {
            Ok(Some(c)) if buf.len() + c.len() <= MAX_ERROR_BYTES => buf.extend_from_slice(&c),
            Ok(None) => break,
            // Too long or cut: no reason.
            _ => return generic(),
        }
    }
    parse_rejection(&buf).unwrap_or_else(generic)
}

/// Longest upstream reason passed on.
const MAX_REASON_CHARS: usize = 2000;

fn parse_rejection(body: &[u8]) -> Option<Rejection> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let clean = |s: &str| -> String {
        s.chars()
            .take(MAX_REASON_CHARS)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let (message, code, param) = match (v.get("error"), v.get("detail")) {
        (Some(Value::Object(e)), _) => (
            e.get("message").and_then(Value::as_str)?,
            e.get("code").and_then(Value::as_str),
            e.get("param").and_then(Value::as_str),
        ),
        (Some(Value::String(m)), _) | (None, Some(Value::String(m))) => (m.as_str(), None, None),
        _ => return None,
    };
    if message.trim().is_empty() {
        return None;
    }
    // llama.cpp names its context overflow by its error type.
    let code = code.or_else(|| {
        (v["error"]["type"].as_str() == Some("exceed_context_size_error"))
            .then_some("context_length_exceeded")
    });
    Some(Rejection::from_upstream(
        code,
        param.map(clean),
        clean(message),
    ))
}

/// Reads a whole JSON object answer, bounded in size.
pub(super) async fn read_json_object(resp: reqwest::Response) -> Result<Value, BackendError> {
    if let Some(len) = resp.content_length() {
        if len > MAX_RESPONSE_BYTES as u64 {
            return Err(BackendError::Upstream(format!(
                "upstream answer of {len} bytes exceeds the limit"
            )));
        }
    }
    let mut buf = nomyo_core::SecretBuf::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(map_send_error)?;
        if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(BackendError::Upstream(
                "upstream answer exceeds the size limit".into(),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    let value: Value = serde_json::from_slice(buf.expose_secret())
        .map_err(|_| BackendError::Upstream("upstream answer is not JSON".into()))?;
    if !value.is_object() {
        return Err(BackendError::Upstream(
            "upstream answer is not a JSON object".into(),
        ));
    }
    Ok(value)
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}
