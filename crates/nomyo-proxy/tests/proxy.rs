//! The proxy end to end, in-process: an OpenAI-shaped HTTP caller (reqwest)
//! → `nomyo_proxy::app` on 127.0.0.1 → `nomyo_client` → the real
//! `nomyo_server::app` on 127.0.0.1 (v2, or v1 only with its HPKE key list
//! hidden) → a recording test-double backend.
#![allow(clippy::unwrap_used)]

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

async fn plain_round_trip(speaks: Speaks) {
    let up = upstream(speaks, false, false).await;
    let url = proxy(ProxyState::new(client_for(&up).build().unwrap())).await;

    let resp = post(
        &url,
        json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("proxy-"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 5);
    assert_eq!(v["system_fingerprint"], "fp_test");
    assert_eq!(v["_metadata"]["is_encrypted"], true);

    // Every OpenAI parameter arrives at the backend exactly as sent.
    let resp = post(&url, full_request()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    let got = up.bodies().pop().unwrap();
    let sent = full_request();
    for (k, want) in sent.as_object().unwrap() {
        assert_eq!(&got[k], want, "field {k}");
    }
    assert!(got.get("stream").is_none());
}

#[tokio::test]
async fn plain_v2() {
    plain_round_trip(Speaks::V2).await;
}

#[tokio::test]
async fn plain_v1() {
    plain_round_trip(Speaks::V1Only).await;
}

#[tokio::test]
async fn v1_answers_are_marked_v1_and_v2_answers_v2() {
    for (speaks, v2) in [(Speaks::V1Only, false), (Speaks::V2, true)] {
        let up = upstream(speaks, false, false).await;
        let client = client_for(&up).build().unwrap();
        let url = proxy(ProxyState::new(client.clone())).await;
        let resp = post(
            &url,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(client.uses_v2().await.unwrap(), v2);
        let v: Value = resp.json().await.unwrap();
        let alg = v["_metadata"]["encryption_algorithm"]
            .as_str()
            .unwrap_or("");
        assert_eq!(alg == "hybrid-aes256-rsa4096", !v2, "{}", v["_metadata"]);
    }
}

#[tokio::test]
async fn streamed_v2_is_relayed_chunk_by_chunk() {
    let (up, url) = proxied(Speaks::V2).await;
    let ev = one_two_three_streamed(&url).await;
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert_eq!(streamed_text(&ev), "echo: one two three");
    // role chunk + 4 words + finish + usage + [DONE]
    assert_eq!(ev.len(), 8, "{ev:?}");
    assert!(ev[..7]
        .iter()
        .all(|e| e["object"] == "chat.completion.chunk"));
    assert_eq!(ev[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[6]["usage"]["total_tokens"], 7);
    let got = up.bodies().pop().unwrap();
    assert_eq!(got["stream"], true);
    assert_eq!(got["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn streamed_v1_is_built_from_the_complete_answer() {
    let (up, url) = proxied(Speaks::V1Only).await;
    let ev = one_two_three_streamed(&url).await;
    assert_eq!(ev.len(), 4, "{ev:?}");
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&ev), "echo: one two three");
    assert_eq!(ev[1]["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[2]["usage"]["total_tokens"], 5);
    assert_eq!(ev[3], "[DONE]");
    // v1 got a plain request: neither `stream` nor `stream_options`.
    let got = up.bodies().pop().unwrap();
    assert!(got.get("stream").is_none() && got.get("stream_options").is_none());

    // Tool calls become streamed tool-call deltas with an index.
    let mut req = full_request();
    req["stream"] = json!(true);
    let ev = events(&post(&url, req).await.text().await.unwrap());
    let call = &ev[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["id"], "call_1");
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(ev[1]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(ev.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn a_cut_v2_stream_ends_with_an_error_event_and_no_done() {
    let (_up, url) = proxied(Speaks::V2).await;
    let resp = post(
        &url,
        json!({"model": "cut", "stream": true, "messages": [{"role": "user", "content": "a b c"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let ev = events(&resp.text().await.unwrap());
    let last = ev.last().unwrap();
    assert!(last["error"]["message"].as_str().is_some(), "{ev:?}");
    assert!(!ev.iter().any(|e| e == "[DONE]"));
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

#[tokio::test]
async fn endpoint_errors_keep_their_status_in_openai_shape() {
    for speaks in [Speaks::V1Only, Speaks::V2] {
        let up = upstream(speaks, true, false).await;
        // A v1-only endpoint is spoken to with v1 chosen explicitly: auto
        // never sends the high tier over v1 (checked below).
        let client = |up: &Upstream| match speaks {
            Speaks::V1Only => client_for(up).protocol(Protocol::V1),
            Speaks::V2 => client_for(up),
        };
        let msg =
            |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "x"}]});

        // No or a wrong API key: 401.
        let url = proxy(ProxyState::new(client(&up).build().unwrap())).await;
        let (s, _, v) = error_of(post(&url, msg("m")).await).await;
        assert_eq!(s, 401);
        assert_eq!(v["error"]["type"], "authentication_error");
        let url = proxy(ProxyState::new(
            client(&up)
                .api_key(SecretString::from("wrong"))
                .build()
                .unwrap(),
        ))
        .await;
        assert_eq!(error_of(post(&url, msg("m")).await).await.0, 401);

        let good = client(&up)
            .api_key(SecretString::from("k1"))
            .build()
            .unwrap();
        let url = proxy(ProxyState::new(good.clone())).await;
        // Unknown model: 404.
        let (s, _, v) = error_of(post(&url, msg("nope")).await).await;
        assert_eq!(s, 404);
        assert_eq!(v["error"]["type"], "not_found_error");
        // Not allowed on the standard tier: 403, by header or by the
        // proxy's default tier; the high tier allows it.
        let with_tier = |tier: &'static str| {
            reqwest::Client::new()
                .post(format!("{url}/v1/chat/completions"))
                .header("X-Nomyo-Tier", tier)
                .json(&msg("big"))
                .send()
        };
        let (s, _, v) = error_of(with_tier("standard").await.unwrap()).await;
        assert_eq!(s, 403);
        assert_eq!(v["error"]["type"], "permission_error");
        let resp = with_tier("high").await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["_metadata"]["security_tier"], "high");
        if speaks == Speaks::V1Only {
            // Under protocol auto the same request is refused before it is
            // sent: the high tier never goes over v1 unless chosen.
            let auto = client_for(&up)
                .api_key(SecretString::from("k1"))
                .build()
                .unwrap();
            let auto_url = proxy(ProxyState::new(auto)).await;
            let resp = reqwest::Client::new()
                .post(format!("{auto_url}/v1/chat/completions"))
                .header("X-Nomyo-Tier", "high")
                .json(&msg("big"))
                .send()
                .await
                .unwrap();
            let (s, _, v) = error_of(resp).await;
            assert_eq!(s, 502, "{v}");
            assert_eq!(v["error"]["type"], "nomyo_security_error", "{v}");
        }
        let standard =
            proxy(ProxyState::new(good.clone()).default_tier(SecurityTier::Standard)).await;
        assert_eq!(error_of(post(&standard, msg("big")).await).await.0, 403);
        // A bad tier header: 400 before anything is sent.
        let resp = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .header("X-Nomyo-Tier", "ultra")
            .json(&msg("m"))
            .send()
            .await
            .unwrap();
        let (s, _, v) = error_of(resp).await;
        assert_eq!(s, 400);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-nomyo-tier"));
        // Backend unavailable: 503 with Retry-After.
        let (s, h, _) = error_of(post(&url, msg("busy")).await).await;
        assert_eq!(s, 503);
        assert!(h.contains_key("retry-after"));
        // A streamed request that fails before the stream starts: a plain
        // error answer, not an event stream.
        let mut r = msg("nope");
        r["stream"] = json!(true);
        assert_eq!(error_of(post(&url, r).await).await.0, 404);
    }
}

#[tokio::test]
async fn rate_limit_is_429_with_retry_after() {
    let up = upstream(Speaks::V2, false, true).await;
    let url = proxy(ProxyState::new(client_for(&up).build().unwrap())).await;
    let msg = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let resp = post(&url, msg.clone()).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            retry_after = resp.headers().get("retry-after").cloned();
            let (_, _, v) = error_of(resp).await;
            assert_eq!(v["error"]["type"], "rate_limit_error");
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(secs >= 1);
}

#[tokio::test]
async fn bad_requests_are_400_and_say_why_without_quoting_content() {
    let (up, url) = proxied(Speaks::V2).await;
    let send = |body: &'static str| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let (s, _, v) = error_of(send("{not json").await).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (s, _, v) =
        error_of(send(r#"{"model": "m", "messages": "my secret diagnosis"}"#).await).await;
    assert_eq!(s, 400);
    assert!(!v.to_string().contains("diagnosis"), "{v}");
    let (s, _, _) = error_of(
        send(r#"{"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}"#)
            .await,
    )
    .await;
    assert_eq!(s, 400);
    // The endpoint's own 400 (no messages) passes through.
    let (s, _, _) = error_of(send(r#"{"model": "m", "messages": []}"#).await).await;
    assert_eq!(s, 400);
    // Not JSON: 415.
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .body("model=m")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 415);
    // Unknown route: 404 in OpenAI shape.
    let resp = reqwest::get(format!("{url}/v1/embeddings")).await.unwrap();
    assert_eq!(error_of(resp).await.0, 404);
    assert!(up.bodies().is_empty());
}

#[tokio::test]
async fn a_pin_mismatch_refuses_before_sending_anything() {
    let wrong: Fingerprint = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
    for speaks in [Speaks::V1Only, Speaks::V2] {
        let up = upstream(speaks, false, false).await;
        let client = client_for(&up).pin(wrong).build().unwrap();
        let url = proxy(ProxyState::new(client)).await;
        for stream in [false, true] {
            let resp = post(
                &url,
                json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
            assert_eq!(resp.headers()["x-should-retry"], "false");
            let (s, _, v) = error_of(resp).await;
            assert_eq!(s, 502);
            assert_eq!(v["error"]["type"], "nomyo_security_error");
            let m = v["error"]["message"].as_str().unwrap();
            match speaks {
                Speaks::V2 => assert!(
                    m.contains("pin mismatch") && m.contains(&wrong.to_string()),
                    "{m}"
                ),
                // Under auto a pinned server that publishes no v2 keys is not
                // downgraded to v1 without being asked: refused first.
                Speaks::V1Only => assert!(m.contains("--protocol v1"), "{m}"),
            }
        }
        assert!(up.bodies().is_empty());
    }
    // The right pin (v1: the RSA key) works, with protocol v1 chosen.
    let up = upstream(Speaks::V1Only, false, false).await;
    let client = client_for(&up)
        .pin(up.rsa_fingerprint)
        .protocol(Protocol::V1)
        .build()
        .unwrap();
    let url = proxy(ProxyState::new(client)).await;
    let resp = post(
        &url,
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn models_are_listed_in_openai_shape() {
    let (_up, url) = proxied(Speaks::V2).await;
    let resp = reqwest::get(format!("{url}/v1/models")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert!(data.iter().any(|m| m["id"] == "m"));
    assert!(data.iter().all(|m| m["object"] == "model"));
    let one: Value = reqwest::get(format!("{url}/v1/models/m"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "m");
    assert_eq!(one["object"], "model");
    let resp = reqwest::get(format!("{url}/v1/models/nope")).await.unwrap();
    assert_eq!(error_of(resp).await.0, 404);
    let resp = reqwest::get(format!("{url}/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// In-process (no socket): the loopback host check and the access token.
#[tokio::test]
async fn local_access_policy() {
    let up = upstream(Speaks::V2, false, false).await;
    let client = client_for(&up).build().unwrap();
    let chat = |host: &str, auth: Option<&str>| {
        let mut b = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("host", host)
            .header("content-type", "application/json");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(axum::body::Body::from(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string(),
        ))
        .unwrap()
    };
    let status =
        |app: Router, req: Request| async move { app.oneshot(req).await.unwrap().status() };

    let open = nomyo_proxy::app(ProxyState::new(client.clone()));
    assert_eq!(
        status(open.clone(), chat("localhost:8080", None)).await,
        200
    );
    assert_eq!(
        status(open.clone(), chat("127.0.0.1:8080", None)).await,
        200
    );
    // DNS rebinding: a page at attacker.example resolving to 127.0.0.1.
    assert_eq!(
        status(open.clone(), chat("attacker.example:8080", None)).await,
        403
    );

    let token = SecretString::from("local-token");
    let guarded = nomyo_proxy::app(ProxyState::new(client).access_token(&token));
    assert_eq!(
        status(guarded.clone(), chat("proxy.lan:8080", None)).await,
        401
    );
    assert_eq!(
        status(guarded.clone(), chat("proxy.lan:8080", Some("Bearer nope"))).await,
        401
    );
    assert_eq!(
        status(
            guarded.clone(),
            chat("proxy.lan:8080", Some("Bearer local-token"))
        )
        .await,
        200
    );
    let health = Request::builder()
        .uri("/health")
        .header("host", "proxy.lan")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(status(guarded, health).await, 200);
    assert_eq!(up.bodies().len(), 3);
}

#[tokio::test]
async fn model_may_be_omitted_when_the_server_serves_one() {
    let one = recorder(&["m"]);
    let up = upstream_of(one, Speaks::V2, false, false).await;
    let url = proxy(ProxyState::new(client_for(&up).build().unwrap())).await;
    let hello = json!({"messages": [{"role": "user", "content": "hello there"}]});
    let resp = post(&url, hello.clone()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "m");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
    assert_eq!(up.bodies().pop().unwrap()["model"], "m");
    // Streamed too.
    let mut streamed = hello.clone();
    streamed["stream"] = json!(true);
    let resp = post(&url, streamed).await;
    assert_eq!(resp.status(), 200);
    let ev = events(&resp.text().await.unwrap());
    assert_eq!(streamed_text(&ev), "echo: hello there");
    // An explicit model is sent as given.
    let mut named = hello.clone();
    named["model"] = json!("m");
    assert_eq!(post(&url, named).await.status(), 200);

    // With several models, a 400 that lists them; nothing is sent.
    let many = upstream(Speaks::V2, false, false).await;
    let url = proxy(ProxyState::new(client_for(&many).build().unwrap())).await;
    let (s, _, v) = error_of(post(&url, hello).await).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "model_required");
    let msg = v["error"]["message"].as_str().unwrap();
    for m in ["m", "big", "busy", "cut"] {
        assert!(msg.contains(m), "{msg}");
    }
    assert!(msg.contains("\"model\""), "{msg}");
    assert!(many.bodies().is_empty());
}
