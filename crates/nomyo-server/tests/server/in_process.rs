//! The router driven in-process with `tower::ServiceExt::oneshot`: the v1
//! round trip and `_metadata`, policy (401/403/404/413/429/503/409), the
//! ops routes, rotation.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use nomyo_core::SecurityTier;
use nomyo_server::app;
use nomyo_server::limits::Limits;
use nomyo_server::policy::{ApiKeys, ModelSet, TierRule};
use serde_json::{json, Value};

#[tokio::test]
async fn public_key_is_the_server_key_pem() {
    let app = app(state_with(&["m"]).build().unwrap());
    let (status, headers, body) = oneshot_get(&app, "/pki/public_key").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let pem = String::from_utf8(body).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(pem, server_key().public_key().to_pem());
}

#[tokio::test]
async fn round_trip_with_true_metadata() {
    let app = app(state_with(&["m"]).build().unwrap());
    let sealed = seal_json(&chat("m", "hello there"));
    let (status, headers, body) = oneshot(&app, sealed.request(None, Some("high"))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    // The wire package as docs/PROTOCOL.md §3.5 shows it, plus payload_id / processed_at.
    let wire: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(wire["version"], "1.0");
    assert_eq!(wire["algorithm"], "hybrid-aes256-rsa4096");
    assert_eq!(wire["key_algorithm"], "RSA-OAEP-SHA256");
    assert_eq!(wire["payload_algorithm"], "AES-256-GCM");
    assert_eq!(wire["payload_id"], sealed.id.as_str());
    let (pkg, answer) = open_response(&body);
    assert_eq!(pkg.payload_id.as_deref(), Some(sealed.id.as_str()));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = pkg.processed_at.unwrap();
    assert!((now - at).abs() < 60);
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo:hello there"
    );
    let md = &answer["_metadata"];
    assert_eq!(md["payload_id"], sealed.id.as_str());
    assert_eq!(md["processed_at"], at);
    assert_eq!(md["is_encrypted"], true);
    assert_eq!(md["response_status"], "success");
    assert_eq!(md["security_tier"], "high");
    let mp = nomyo_core::secure_memory::memory_protection();
    assert_eq!(md["memory_protection"]["platform"], mp.platform.as_str());
    // Without the wiping global allocator (this test program) not claimed.
    assert_eq!(md["memory_protection"]["secure_zeroing"], mp.secure_zeroing);
    assert!(!mp.secure_zeroing);
    assert_eq!(
        md["memory_protection"]["core_dump_prevention"],
        mp.core_dump_prevention
    );
    assert!(md["memory_protection"]["memory_locking"].is_boolean());
    assert_eq!(
        md["cuda_device"],
        json!({"available": false, "device_hash": ""})
    );
}

#[tokio::test]
async fn without_tier_header_the_lowest_allowing_tier_applies() {
    let st = state_with(&["m", "secret-model"])
        .tier(SecurityTier::Standard, allow_models(&["m"]))
        .tier(
            SecurityTier::Maximum,
            TierRule {
                backends: vec!["echo".into()],
                models: ModelSet::Any,
            },
        )
        // Served over v1 (RSA): the operator's explicit opt-out.
        .require_post_quantum(SecurityTier::Maximum, false)
        .build()
        .unwrap();
    let app = app(st);
    for (model, tier) in [("m", "standard"), ("secret-model", "maximum")] {
        let (status, _, body) =
            oneshot(&app, seal_json(&chat(model, "x")).request(None, None)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(open_response(&body).1["_metadata"]["security_tier"], tier);
    }
}

#[tokio::test]
async fn api_keys_401_without_saying_why() {
    let mut keys = ApiKeys::open();
    keys.add_key("k-good");
    let app = app(state_with(&["m"]).api_keys(keys).build().unwrap());
    let mut details = Vec::new();
    for key in [None, Some("k-bad"), Some("")] {
        let (status, headers, body) =
            oneshot(&app, seal_json(&chat("m", "x")).request(key, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers["www-authenticate"], "Bearer");
        details.push(detail(&body));
    }
    assert!(details.iter().all(|d| d == &details[0]), "{details:?}");
    let (status, _, _) = oneshot(
        &app,
        seal_json(&chat("m", "x")).request(Some("k-good"), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // /v1/models needs the key too.
    let (status, _, _) = oneshot_get(&app, "/v1/models").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tier_policy_403_and_unknown_model_404() {
    let st = state_with(&["small", "big"])
        .tier(SecurityTier::Standard, TierRule::any())
        .tier(
            SecurityTier::High,
            TierRule {
                backends: vec!["echo".into()],
                models: ModelSet::from_names(["small"]),
            },
        )
        .build()
        .unwrap();
    let app = app(st);
    let (s, _, b) = oneshot(
        &app,
        seal_json(&chat("big", "x")).request(None, Some("high")),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        detail(&b),
        "model not allowed for the requested security tier"
    );
    let (s, _, _) = oneshot(
        &app,
        seal_json(&chat("small", "x")).request(None, Some("maximum")),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a tier without a rule is disabled"
    );
    let (s, _, b) = oneshot(
        &app,
        seal_json(&chat("nope", "x")).request(None, Some("high")),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(detail(&b), "unknown model");
    let (s, _, _) = oneshot(
        &app,
        seal_json(&chat("small", "x")).request(None, Some("high")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    // /v1/models lists what each tier allows.
    let (s, _, b) = oneshot_get(&app, "/v1/models").await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_slice(&b).unwrap();
    let find = |id: &str| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(find("small")["security_tiers"], json!(["standard", "high"]));
    assert_eq!(find("big")["security_tiers"], json!(["standard"]));
    let r = Request::get("/v1/models")
        .header("x-security-tier", "high")
        .body(Body::empty())
        .unwrap();
    let (_, _, b) = oneshot(&app, r).await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn stream_true_is_400_on_v1() {
    let app = app(state_with(&["m"]).build().unwrap());
    let mut req = chat("m", "x");
    req["stream"] = json!(true);
    let (s, _, b) = oneshot(&app, seal_json(&req).request(None, None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(detail(&b).contains("stream"));
    req["stream"] = json!(false);
    let (s, _, _) = oneshot(&app, seal_json(&req).request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn body_limit_413() {
    let limits = Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    };
    let app = app(state_with(&["m"]).limits(limits).build().unwrap());
    let (s, _, b) = oneshot(
        &app,
        seal_json(&chat("m", &"a".repeat(5000))).request(None, None),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(detail(&b).contains("4096"));
    // Without Content-Length (a streamed body), the limit holds while reading.
    let sealed = seal_json(&chat("m", &"a".repeat(5000)));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        sealed.body.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let req = Request::post("/v1/chat/secure_completion")
        .header("x-payload-id", &sealed.id)
        .header("x-public-key", &sealed.public_key_header)
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let (s, _, _) = oneshot(&app, req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn rate_limit_429_with_retry_after() {
    let mut keys = ApiKeys::open();
    keys.add_key("a");
    keys.add_key("b");
    // One token a minute after the burst: no refill while the test runs.
    let limits = Limits {
        rate_per_minute: 1,
        rate_burst: 2,
        ..Limits::default()
    };
    let app = app(state_with(&["m"])
        .api_keys(keys)
        .limits(limits)
        .build()
        .unwrap());
    for _ in 0..2 {
        let (s, _, _) = oneshot(&app, seal_json(&chat("m", "x")).request(Some("a"), None)).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, h, b) = oneshot(&app, seal_json(&chat("m", "x")).request(Some("a"), None)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let ra: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&ra));
    assert!(detail(&b).contains("rate limit"));
    // Per key: b is not limited by a's use.
    let (s, _, _) = oneshot(&app, seal_json(&chat("m", "x")).request(Some("b"), None)).await;
    assert_eq!(s, StatusCode::OK);
}

/// Waits until `n` secure requests hold a processing slot.
async fn wait_in_flight(st: &nomyo_server::AppState, n: i64) {
    let t = std::time::Instant::now();
    while st.metrics().in_flight.get() < n {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "request never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn saturation_503_with_retry_after() {
    let limits = Limits {
        max_concurrency: 1,
        max_queue: 0,
        ..Limits::default()
    };
    let st = state_with(&["slow", "m"]).limits(limits).build().unwrap();
    let app = app(st.clone());
    let a2 = app.clone();
    let first = tokio::spawn(async move {
        oneshot(&a2, seal_json(&chat("slow", "x")).request(None, None))
            .await
            .0
    });
    wait_in_flight(&st, 1).await;
    let (s, h, b) = oneshot(&app, seal_json(&chat("m", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h["retry-after"], "1");
    assert!(detail(&b).contains("busy"));
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    // The slot is free again.
    let (s, _, _) = oneshot(&app, seal_json(&chat("m", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn queued_request_waits_for_a_slot() {
    let limits = Limits {
        max_concurrency: 1,
        max_queue: 4,
        ..Limits::default()
    };
    let app = app(state_with(&["slow"]).limits(limits).build().unwrap());
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let a = app.clone();
        tasks.push(tokio::spawn(async move {
            oneshot(&a, seal_json(&chat("slow", "x")).request(None, None))
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn request_timeout_504() {
    let limits = Limits {
        request_timeout: Duration::from_millis(800),
        ..Limits::default()
    };
    let app = app(state_with(&["very-slow"]).limits(limits).build().unwrap());
    let t = std::time::Instant::now();
    let (s, _, b) = oneshot(&app, seal_json(&chat("very-slow", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(detail(&b), "request timed out");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn replayed_payload_id_or_package_is_409() {
    let app = app(state_with(&["m"]).build().unwrap());
    let sealed = seal_json(&chat("m", "once"));
    let (s, _, _) = oneshot(&app, sealed.request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    // The very same request again.
    let (s, _, b) = oneshot(&app, sealed.request(None, None)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(detail(&b).contains("replayed"));
    // The same package under a fresh id (an attacker replaying with their own headers).
    let mut again = seal_json(&chat("m", "other"));
    again.body = sealed.body.clone();
    let (s, _, _) = oneshot(&app, again.request(None, None)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    // A fresh package reusing a used id.
    let mut reuse = seal_json(&chat("m", "third"));
    reuse.id = sealed.id.clone();
    let (s, _, _) = oneshot(&app, reuse.request(None, None)).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn retry_after_retryable_failure_is_not_a_replay() {
    let app = app(state_with(&["busy-once"]).build().unwrap());
    let sealed = seal_json(&chat("busy-once", "x"));
    let (s, h, _) = oneshot(&app, sealed.request(None, None)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h["retry-after"], "2");
    // The reference client re-sends the same body with the same id.
    let (s, _, _) = oneshot(&app, sealed.request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = oneshot(&app, sealed.request(None, None)).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn backend_failures_map_to_gateway_statuses() {
    let app = app(state_with(&["broken", "not-object"]).build().unwrap());
    for model in ["broken", "not-object"] {
        let (s, _, b) = oneshot(&app, seal_json(&chat(model, "x")).request(None, None)).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{model}");
        assert_eq!(detail(&b), "the inference backend failed");
    }
}

/// On tokio's paused clock, which the key store's grace period follows
/// (`nomyo_server::key_ring::now`): the 3 s pass without waiting for them.
#[tokio::test(start_paused = true)]
async fn rotation_old_key_opens_during_grace_only() {
    use nomyo_server::keystore::KeyStore;
    let store = KeyStore::ephemeral(server_key()).with_grace(Duration::from_secs(3));
    let st = nomyo_server::AppState::builder(store)
        .backend("echo", echo_backend(&["m"]))
        .build()
        .unwrap();
    let app = app(st.clone());
    let old_pub = server_key().public_key().clone();
    let new_fp = st.rotate_key().await.unwrap();
    assert_ne!(new_fp, old_pub.fingerprint());
    // The new key is published at once.
    let (_, _, body) = oneshot_get(&app, "/pki/public_key").await;
    let new_pub = nomyo_core::PublicKey::from_pem(std::str::from_utf8(&body).unwrap()).unwrap();
    assert_eq!(new_pub.fingerprint(), new_fp);
    // Both keys open requests during the grace period.
    let plain = serde_json::to_vec(&chat("m", "x")).unwrap();
    for k in [&old_pub, &new_pub] {
        let (s, _, _) = oneshot(&app, seal_to(&plain, k).request(None, None)).await;
        assert_eq!(s, StatusCode::OK);
    }
    tokio::time::advance(Duration::from_millis(3300)).await;
    let (s, _, b) = oneshot(&app, seal_to(&plain, &old_pub).request(None, None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(detail(&b), "decryption failed");
    let (s, _, _) = oneshot(&app, seal_to(&plain, &new_pub).request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st.keys().purge_expired(), 1);
}

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
