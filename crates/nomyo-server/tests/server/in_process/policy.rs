//! Who may ask for what: the tier chosen without a header, API keys (401),
//! tier policy and unknown models (403/404, `/v1/models`), and replay (409)
//! versus a retry after a retryable failure.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use nomyo_core::SecurityTier;
use nomyo_server::app;
use nomyo_server::policy::{ApiKeys, ModelSet, TierRule};
use serde_json::{json, Value};

use crate::common::*;

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
