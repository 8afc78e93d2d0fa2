//! The access log and the request id: one info line per request (target
//! `nomyo::access`) with its id, route, protocol, tier, status, bytes and
//! duration; the caller's `X-Request-Id` kept when it is 1 to 128
//! characters of `[A-Za-z0-9._-]`, replaced otherwise, returned either way.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::body::Body;
use axum::http::Request;
use common::*;

/// A second dispatcher alive for the whole test process. With only one
/// registered (this file's scoped subscriber), tracing-core judges a
/// callsite that another test's thread registers first by that thread's
/// default (none: "never") and caches it, so the scoped subscriber would
/// never see the access line (0 lines, about 1 run in 5 under load). With
/// two, every callsite is judged by all live dispatchers.
fn keep_interest_shared() {
    static KEEP: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    KEEP.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
}

/// The access lines written while `f` runs (JSON, info level, access target only).
async fn access_lines<F: std::future::Future<Output = ()>>(f: F) -> Vec<serde_json::Value> {
    keep_interest_shared();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,nomyo::access=info",
        ))
        .with_writer(capture.clone())
        .json()
        .flatten_event(true)
        .finish();
    {
        let _guard = tracing::subscriber::set_default(subscriber);
        // Callsites registered before this subscriber existed.
        tracing::callsite::rebuild_interest_cache();
        f.await;
    }
    let text = capture.text();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object per line"))
        .filter(|v| v["target"] == "nomyo::access")
        .collect()
}

fn get_with_id(path: &str, id: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path);
    if let Some(id) = id {
        b = b.header("x-request-id", id);
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn request_ids_are_kept_replaced_and_returned() {
    let app = nomyo_server::app(state_with(&["m"]).build().unwrap());
    let long_ok = "a".repeat(128);
    let too_long = "a".repeat(129);
    let mut returned = Vec::new();
    let lines = access_lines(async {
        for id in [
            Some("proxy-0123abcdef"),
            Some("A.b_c-9"),
            Some(long_ok.as_str()),
            Some(too_long.as_str()),
            Some("has space"),
            Some("semi;colon"),
            Some(""),
            None,
        ] {
            let (status, headers, _) = oneshot(&app, get_with_id("/health", id)).await;
            assert!(status.is_success() || status.as_u16() == 503, "{status}");
            let got = headers
                .get("x-request-id")
                .expect("every response carries its request id")
                .to_str()
                .unwrap()
                .to_owned();
            returned.push((id.map(str::to_owned), got));
        }
    })
    .await;
    for (sent, got) in &returned[..3] {
        assert_eq!(Some(got), sent.as_ref(), "a valid id is kept");
    }
    for (sent, got) in &returned[3..] {
        assert_ne!(Some(got), sent.as_ref(), "an invalid id is replaced");
        assert_eq!(got.len(), 32, "{got}");
        assert!(got.bytes().all(|b| b.is_ascii_hexdigit()), "{got}");
    }
    assert_ne!(returned[6].1, returned[7].1, "fresh ids differ");
    // One access line per request, naming the id that was returned.
    assert_eq!(lines.len(), returned.len(), "{lines:?}");
    for ((_, got), line) in returned.iter().zip(&lines) {
        assert_eq!(line["request_id"], got.as_str());
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["route"], "/health");
        assert_eq!(line["protocol"], "plain");
    }
}

#[tokio::test]
async fn access_line_fields_for_v1_v2_and_unknown_routes() {
    let app = nomyo_server::app(state_with(&["m"]).build().unwrap());
    let canary = format!("CANARY-{}", uuid::Uuid::new_v4().simple());
    let sealed = seal_json(&chat("m", &format!("please repeat {canary}")));
    let sent_bytes = sealed.body.len();
    let mut answer_bytes = 0;
    let lines = access_lines(async {
        let req = Request::post("/v1/chat/secure_completion")
            .header("content-type", "application/octet-stream")
            .header("x-payload-id", &sealed.id)
            .header("x-public-key", &sealed.public_key_header)
            .header("x-security-tier", "high")
            .header("x-request-id", "req-v1")
            .body(Body::from(sealed.body.clone()))
            .unwrap();
        let (status, _, body) = oneshot(&app, req).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        answer_bytes = body.len();
        let (status, _, _) = oneshot(&app, get_with_id("/.well-known/hpke-keys", None)).await;
        assert_eq!(status, 200);
        let (status, _, _) = oneshot(&app, get_with_id(&format!("/{canary}"), None)).await;
        assert_eq!(status, 404);
        let req = Request::post("/v1/chat/secure_completion")
            .header("x-security-tier", format!("odd-{canary}"))
            .body(Body::from(canary.clone()))
            .unwrap();
        let (status, _, _) = oneshot(&app, req).await;
        assert_eq!(status, 400);
    })
    .await;
    assert_eq!(lines.len(), 4, "{lines:?}");
    let v1 = &lines[0];
    assert_eq!(v1["request_id"], "req-v1");
    assert_eq!(v1["method"], "POST");
    assert_eq!(v1["route"], "/v1/chat/secure_completion");
    assert_eq!(v1["protocol"], "v1");
    assert_eq!(v1["tier"], "high");
    assert_eq!(v1["status"], 200);
    assert_eq!(v1["request_bytes"], sent_bytes as u64);
    assert_eq!(v1["response_bytes"], answer_bytes as u64);
    assert_eq!(v1["complete"], true);
    let ms = v1["duration_ms"].as_f64().unwrap();
    assert!(ms >= 0.0);
    assert!(
        ((ms * 10.0).round() - ms * 10.0).abs() < 1e-6,
        "duration rounded to 0.1 ms: {ms}"
    );
    assert_eq!(lines[1]["protocol"], "v2");
    assert_eq!(lines[1]["route"], "/.well-known/hpke-keys");
    assert_eq!(lines[1]["tier"], "-");
    // An unknown path is not copied into the log; nor is a bad tier value.
    assert_eq!(lines[2]["route"], "unmatched");
    assert_eq!(lines[2]["status"], 404);
    assert_eq!(lines[3]["tier"], "invalid");
    assert_eq!(lines[3]["status"], 400);
    let all = serde_json::to_string(&lines).unwrap();
    assert!(!all.contains(&canary), "content reached the access log");
    assert!(!all.contains("please repeat"));
}

/// The access callsite first hit on another thread, which has no
/// subscriber, while this file's scoped one is alive: its lines are still
/// captured.
#[tokio::test]
async fn a_callsite_first_hit_on_another_thread_still_reaches_the_capture() {
    let app = nomyo_server::app(state_with(&["m"]).build().unwrap());
    let other = app.clone();
    let lines = access_lines(async {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    oneshot(&other, get_with_id("/health", Some("elsewhere"))).await;
                });
        })
        .join()
        .unwrap();
        let (status, _, _) = oneshot(&app, get_with_id("/health", Some("here"))).await;
        assert_eq!(status, 200);
    })
    .await;
    let ids: Vec<_> = lines.iter().map(|l| l["request_id"].clone()).collect();
    assert_eq!(ids, ["here"], "{lines:?}");
}
