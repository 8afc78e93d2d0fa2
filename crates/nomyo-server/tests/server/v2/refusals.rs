//! Requests the server refuses: tampered, reordered and truncated chunks,
//! unknown or malformed key ids, plaintext and a stripped key, replay, and
//! errors after the open (sealed).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use nomyo_core::v2::framing::encode_frame;
use nomyo_core::v2::keys::Kem;
use nomyo_server::app;
use serde_json::Value;

use super::{key_configs, m_server};
use crate::common::*;

#[tokio::test]
async fn tampered_and_reordered_chunks_are_one_opaque_400() {
    let (app, configs) = m_server().await;
    for kem in [Kem::X25519, Kem::XWing] {
        let cfg = kem_config(&configs, kem);
        // Tampered: flip one ciphertext bit of the second frame.
        let req = seal_v2_frames(&cfg, &chat("m", "tamper me"), 8);
        let mut frames = req.frames.clone();
        frames[1][6] ^= 1;
        let (s, h, b) = oneshot(&app, req.request_with(frames.concat(), None, None)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(detail(&b), "decryption failed");
        assert!(h.get("ehbp-response-nonce").is_none());
        // Reordered, naming the key: tampering, 400.
        let req = seal_v2_frames(&cfg, &chat("m", "reorder me"), 8);
        let mut frames = req.frames.clone();
        frames.swap(0, 1);
        let (s, _, b) = oneshot(
            &app,
            req.request_with(frames.concat(), Some(cfg.key_id), None),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(detail(&b), "decryption failed");
        // Without a key id, a first frame that opens under no live key is
        // what a stale config looks like (EHBP §5.4.2): 422, refetch.
        let (s, h, _) = oneshot(&app, req.request_with(frames.concat(), None, None)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(h["content-type"], "application/problem+json");
        // A later frame tampered: 400 either way.
        let req = seal_v2_frames(&cfg, &chat("m", "reorder me"), 8);
        let mut frames = req.frames.clone();
        frames.swap(1, 2);
        let (s, _, b) = oneshot(&app, req.request_with(frames.concat(), None, None)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(detail(&b), "decryption failed");
        // Truncated inside a frame.
        let req = seal_v2_frames(&cfg, &chat("m", "cut me"), 8);
        let mut body = req.frames.concat();
        body.truncate(body.len() - 3);
        let (s, _, b) = oneshot(&app, req.request_with(body, None, None)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(detail(&b), "decryption failed");
        // A frame longer than the body limit announced.
        let mut body = Vec::new();
        encode_frame(&[0u8; 8], &mut body);
        body[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let (s, _, _) = oneshot(&app, req.request_with(body, None, None)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn unknown_key_id_is_422_problem_json() {
    let (app, configs) = m_server().await;
    let req = seal_v2_frames(&kem_config(&configs, Kem::X25519), &chat("m", "x"), 1024);
    let unknown = (0..=255u8)
        .find(|id| configs.iter().all(|c| c.key_id != *id))
        .unwrap();
    let (s, h, b) = oneshot(&app, req.request(Some(unknown), None)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h["content-type"], "application/problem+json");
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["type"], "urn:ietf:params:ehbp:error:key-config");
    assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()));
    // A key id that is not a number is a plain 400.
    let mut r = req.request(None, None);
    r.headers_mut()
        .insert("nomyo-key-id", "zero".parse().unwrap());
    let (s, _, _) = oneshot(&app, r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A key id of the other suite: the enc does not fit that key.
    let xwing_id = kem_config(&configs, Kem::XWing).key_id;
    let (s, _, b) = oneshot(&app, req.request(Some(xwing_id), None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(detail(&b).contains("Ehbp-Encapsulated-Key"));
}

#[tokio::test]
async fn plaintext_and_stripped_key_are_400() {
    let app = app(state_with(&["m"]).build().unwrap());
    // Plain OpenAI request.
    let r = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&chat("m", "x")).unwrap()))
        .unwrap();
    let (s, _, b) = oneshot(&app, r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(detail(&b).contains("plaintext"), "{}", detail(&b));
    // A sealed request with the header stripped.
    let configs = key_configs(&app).await;
    let req = seal_v2_frames(&kem_config(&configs, Kem::XWing), &chat("m", "x"), 1024);
    let mut r = req.request(None, None);
    r.headers_mut().remove("ehbp-encapsulated-key");
    let (s, _, b) = oneshot(&app, r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(detail(&b).contains("Ehbp-Encapsulated-Key"));
    // Not hex.
    let mut r = req.request(None, None);
    r.headers_mut()
        .insert("ehbp-encapsulated-key", "zz".parse().unwrap());
    let (s, _, _) = oneshot(&app, r).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn replay_is_409_and_errors_after_open_are_sealed() {
    let (app, configs) = m_server().await;
    let req = seal_v2_frames(&kem_config(&configs, Kem::X25519), &chat("m", "once"), 1024);
    let (s, _, _) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(detail(&b).contains("replayed"));
    // Unknown model: known only after decryption, so the 404 is sealed.
    let req = seal_v2_frames(&kem_config(&configs, Kem::XWing), &chat("nope", "x"), 1024);
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        serde_json::from_slice::<Value>(&b).is_err(),
        "body is sealed"
    );
    let opened = req.open_json(&h, &b);
    assert_eq!(opened["error"]["code"], "model_not_found");
    assert!(
        opened["detail"]
            .as_str()
            .unwrap()
            .starts_with("the model `nope` does not exist"),
        "{opened}"
    );
}
