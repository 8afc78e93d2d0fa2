//! The OpenAI-compatible upstream backend: `POST {url}/chat/completions` on a
//! llama.cpp server, vLLM, Ollama's `/v1`, TGI, or OpenAI itself.
//!
//! One pooled `reqwest` client (rustls, HTTP/1.1 and HTTP/2) per backend, with
//! connect and total timeouts. Upstream failures become [`BackendError`]s
//! whose detail strings hold statuses and error kinds only: never the
//! upstream's response body, which may quote the prompt. The one exception
//! is a refusal (400, 413, 422): its OpenAI-shaped reason becomes a
//! [`Rejection`](crate::backend::Rejection) that goes back to the client (whole only inside v2's sealed
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

use nomyo_core::{ExposeSecret, SecretString};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::zeroize::Zeroizing;
use serde_json::Value;

use crate::backend::{Backend, BackendError, ChatRequest, ChunkStream};

mod answer;
mod sse;

use answer::{check_status, read_json_object};
pub use sse::SseParser;

/// Largest upstream answer read (a chat completion is far smaller).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

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

    /// `GET {url}/models` within `timeout`, with the API key if any; a
    /// failure to send as its kind (never a body, no URL).
    async fn get_models(&self, timeout: Duration) -> Result<reqwest::Response, String> {
        let mut req = self
            .client
            .get(format!("{}/models", self.base))
            .timeout(timeout);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        req.send().await.map_err(|e| describe(&e.without_url()))
    }

    /// `POST {url}/chat/completions` with the serialised request `body`, the
    /// API key if any and `accept` as `Accept` when set. A failure to send or
    /// a non-2xx status becomes the [`BackendError`], logged by `failed`.
    async fn post_completion(
        &self,
        request_id: &str,
        body: Vec<u8>,
        accept: Option<&'static str>,
    ) -> Result<reqwest::Response, BackendError> {
        let mut req = self
            .client
            .post(&self.completions_url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(accept) = accept {
            req = req.header(ACCEPT, HeaderValue::from_static(accept));
        }
        let mut req = req.body(body);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.failed(request_id, map_send_error(e)))?;
        check_status(resp)
            .await
            .map_err(|e| self.failed(request_id, e))
    }

    /// An active health probe: `GET {url}/models` within `timeout`. `Ok` when
    /// the upstream answers with any status below 500 (it is up, even if it
    /// does not list models); `Err` with a kind (never a body) on a connect
    /// error, a timeout or a 5xx.
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        // The caller names the endpoint (without credentials) when it logs this.
        let resp = self.get_models(timeout).await?;
        if resp.status().is_server_error() {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        Ok(())
    }

    async fn discover_models(&self) -> Result<Vec<String>, String> {
        let resp = self.get_models(Duration::from_secs(5)).await?;
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
        let resp = self
            .post_completion(&request.request_id, body, None)
            .await?;
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
        let sent = body.to_vec();
        drop(body);
        let resp = self
            .post_completion(&request_id, sent, Some("text/event-stream"))
            .await?;
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
        Ok(sse::chunks(resp))
    }
}
