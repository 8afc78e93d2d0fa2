//! How `nomyo bench` sends one request: through the client library (every
//! answer opened, or one in N with `--open-every`), or plain to an
//! OpenAI-compatible URL (whole, or streamed as server-sent events); and how
//! a failure is counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nomyo_client::{ChatRequest, Client, Error as ClientError, RequestOptions};
use nomyo_core::{ExposeSecret, SecretString};

use super::stats::StreamClock;
use crate::cmd::client_error;
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
    /// `--stream`: the body asks for a stream, read as server-sent events.
    pub(super) stream: bool,
}

/// One request's outcome.
pub(super) struct Sample {
    pub(super) latency: Duration,
    pub(super) ttft: Option<Duration>,
    /// A stream's gaps between consecutive content chunks.
    pub(super) gaps: Vec<Duration>,
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
                Ok(Sample::whole(start.elapsed(), tokens))
            }
            Sender::Secure {
                client,
                stream: true,
            } => {
                let mut stream = client
                    .create_stream(request)
                    .await
                    .map_err(Failure::from_client)?;
                let mut clock = StreamClock::new(start);
                let mut usage_tokens = None;
                while let Some(item) = futures::StreamExt::next(&mut stream).await {
                    let chunk = item.map_err(Failure::from_client)?;
                    if chunk.text().is_some_and(|t| !t.is_empty()) {
                        clock.content(Instant::now());
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
                        return Ok(Sample::cancelled(start.elapsed()));
                    }
                }
                Ok(Sample::streamed(start.elapsed(), clock, usage_tokens))
            }
            Sender::Sampled(v) => v
                .one(request)
                .await
                .map(|(latency, tokens)| Sample::whole(latency, tokens)),
            Sender::Plain(p) if p.stream => p.one_stream(cancel).await,
            Sender::Plain(p) => p
                .one()
                .await
                .map(|(latency, tokens)| Sample::whole(latency, tokens)),
        }
    }
}

impl Sample {
    /// An answer read whole.
    fn whole(latency: Duration, tokens: Option<u64>) -> Self {
        Self {
            latency,
            ttft: None,
            gaps: Vec::new(),
            tokens,
            cancelled: false,
        }
    }

    /// A stream read to its end: its usage's tokens, else its content chunks.
    fn streamed(latency: Duration, clock: StreamClock, usage_tokens: Option<u64>) -> Self {
        Self {
            latency,
            ttft: Some(clock.ttft.unwrap_or(latency)),
            tokens: Some(usage_tokens.unwrap_or(clock.chunks)),
            gaps: clock.gaps,
            cancelled: false,
        }
    }

    /// A stream we dropped (`--cancel-streams`).
    fn cancelled(latency: Duration) -> Self {
        Self {
            latency,
            ttft: None,
            gaps: Vec::new(),
            tokens: None,
            cancelled: true,
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
    /// A network failure (or timeout) reaching the upstream.
    fn net(&self, e: reqwest::Error) -> Failure {
        Failure {
            kind: if e.is_timeout() { "timeout" } else { "network" }.to_owned(),
            message: format!("cannot reach {}: {}", self.url, e.without_url()),
            exit: Code::Server,
        }
    }

    /// An answer that is not what an OpenAI-compatible server sends.
    fn malformed(&self, what: &str) -> Failure {
        Failure {
            kind: "other".to_owned(),
            message: format!("{} answered {what}", self.url),
            exit: Code::Server,
        }
    }

    /// Posts the body; a status other than 2xx is a failure (its body read
    /// and dropped).
    async fn post(&self) -> Result<reqwest::Response, Failure> {
        let mut req = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.clone());
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k.expose_secret());
        }
        let resp = req.send().await.map_err(|e| self.net(e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let _ = resp.bytes().await;
            return Err(Failure {
                kind: format!("http_{status}"),
                message: format!("{} answered HTTP {status}", self.url),
                exit: Code::Server,
            });
        }
        Ok(resp)
    }

    /// The latency and the answer's generated tokens (from its usage).
    pub(super) async fn one(&self) -> Result<(Duration, Option<u64>), Failure> {
        let start = Instant::now();
        let resp = self.post().await?;
        let body = resp.bytes().await.map_err(|e| self.net(e))?;
        // Parse the answer like a client would (and check it is one).
        let parsed: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| self.malformed("something that is not JSON"))?;
        if parsed.get("choices").is_none() {
            return Err(self.malformed("JSON without choices"));
        }
        Ok((start.elapsed(), completion_tokens(&parsed)))
    }

    /// One streamed answer: server-sent events of chat completion chunks
    /// up to `data: [DONE]`, timed chunk by chunk; with `cancel`, dropped
    /// after the first event.
    pub(super) async fn one_stream(&self, cancel: bool) -> Result<Sample, Failure> {
        let start = Instant::now();
        let resp = self.post().await?;
        let mut body = resp.bytes_stream();
        let mut events = SseData::default();
        let mut clock = StreamClock::new(start);
        let mut usage_tokens = None;
        while let Some(bytes) = futures::StreamExt::next(&mut body).await {
            let bytes = bytes.map_err(|e| self.net(e))?;
            let now = Instant::now();
            let datas = events.push(&bytes).map_err(|what| {
                self.malformed(&format!("a stream that is not server-sent events ({what})"))
            })?;
            for data in datas {
                if data == "[DONE]" {
                    return Ok(Sample::streamed(start.elapsed(), clock, usage_tokens));
                }
                let chunk: serde_json::Value = serde_json::from_str(&data)
                    .map_err(|_| self.malformed("a stream event that is not JSON"))?;
                if chunk.get("error").is_some() {
                    return Err(self.malformed("an error in the stream"));
                }
                let choices = chunk
                    .get("choices")
                    .and_then(serde_json::Value::as_array)
                    .ok_or_else(|| self.malformed("a stream event without choices"))?;
                if choices.iter().any(|c| {
                    c.pointer("/delta/content")
                        .and_then(serde_json::Value::as_str)
                        .is_some_and(|t| !t.is_empty())
                }) {
                    clock.content(now);
                }
                if let Some(n) = completion_tokens(&chunk) {
                    usage_tokens = Some(n);
                }
                if cancel {
                    // Go away mid-stream: the response (and its connection)
                    // is dropped with the body.
                    drop(body);
                    return Ok(Sample::cancelled(start.elapsed()));
                }
            }
        }
        Err(self.malformed("a stream that ended before `data: [DONE]`"))
    }
}

/// The largest server-sent event line (or event) we hold: an answer's
/// chunk is far smaller.
const SSE_MAX: usize = 16 * 1024 * 1024;

/// Splits a stream of server-sent events, as it arrives, into the `data`
/// of each complete event (the lines of one event's `data` joined by
/// newlines; comments and other fields ignored).
#[derive(Default)]
pub(super) struct SseData {
    /// Bytes of a line not yet complete.
    partial: Vec<u8>,
    /// The `data` of the event being read.
    data: Option<String>,
}

impl SseData {
    /// Takes the next bytes; returns the data of the events they complete.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, &'static str> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| "not UTF-8")?;
            if line.is_empty() {
                out.extend(self.data.take());
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            if field == "data" {
                let data = self.data.get_or_insert_with(String::new);
                if data.len() + value.len() > SSE_MAX {
                    return Err("an event too large");
                }
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > SSE_MAX {
            return Err("a line too long");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_whatever_the_reads() {
        let stream = b"data: {\"a\":1}\n\n: a comment\r\nevent: x\r\ndata: one\r\ndata:two\r\n\r\ndata: [DONE]\n\n";
        let want = vec![
            "{\"a\":1}".to_owned(),
            "one\ntwo".to_owned(),
            "[DONE]".to_owned(),
        ];
        // All at once, and byte by byte.
        assert_eq!(SseData::default().push(stream), Ok(want.clone()));
        let mut sse = SseData::default();
        let mut got = Vec::new();
        for b in stream.iter() {
            got.extend(sse.push(std::slice::from_ref(b)).expect("valid"));
        }
        assert_eq!(got, want);
        // An event without its blank line is not complete yet.
        let mut sse = SseData::default();
        assert_eq!(sse.push(b"data: half\n"), Ok(vec![]));
        assert_eq!(sse.push(b"\n"), Ok(vec!["half".to_owned()]));
        // Bytes that are not text are refused, not a panic.
        assert!(SseData::default().push(b"data: \xff\n\n").is_err());
    }
}
