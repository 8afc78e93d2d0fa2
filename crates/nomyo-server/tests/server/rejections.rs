//! Why a request was refused, as each protocol may say it: the backend's
//! reason (OpenAI's code, param and message) whole inside v2's sealed answer;
//! in v1's clear `detail` and `error` only the code and a generic message;
//! an unknown model named with the served ones (sealed); a plaintext request
//! on v2's route (an OpenAI SDK pointed at the server) told to use the proxy.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use nomyo_core::v2::keys::{Kem, KeyConfig};
use nomyo_server::backend::{BackendError, Rejection};
use nomyo_server::keystore::KeyStore;
use nomyo_server::{app, AppState};
use nomyo_testkit::backend::Double;
use serde_json::Value;

const CONTEXT_REASON: &str =
    "the conversation is 4031 tokens long; the embedded model's context holds 2048";

/// Refuses by model name: `long` overflows the context, `tools` uses an
/// unsupported parameter, `gone` is unknown to the backend (404).
fn rejecting_backend() -> Arc<Double> {
    Double::new("rejecting", &["long", "tools", "gone"])
        .answer(|r| {
            Err(match r.model() {
                "long" => BackendError::InvalidRequest(Rejection::context_length(CONTEXT_REASON)),
                "tools" => BackendError::InvalidRequest(Rejection::unsupported(
                    "tools",
                    "`tools` (tool calling) is not supported by the embedded model",
                )),
                _ => BackendError::ModelNotFound,
            })
        })
        .arc()
}

fn rejecting_app() -> axum::Router {
    app(AppState::builder(KeyStore::ephemeral(server_key()))
        .backend("rejecting", rejecting_backend())
        .build()
        .unwrap())
}

fn json_of(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[tokio::test]
async fn v1_sends_the_code_and_a_generic_message_only() {
    let app = rejecting_app();
    let (s, _, b) = oneshot(&app, seal_json(&chat("long", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v = json_of(&b);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["param"].is_null(), "{v}");
    let d = v["detail"].as_str().unwrap();
    assert!(d.contains("context_length_exceeded"), "{d}");
    let text = String::from_utf8_lossy(&b);
    assert!(!text.contains("4031") && !text.contains("2048"), "{text}");

    let (s, _, b) = oneshot(&app, seal_json(&chat("tools", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v = json_of(&b);
    assert_eq!(v["error"]["code"], "unsupported_parameter");
    assert!(!String::from_utf8_lossy(&b).contains("tools`"), "{v}");

    // An unknown model: the code, never the name.
    let (s, _, b) = oneshot(
        &app,
        seal_json(&chat("secret-model", "x")).request(None, None),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let v = json_of(&b);
    assert_eq!(v["detail"], "unknown model");
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(!String::from_utf8_lossy(&b).contains("secret-model"));
}

async fn xwing(app: &axum::Router) -> KeyConfig {
    KeyConfig::parse_list(&fetch_hpke_keys(app).await)
        .unwrap()
        .into_iter()
        .find(|c| c.kem == Kem::XWing)
        .unwrap()
}

#[tokio::test]
async fn v2_seals_the_whole_reason() {
    let app = rejecting_app();
    let cfg = xwing(&app).await;

    let req = seal_v2(&cfg, &chat("long", "x"));
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        serde_json::from_slice::<Value>(&b).is_err(),
        "body is sealed"
    );
    assert!(!String::from_utf8_lossy(&b).contains("context_length"));
    let v = req.open_json(&h, &b);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages");
    assert_eq!(v["error"]["message"], CONTEXT_REASON);
    assert_eq!(v["detail"], CONTEXT_REASON);

    let req = seal_v2(&cfg, &chat("tools", "x"));
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v = req.open_json(&h, &b);
    assert_eq!(v["error"]["code"], "unsupported_parameter");
    assert_eq!(v["error"]["param"], "tools");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not supported"));

    // Unknown to the router: named, with the served models.
    let req = seal_v2(&cfg, &chat("nope", "x"));
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let v = req.open_json(&h, &b);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert_eq!(v["error"]["param"], "model");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("`nope`") && m.contains("gone, long, tools"),
        "{m}"
    );

    // Unknown to the backend (an upstream's 404): the same shape.
    let req = seal_v2(&cfg, &chat("gone", "x"));
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let v = req.open_json(&h, &b);
    assert_eq!(v["error"]["code"], "model_not_found");
    assert!(v["error"]["message"].as_str().unwrap().contains("`gone`"));
}

#[tokio::test]
async fn plaintext_openai_request_is_told_to_use_the_proxy() {
    let app = rejecting_app();
    // What the OpenAI SDK sends to a base URL of http://server/v1.
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test")
        .body(Body::from(
            serde_json::to_vec(&chat("long", "hello")).unwrap(),
        ))
        .unwrap();
    let (s, h, b) = oneshot(&app, req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(h.get("ehbp-response-nonce").is_none());
    let v = json_of(&b);
    let e = &v["error"];
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["code"], "encryption_required");
    assert!(e["param"].is_null());
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("nomyo proxy --base-url"), "{m}");
    assert!(m.contains("/v1"), "{m}");
    // The reference clients still read `detail`.
    assert_eq!(v["detail"], e["message"]);
}

/// An OpenAI-compatible upstream that refuses every chat with 400: model
/// `openai` in OpenAI's shape, `llama` in llama.cpp's (a type, no code),
/// `text` with a plain-text body.
async fn refusing_upstream() -> String {
    use axum::response::IntoResponse;
    async fn chat_route(axum::Json(body): axum::Json<Value>) -> axum::response::Response {
        let body = match body["model"].as_str() {
            Some("openai") => serde_json::json!({"error": {
                "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
            .to_string(),
            Some("llama") => serde_json::json!({"error": {
                "code": 400, "message": "the request exceeds the available context size (9000 > 4096 tokens)",
                "type": "exceed_context_size_error"}})
            .to_string(),
            _ => "bad request".to_owned(),
        };
        (StatusCode::BAD_REQUEST, body).into_response()
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat_route));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn upstream_reasons_are_passed_on_sealed() {
    use nomyo_server::upstream::{UpstreamBackend, UpstreamConfig};
    let mut cfg = UpstreamConfig::new(refusing_upstream().await);
    cfg.models = vec!["openai".into(), "llama".into(), "text".into()];
    let upstream = UpstreamBackend::new(cfg).unwrap();
    let app = app(AppState::builder(KeyStore::ephemeral(server_key()))
        .backend("upstream", Arc::new(upstream))
        .build()
        .unwrap());
    let xw = xwing(&app).await;

    let req = seal_v2(&xw, &chat("openai", "x"));
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v = req.open_json(&h, &b);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["param"], "messages");
    assert!(v["error"]["message"].as_str().unwrap().contains("8192"));

    let req = seal_v2(&xw, &chat("llama", "x"));
    let (_, h, b) = oneshot(&app, req.request(None, None)).await;
    let v = req.open_json(&h, &b);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(v["error"]["message"].as_str().unwrap().contains("4096"));

    let req = seal_v2(&xw, &chat("text", "x"));
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v = req.open_json(&h, &b);
    assert!(v["error"]["code"].is_null(), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("400"));

    // v1: the code only.
    let (s, _, b) = oneshot(&app, seal_json(&chat("openai", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v = json_of(&b);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(!String::from_utf8_lossy(&b).contains("8192"));
}
