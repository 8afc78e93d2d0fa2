//! The proxy's canary (no secret in any log): a unique prompt, a unique
//! answer, the endpoint API key and the proxy's access token never appear in
//! any log line, at every level (the filter is switched through TRACE,
//! DEBUG, INFO, WARN and ERROR, all targets: ours, the client's, the
//! in-process server's, axum, hyper, reqwest), on success (v1 and v2,
//! streamed and not) and on the error paths (wrong or missing token, bad
//! JSON, a busy backend, a stream cut mid-way, an unknown model). Its own
//! test binary: the subscriber is process-global.
//!
//! `nomyo proxy`'s `-v`/`-vv` only pick the default filter (debug, trace;
//! RUST_LOG overrides it): the levels here cover them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use futures::StreamExt;
use nomyo_client::{Client, KnownServers, Protocol};
use nomyo_core::SecretString;
use nomyo_proxy::ProxyState;
use nomyo_server::backend::BackendError;
use nomyo_server::keystore::KeyStore;
use nomyo_server::policy::ApiKeys;
use nomyo_server::AppState;
use nomyo_testkit::backend::{chunk, completion, text_chunk, Double};
use nomyo_testkit::keys::server_key;
use nomyo_testkit::log::{find_secret, has_access_line, Capture};
use serde_json::{json, Value};
use tower::ServiceExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A unique string per run (no uuid: the time and the process id suffice).
fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{t:x}{:x}{n}", std::process::id())
}

struct Canaries {
    prompt: String,
    answer: String,
    api_key: String,
    token: String,
}

fn canaries() -> &'static Canaries {
    static C: OnceLock<Canaries> = OnceLock::new();
    C.get_or_init(|| Canaries {
        prompt: unique("PROMPTCANARY"),
        answer: unique("ANSWERCANARY"),
        api_key: unique("APIKEYCANARY"),
        token: unique("TOKENCANARY"),
    })
}

/// Answers with the answer canary; `busy` is 503; `cut` dies mid-stream.
fn canned() -> Arc<Double> {
    Double::new("canned", &["m", "busy", "cut"])
        .answer(|r| {
            if r.model() == "busy" {
                return Err(BackendError::Unavailable {
                    retry_after: Some(Duration::from_secs(7)),
                });
            }
            Ok(completion(r.model(), &canaries().answer))
        })
        .stream(|r| {
            let model = r.model();
            let mut items: Vec<Result<Value, BackendError>> = vec![
                Ok(chunk(model, json!({"role": "assistant"}), Value::Null)),
                Ok(text_chunk(model, &canaries().answer)),
            ];
            if model == "cut" {
                // Like the real backends: a fixed description, no content.
                items.push(Err(BackendError::Upstream("upstream died".into())));
            } else {
                items.push(Ok(chunk(model, json!({}), json!("stop"))));
            }
            Ok(futures::stream::iter(items).boxed())
        })
        .arc()
}

/// An in-process `nomyo_server` (API key required); `v1_only` hides its
/// HPKE key list. Returns its URL.
async fn endpoint(v1_only: bool) -> String {
    let key = server_key();
    let mut keys = ApiKeys::open();
    keys.add_key(&canaries().api_key);
    let inner = nomyo_server::app(
        AppState::builder(KeyStore::ephemeral(key))
            .backend("canned", canned())
            .api_keys(keys)
            .build()
            .unwrap(),
    );
    let front = Router::new().fallback(move |req: Request| {
        let inner = inner.clone();
        async move {
            if v1_only && req.uri().path() == "/.well-known/hpke-keys" {
                return axum::http::StatusCode::NOT_FOUND.into_response();
            }
            inner.oneshot(req).await.unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, front).await.unwrap() });
    format!("http://{addr}")
}

/// The proxy in front of `url`, requiring the token; returns its URL.
async fn proxy(url: &str) -> String {
    let client = Client::builder()
        .base_url(url)
        .allow_http(true)
        .api_key(SecretString::from(canaries().api_key.clone()))
        .known_servers(KnownServers::Off)
        .protocol(Protocol::Auto)
        .max_retries(0)
        .build()
        .unwrap();
    let state = ProxyState::new(client).access_token(&SecretString::from(canaries().token.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(nomyo_proxy::serve(listener, state, std::future::pending()));
    format!("http://{addr}")
}

/// Status, body and the `x-request-id` the proxy answered with.
async fn post(url: &str, token: Option<&str>, body: Vec<u8>) -> (u16, String, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    // A cut stream may end in a transport error: the text so far is enough.
    let text = resp.text().await.unwrap_or_default();
    (status, text, id)
}

fn chat(model: &str, stream: bool) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": format!("Tell me about {}", canaries().prompt)}],
    }))
    .unwrap()
}

/// Every path once, through a v2 and a v1-only endpoint; the request ids
/// of the answered requests.
async fn scenario() -> Vec<String> {
    let c = canaries();
    let mut ids = Vec::new();
    for v1_only in [false, true] {
        let url = proxy(&endpoint(v1_only).await).await;
        let token = Some(c.token.as_str());
        // Success, plain and streamed: the answer really passes through.
        let (s, body, id) = post(&url, token, chat("m", false)).await;
        assert_eq!(s, 200, "{body}");
        assert!(body.contains(&c.answer), "{body}");
        ids.push(id);
        let (s, body, id) = post(&url, token, chat("m", true)).await;
        assert_eq!(s, 200, "{body}");
        assert!(body.contains(&c.answer), "{body}");
        ids.push(id);
        // Wrong and missing access token (the wrong one is a near miss).
        let near = format!("{}x", c.token);
        assert_eq!(post(&url, Some(&near), chat("m", false)).await.0, 401);
        assert_eq!(post(&url, None, chat("m", false)).await.0, 401);
        // Bad JSON that quotes the prompt.
        let bad = format!("{{\"model\": \"m\", \"messages\": [\"{}\"", c.prompt).into_bytes();
        let (s, _, _) = post(&url, token, bad).await;
        assert!((400..500).contains(&s), "{s}");
        // Busy backend, unknown model, stream cut mid-way.
        let (s, _, _) = post(&url, token, chat("busy", false)).await;
        assert!(s >= 500, "{s}");
        let (s, _, _) = post(&url, token, chat("nope", false)).await;
        assert!(s >= 400, "{s}");
        let _ = post(&url, token, chat("cut", true)).await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_proxy_logs_at_any_level() {
    let capture = Capture::default();
    let (filter, handle) = tracing_subscriber::reload::Layer::new(LevelFilter::TRACE);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(capture.clone())
                .with_ansi(false),
        )
        .init();
    let c = canaries();
    for level in [
        LevelFilter::TRACE,
        LevelFilter::DEBUG,
        LevelFilter::INFO,
        LevelFilter::WARN,
        LevelFilter::ERROR,
    ] {
        handle.reload(level).unwrap();
        capture.clear();
        let ids = scenario().await;
        let logs = capture.text();
        if level >= LevelFilter::DEBUG {
            // The capture works: the proxy and the server did log.
            assert!(logs.lines().count() > 20, "{level}: {logs}");
        }
        if level >= LevelFilter::INFO {
            // One id from the proxy through the server: the id the proxy
            // answered with is the one in the server's access line.
            for id in &ids {
                assert!(id.starts_with("proxy-"), "{id}");
                assert!(
                    has_access_line(&logs, id),
                    "{level}: no server access line for {id}"
                );
            }
        }
        let secrets = [
            ("prompt", c.prompt.as_str()),
            ("answer", c.answer.as_str()),
            ("API key", c.api_key.as_str()),
            ("access token", c.token.as_str()),
        ];
        if let Some((what, line)) = find_secret(&logs, &secrets) {
            panic!("{what} in a {level} log line: {line}");
        }
        eprintln!("{level}: {} log lines, no canary", logs.lines().count());
    }
}
