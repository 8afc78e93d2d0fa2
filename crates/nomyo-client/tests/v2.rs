//! The client's protocol v2 (EHBP) against the real server
//! (`nomyo_server::app`) over a socket on 127.0.0.1: both suites, streaming
//! (complete and cut), a stripped `Ehbp-Response-Nonce`, a 422 after a key
//! change, pins, and `Protocol::Auto`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use common::shared_key;
use futures::StreamExt;
use nomyo_client::{
    Backoff, ChatMessage, ChatRequest, Client, ClientBuilder, Error, KnownServers, Protocol,
    TrustDecision,
};
use nomyo_core::keys::PrivateKey;
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_server::backend::{Backend, BackendError, ChatRequest as BackendRequest, ChunkStream};
use nomyo_server::hpke_keys::HpkeKeySet;
use nomyo_server::keystore::KeyStore;
use nomyo_server::AppState;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Echoes the prompt; streams it word by word; model `cut` dies after the
/// first chunk (the server then ends the body without `[DONE]`).
struct Words;

fn chunk(model: &str, content: &str) -> Value {
    json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": model,
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
}

fn prompt_of(r: &BackendRequest) -> String {
    r.body["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[async_trait::async_trait]
impl Backend for Words {
    fn name(&self) -> &str {
        "words"
    }
    fn models(&self) -> Vec<String> {
        vec!["m".into(), "cut".into()]
    }
    async fn chat(&self, request: BackendRequest) -> Result<Value, BackendError> {
        Ok(json!({
            "id": "chatcmpl-echo", "object": "chat.completion", "created": 1,
            "model": request.model(),
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": format!("echo: {}", prompt_of(&request))}}],
        }))
    }
    async fn chat_stream(&self, request: BackendRequest) -> Result<ChunkStream, BackendError> {
        let model = request.model().to_owned();
        let mut items: Vec<Result<Value, BackendError>> = prompt_of(&request)
            .split(' ')
            .map(|w| Ok(chunk(&model, &format!("{w} "))))
            .collect();
        if model == "cut" {
            items.truncate(1);
            items.push(Err(BackendError::Upstream("died".into())));
        }
        Ok(Box::pin(futures::stream::iter(items)))
    }
}

fn state(hpke: Option<HpkeKeySet>) -> AppState {
    let pem = shared_key(1).to_pkcs8_pem(None).unwrap();
    let key = PrivateKey::from_pem(&pem, None, "test").unwrap();
    let mut b = AppState::builder(KeyStore::ephemeral(key)).backend("words", Arc::new(Words));
    if let Some(k) = hpke {
        b = b.hpke_keys(k);
    }
    b.build().unwrap()
}

/// A server whose app can be swapped (a key change) and whose answers can
/// lose their `Ehbp-Response-Nonce` (a stripping proxy).
struct Server {
    url: String,
    app: Arc<RwLock<Router>>,
    strip_nonce: Arc<AtomicBool>,
    tamper: Arc<AtomicBool>,
}

async fn start(state: AppState) -> Server {
    let app = Arc::new(RwLock::new(nomyo_server::app(state)));
    let strip_nonce = Arc::new(AtomicBool::new(false));
    let tamper = Arc::new(AtomicBool::new(false));
    let (a, s, t) = (app.clone(), strip_nonce.clone(), tamper.clone());
    let front = Router::new().fallback(move |req: Request| {
        let inner = a.read().unwrap().clone();
        let strip = s.load(Ordering::SeqCst);
        let flip = t.load(Ordering::SeqCst);
        async move {
            let mut resp = inner.oneshot(req).await.unwrap();
            if strip {
                resp.headers_mut().remove("ehbp-response-nonce");
            }
            if flip {
                // Flip one bit of the last sealed byte (a GCM tag).
                let (parts, body) = resp.into_parts();
                let mut b = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap()
                    .to_vec();
                if let Some(last) = b.last_mut() {
                    *last ^= 1;
                }
                resp = axum::response::Response::from_parts(parts, axum::body::Body::from(b));
            }
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, front).await.unwrap() });
    Server {
        url: format!("http://{addr}"),
        app,
        strip_nonce,
        tamper,
    }
}

fn builder(s: &Server) -> ClientBuilder {
    Client::builder()
        .base_url(&s.url)
        .allow_http(true)
        .client_key(shared_key(0))
        .known_servers(KnownServers::Off)
        .protocol(Protocol::V2)
        .backoff(Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(5),
        })
}

fn ask(model: &str, prompt: &str) -> ChatRequest {
    ChatRequest::new(model).message(ChatMessage::user(prompt))
}

#[tokio::test]
async fn v2_plain_request_prefers_x_wing() {
    let s = start(state(None)).await;
    let client = builder(&s).build().unwrap();
    let c = client.create(&ask("m", "hello v2")).await.unwrap();
    assert_eq!(c.text(), Some("echo: hello v2"));
    assert_eq!(c.metadata.is_encrypted, Some(true));
    assert_eq!(
        c.metadata.encryption_algorithm.as_deref(),
        Some("ehbp-x-wing")
    );
    let keys = client.hpke_keys().await.unwrap();
    assert_eq!(keys.configs().len(), 2);
    assert_eq!(keys.config().kem, Kem::XWing);
    // The server reports the suite it actually used.
    assert_eq!(
        c.metadata.extra["hpke"]["kem"],
        "x-wing",
        "{:?}",
        c.metadata.extra.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn v2_plain_request_with_x25519_only_server() {
    let set = HpkeKeySet::from_pairs(vec![ServerKeyPair::generate(3, Kem::X25519)]);
    let s = start(state(Some(set))).await;
    let client = builder(&s).build().unwrap();
    let c = client.create(&ask("m", "hi x25519")).await.unwrap();
    assert_eq!(c.text(), Some("echo: hi x25519"));
    assert_eq!(
        c.metadata.encryption_algorithm.as_deref(),
        Some("ehbp-x25519")
    );
    assert_eq!(client.hpke_keys().await.unwrap().config().key_id, 3);
}

#[tokio::test]
async fn v2_large_request_spans_several_frames() {
    let s = start(state(None)).await;
    let client = builder(&s).build().unwrap();
    let big = "x".repeat(200 * 1024);
    let c = client.create(&ask("m", &big)).await.unwrap();
    assert_eq!(c.text().unwrap().len(), big.len() + "echo: ".len());
}

#[tokio::test]
async fn v2_stream_yields_every_chunk_then_ends() {
    let s = start(state(None)).await;
    let client = builder(&s).build().unwrap();
    let mut stream = client
        .create_stream(&ask("m", "one two three"))
        .await
        .unwrap();
    let mut text = String::new();
    let mut n = 0;
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        assert_eq!(c.object, "chat.completion.chunk");
        text.push_str(c.text().unwrap_or(""));
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(text, "one two three ");
}

#[tokio::test]
async fn v2_cut_stream_is_an_error() {
    let s = start(state(None)).await;
    let client = builder(&s).build().unwrap();
    let mut stream = client
        .create_stream(&ask("cut", "one two three"))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.text(), Some("one "));
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("[DONE]"), "{err}");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn stripped_response_nonce_fails_closed() {
    let s = start(state(None)).await;
    s.strip_nonce.store(true, Ordering::SeqCst);
    let client = builder(&s).build().unwrap();
    let err = client.create(&ask("m", "hello")).await.unwrap_err();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
    assert!(err.is_security());
    assert!(err.to_string().contains("MISSING_RESPONSE_NONCE"), "{err}");
    let err = client
        .create_stream(&ask("m", "hello"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
}

#[tokio::test]
async fn key_change_gives_422_then_refetch_and_success() {
    let s = start(state(None)).await;
    let client = builder(&s).build().unwrap();
    let before = client.hpke_keys().await.unwrap();
    // The server's keys change (new key ids): the cached config is unknown.
    let set = HpkeKeySet::from_pairs(vec![
        ServerKeyPair::generate(7, Kem::X25519),
        ServerKeyPair::generate(8, Kem::XWing),
    ]);
    *s.app.write().unwrap() = nomyo_server::app(state(Some(set)));
    let c = client.create(&ask("m", "after rotation")).await.unwrap();
    assert_eq!(c.text(), Some("echo: after rotation"));
    let after = client.hpke_keys().await.unwrap();
    assert_ne!(before.fingerprint(), after.fingerprint());
    assert_eq!(after.config().key_id, 8);
}

#[tokio::test]
async fn pins_apply_to_v2_configs() {
    let s = start(state(None)).await;
    let probe = builder(&s).build().unwrap();
    let xwing = probe.hpke_keys().await.unwrap().fingerprint();

    // A pin that matches no config: refused before anything is sent.
    let v1_fp = shared_key(1).public_key().fingerprint();
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(matches!(err, Error::PinMismatch { .. }), "{err:?}");
    assert!(err.is_security());

    let client = builder(&s).pin(xwing).build().unwrap();
    let c = client.create(&ask("m", "pinned")).await.unwrap();
    assert_eq!(c.text(), Some("echo: pinned"));
    assert_eq!(
        client.hpke_keys().await.unwrap().trust(),
        &TrustDecision::Pinned
    );
}

#[tokio::test]
async fn known_servers_keep_v1_and_v2_keys_apart() {
    let s = start(state(None)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_servers");
    let v1 = builder(&s)
        .protocol(Protocol::V1)
        .known_servers(KnownServers::File(file.clone()))
        .build()
        .unwrap();
    v1.create(&ask("m", "v1 first")).await.unwrap();
    let v2 = builder(&s)
        .known_servers(KnownServers::File(file.clone()))
        .build()
        .unwrap();
    v2.create(&ask("m", "v2 next")).await.unwrap();
    assert!(matches!(
        v2.hpke_keys().await.unwrap().trust(),
        TrustDecision::FirstUse { .. }
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines().filter(|l| !l.starts_with('#')).count(),
        2,
        "{text}"
    );
    assert!(text.contains("#v2-x-wing"), "{text}");
    // A second v2 client finds the recorded key.
    let again = builder(&s)
        .known_servers(KnownServers::File(file))
        .build()
        .unwrap();
    again.create(&ask("m", "again")).await.unwrap();
    assert!(matches!(
        again.hpke_keys().await.unwrap().trust(),
        TrustDecision::Known { .. }
    ));
}

#[tokio::test]
async fn auto_selects_v2_when_published() {
    let s = start(state(None)).await;
    let client = builder(&s).protocol(Protocol::Auto).build().unwrap();
    assert!(client.uses_v2().await.unwrap());
    let c = client.create(&ask("m", "auto")).await.unwrap();
    assert_eq!(
        c.metadata.encryption_algorithm.as_deref(),
        Some("ehbp-x-wing")
    );
}

#[tokio::test]
async fn v1_client_cannot_stream() {
    let s = start(state(None)).await;
    let client = builder(&s).protocol(Protocol::V1).build().unwrap();
    let err = client.create_stream(&ask("m", "x")).await.err().unwrap();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
}

#[tokio::test]
async fn tampered_response_fails_plain_and_streamed() {
    let s = start(state(None)).await;
    s.tamper.store(true, Ordering::SeqCst);
    let client = builder(&s).build().unwrap();
    let err = client.create(&ask("m", "hello")).await.unwrap_err();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
    let mut stream = client.create_stream(&ask("m", "one two")).await.unwrap();
    let mut items = Vec::new();
    while let Some(i) = stream.next().await {
        items.push(i);
    }
    // Whatever came before, the stream ends in an error, never complete.
    let last = items.pop().unwrap();
    assert!(matches!(last, Err(Error::V2Security(_))), "{last:?}");
}
