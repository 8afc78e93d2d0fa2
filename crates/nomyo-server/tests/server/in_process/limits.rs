//! The limits: body size (413), per-key rate (429), concurrency and queue
//! (503, or a wait for a slot), and the request timeout (504).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use nomyo_server::app;
use nomyo_server::limits::Limits;
use nomyo_server::policy::ApiKeys;

use crate::common::*;

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
