//! How `nomyo bench` sends one request: through the client library (every
//! answer opened, or one in N with `--open-every`), or plain to an
//! OpenAI-compatible URL; and how a failure is counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nomyo_client::{ChatRequest, Client, Error as ClientError, RequestOptions};
use nomyo_core::{ExposeSecret, SecretString};

use super::super::chat::client_error;
use crate::exit::Code;

/// Sends one request the way the chosen protocol does.
pub(super) enum Sender {
    Secure {
        client: Client,
        stream: bool,
    },
    /// v1 with `--open-every N > 1`.
    Sampled(SampledV1),
    Plain(PlainSender),
}

/// Protocol v1 through the client library, opening one answer in `every`
/// (`--open-every`); the others are received and checked as packages for
/// their request only.
pub(super) struct SampledV1 {
    pub(super) client: Client,
    pub(super) every: u64,
    pub(super) sent: AtomicU64,
    pub(super) opened: AtomicU64,
}

/// The unencrypted comparison: the same JSON straight to the upstream.
pub(super) struct PlainSender {
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) api_key: Option<SecretString>,
    pub(super) body: bytes::Bytes,
}

/// One request's outcome.
pub(super) struct Sample {
    pub(super) latency: Duration,
    pub(super) ttft: Option<Duration>,
    /// Tokens generated: the answer's `usage.completion_tokens`; for a
    /// stream without a usage chunk, its content chunks. `None`: not known
    /// (an answer not opened, or one without usage).
    pub(super) tokens: Option<u64>,
    /// Dropped by us after the first chunk (`--cancel-streams`).
    pub(super) cancelled: bool,
}

/// `--cancel-streams`: a number from 0 to 1.
pub(super) fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?} is not a fraction from 0 to 1")),
    }
}

/// Whether the `i`-th measured request (from 0) is one to cancel: spreads
/// `fraction` of them evenly (0.25 cancels every 4th).
pub(super) fn cancel_this(i: u64, fraction: f64) -> bool {
    fraction > 0.0 && ((i + 1) as f64 * fraction).floor() > (i as f64 * fraction).floor()
}

/// What went wrong with one request, by kind.
pub(super) struct Failure {
    pub(super) kind: String,
    pub(super) message: String,
    pub(super) exit: Code,
}

impl Failure {
    pub(super) fn from_client(e: ClientError) -> Self {
        let kind = if let Some(s) = e.status() {
            format!("http_{s}")
        } else if e.is_security() {
            "security".to_owned()
        } else {
            match e {
                ClientError::Timeout { .. } => "timeout".to_owned(),
                ClientError::Connection { .. } => "network".to_owned(),
                _ => "other".to_owned(),
            }
        };
        let cli = client_error(e);
        Self {
            kind,
            message: cli.message,
            exit: cli.code,
        }
    }
}

impl Sender {
    /// Sends one request; with `cancel`, a stream is dropped after its first chunk.
    pub(super) async fn one(&self, request: &ChatRequest, cancel: bool) -> Result<Sample, Failure> {
        let start = Instant::now();
        match self {
            Sender::Secure {
                client,
                stream: false,
            } => {
                let answer = client.create(request).await.map_err(Failure::from_client)?;
                let tokens = answer.usage.as_ref().map(|u| u.completion_tokens);
                drop(answer);
                Ok(Sample {
                    latency: start.elapsed(),
                    ttft: None,
                    tokens,
                    cancelled: false,
                })
            }
            Sender::Secure {
                client,
                stream: true,
            } => {
                let mut stream = client
                    .create_stream(request)
                    .await
                    .map_err(Failure::from_client)?;
                let mut ttft = None;
                let mut content_chunks = 0u64;
                let mut usage_tokens = None;
                while let Some(item) = futures::StreamExt::next(&mut stream).await {
                    let chunk = item.map_err(Failure::from_client)?;
                    if chunk.text().is_some_and(|t| !t.is_empty()) {
                        content_chunks += 1;
                        if ttft.is_none() {
                            ttft = Some(start.elapsed());
                        }
                    }
                    if let Some(n) = chunk
                        .extra
                        .get("usage")
                        .and_then(|u| u.get("completion_tokens"))
                        .and_then(serde_json::Value::as_u64)
                    {
                        usage_tokens = Some(n);
                    }
                    if cancel {
                        // Go away mid-stream: the response (and its
                        // connection) is dropped with the stream.
                        drop(stream);
                        return Ok(Sample {
                            latency: start.elapsed(),
                            ttft: None,
                            tokens: None,
                            cancelled: true,
                        });
                    }
                }
                let latency = start.elapsed();
                Ok(Sample {
                    latency,
                    ttft: Some(ttft.unwrap_or(latency)),
                    tokens: Some(usage_tokens.unwrap_or(content_chunks)),
                    cancelled: false,
                })
            }
            Sender::Sampled(v) => v.one(request).await.map(|(latency, tokens)| Sample {
                latency,
                ttft: None,
                tokens,
                cancelled: false,
            }),
            Sender::Plain(p) => p.one().await.map(|(latency, tokens)| Sample {
                latency,
                ttft: None,
                tokens,
                cancelled: false,
            }),
        }
    }
}

impl SampledV1 {
    /// The latency and, for an answer opened, its generated tokens.
    pub(super) async fn one(
        &self,
        request: &ChatRequest,
    ) -> Result<(Duration, Option<u64>), Failure> {
        let start = Instant::now();
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .client
            .create_unopened(request, &RequestOptions::default())
            .await
            .map_err(Failure::from_client)?;
        let mut tokens = None;
        if n.is_multiple_of(self.every) {
            let completion = answer.open().await.map_err(Failure::from_client)?;
            tokens = completion.usage.as_ref().map(|u| u.completion_tokens);
            self.opened.fetch_add(1, Ordering::Relaxed);
        }
        Ok((start.elapsed(), tokens))
    }
}

/// `usage.completion_tokens` of an answer's JSON.
pub(super) fn completion_tokens(answer: &serde_json::Value) -> Option<u64> {
    answer.pointer("/usage/completion_tokens")?.as_u64()
}

impl PlainSender {
    /// The latency and the answer's generated tokens (from its usage).
    pub(super) async fn one(&self) -> Result<(Duration, Option<u64>), Failure> {
        let start = Instant::now();
        let mut req = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.clone());
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k.expose_secret());
        }
        let net = |e: reqwest::Error| Failure {
            kind: if e.is_timeout() { "timeout" } else { "network" }.to_owned(),
            message: format!("cannot reach {}: {}", self.url, e.without_url()),
            exit: Code::Server,
        };
        let resp = req.send().await.map_err(net)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(net)?;
        if !(200..300).contains(&status) {
            return Err(Failure {
                kind: format!("http_{status}"),
                message: format!("{} answered HTTP {status}", self.url),
                exit: Code::Server,
            });
        }
        // Parse the answer like a client would (and check it is one).
        let parsed: serde_json::Value = serde_json::from_slice(&body).map_err(|_| Failure {
            kind: "other".to_owned(),
            message: format!("{} answered something that is not JSON", self.url),
            exit: Code::Server,
        })?;
        if parsed.get("choices").is_none() {
            return Err(Failure {
                kind: "other".to_owned(),
                message: format!("{} answered JSON without choices", self.url),
                exit: Code::Server,
            });
        }
        Ok((start.elapsed(), completion_tokens(&parsed)))
    }
}
