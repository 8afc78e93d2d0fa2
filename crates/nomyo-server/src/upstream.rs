//! The OpenAI-compatible upstream backend: `POST {url}/chat/completions` on a
//! llama.cpp server, vLLM, Ollama's `/v1`, TGI, or OpenAI itself.
//!
//! One pooled `reqwest` client (rustls, HTTP/1.1 and HTTP/2) per backend, with
//! connect and total timeouts. Upstream failures become [`BackendError`]s
//! whose detail strings hold statuses and error kinds only: never the
//! upstream's response body, which may quote the prompt.

use std::time::Duration;

use futures::StreamExt;
use nomyo_core::{ExposeSecret, SecretString};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

use crate::backend::{Backend, BackendError, ChatRequest};

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
            name: format!("upstream:{base}"),
            completions_url: format!("{base}/chat/completions"),
            base,
            auth,
            client,
            models: cfg.models,
        })
    }

    async fn discover_models(&self) -> Result<Vec<String>, String> {
        let mut req = self
            .client
            .get(format!("{}/models", self.base))
            .timeout(Duration::from_secs(5));
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let resp = req.send().await.map_err(|e| describe(&e))?;
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

/// A reqwest error as a kind, without its URL's query or any body.
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
    // reqwest's Display names the URL (our configured upstream, not user
    // data); it never includes bodies.
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
        BackendError::Upstream(describe(&e))
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
        let resp = req.send().await.map_err(map_send_error)?;
        let status = resp.status();
        if !status.is_success() {
            let hint = retry_after(&resp);
            // Drain nothing: the body may quote the prompt. Dropping the
            // response closes or recycles the connection.
            return Err(match status {
                StatusCode::BAD_REQUEST
                | StatusCode::UNPROCESSABLE_ENTITY
                | StatusCode::PAYLOAD_TOO_LARGE => {
                    BackendError::InvalidRequest(format!("upstream status {}", status.as_u16()))
                }
                StatusCode::NOT_FOUND => BackendError::ModelNotFound,
                StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => BackendError::Timeout,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    BackendError::Unavailable { retry_after: hint }
                }
                s => BackendError::Upstream(format!("upstream status {}", s.as_u16())),
            });
        }
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
}
