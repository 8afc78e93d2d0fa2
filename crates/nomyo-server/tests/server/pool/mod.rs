//! Routing over several upstreams ([`PoolBackend`]): least-in-flight choice,
//! per-endpoint caps, circuit breakers (passive and probed), failover before
//! the first answer byte and never after, and the config path that builds a
//! pool. The upstreams are test doubles (axum on 127.0.0.1:0) whose
//! connections die with them when a test "kills" one.
//!
//! The upstream doubles and the pool under test are built here; the tests are
//! grouped by behaviour: [`routing`], [`failover`], [`breakers`],
//! [`from_toml`] and [`llama`] (two real llama.cpp servers, ignored by default).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use nomyo_core::SecurityTier;
use nomyo_server::backend::{Backend, BackendError, ChatRequest};
use nomyo_server::metrics::{EndpointLabels, EndpointMetrics, EndpointOutcomeLabels};
use nomyo_server::pool::{redact_url, PoolBackend, PoolConfig};
use nomyo_server::upstream::UpstreamConfig;
use serde_json::{json, Value};

mod breakers;
mod failover;
mod from_toml;
mod llama;
mod routing;

/// How a double behaves; changed by the test while it runs.
#[derive(Default)]
struct Ctl {
    /// Status of chat answers (0 = 200 with a completion).
    chat_status: AtomicU16,
    /// Status of `GET /models` (0 = 200 with the list).
    models_status: AtomicU16,
    /// Delay before answering a chat request.
    delay_ms: AtomicU64,
    /// Streams: send one chunk, then cut the connection.
    cut_after_first: AtomicBool,
    /// Streams: cut before any chunk.
    cut_before_first: AtomicBool,
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// The `Authorization` header of the last chat request.
    last_auth: std::sync::Mutex<Option<String>>,
}

struct Up {
    url: String,
    ctl: Arc<Ctl>,
    task: tokio::task::JoinHandle<()>,
}

impl Up {
    /// Stops the double: its listener and every open connection close.
    fn kill(&self) {
        self.task.abort();
    }
    fn hits(&self) -> usize {
        self.ctl.hits.load(Ordering::SeqCst)
    }
}

struct InFlight(Arc<Ctl>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn chunk(name: &str) -> Value {
    json!({"object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": {"content": name}}]})
}

async fn chat_handler(
    State((name, ctl)): State<(String, Arc<Ctl>)>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    *ctl.last_auth.lock().unwrap() = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    ctl.hits.fetch_add(1, Ordering::SeqCst);
    let now = ctl.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    ctl.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _g = InFlight(Arc::clone(&ctl));
    let delay = ctl.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = ctl.chat_status.load(Ordering::SeqCst);
    if status != 0 {
        return (StatusCode::from_u16(status).unwrap(), "down").into_response();
    }
    if body["stream"] == json!(true) {
        let cut_before = ctl.cut_before_first.load(Ordering::SeqCst);
        let cut_after = ctl.cut_after_first.load(Ordering::SeqCst);
        let first = format!("data: {}\n\n", chunk(&name));
        let items: Vec<Result<Bytes, std::io::Error>> = if cut_before {
            vec![Err(std::io::Error::other("cut"))]
        } else if cut_after {
            vec![Ok(Bytes::from(first)), Err(std::io::Error::other("cut"))]
        } else {
            vec![Ok(Bytes::from(first)), Ok(Bytes::from("data: [DONE]\n\n"))]
        };
        // Each piece 30 ms after the previous one, so the headers (and the
        // first chunk) are on the wire before a cut.
        let body = futures::stream::iter(items).then(|item| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            item
        });
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(body))
            .unwrap();
    }
    Json(common::completion("m", &format!("from:{name}"))).into_response()
}

async fn models_handler(State((_, ctl)): State<(String, Arc<Ctl>)>) -> Response {
    match ctl.models_status.load(Ordering::SeqCst) {
        0 => Json(json!({"object": "list", "data": [{"id": "m"}]})).into_response(),
        s => StatusCode::from_u16(s).unwrap().into_response(),
    }
}

/// Starts a double named `name`.
async fn start(name: &str) -> Up {
    let ctl = Arc::new(Ctl::default());
    let app = Router::new()
        .route("/v1/models", get(models_handler))
        .route("/v1/chat/completions", post(chat_handler))
        .with_state((name.to_owned(), Arc::clone(&ctl)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        // Connections live in this task's set: aborting it drops them all.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(app.clone());
            conns.spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                .await;
            });
        }
    });
    Up { url, ctl, task }
}

fn endpoint(url: &str) -> UpstreamConfig {
    let mut c = UpstreamConfig::new(url);
    c.models = vec!["m".into()];
    c.connect_timeout = Duration::from_secs(2);
    c.timeout = Duration::from_secs(10);
    c
}

fn config(ups: &[&Up]) -> PoolConfig {
    let mut c = PoolConfig::new(ups.iter().map(|u| endpoint(&u.url)).collect());
    c.health_check_interval = Duration::ZERO;
    c
}

async fn pool(ups: &[&Up], f: impl FnOnce(&mut PoolConfig)) -> (PoolBackend, EndpointMetrics) {
    let mut c = config(ups);
    f(&mut c);
    let m = EndpointMetrics::default();
    (PoolBackend::connect("p", c, m.clone()).await.unwrap(), m)
}

fn req(i: usize) -> ChatRequest {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": format!("q{i}")}]});
    ChatRequest {
        body: body.as_object().unwrap().clone(),
        tier: SecurityTier::Standard,
        request_id: format!("r{i}"),
    }
}

fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn labels(up: &Up) -> EndpointLabels {
    EndpointLabels {
        backend: "p".into(),
        endpoint: redact_url(&up.url),
    }
}

fn breaker(m: &EndpointMetrics, up: &Up) -> i64 {
    m.breaker_state.get_or_create(&labels(up)).get()
}

/// Waits up to 3 s for `up`'s breaker to reach `state`; fails with `what`.
async fn wait_for_breaker(m: &EndpointMetrics, up: &Up, state: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while breaker(m, up) != state {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn outcomes(m: &EndpointMetrics, up: &Up, outcome: &'static str) -> u64 {
    m.requests
        .get_or_create(&EndpointOutcomeLabels {
            backend: "p".into(),
            endpoint: redact_url(&up.url),
            outcome,
        })
        .get()
}
