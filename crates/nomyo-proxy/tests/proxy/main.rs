//! The proxy end to end, in-process: an OpenAI-shaped HTTP caller (reqwest)
//! → `nomyo_proxy::app` on 127.0.0.1 → `nomyo_client` → the real
//! `nomyo_server::app` on 127.0.0.1 (v2, or v1 only with its HPKE key list
//! hidden) → a recording test-double backend.
#![allow(clippy::unwrap_used)]

mod access;
mod errors;
mod round_trip;
mod streaming;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use futures::StreamExt;
use nomyo_client::{Client, KnownServers, Protocol};
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::{Fingerprint, SecretString, SecurityTier};
use nomyo_proxy::ProxyState;
use nomyo_server::backend::BackendError;
use nomyo_server::keystore::KeyStore;
use nomyo_server::limits::Limits;
use nomyo_server::policy::{ApiKeys, ModelSet, TierRule};
use nomyo_server::AppState;
use nomyo_testkit::backend::{chunk, prompt_of, text_chunk, Double};
use nomyo_testkit::keys::server_key;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Records every request body; echoes the last user message; calls a tool
/// when offered one; streams word by word. Model `busy` answers 503, model
/// `cut` dies after the first streamed chunk. Serves `models`.
fn recorder(models: &[&str]) -> Double {
    Double::new("recorder", models)
        .answer(|r| {
            if r.model() == "busy" {
                return Err(BackendError::Unavailable {
                    retry_after: Some(Duration::from_secs(7)),
                });
            }
            let tools = r.body.contains_key("tools");
            let message = if tools {
                json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1",
                    "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]})
            } else {
                json!({"role": "assistant", "content": format!("echo: {}", prompt_of(r))})
            };
            Ok(json!({
                "id": "chatcmpl-echo", "object": "chat.completion", "created": 1,
                "model": r.model(), "system_fingerprint": "fp_test",
                "choices": [{"index": 0, "message": message,
                    "finish_reason": if tools { "tool_calls" } else { "stop" }}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }))
        })
        .stream(|r| {
            let model = r.model().to_owned();
            let mut items: Vec<Result<Value, BackendError>> =
                vec![Ok(chunk(&model, json!({"role": "assistant"}), Value::Null))];
            for w in format!("echo: {}", prompt_of(r)).split_inclusive(' ') {
                items.push(Ok(text_chunk(&model, w)));
            }
            items.push(Ok(chunk(&model, json!({}), json!("stop"))));
            if r.body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                == Some(&json!(true))
            {
                let mut usage = chunk(&model, json!({}), Value::Null);
                usage["choices"] = json!([]);
                usage["usage"] = json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
                items.push(Ok(usage));
            }
            if model == "cut" {
                items.truncate(2);
                items.push(Err(BackendError::Upstream("died".into())));
            }
            Ok(futures::stream::iter(items).boxed())
        })
}

fn client_key() -> Arc<PrivateKey> {
    static KEY: OnceLock<Arc<PrivateKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(PrivateKey::generate(RsaBits::B2048).unwrap()))
        .clone()
}

struct Upstream {
    url: String,
    rsa_fingerprint: Fingerprint,
    backend: Arc<Double>,
}

impl Upstream {
    fn bodies(&self) -> Vec<Value> {
        self.backend.seen()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Speaks {
    V1Only,
    V2,
}

/// A `nomyo_server` with the recorder; `big` only on the `high` tier; an
/// API key `k1` when `api_key`; 2 requests per minute when `rate_limited`.
async fn upstream(speaks: Speaks, api_key: bool, rate_limited: bool) -> Upstream {
    upstream_of(
        recorder(&["m", "big", "busy", "cut"]),
        speaks,
        api_key,
        rate_limited,
    )
    .await
}

async fn upstream_of(
    recorder: Double,
    speaks: Speaks,
    api_key: bool,
    rate_limited: bool,
) -> Upstream {
    let key = server_key();
    let rsa_fingerprint = key.public_key().fingerprint();
    let backend = Arc::new(recorder);
    let mut b = AppState::builder(KeyStore::ephemeral(key))
        .backend("recorder", backend.clone())
        .tier(
            SecurityTier::Standard,
            TierRule {
                backends: vec![],
                models: ModelSet::from_names(["m", "busy", "cut"]),
            },
        )
        .tier(SecurityTier::High, TierRule::any())
        .tier(SecurityTier::Maximum, TierRule::any());
    if api_key {
        let mut keys = ApiKeys::open();
        keys.add_key("k1");
        b = b.api_keys(keys);
    }
    if rate_limited {
        b = b.limits(Limits {
            rate_per_minute: 2,
            ..Limits::default()
        });
    }
    let inner = nomyo_server::app(b.build().unwrap());
    let front = Router::new().fallback(move |req: Request| {
        let inner = inner.clone();
        async move {
            if speaks == Speaks::V1Only && req.uri().path() == "/.well-known/hpke-keys" {
                return axum::http::StatusCode::NOT_FOUND.into_response();
            }
            inner.oneshot(req).await.unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, front).await.unwrap() });
    Upstream {
        url: format!("http://{addr}"),
        rsa_fingerprint,
        backend,
    }
}

use axum::response::IntoResponse;

fn client_for(up: &Upstream) -> nomyo_client::ClientBuilder {
    Client::builder()
        .base_url(&up.url)
        .allow_http(true)
        .client_key(client_key())
        .known_servers(KnownServers::Off)
        .protocol(Protocol::Auto)
        .max_retries(0)
}

/// Serves the proxy on 127.0.0.1 port 0; returns its base URL.
async fn proxy(state: ProxyState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(nomyo_proxy::serve(listener, state, std::future::pending()));
    format!("http://{addr}")
}

/// The events of "one two three" asked of model `m` streamed, with usage,
/// through the proxy at `url` (200, an event stream).
async fn one_two_three_streamed(url: &str) -> Vec<Value> {
    let resp = post(
        url,
        json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    events(&resp.text().await.unwrap())
}

/// A proxy (default options) in front of a fresh upstream that speaks
/// `speaks`: the upstream and the proxy's URL.
async fn proxied(speaks: Speaks) -> (Upstream, String) {
    let up = upstream(speaks, false, false).await;
    let url = proxy(ProxyState::new(client_for(&up).build().unwrap())).await;
    (up, url)
}

async fn post(url: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The events of an SSE body: JSON values, and "[DONE]" as a string.
fn events(text: &str) -> Vec<Value> {
    assert!(text.ends_with("\n\n"), "{text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").expect("data: event");
            if data == "[DONE]" {
                Value::String("[DONE]".into())
            } else {
                serde_json::from_str(data).unwrap()
            }
        })
        .collect()
}

fn streamed_text(ev: &[Value]) -> String {
    ev.iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn full_request() -> Value {
    json!({
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}, "strict": true}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
        "seed": 42,
        "temperature": 0.5,
        "max_tokens": 16,
        "logit_bias": {"50256": -100},
        "metadata": {"tenant": "t1"},
        "parallel_tool_calls": false,
    })
}

async fn error_of(resp: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].as_str().is_some(), "{v}");
    assert!(e.get("code").is_some(), "{v}");
    (status, headers, v)
}
