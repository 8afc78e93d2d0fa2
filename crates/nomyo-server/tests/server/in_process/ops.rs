//! The ops routes: `/health` (503 until a backend is ready), `/metrics`
//! with backend errors counted by backend and kind, and JSON errors for
//! unknown routes and methods.

use axum::http::StatusCode;
use nomyo_server::app;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn health_metrics_and_json_errors_for_unknown_routes() {
    let app = app(state_with(&["m"]).build().unwrap());
    let (s, _, b) = oneshot_get(&app, "/health").await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["protocols"], serde_json::json!(["v1", "v2"]));
    assert_eq!(
        v["key_fingerprint"],
        server_key().public_key().fingerprint().to_string()
    );

    let (s, _, _) = oneshot(&app, seal_json(&chat("m", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = oneshot(&app, seal_json(&chat("nope", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, h, b) = oneshot_get(&app, "/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics-text"));
    let text = String::from_utf8(b).unwrap();
    assert!(
        text.contains(
            r#"nomyo_http_requests_total{route="/v1/chat/secure_completion",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"status="404""#));
    assert!(text.contains("nomyo_http_request_duration_seconds_bucket"));
    assert!(text.contains("nomyo_queue_depth"));
    assert!(text.contains("nomyo_backend_errors"));

    let (s, _, b) = oneshot_get(&app, "/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(detail(&b), "not found");
    let (s, _, b) = oneshot_get(&app, "/v1/chat/secure_completion").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(detail(&b), "method not allowed");
}

/// A backend still loading its model (as the embedded engine is at start-up).
struct Loading(std::sync::atomic::AtomicBool);

#[async_trait::async_trait]
impl nomyo_server::backend::Backend for Loading {
    fn name(&self) -> &str {
        "loading"
    }
    fn models(&self) -> Vec<String> {
        vec!["m".into()]
    }
    fn is_ready(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    async fn chat(
        &self,
        request: nomyo_server::backend::ChatRequest,
    ) -> Result<Value, nomyo_server::backend::BackendError> {
        Ok(completion(request.model(), "ready"))
    }
}

#[tokio::test]
async fn health_is_503_until_the_backend_is_ready() {
    let backend = std::sync::Arc::new(Loading(false.into()));
    let st =
        nomyo_server::AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
            .backend("embedded", backend.clone())
            .build()
            .unwrap();
    let app = app(st);
    let (s, _, b) = oneshot_get(&app, "/health").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["backends_ready"], 0);

    backend.0.store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, _, b) = oneshot_get(&app, "/health").await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["backends_ready"], 1);
}

#[tokio::test]
async fn backend_errors_are_counted_by_backend_and_kind() {
    let app = app(state_with(&["broken", "m"]).build().unwrap());
    for _ in 0..2 {
        let (s, _, _) = oneshot(&app, seal_json(&chat("broken", "x")).request(None, None)).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
    }
    let (s, _, _) = oneshot(&app, seal_json(&chat("m", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, b) = oneshot_get(&app, "/metrics").await;
    let text = String::from_utf8(b).unwrap();
    assert!(
        text.contains(r#"nomyo_backend_errors_total{backend="echo",kind="failed"} 2"#),
        "{text}"
    );
}
