//! Protocol v2 (EHBP) driven in-process, with `nomyo_core::v2` as the client:
//! key discovery, both suites plain and streamed, tampering, reordering,
//! key ids, the post-quantum tier, plaintext refusal, replay.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use nomyo_core::v2::framing::encode_frame;
use nomyo_core::v2::keys::{Kem, KeyConfig};
use nomyo_core::SecurityTier;
use nomyo_server::keystore::KeyStore;
use nomyo_server::{app, AppState};
use nomyo_testkit::backend::{channel_stream, text_chunk, words, Double};
use serde_json::{json, Value};

/// Streams the prompt's words ([`words`]; model `cut` fails after the first
/// chunk); `chat()` answers "whole".
fn stream_backend() -> Arc<Double> {
    Double::new("stream", &["m", "cut"])
        .answer(|r| Ok(completion(r.model(), "whole")))
        .stream(words)
        .arc()
}

fn stream_state() -> nomyo_server::state::AppStateBuilder {
    AppState::builder(KeyStore::ephemeral(server_key())).backend("stream", stream_backend())
}

async fn key_configs(app: &axum::Router) -> Vec<KeyConfig> {
    KeyConfig::parse_list(&fetch_hpke_keys(app).await).unwrap()
}

/// An in-process server for model `m` and its published key configs.
async fn m_server() -> (axum::Router, Vec<KeyConfig>) {
    let app = app(state_with(&["m"]).build().unwrap());
    let configs = key_configs(&app).await;
    (app, configs)
}

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

fn sse_events(chunks: &[Vec<u8>]) -> Vec<String> {
    chunks
        .iter()
        .map(|c| {
            let s = String::from_utf8(c.clone()).unwrap();
            assert!(s.starts_with("data: ") && s.ends_with("\n\n"), "{s:?}");
            s["data: ".len()..s.len() - 2].to_owned()
        })
        .collect()
}

#[tokio::test]
async fn streamed_both_suites_one_sealed_chunk_per_event() {
    let app = app(stream_state().build().unwrap());
    let configs = key_configs(&app).await;
    for kem in [Kem::X25519, Kem::XWing] {
        let mut body = chat("m", "one two three");
        body["stream"] = json!(true);
        let req = seal_v2_frames(&kem_config(&configs, kem), &body, 64 * 1024);
        let (s, h, b) = oneshot(&app, req.request(None, None)).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        assert_eq!(h["content-type"], "text/event-stream");
        let events = sse_events(&req.open(&h, &b));
        assert_eq!(events.len(), 4, "3 chunks + [DONE]");
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = events[..3]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, "one two three ");
        assert_eq!(chunks[0]["_metadata"]["hpke"]["kem"], kem.name());
    }
}

#[tokio::test]
async fn backend_error_mid_stream_cuts_without_done() {
    let app = app(stream_state().build().unwrap());
    let configs = key_configs(&app).await;
    let mut body = chat("cut", "one two three");
    body["stream"] = json!(true);
    let req = seal_v2_frames(&kem_config(&configs, Kem::XWing), &body, 1024);
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    let events = sse_events(&req.open(&h, &b));
    assert_eq!(events.len(), 1);
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn non_streaming_backend_falls_back_to_one_chunk_event() {
    let (app, configs) = m_server().await;
    let mut body = chat("m", "hi");
    body["stream"] = json!(true);
    let req = seal_v2_frames(&kem_config(&configs, Kem::X25519), &body, 1024);
    let (s, h, b) = oneshot(&app, req.request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    let events = sse_events(&req.open(&h, &b));
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], "[DONE]");
    let c: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(c["object"], "chat.completion.chunk");
    assert_eq!(c["choices"][0]["delta"]["content"], "echo:hi");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
}

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

#[tokio::test]
async fn first_event_arrives_before_the_backend_finishes() {
    use http_body_util::BodyExt as _;
    // A backend whose stream the test feeds, one chunk at a time.
    let (feed, stream) = channel_stream();
    let stream = std::sync::Mutex::new(Some(stream));
    let backend = Double::new("channel", &["m"])
        .stream(move |_| Ok(stream.lock().unwrap().take().unwrap()))
        .arc();
    let app = app(AppState::builder(KeyStore::ephemeral(server_key()))
        .backend("channel", backend)
        .build()
        .unwrap());
    let configs = key_configs(&app).await;
    let mut body = chat("m", "x");
    body["stream"] = json!(true);
    let req = seal_v2_frames(&kem_config(&configs, Kem::XWing), &body, 1024);
    feed.send(text_chunk("m", "first"));
    let resp = tower::ServiceExt::oneshot(app.clone(), req.request(None, None))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    // The first sealed event is readable while the backend has not finished.
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("first event not sent before the stream ended")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    let events = sse_events(&req.open(&headers, &first));
    let c: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(c["choices"][0]["delta"]["content"], "first");
    feed.send(text_chunk("m", "second"));
    drop(feed);
    let rest = body.collect().await.unwrap().to_bytes();
    // The response opener continues the sequence: open everything together.
    let all = [first.to_vec(), rest.to_vec()].concat();
    let events = sse_events(&req.open(&headers, &all));
    assert_eq!(events.len(), 3);
    assert_eq!(events[2], "[DONE]");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// On tokio's paused clock, which the key store's grace periods follow
/// (`nomyo_server::key_ring::now`): time moves only when the test moves it,
/// never while keys are made or requests opened.
#[tokio::test(start_paused = true)]
async fn rotation_publishes_new_ids_old_opens_in_grace_then_422() {
    use nomyo_server::hpke_keys::{HpkeKeySet, HpkeKeyStore};
    // A long grace for the in-grace checks, then a short one for the expiry.
    let st = state_with(&["m"])
        .hpke_store(
            HpkeKeyStore::new(HpkeKeySet::generate())
                .with_grace(std::time::Duration::from_secs(120)),
        )
        .build()
        .unwrap();
    let app = app(st.clone());
    let old = key_configs(&app).await;
    let (x, w) = (old[0].key_id, old[1].key_id);
    assert_eq!(w, x.wrapping_add(1));
    let r = st.rotate_hpke_keys().await.unwrap();
    let next = [x.wrapping_add(2), x.wrapping_add(3)];
    assert_eq!(r.key_ids, next);
    assert_eq!(r.retired_ids, vec![x, w]);
    // The new keys are published at once, X25519 first.
    let new = key_configs(&app).await;
    assert_eq!(
        new.iter().map(|c| (c.key_id, c.kem)).collect::<Vec<_>>(),
        vec![(next[0], Kem::X25519), (next[1], Kem::XWing)]
    );
    assert_ne!(new[0].public_key, old[0].public_key);
    // During the grace period the old keys still open, by id and by enc length.
    for cfg in &old {
        for key_id in [Some(cfg.key_id), None] {
            let req = seal_v2_frames(cfg, &chat("m", "in grace"), 1024);
            let (s, h, b) = oneshot(&app, req.request(key_id, None)).await;
            assert_eq!(s, StatusCode::OK, "{:?} {key_id:?}: {}", cfg, detail(&b));
            assert_eq!(
                req.open_json(&h, &b)["choices"][0]["message"]["content"],
                "echo:in grace"
            );
        }
    }
    // After it, they are gone: 422 problem+json, with or without the id.
    let grace = std::time::Duration::from_millis(100);
    let st = state_with(&["m"])
        .hpke_store(HpkeKeyStore::new(HpkeKeySet::generate()).with_grace(grace))
        .build()
        .unwrap();
    let app = nomyo_server::app(st.clone());
    let old = key_configs(&app).await;
    st.rotate_hpke_keys().await.unwrap();
    let new = key_configs(&app).await;
    // Past the grace period on the paused clock (the purge the rotation
    // scheduled runs on the way).
    tokio::time::sleep(grace + std::time::Duration::from_millis(200)).await;
    for cfg in &old {
        for key_id in [Some(cfg.key_id), None] {
            let req = seal_v2_frames(cfg, &chat("m", "too late"), 1024);
            let (s, h, b) = oneshot(&app, req.request(key_id, None)).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{:?} {key_id:?}", cfg);
            assert_eq!(h["content-type"], "application/problem+json");
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["type"], "urn:ietf:params:ehbp:error:key-config");
        }
    }
    // The client refetches and succeeds with the new keys.
    for cfg in &new {
        let req = seal_v2_frames(cfg, &chat("m", "refetched"), 1024);
        let (s, h, b) = oneshot(&app, req.request(Some(cfg.key_id), None)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            req.open_json(&h, &b)["_metadata"]["hpke"]["kem"],
            cfg.kem.name()
        );
    }
    let (_, _, m) = oneshot_get(&app, "/metrics").await;
    assert_eq!(
        metric(
            &String::from_utf8(m).unwrap(),
            "nomyo_hpke_key_rotations_total"
        ),
        1.0
    );
}

/// On tokio's paused clock: the maintenance task's rotation schedule, the
/// grace periods and the purges all run on virtual time, so the sleeps
/// below take no wall-clock time and the count of rotations is exact.
#[tokio::test(start_paused = true)]
async fn keys_rotate_on_their_schedule() {
    use nomyo_server::hpke_keys::{HpkeKeySet, HpkeKeyStore};
    let st = state_with(&["m"])
        .hpke_store(
            HpkeKeyStore::new(HpkeKeySet::generate())
                .with_grace(std::time::Duration::from_millis(50)),
        )
        .hpke_rotation(Some(std::time::Duration::from_millis(500)))
        .build()
        .unwrap();
    let app = app(st.clone());
    let first = key_configs(&app).await;
    let task = st.spawn_maintenance();
    // Not before the first interval.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(key_configs(&app).await, first);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    task.abort();
    let later = key_configs(&app).await;
    assert_ne!(later, first);
    // Two rotations (at 500 and 1000 ms), each taking the next two ids.
    assert_eq!(
        later[0].key_id,
        first[0].key_id.wrapping_add(4),
        "two rotations: {first:?} -> {later:?}"
    );
    assert_eq!((later[0].kem, later[1].kem), (Kem::X25519, Kem::XWing));
    // The first keys are past their grace: refused.
    let req = seal_v2_frames(&first[1], &chat("m", "old"), 1024);
    let (s, _, _) = oneshot(&app, req.request(Some(first[1].key_id), None)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
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

/// On tokio's paused clock: rotated at start, long before the hour-long
/// interval would have come round.
#[tokio::test(start_paused = true)]
async fn saved_keys_older_than_the_interval_rotate_at_start() {
    use nomyo_server::hpke_keys::{HpkeKeySet, HpkeKeyStore};
    let every = std::time::Duration::from_secs(3600);
    let st = state_with(&["m"])
        .hpke_store(HpkeKeyStore::new(HpkeKeySet::generate()).with_age(every))
        .hpke_rotation(Some(every))
        .build()
        .unwrap();
    let app = app(st.clone());
    let first = key_configs(&app).await;
    let task = st.spawn_maintenance();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while key_configs(&app).await == first {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not rotated at start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    task.abort();
    assert_eq!(
        key_configs(&app).await[0].key_id,
        first[0].key_id.wrapping_add(2)
    );
}

/// The key list and its `Nomyo-Keys-Signature` header.
async fn signed_keys(app: &axum::Router) -> (Vec<u8>, String) {
    let (h, b) = fetch_hpke_keys_with_headers(app).await;
    let sig = h[nomyo_core::keys_signature::HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    (b, sig)
}

/// The key list carries `Nomyo-Keys-Signature` by the current RSA key over
/// the exact body; it is made once per key set (the same header on every
/// fetch, though PSS is randomised), and made again after an HPKE rotation
/// and after an RSA key rotation (then by the new key).
#[tokio::test]
async fn key_list_is_signed_by_the_rsa_key_and_resigned_on_rotation() {
    use nomyo_core::keys_signature::{KeysSignature, KeysSignatureError};
    let st = state_with(&["m"]).build().unwrap();
    let app = app(st.clone());
    let rsa = server_key();
    let (body, header) = signed_keys(&app).await;
    assert!(
        header.starts_with(&format!(
            "rsa-pss-sha256;key={};nbf=",
            rsa.public_key().fingerprint()
        )),
        "{header}"
    );
    let sig = KeysSignature::parse(&header).unwrap();
    let now = nomyo_server::hpke_keys::unix_now();
    assert_eq!(sig.verify(rsa.public_key(), &body, now), Ok(()));
    // Valid for the rotation period (24 h without a schedule) plus the grace.
    let v = sig.validity();
    assert!(v.not_before() <= now && v.not_before() + 60 > now, "{v:?}");
    assert_eq!(
        v.not_after() - v.not_before(),
        24 * 3600 + st.hpke_store().grace().as_secs()
    );
    assert_eq!(body, st.hpke_keys().encoded());
    // Cached: the same signature again (a fresh PSS signature would differ).
    assert_eq!(signed_keys(&app).await, (body.clone(), header.clone()));

    // HPKE rotation: a new list, signed anew.
    st.rotate_hpke_keys().await.unwrap();
    let (body2, header2) = signed_keys(&app).await;
    assert_ne!(body2, body);
    assert_ne!(header2, header);
    let sig2 = KeysSignature::parse(&header2).unwrap();
    assert_eq!(sig2.verify(rsa.public_key(), &body2, now), Ok(()));
    // The old signature does not vouch for the new list.
    assert_eq!(
        sig.verify(rsa.public_key(), &body2, now),
        Err(KeysSignatureError::BadSignature)
    );

    // RSA rotation: the same list, now signed by the new key.
    let new_fp = st.rotate_key().await.unwrap();
    let (body3, header3) = signed_keys(&app).await;
    assert_eq!(body3, body2);
    let sig3 = KeysSignature::parse(&header3).unwrap();
    assert_eq!(sig3.key_fingerprint(), new_fp);
    let new_key = st.keys().current();
    assert_eq!(
        sig3.verify(new_key.private_key().public_key(), &body3, now),
        Ok(())
    );
    assert!(matches!(
        sig3.verify(rsa.public_key(), &body3, now),
        Err(KeysSignatureError::WrongKey { .. })
    ));
}
