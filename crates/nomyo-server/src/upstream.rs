//! The OpenAI-compatible upstream backend: `POST {url}/chat/completions` on a
//! llama.cpp server, vLLM, Ollama's `/v1`, TGI, or OpenAI itself.
//!
//! One pooled `reqwest` client (rustls, HTTP/1.1 and HTTP/2) per backend, with
//! connect and total timeouts. Upstream failures become [`BackendError`]s
//! whose detail strings hold statuses and error kinds only: never the
//! upstream's response body, which may quote the prompt. The one exception
//! is a refusal (400, 413, 422): its OpenAI-shaped reason becomes a
//! [`Rejection`] that goes back to the client (whole only inside v2's sealed
//! answer) and is never logged.
//!
//! Streaming ([`Backend::chat_stream`]) posts the request with
//! `"stream": true` and parses the upstream's server-sent events as the bytes
//! arrive ([`SseParser`]), yielding each `chat.completion.chunk` at once, so
//! the first token reaches the client while the upstream still generates.
//! The stream ends cleanly only after the upstream's `data: [DONE]`; an
//! upstream that closes the connection before it, fails mid-way, sends an
//! in-stream `{"error": ...}` event or something that is not a JSON object
//! ends the stream with an error (the client sees a cut stream). An upstream
//! that ignores `"stream"` and answers one JSON completion is turned into a
//! single chunk.

use std::time::Duration;

use futures::StreamExt;
use nomyo_core::{ExposeSecret, SecretString};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::zeroize::Zeroizing;
use serde_json::Value;

use crate::backend::{Backend, BackendError, ChatRequest, ChunkStream, Rejection};

/// Largest upstream answer read (a chat completion is far smaller).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest single server-sent event (one chunk is a few hundred bytes).
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// How to reach one upstream.
pub struct UpstreamConfig {
    /// Base URL including the API prefix, e.g. `http://127.0.0.1:8080/v1`.
    pub url: String,
    /// Sent as `Authorization: Bearer ...` when set.
    pub api_key: Option<SecretString>,
    /// Models it serves; empty = discover at start-up, else any name.
    pub models: Vec<String>,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Whole request timeout (a long completion takes minutes).
    pub timeout: Duration,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: usize,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("models", &self.models)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl UpstreamConfig {
    /// Defaults for `url`: no key, models discovered, 10 s connect, 300 s total.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            models: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            pool_max_idle_per_host: 64,
        }
    }
}

/// An OpenAI-compatible upstream.
pub struct UpstreamBackend {
    name: String,
    base: String,
    /// `base` without user info or query: what logs and errors name.
    label: String,
    completions_url: String,
    auth: Option<HeaderValue>,
    client: reqwest::Client,
    models: Vec<String>,
}

impl std::fmt::Debug for UpstreamBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBackend")
            .field("name", &self.name)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

/// Why an upstream could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamSetupError {
    /// The URL is not http(s)://host...
    #[error("upstream URL '{0}' must start with http:// or https://")]
    BadUrl(String),
    /// The API key has characters a header cannot carry.
    #[error("the upstream API key contains characters that cannot be sent in a header")]
    BadApiKey,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl UpstreamBackend {
    /// Builds the backend. With no models configured, asks the upstream for
    /// `GET {url}/models` once (5 s); if that fails, the backend accepts any
    /// model name and the upstream's 404 becomes ours.
    pub async fn connect(cfg: UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        let mut b = Self::new(cfg)?;
        if b.models.is_empty() {
            match b.discover_models().await {
                Ok(models) => {
                    tracing::info!(backend = %b.name, count = models.len(), "upstream models discovered");
                    b.models = models;
                }
                Err(e) => tracing::warn!(
                    backend = %b.name,
                    error = %e,
                    "could not list the upstream's models; accepting any model name for it"
                ),
            }
        }
        Ok(b)
    }

    /// Builds the backend without contacting the upstream.
    pub fn new(cfg: UpstreamConfig) -> Result<Self, UpstreamSetupError> {
        let base = cfg.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() < 10 {
            return Err(UpstreamSetupError::BadUrl(cfg.url));
        }
        let auth = match &cfg.api_key {
            None => None,
            Some(k) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", k.expose_secret()))
                    .map_err(|_| UpstreamSetupError::BadApiKey)?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .pool_max_idle_per_host(cfg.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // An upstream is addressed directly; a redirect is a misconfiguration.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamSetupError::Client(e.to_string()))?;
        Ok(Self {
            // Logs and metrics name the upstream without user info or query.
            name: format!("upstream:{}", redact_url(&base)),
            label: redact_url(&base),
            completions_url: format!("{base}/chat/completions"),
            base,
            auth,
            client,
            models: cfg.models,
        })
    }

    /// The base URL (with the API prefix, no trailing slash), as configured.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The base URL without user info or query, as logs and errors name it.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Logs a failure of this upstream (its URL, the error's kind and status;
    /// never a body) at warn level, and returns the error.
    fn failed(&self, request_id: &str, e: BackendError) -> BackendError {
        if matches!(
            e,
            BackendError::Unavailable { .. } | BackendError::Timeout | BackendError::Upstream(_)
        ) {
            tracing::warn!(upstream = %self.label, request_id, error = ?e, "upstream request failed");
        }
        e
    }

    /// An active health probe: `GET {url}/models` within `timeout`. `Ok` when
    /// the upstream answers with any status below 500 (it is up, even if it
    /// does not list models); `Err` with a kind (never a body) on a connect
    /// error, a timeout or a 5xx.
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        let mut req = self
            .client
            .get(format!("{}/models", self.base))
            .timeout(timeout);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        // The caller names the endpoint (without credentials) when it logs this.
        let resp = req.send().await.map_err(|e| describe(&e.without_url()))?;
        if resp.status().is_server_error() {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        Ok(())
    }

    async fn discover_models(&self) -> Result<Vec<String>, String> {
        let mut req = self
            .client
            .get(format!("{}/models", self.base))
            .timeout(Duration::from_secs(5));
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let resp = req.send().await.map_err(|e| describe(&e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        let v: Value = resp
            .json()
            .await
            .map_err(|_| "not a model list".to_owned())?;
        let models: Vec<String> = v
            .get("data")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if models.is_empty() {
            return Err("empty model list".into());
        }
        Ok(models)
    }
}

/// `url` without user info, query or fragment (for labels, logs and errors).
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => "invalid-url".to_owned(),
    }
}

/// A reqwest error as a kind, without any body. Callers strip the URL
/// (`without_url`) and name the upstream by its redacted label.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_request() {
        "request"
    } else {
        "other"
    };
    // reqwest's Display never includes bodies; the URL was stripped.
    format!("{kind}: {e}")
}

fn map_send_error(e: reqwest::Error) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout
    } else if e.is_connect() {
        BackendError::Unavailable {
            retry_after: Some(Duration::from_secs(5)),
        }
    } else {
        BackendError::Upstream(describe(&e.without_url()))
    }
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

#[async_trait::async_trait]
impl Backend for UpstreamBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    async fn chat(&self, request: ChatRequest) -> Result<Value, BackendError> {
        // The serialised request is plaintext; it lives only until sent.
        let body = serde_json::to_vec(&request.body)
            .map_err(|e| BackendError::Internal(format!("serialising the request: {e}")))?;
        let mut req = self
            .client
            .post(&self.completions_url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.failed(&request.request_id, map_send_error(e)))?;
        let resp = check_status(resp)
            .await
            .map_err(|e| self.failed(&request.request_id, e))?;
        read_json_object(resp)
            .await
            .map_err(|e| self.failed(&request.request_id, e))
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, BackendError> {
        let request_id = request.request_id;
        let mut body = request.body;
        body.insert("stream".to_owned(), Value::Bool(true));
        // The serialised request is plaintext; it lives only until sent.
        let body = Zeroizing::new(
            serde_json::to_vec(&body)
                .map_err(|e| BackendError::Internal(format!("serialising the request: {e}")))?,
        );
        let mut req = self
            .client
            .post(&self.completions_url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
            .body(body.to_vec());
        drop(body);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.failed(&request_id, map_send_error(e)))?;
        let resp = check_status(resp)
            .await
            .map_err(|e| self.failed(&request_id, e))?;
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !is_sse {
            // It ignored "stream": one complete answer, as one chunk.
            let completion = read_json_object(resp).await?;
            let chunk = nomyo_core::chat::completion_to_chunk(&completion).ok_or_else(|| {
                BackendError::Upstream("upstream answer is not a JSON object".into())
            })?;
            tracing::debug!(backend = %self.name, "upstream answered a stream request with one JSON completion");
            return Ok(Box::pin(futures::stream::iter([Ok(chunk)])));
        }
        let state = SseStream {
            body: Box::pin(resp.bytes_stream()),
            parser: SseParser::new(MAX_EVENT_BYTES),
            pending: std::collections::VecDeque::new(),
            received: 0,
            finished: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, SseStream::next)))
    }
}

/// Largest upstream error body read for its reason.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// Maps a non-2xx upstream status. Only a refusal's body is read (bounded),
/// for its reason; other bodies are dropped unread (they may quote the prompt).
async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, BackendError> {
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
async fn read_json_object(resp: reqwest::Response) -> Result<Value, BackendError> {
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

type ByteStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

/// An upstream event stream being turned into chunks.
struct SseStream {
    body: ByteStream,
    parser: SseParser,
    pending: std::collections::VecDeque<Result<Value, BackendError>>,
    received: usize,
    /// `[DONE]` seen, or an error yielded: nothing more.
    finished: bool,
}

impl SseStream {
    async fn next(mut self) -> Option<(Result<Value, BackendError>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if item.is_err() {
                    self.finished = true;
                    self.pending.clear();
                }
                return Some((item, self));
            }
            if self.finished {
                return None;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    self.received += bytes.len();
                    if self.received > MAX_RESPONSE_BYTES {
                        self.pending.push_back(Err(BackendError::Upstream(
                            "upstream stream exceeds the size limit".into(),
                        )));
                        continue;
                    }
                    let mut events = Vec::new();
                    if let Err(e) = self.parser.push(&bytes, &mut events) {
                        self.pending.push_back(Err(e));
                        continue;
                    }
                    for data in events {
                        if self.parser_done(&data) {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %describe(&e), "upstream stream failed mid-way");
                    self.pending.push_back(Err(map_send_error(e)));
                }
                None => {
                    // EOF. A final event without its blank line still counts.
                    if let Some(data) = self.parser.finish() {
                        self.parser_done(&data);
                    }
                    if !self.finished {
                        // Yield what came, then report the missing [DONE].
                        self.pending.push_back(Err(BackendError::Upstream(
                            "upstream stream ended before data: [DONE]".into(),
                        )));
                    }
                }
            }
        }
    }

    /// Queues one event's data; returns true once the stream is over (`[DONE]`
    /// or an error).
    fn parser_done(&mut self, data: &str) -> bool {
        if self.finished || self.pending.back().is_some_and(Result::is_err) {
            return true;
        }
        if data.trim() == "[DONE]" {
            self.finished = true;
            return true;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(v) if v.get("error").is_some() && v.get("choices").is_none() => {
                // Its message may quote the prompt: not logged.
                self.pending.push_back(Err(BackendError::Upstream(
                    "upstream reported an error mid-stream".into(),
                )));
                true
            }
            Ok(v) if v.is_object() => {
                self.pending.push_back(Ok(v));
                false
            }
            _ => {
                self.pending.push_back(Err(BackendError::Upstream(
                    "upstream stream event is not a JSON object".into(),
                )));
                true
            }
        }
    }
}

/// An incremental parser of `text/event-stream` (the WHATWG server-sent
/// events grammar, as far as chat streams use it): lines end in LF, CRLF or
/// CR; a blank line dispatches the event; `data:` lines are joined with LF;
/// comments (`:`) and the `event`, `id` and `retry` fields are ignored. Bytes
/// are buffered only up to the end of the current line; an event larger than
/// the limit is an error. Buffers are zeroed on drop (they hold plaintext).
pub struct SseParser {
    line: Zeroizing<Vec<u8>>,
    data: Zeroizing<Vec<u8>>,
    has_data: bool,
    /// The previous byte was a CR: an LF right after it ends nothing more.
    after_cr: bool,
    max_event: usize,
}

impl std::fmt::Debug for SseParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseParser").finish_non_exhaustive()
    }
}

impl SseParser {
    /// A parser refusing events over `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        Self {
            line: Zeroizing::new(Vec::new()),
            data: Zeroizing::new(Vec::new()),
            has_data: false,
            after_cr: false,
            max_event,
        }
    }

    /// Feeds bytes; appends the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8], events: &mut Vec<String>) -> Result<(), BackendError> {
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(events)?;
                }
                _ => {
                    if self.line.len() + self.data.len() >= self.max_event {
                        return Err(BackendError::Upstream(
                            "upstream stream event exceeds the size limit".into(),
                        ));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    /// At end of input: the data of an event left without its blank line.
    pub fn finish(&mut self) -> Option<String> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            let _ = self.end_line(&mut events);
        }
        let _ = self.end_line(&mut events);
        events.pop()
    }

    fn end_line(&mut self, events: &mut Vec<String>) -> Result<(), BackendError> {
        if self.line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let data = std::mem::take(&mut *self.data);
                let text = String::from_utf8(data).map_err(|e| {
                    let mut bytes = e.into_bytes();
                    secrecy::zeroize::Zeroize::zeroize(&mut bytes);
                    BackendError::Upstream("upstream stream event is not UTF-8".into())
                })?;
                events.push(text);
            }
            return Ok(());
        }
        let line = std::mem::take(&mut *self.line);
        let line = Zeroizing::new(line);
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(0) => return Ok(()), // comment
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> (Vec<String>, Option<String>) {
        let mut p = SseParser::new(1024);
        let mut events = Vec::new();
        for part in input.chunks(piece) {
            p.push(part, &mut events).unwrap();
        }
        let rest = p.finish();
        (events, rest)
    }

    #[test]
    fn sse_events_whatever_the_split_and_line_endings() {
        let input = b": comment\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\nid: 7\ndata:{\"b\":\ndata: 2}\n \n\n\rdata: x\r\rdata: [DONE]\n\n";
        for piece in 1..input.len() {
            let (events, rest) = parse_in_pieces(input, piece);
            assert_eq!(
                events,
                vec!["{\"a\":1}", "{\"b\":\n2}", "x", "[DONE]"],
                "split every {piece} bytes"
            );
            assert_eq!(rest, None);
        }
        // CR LF split across two pushes is one line end, not two.
        let (events, _) = parse_in_pieces(b"data: a\r\ndata: b\r\n\r\n", 8);
        assert_eq!(events, vec!["a\nb"]);
        // An event without its blank line is returned by finish().
        let (events, rest) = parse_in_pieces(b"data: [DONE]", 3);
        assert!(events.is_empty());
        assert_eq!(rest.as_deref(), Some("[DONE]"));
    }

    #[test]
    fn sse_oversized_event_and_bad_utf8_are_errors() {
        let mut p = SseParser::new(16);
        let mut events = Vec::new();
        assert!(p.push(b"data: 0123456789abcdef\n", &mut events).is_err());
        let mut p = SseParser::new(16);
        assert!(p.push(b"data: \xff\xfe\n\n", &mut events).is_err());
        assert!(events.is_empty());
    }
}
