//! The post-quantum rule per security tier: `maximum` requires X-Wing,
//! and the requirement follows each tier's configuration.

use axum::http::StatusCode;
use nomyo_core::v2::keys::Kem;
use nomyo_core::SecurityTier;
use nomyo_server::app;

use super::key_configs;
use crate::common::*;

#[tokio::test]
async fn maximum_tier_requires_xwing() {
    let st = state_with(&["m", "secret"])
        .tier(SecurityTier::Maximum, allow_models(&["m", "secret"]))
        .tier(SecurityTier::Standard, allow_models(&["m"]))
        .tier(SecurityTier::High, allow_models(&["m"]))
        .build()
        .unwrap();
    let app = app(st);
    let configs = key_configs(&app).await;
    let x = kem_config(&configs, Kem::X25519);
    let xw = kem_config(&configs, Kem::XWing);
    // Asked for in the header: refused before any decryption, in clear.
    let req = seal_v2_frames(&x, &chat("m", "x"), 1024);
    let (s, _, b) = oneshot(&app, req.request(None, Some("maximum"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(detail(&b).contains("X-Wing"), "{}", detail(&b));
    // Reached by default (only maximum serves "secret"): refused sealed.
    let req = seal_v2_frames(&x, &chat("secret", "x"), 1024);
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let v = req.open_json(&h, &b);
    assert!(v["detail"].as_str().unwrap().contains("X-Wing"));
    // X-Wing passes.
    let req = seal_v2_frames(&xw, &chat("secret", "pq"), 1024);
    let (s, h, b) = oneshot(&app, req.request(None, Some("maximum"))).await;
    assert_eq!(s, StatusCode::OK);
    let v = req.open_json(&h, &b);
    assert_eq!(v["choices"][0]["message"]["content"], "echo:pq");
    assert_eq!(v["_metadata"]["security_tier"], "maximum");
}

#[tokio::test]
async fn post_quantum_requirement_is_per_tier_config() {
    let all = || allow_models(&["m"]);
    let st = state_with(&["m"])
        .tier(SecurityTier::Standard, all())
        .tier(SecurityTier::High, all())
        .tier(SecurityTier::Maximum, all())
        .require_post_quantum(SecurityTier::High, true)
        .require_post_quantum(SecurityTier::Maximum, false)
        .build()
        .unwrap();
    assert!(st.requires_post_quantum(SecurityTier::High));
    assert!(!st.requires_post_quantum(SecurityTier::Maximum));
    let app = app(st);
    let configs = key_configs(&app).await;
    let x = kem_config(&configs, Kem::X25519);
    // Configured to require PQ: X25519 refused.
    let req = seal_v2_frames(&x, &chat("m", "x"), 1024);
    let (s, _, b) = oneshot(&app, req.request(None, Some("high"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(detail(&b).contains("X-Wing"), "{}", detail(&b));
    // Not configured to (maximum turned off, standard by default): accepted.
    for tier in ["maximum", "standard"] {
        let req = seal_v2_frames(&x, &chat("m", tier), 1024);
        let (s, h, b) = oneshot(&app, req.request(None, Some(tier))).await;
        assert_eq!(s, StatusCode::OK, "{tier}: {}", String::from_utf8_lossy(&b));
        let v = req.open_json(&h, &b);
        assert_eq!(v["_metadata"]["security_tier"], tier);
    }
    // X-Wing passes the PQ tier.
    let req = seal_v2_frames(&kem_config(&configs, Kem::XWing), &chat("m", "pq"), 1024);
    let (s, _, _) = oneshot(&app, req.request(None, Some("high"))).await;
    assert_eq!(s, StatusCode::OK);
}
