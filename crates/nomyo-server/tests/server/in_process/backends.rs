//! Backend failures as gateway statuses, and an OpenAI-compatible upstream
//! as the backend: the round trip, its failures mapped, and an upstream
//! that is down (503).

use std::time::Duration;

use axum::http::StatusCode;
use nomyo_server::app;

use crate::common::*;

#[tokio::test]
async fn backend_failures_map_to_gateway_statuses() {
    let app = app(state_with(&["broken", "not-object"]).build().unwrap());
    for model in ["broken", "not-object"] {
        let (s, _, b) = oneshot(&app, seal_json(&chat(model, "x")).request(None, None)).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{model}");
        assert_eq!(detail(&b), "the inference backend failed");
    }
}

#[tokio::test]
async fn upstream_backend_round_trip_and_failure_mapping() {
    use nomyo_server::upstream::{UpstreamBackend, UpstreamConfig};
    use std::sync::Arc;
    let (url, seen) = start_upstream().await;
    let mut cfg = UpstreamConfig::new(url);
    cfg.api_key = Some(nomyo_core::SecretString::from("up-key".to_owned()));
    cfg.timeout = Duration::from_secs(1);
    let backend = UpstreamBackend::connect(cfg).await.unwrap();
    // Models discovered from GET /v1/models.
    assert!(nomyo_server::backend::Backend::models(&backend).contains(&"m".to_owned()));
    let st =
        nomyo_server::AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
            .backend("up", Arc::new(backend))
            .build()
            .unwrap();
    let app = app(st);
    let (s, _, b) = oneshot(
        &app,
        seal_json(&chat("m", "via upstream")).request(None, None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        open_response(&b).1["choices"][0]["message"]["content"],
        "upstream-echo:via upstream"
    );
    assert_eq!(
        seen.last_auth.lock().unwrap().as_deref(),
        Some("Bearer up-key")
    );

    let cases: [(&str, StatusCode, Option<&str>); 5] = [
        ("fail", StatusCode::BAD_GATEWAY, None),
        ("busy", StatusCode::SERVICE_UNAVAILABLE, Some("7")),
        ("gone", StatusCode::NOT_FOUND, None),
        ("garbage", StatusCode::BAD_GATEWAY, None),
        ("slow", StatusCode::GATEWAY_TIMEOUT, None),
    ];
    for (model, status, retry) in cases {
        let (s, h, b) = oneshot(
            &app,
            seal_json(&chat(model, "PROMPT-SHOULD-NOT-ECHO")).request(None, None),
        )
        .await;
        assert_eq!(s, status, "{model}");
        assert_eq!(
            h.get("retry-after").map(|v| v.to_str().unwrap()),
            retry,
            "{model}"
        );
        assert!(!String::from_utf8_lossy(&b).contains("PROMPT-SHOULD-NOT-ECHO"));
    }
    // A model the upstream does not list is unknown before any upstream call.
    let before = seen.requests.load(std::sync::atomic::Ordering::SeqCst);
    let (s, _, _) = oneshot(&app, seal_json(&chat("bad", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        seen.requests.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
}

#[tokio::test]
async fn upstream_down_is_503() {
    use nomyo_server::upstream::{UpstreamBackend, UpstreamConfig};
    use std::sync::Arc;
    // A port nothing listens on: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = UpstreamConfig::new(format!("http://127.0.0.1:{port}/v1"));
    cfg.models = vec!["m".into()];
    let backend = UpstreamBackend::new(cfg).unwrap();
    let st =
        nomyo_server::AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
            .backend("up", Arc::new(backend))
            .build()
            .unwrap();
    let (s, h, b) = oneshot(&app(st), seal_json(&chat("m", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.contains_key("retry-after"));
    assert!(detail(&b).contains("unavailable"));
}
