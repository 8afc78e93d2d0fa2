//! Key discovery and the plain round trip, both suites, with and without a
//! key id.

use axum::http::StatusCode;
use nomyo_core::v2::keys::Kem;

use super::m_server;
use crate::common::*;

#[tokio::test]
async fn keys_x25519_first_then_xwing() {
    let (_app, configs) = m_server().await;
    assert_eq!(configs.len(), 2);
    let x = configs[0].key_id;
    assert_eq!((configs[0].key_id, configs[0].kem), (x, Kem::X25519));
    assert_eq!((configs[1].key_id, configs[1].kem), (x + 1, Kem::XWing));
}

#[tokio::test]
async fn round_trip_both_suites_with_and_without_key_id() {
    let (app, configs) = m_server().await;
    for kem in [Kem::X25519, Kem::XWing] {
        let cfg = kem_config(&configs, kem);
        for key_id in [None, Some(cfg.key_id)] {
            // Small frames: the body arrives as many chunks.
            let req = seal_v2_frames(&cfg, &chat("m", "hello v2"), 7);
            assert!(req.frames.len() > 5);
            let (s, h, b) = oneshot(&app, req.request(key_id, Some("high"))).await;
            assert_eq!(s, StatusCode::OK, "{kem}: {}", String::from_utf8_lossy(&b));
            assert_eq!(h["content-type"], "application/json");
            let v = req.open_json(&h, &b);
            assert_eq!(v["choices"][0]["message"]["content"], "echo:hello v2");
            let m = &v["_metadata"];
            assert_eq!(m["protocol"], "v2");
            assert_eq!(m["hpke"]["kem"], kem.name());
            assert_eq!(m["hpke"]["post_quantum"], kem.is_post_quantum());
            assert_eq!(m["security_tier"], "high");
            assert_eq!(m["is_encrypted"], true);
        }
    }
}
