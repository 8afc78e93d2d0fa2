//! Streamed answers: one sealed chunk per event in both suites, a backend
//! failing mid-stream, a non-streaming backend's single event, and the
//! first event sent before the backend has finished.

use std::sync::Arc;

use axum::http::StatusCode;
use nomyo_core::v2::keys::Kem;
use nomyo_server::keystore::KeyStore;
use nomyo_server::{app, AppState};
use nomyo_testkit::backend::{channel_stream, text_chunk, words, Double};
use serde_json::{json, Value};

use super::{key_configs, m_server};
use crate::common::*;

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
