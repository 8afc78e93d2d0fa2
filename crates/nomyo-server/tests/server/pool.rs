//! Routing over several upstreams ([`PoolBackend`]): least-in-flight choice,
//! per-endpoint caps, circuit breakers (passive and probed), failover before
//! the first answer byte and never after, and the config path that builds a
//! pool. The upstreams are test doubles (axum on 127.0.0.1:0) whose
//! connections die with them when a test "kills" one.

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

#[tokio::test]
async fn least_in_flight_spreads_requests_and_ties_go_round_robin() {
    let (a, b, c) = (start("a").await, start("b").await, start("c").await);
    let (p, m) = pool(&[&a, &b, &c], |_| {}).await;
    assert_eq!(p.models(), vec!["m".to_owned()]);
    assert!(p.is_ready());
    // Idle pool: ties go round robin.
    for i in 0..3 {
        p.chat(req(i)).await.unwrap();
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (1, 1, 1));
    // Six concurrent slow requests: two per endpoint, never three on one.
    for u in [&a, &b, &c] {
        u.ctl.delay_ms.store(300, Ordering::SeqCst);
    }
    let answers = futures::future::join_all((0..6).map(|i| p.chat(req(i)))).await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!((a.hits(), b.hits(), c.hits()), (3, 3, 3));
    for u in [&a, &b, &c] {
        assert_eq!(u.ctl.max_in_flight.load(Ordering::SeqCst), 2);
        assert_eq!(outcomes(&m, u, "ok"), 3);
        assert_eq!(m.in_flight.get_or_create(&labels(u)).get(), 0);
    }
}

#[tokio::test]
async fn a_failing_endpoint_is_failed_over_and_its_breaker_opens() {
    let (a, b) = (start("a").await, start("b").await);
    a.ctl.chat_status.store(503, Ordering::SeqCst);
    let (p, m) = pool(&[&a, &b], |c| {
        c.breaker_failures = 2;
        c.breaker_cooldown = Duration::from_secs(60);
    })
    .await;
    for i in 0..6 {
        let v = p.chat(req(i)).await.unwrap();
        assert_eq!(content(&v), "from:b");
    }
    // Two failures opened A's breaker: it was not tried again.
    assert_eq!(a.hits(), 2);
    assert_eq!(b.hits(), 6);
    assert_eq!(outcomes(&m, &a, "failed"), 2);
    assert_eq!(breaker(&m, &a), 1);
    assert_eq!(m.breaker_opened.get_or_create(&labels(&a)).get(), 1);
    assert_eq!(breaker(&m, &b), 0);
    assert!(p.is_ready());
    // Closing connections also fails over (A is killed: connect refused).
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    b.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // B down and A's breaker open for a minute: nothing to route to.
    match p.chat(req(9)).await {
        Err(BackendError::Unavailable { retry_after }) => assert!(retry_after.is_some()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn probes_open_and_close_breakers() {
    let (a, b) = (start("a").await, start("b").await);
    a.ctl.chat_status.store(503, Ordering::SeqCst);
    a.ctl.models_status.store(503, Ordering::SeqCst);
    let (p, m) = pool(&[&a, &b], |c| {
        c.health_check_interval = Duration::from_millis(100);
        c.breaker_cooldown = Duration::from_secs(60);
    })
    .await;
    // The probe takes A out without any request having failed there.
    wait_for_breaker(&m, &a, 1, "probe never opened A").await;
    for i in 0..4 {
        assert_eq!(content(&p.chat(req(i)).await.unwrap()), "from:b");
    }
    assert_eq!(a.hits(), 0);
    // A recovers: the probe closes its breaker long before the cool-down.
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    a.ctl.models_status.store(0, Ordering::SeqCst);
    wait_for_breaker(&m, &a, 0, "probe never closed A").await;
    for i in 0..4 {
        p.chat(req(i)).await.unwrap();
    }
    assert_eq!(a.hits(), 2, "A takes its share again");
}

#[tokio::test]
async fn killing_an_upstream_mid_load_is_invisible_to_clients() {
    let (a, b) = (start("a").await, start("b").await);
    for u in [&a, &b] {
        u.ctl.delay_ms.store(300, Ordering::SeqCst);
    }
    let (p, m) = pool(&[&a, &b], |_| {}).await;
    let p = Arc::new(p);
    let load = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            let mut all = Vec::new();
            for wave in 0..3 {
                let answers =
                    futures::future::join_all((0..8).map(|i| p.chat(req(wave * 10 + i)))).await;
                all.extend(answers);
            }
            all
        })
    };
    // A dies while its first wave is being answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.ctl.in_flight.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "A never got load");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    let answers = load.await.unwrap();
    assert_eq!(answers.len(), 24);
    for r in &answers {
        let v = r.as_ref().expect("no client-visible error");
        assert_eq!(content(v), "from:b");
    }
    assert!(
        outcomes(&m, &a, "failed") >= 4,
        "A's in-flight requests failed over"
    );
    assert_eq!(outcomes(&m, &a, "ok"), 0);
}

#[tokio::test]
async fn streams_fail_over_before_the_first_chunk_and_never_after() {
    let (a, b) = (start("a").await, start("b").await);
    let (p, m) = pool(&[&a, &b], |_| {}).await;
    // A fails before its first chunk (503, then a cut): B answers.
    a.ctl.chat_status.store(503, Ordering::SeqCst);
    let s = p.chat_stream(req(0)).await.unwrap();
    let items: Vec<_> = s.collect().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap(), &chunk("b"));
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    a.ctl.cut_before_first.store(true, Ordering::SeqCst);
    for i in 1..3 {
        let items: Vec<_> = p.chat_stream(req(i)).await.unwrap().collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap(), &chunk("b"));
    }
    assert_eq!(
        outcomes(&m, &a, "failed"),
        3,
        "A was tried first every time"
    );
    // Cut after the first chunk: the client sees the chunk, then the error;
    // no other endpoint is asked.
    a.ctl.cut_before_first.store(false, Ordering::SeqCst);
    for u in [&a, &b] {
        u.ctl.cut_after_first.store(true, Ordering::SeqCst);
    }
    let before = a.hits() + b.hits();
    let items: Vec<_> = p.chat_stream(req(5)).await.unwrap().collect().await;
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(items[1].is_err());
    assert_eq!(
        a.hits() + b.hits(),
        before + 1,
        "a cut stream is not retried"
    );
    assert_eq!(outcomes(&m, &a, "cut") + outcomes(&m, &b, "cut"), 1);
}

#[tokio::test]
async fn caps_and_all_down_give_503_with_retry_after() {
    let (a, b) = (start("a").await, start("b").await);
    for u in [&a, &b] {
        u.ctl.delay_ms.store(400, Ordering::SeqCst);
    }
    let (p, _m) = pool(&[&a, &b], |c| c.max_concurrency_per_endpoint = 1).await;
    let answers = futures::future::join_all((0..3).map(|i| p.chat(req(i)))).await;
    assert!(answers[0].is_ok() && answers[1].is_ok());
    match &answers[2] {
        Err(BackendError::Unavailable { retry_after }) => assert!(retry_after.is_some()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(a.hits() + b.hits(), 2, "the capped request went nowhere");

    // Every endpoint down: 503 with Retry-After through the whole server.
    a.kill();
    b.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let state = nomyo_server::AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(
        common::server_key(),
    ));
    let em = state.endpoint_metrics();
    let p = PoolBackend::connect("p", config(&[&a, &b]), em)
        .await
        .unwrap();
    let app = nomyo_server::app(state.backend("p", Arc::new(p)).build().unwrap());
    let sealed = common::seal_json(&common::chat("m", "hello"));
    let (status, headers, _) = common::oneshot(&app, sealed.request(None, None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    // The pool's probe at start found both down: not ready, so the request
    // was refused before any endpoint was tried. The per-endpoint series
    // are exported, breakers open.
    let (status, _, _) = common::oneshot_get(&app, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, body) = common::oneshot_get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let open = format!(
        "nomyo_upstream_endpoint_breaker_state{{backend=\"p\",endpoint=\"{}\"}} 1",
        redact_url(&a.url)
    );
    assert!(text.contains(&open), "{open} in\n{text}");
}

/// A server built by the product's start-up path from `settings`, and its
/// (ephemeral) key, fetched to seal to it.
async fn prepared_app(
    settings: nomyo_server::config::Settings,
) -> (axum::Router, nomyo_core::PublicKey) {
    let prepared = nomyo_server::serve::prepare(settings, |_| Err("no embedded".into()))
        .await
        .unwrap();
    let app = nomyo_server::app(prepared.state);
    let key = common::fetch_public_key(&app).await;
    (app, key)
}

#[tokio::test]
async fn toml_urls_build_a_pool_through_the_server_config_path() {
    let (a, b) = (start("a").await, start("b").await);
    let toml = format!(
        "ephemeral_key = true\nkey_bits = 2048\nlisten = \"127.0.0.1:0\"\n\
         [[backends]]\nname = \"pool\"\ntype = \"upstream\"\nurls = [\"{}\", \"{}\"]\n\
         max_concurrency_per_endpoint = 4\nhealth_check_interval_secs = 0\n",
        a.url, b.url
    );
    let settings = common::settings(&toml);
    assert!(matches!(
        settings.backends[..],
        [nomyo_server::config::BackendSpec::Pool { .. }]
    ));
    let (app, server) = prepared_app(settings).await;
    for i in 0..4 {
        let plain = serde_json::to_vec(&common::chat("m", &format!("q{i}"))).unwrap();
        let sealed = common::seal_to(&plain, &server);
        let (status, _, body) = common::oneshot(&app, sealed.request(None, None)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!((a.hits(), b.hits()), (2, 2), "both URLs serve one pool");
}

#[tokio::test]
async fn toml_endpoints_route_by_model_with_their_own_keys_and_caps() {
    // A big server that serves two models next to a small one that serves
    // one: per-endpoint models, API keys and concurrency caps, from TOML.
    let (big, small) = (start("big").await, start("small").await);
    big.ctl.delay_ms.store(150, Ordering::SeqCst);
    small.ctl.delay_ms.store(150, Ordering::SeqCst);
    std::env::set_var("NOMYO_TEST_POOL_KEY_BIG", "key-of-big");
    let toml = format!(
        "ephemeral_key = true\nkey_bits = 2048\nlisten = \"127.0.0.1:0\"\n\
         [[backends]]\nname = \"gpus\"\nhealth_check_interval_secs = 0\nmodels = [\"m\"]\n\
         max_concurrency_per_endpoint = 1\n\
         [[backends.endpoints]]\nurl = \"{}\"\nmodels = [\"m\", \"large\"]\n\
         api_key_env = \"NOMYO_TEST_POOL_KEY_BIG\"\nmax_concurrency = 3\n\
         [[backends.endpoints]]\nurl = \"{}\"\n",
        big.url, small.url
    );
    let settings = common::settings(&toml);
    let (app, server) = prepared_app(settings).await;
    let send = |model: &'static str, i: usize| {
        let app = app.clone();
        let server = server.clone();
        async move {
            let plain = serde_json::to_vec(&common::chat(model, &format!("q{i}"))).unwrap();
            let sealed = common::seal_to(&plain, &server);
            let (status, _, body) = common::oneshot(&app, sealed.request(None, None)).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            common::open_response(&body).1["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // Only the big endpoint serves "large".
    for i in 0..3 {
        assert_eq!(send("large", i).await, "from:big");
    }
    assert_eq!(small.hits(), 0);
    assert_eq!(
        big.ctl.last_auth.lock().unwrap().as_deref(),
        Some("Bearer key-of-big")
    );
    // Four at once for "m": caps 3 (big) + 1 (small) admit all four, both
    // endpoints serve some, and neither ever holds more than its own cap.
    big.ctl.delay_ms.store(400, Ordering::SeqCst);
    small.ctl.delay_ms.store(400, Ordering::SeqCst);
    let answers = futures::future::join_all((0..4).map(|i| send("m", i))).await;
    assert!(answers.iter().any(|a| a == "from:small"), "{answers:?}");
    assert!(answers.iter().any(|a| a == "from:big"), "{answers:?}");
    assert!(big.ctl.max_in_flight.load(Ordering::SeqCst) <= 3);
    assert_eq!(small.ctl.max_in_flight.load(Ordering::SeqCst), 1);
    // The small endpoint got no key (none configured for the backend).
    assert_eq!(small.ctl.last_auth.lock().unwrap().as_deref(), None);
}

/// A llama.cpp `llama-server` child, killed on drop.
struct Llama(std::process::Child);

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `llama-server` on a free port; returns it and its base URL once it
/// answers `GET /health` with 200.
async fn start_llama(bin: &str, model: &str) -> (Llama, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin)
        .args([
            "-m", model, "--alias", "smol", "-c", "2048", "-np", "2", "-t", "1",
        ])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("NOMYO_LLAMA_SERVER runs");
    let child = Llama(child);
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ok = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "llama-server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (child, format!("http://127.0.0.1:{port}/v1"))
}

/// Two real llama.cpp servers behind one pool; one is killed mid-load and the
/// requests move to the other. Local only (not CI):
/// `NOMYO_LLAMA_SERVER=target/peer/build/bin/llama-server cargo test -p nomyo-server --test server pool:: -- --ignored --nocapture`
/// (model: `models/SmolLM2-135M-Instruct.Q4_1.gguf`, or `NOMYO_LLAMA_MODEL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama-server binary in NOMYO_LLAMA_SERVER"]
async fn real_llama_servers_fail_over_when_one_dies() {
    let Ok(bin) = std::env::var("NOMYO_LLAMA_SERVER") else {
        panic!("set NOMYO_LLAMA_SERVER to a llama-server binary");
    };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let model = std::env::var("NOMYO_LLAMA_MODEL")
        .unwrap_or_else(|_| format!("{root}/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let (mut a, a_url) = start_llama(&bin, &model).await;
    let (_b, b_url) = start_llama(&bin, &model).await;
    let mut c = PoolConfig::new(vec![
        UpstreamConfig::new(a_url.clone()),
        UpstreamConfig::new(b_url.clone()),
    ]);
    c.health_check_interval = Duration::from_millis(500);
    let m = EndpointMetrics::default();
    let p = Arc::new(PoolBackend::connect("p", c, m.clone()).await.unwrap());
    assert!(p.models().contains(&"smol".to_owned()), "{:?}", p.models());
    let ask = move |i: usize| {
        let p = Arc::clone(&p);
        async move {
            let body = json!({"model": "smol", "max_tokens": 24, "temperature": 0,
                "messages": [{"role": "user", "content": format!("Count to {}", i % 7 + 3)}]});
            p.chat(ChatRequest {
                body: body.as_object().unwrap().clone(),
                tier: SecurityTier::Standard,
                request_id: format!("real{i}"),
            })
            .await
        }
    };
    let ok = |m: &EndpointMetrics, url: &str| {
        m.requests
            .get_or_create(&EndpointOutcomeLabels {
                backend: "p".into(),
                endpoint: redact_url(url),
                outcome: "ok",
            })
            .get()
    };
    // Warm-up: both serve.
    let warm = futures::future::join_all((0..4).map(&ask)).await;
    assert!(warm.iter().all(Result::is_ok), "{warm:?}");
    assert!(ok(&m, &a_url) > 0 && ok(&m, &b_url) > 0);
    // Load, and A dies while it has requests in flight.
    let load = tokio::spawn({
        let ask = ask.clone();
        async move { futures::future::join_all((10..26).map(ask)).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let a_ok_at_kill = ok(&m, &a_url);
    a.0.kill().unwrap();
    let _ = a.0.wait();
    let answers = load.await.unwrap();
    for r in &answers {
        let v = r.as_ref().expect("no client-visible error");
        assert!(v["choices"][0]["message"]["content"].is_string());
    }
    let a_failed = m
        .requests
        .get_or_create(&EndpointOutcomeLabels {
            backend: "p".into(),
            endpoint: redact_url(&a_url),
            outcome: "failed",
        })
        .get();
    eprintln!(
        "A ok before kill {a_ok_at_kill}, after {}; A failed over {a_failed}; B ok {}",
        ok(&m, &a_url),
        ok(&m, &b_url)
    );
    assert!(a_failed > 0, "A had requests in flight that moved to B");
    // Requests that were still in flight on A may have finished the instant
    // it was killed; after that, B serves everything.
    let after = futures::future::join_all((30..34).map(&ask)).await;
    assert!(after.iter().all(Result::is_ok));
    assert!(ok(&m, &b_url) >= 4 + (answers.len() as u64) / 2);
}

/// Moves the breakers' clock (tokio's) `d` ahead at once, instead of
/// waiting for a cool-down on the wall clock. The clock is paused only for
/// the jump: the rest of the test talks to real sockets, whose timers must
/// run as usual.
async fn past(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

#[tokio::test]
async fn an_open_breaker_lets_one_trial_through_after_its_cool_down() {
    let a = start("a").await;
    a.ctl.chat_status.store(500, Ordering::SeqCst);
    let (p, m) = pool(&[&a], |c| {
        c.breaker_failures = 1;
        // Far longer than the test: only the moved clock passes it.
        c.breaker_cooldown = Duration::from_secs(3600);
    })
    .await;
    assert!(matches!(
        p.chat(req(0)).await,
        Err(BackendError::Upstream(_))
    ));
    assert_eq!(breaker(&m, &a), 1);
    assert!(!p.is_ready());
    // Open: refused without asking A.
    match p.chat(req(1)).await {
        Err(BackendError::Unavailable { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3600)));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(a.hits(), 1);
    // After the cool-down one trial goes through; it fails: open again.
    past(Duration::from_secs(3601)).await;
    assert!(p.is_ready());
    assert!(p.chat(req(2)).await.is_err());
    assert_eq!(a.hits(), 2);
    assert_eq!(breaker(&m, &a), 1);
    assert!(p.chat(req(3)).await.is_err());
    assert_eq!(a.hits(), 2);
    // The next trial succeeds: closed.
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    past(Duration::from_secs(3601)).await;
    p.chat(req(4)).await.unwrap();
    assert_eq!(breaker(&m, &a), 0);
    assert_eq!(m.breaker_opened.get_or_create(&labels(&a)).get(), 2);
    p.chat(req(5)).await.unwrap();
    assert_eq!(a.hits(), 4);
}

#[tokio::test]
async fn a_half_open_breaker_admits_a_single_trial() {
    let a = start("a").await;
    a.ctl.chat_status.store(502, Ordering::SeqCst);
    let (p, m) = pool(&[&a], |c| {
        c.breaker_failures = 1;
        c.breaker_cooldown = Duration::from_secs(3600);
    })
    .await;
    assert!(p.chat(req(0)).await.is_err());
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    a.ctl.delay_ms.store(300, Ordering::SeqCst);
    past(Duration::from_secs(3601)).await;
    let (trial, other) = tokio::join!(p.chat(req(1)), p.chat(req(2)));
    assert!(trial.is_ok());
    assert!(matches!(other, Err(BackendError::Unavailable { .. })));
    assert_eq!(a.hits(), 2);
    assert_eq!(breaker(&m, &a), 0);
}

/// An endpoint that received the request and failed (500), and one that
/// refused it before taking it (503), in either order: the pool answers
/// with the first failure, never `Unavailable`, which would give the
/// request's replay claim back and let the same bytes run again (over v1,
/// replayed with another `X-Public-Key`, the answer then goes to whoever
/// replays it).
#[tokio::test]
async fn a_request_that_reached_an_endpoint_is_never_reported_as_unavailable() {
    let (a, b) = (start("a").await, start("b").await);
    a.ctl.chat_status.store(500, Ordering::SeqCst);
    b.ctl.chat_status.store(503, Ordering::SeqCst);
    let (p, _m) = pool(&[&a, &b], |c| {
        c.breaker_failures = 100;
    })
    .await;
    for i in 0..4 {
        match p.chat(req(i)).await {
            Err(BackendError::Unavailable { .. }) => {
                panic!("request {i}: reported as never taken after endpoint a had it")
            }
            Ok(_) => panic!("request {i}: no endpoint answers"),
            Err(_) => {}
        }
        match p.chat_stream(req(10 + i)).await {
            Err(BackendError::Unavailable { .. }) => {
                panic!("stream {i}: reported as never taken after endpoint a had it")
            }
            Ok(_) => panic!("stream {i}: no endpoint answers"),
            Err(_) => {}
        }
    }
    // Every request was tried at both endpoints, in both orders.
    assert_eq!(a.hits(), 8);
    assert_eq!(b.hits(), 8);
}
