//! The v1 exchange: the public key route, the round trip with its
//! `_metadata`, `"stream": true` refused, and the old key opening during a
//! rotation's grace period only.

use std::time::Duration;

use axum::http::StatusCode;
use nomyo_server::app;
use serde_json::{json, Value};

use crate::common::*;

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
