//! The client's protocol v2 (EHBP) against the real server
//! (`nomyo_server::app`) over a socket on 127.0.0.1: both suites, streaming
//! (complete and cut), a stripped `Ehbp-Response-Nonce`, a 422 after a key
//! change, pins, `Protocol::Auto`, and the trust of key lists signed by the
//! server's v1 key (`Nomyo-Keys-Signature`): rotations accepted without a
//! record, tampered lists and foreign signatures refused, unsigned lists
//! trusted on first use as before.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use common::shared_key;
use futures::StreamExt;
use nomyo_client::{
    ChatMessage, ChatRequest, Client, ClientBuilder, Error, KnownServers, Protocol, TrustDecision,
};
use nomyo_core::keys::PrivateKey;
use nomyo_core::keys_signature::{KeysSignature, KeysSignatureError};
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_server::backend::{Backend, BackendError, ChatRequest as BackendRequest, ChunkStream};
use nomyo_server::hpke_keys::{HpkeKeySet, HpkeKeyStore};
use nomyo_server::keystore::KeyStore;
use nomyo_server::AppState;

const HPKE_KEYS_PATH: &str = "/.well-known/hpke-keys";
const SIG_HEADER: &str = "nomyo-keys-signature";
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

/// What a man in the middle does to `GET /.well-known/hpke-keys` answers.
#[derive(Clone, Default)]
struct KeysRewrite {
    /// Serve this body instead.
    body: Option<Vec<u8>>,
    /// `Some(None)`: drop `Nomyo-Keys-Signature`; `Some(Some(v))`: send `v`.
    signature: Option<Option<String>>,
}

/// A server whose app can be swapped (a key change) and whose answers can
/// lose their `Ehbp-Response-Nonce` (a stripping proxy), or whose key list
/// can be rewritten.
struct Server {
    url: String,
    app: Arc<RwLock<Router>>,
    strip_nonce: Arc<AtomicBool>,
    tamper: Arc<AtomicBool>,
    keys: Arc<RwLock<KeysRewrite>>,
    /// `POST /v1/chat/completions` requests that reached the front.
    posts: Arc<AtomicUsize>,
}

async fn start(state: AppState) -> Server {
    let app = Arc::new(RwLock::new(nomyo_server::app(state)));
    let strip_nonce = Arc::new(AtomicBool::new(false));
    let tamper = Arc::new(AtomicBool::new(false));
    let keys = Arc::new(RwLock::new(KeysRewrite::default()));
    let posts = Arc::new(AtomicUsize::new(0));
    let (a, s, t, k, p) = (
        app.clone(),
        strip_nonce.clone(),
        tamper.clone(),
        keys.clone(),
        posts.clone(),
    );
    let front = Router::new().fallback(move |req: Request| {
        let inner = a.read().unwrap().clone();
        let strip = s.load(Ordering::SeqCst);
        let flip = t.load(Ordering::SeqCst);
        let is_keys = req.uri().path() == HPKE_KEYS_PATH;
        if req.method() == axum::http::Method::POST {
            p.fetch_add(1, Ordering::SeqCst);
        }
        let rewrite = k.read().unwrap().clone();
        async move {
            let mut resp = inner.oneshot(req).await.unwrap();
            if is_keys {
                match rewrite.signature {
                    Some(None) => {
                        resp.headers_mut().remove(SIG_HEADER);
                    }
                    Some(Some(v)) => {
                        resp.headers_mut().insert(SIG_HEADER, v.parse().unwrap());
                    }
                    None => {}
                }
                if let Some(body) = rewrite.body {
                    let (parts, _) = resp.into_parts();
                    resp =
                        axum::response::Response::from_parts(parts, axum::body::Body::from(body));
                }
            }
            if strip {
                resp.headers_mut().remove("ehbp-response-nonce");
            }
            if flip && !is_keys {
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
        keys,
        posts,
    }
}

fn builder(s: &Server) -> ClientBuilder {
    common::local_client(&s.url).protocol(Protocol::V2)
}

/// A server with the default keys and a v2 [`builder`] client of it.
async fn started() -> (Server, Client) {
    let s = start(state(None)).await;
    let client = builder(&s).build().unwrap();
    (s, client)
}

/// A fresh directory (removed when dropped) and the path of a
/// known-servers file in it.
fn known_servers_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_servers");
    (dir, file)
}

/// [`builder`] with trust on first use recorded in `file`.
fn recording(s: &Server, file: &Path) -> ClientBuilder {
    builder(s).known_servers(KnownServers::File(file.to_owned()))
}

fn ask(model: &str, prompt: &str) -> ChatRequest {
    ChatRequest::new(model).message(ChatMessage::user(prompt))
}

#[tokio::test]
async fn v2_plain_request_prefers_x_wing() {
    let (_s, client) = started().await;
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
    let (_s, client) = started().await;
    let big = "x".repeat(200 * 1024);
    let c = client.create(&ask("m", &big)).await.unwrap();
    assert_eq!(c.text().unwrap().len(), big.len() + "echo: ".len());
}

#[tokio::test]
async fn v2_stream_yields_every_chunk_then_ends() {
    let (_s, client) = started().await;
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
    let (_s, client) = started().await;
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
    let (s, client) = started().await;
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
async fn pins_apply_to_v2_keys() {
    let s = start(state(None)).await;
    let probe = builder(&s).build().unwrap();
    let xwing = probe.hpke_keys().await.unwrap().fingerprint();
    let v1_fp = shared_key(1).public_key().fingerprint();

    // A pin that matches neither the v1 key nor a config: refused before
    // anything is sent.
    let other = shared_key(2).public_key().fingerprint();
    let client = builder(&s).pin(other).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(matches!(err, Error::PinMismatch { .. }), "{err:?}");
    assert!(err.is_security());
    assert_eq!(s.posts.load(Ordering::SeqCst), 0);

    // The v1 pin covers the signed v2 keys.
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let c = client.create(&ask("m", "pinned v1")).await.unwrap();
    assert_eq!(c.text(), Some("echo: pinned v1"));
    let keys = client.hpke_keys().await.unwrap();
    assert_eq!(keys.trust(), &TrustDecision::Pinned);
    assert_eq!(keys.signed_by(), Some(v1_fp));

    // A pin of the config itself is still honoured.
    let client = builder(&s).pin(xwing).build().unwrap();
    let c = client.create(&ask("m", "pinned")).await.unwrap();
    assert_eq!(c.text(), Some("echo: pinned"));
    assert_eq!(
        client.hpke_keys().await.unwrap().trust(),
        &TrustDecision::Pinned
    );

    // Against an unsigned list (a third-party EHBP server) a v1 pin proves
    // nothing: refused.
    s.keys.write().unwrap().signature = Some(None);
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(matches!(err, Error::PinMismatch { .. }), "{err:?}");
}

/// A signed list is trusted through the v1 key: one record, `ORIGIN`
/// (shared with v1 clients), never one per HPKE config.
#[tokio::test]
async fn signed_v2_keys_record_only_the_v1_key() {
    let s = start(state(None)).await;
    let (_dir, file) = known_servers_file();
    let v2 = recording(&s, &file).build().unwrap();
    v2.create(&ask("m", "v2 first")).await.unwrap();
    let keys = v2.hpke_keys().await.unwrap();
    assert!(matches!(keys.trust(), TrustDecision::FirstUse { .. }));
    let v1_fp = shared_key(1).public_key().fingerprint();
    assert_eq!(keys.signed_by(), Some(v1_fp));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, format!("{} {v1_fp}\n", s.url), "{text}");
    // A v1 client of the same origin finds the key recorded.
    let v1 = recording(&s, &file).protocol(Protocol::V1).build().unwrap();
    v1.create(&ask("m", "v1 next")).await.unwrap();
    assert!(matches!(
        v1.server_key().await.unwrap().trust(),
        TrustDecision::Known { .. }
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

/// An unsigned list (a third-party EHBP server): the config fingerprint is
/// trusted on first use under `ORIGIN#v2-KEM`, apart from the v1 key.
#[tokio::test]
async fn known_servers_keep_v1_and_unsigned_v2_keys_apart() {
    let s = start(state(None)).await;
    s.keys.write().unwrap().signature = Some(None);
    let (_dir, file) = known_servers_file();
    let v1 = recording(&s, &file).protocol(Protocol::V1).build().unwrap();
    v1.create(&ask("m", "v1 first")).await.unwrap();
    let v2 = recording(&s, &file).build().unwrap();
    v2.create(&ask("m", "v2 next")).await.unwrap();
    let keys = v2.hpke_keys().await.unwrap();
    assert!(matches!(keys.trust(), TrustDecision::FirstUse { .. }));
    assert_eq!(keys.signed_by(), None);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines().filter(|l| !l.starts_with('#')).count(),
        2,
        "{text}"
    );
    assert!(text.contains("#v2-x-wing"), "{text}");
    // A second v2 client finds the recorded key.
    let again = recording(&s, &file).build().unwrap();
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

/// A server with a real HPKE key store whose retired keys are dropped at
/// the first purge (no grace), as after a rotation's grace has expired.
fn rotating_state() -> AppState {
    let pem = shared_key(1).to_pkcs8_pem(None).unwrap();
    let key = PrivateKey::from_pem(&pem, None, "test").unwrap();
    AppState::builder(KeyStore::ephemeral(key))
        .backend("words", Arc::new(Words))
        .hpke_store(HpkeKeyStore::new(HpkeKeySet::generate()).with_grace(Duration::ZERO))
        .build()
        .unwrap()
}

/// The server rotates its HPKE keys (and the old ones are erased): clients
/// with the default trust (a known-servers file) and with a v1 pin keep
/// working through the 422 refetch, new clients too, and nothing about the
/// HPKE keys is ever recorded.
#[tokio::test]
async fn rotation_is_accepted_through_the_signing_key() {
    let st = rotating_state();
    let s = start(st.clone()).await;
    let (_dir, file) = known_servers_file();
    let v1_fp = shared_key(1).public_key().fingerprint();
    let tofu = recording(&s, &file).build().unwrap();
    let pinned = builder(&s).pin(v1_fp).build().unwrap();
    for c in [&tofu, &pinned] {
        c.create(&ask("m", "before")).await.unwrap();
    }
    let recorded = std::fs::read_to_string(&file).unwrap();
    let first = tofu.hpke_keys().await.unwrap();
    for round in 0..2 {
        st.rotate_hpke_keys().await.unwrap();
        assert_eq!(st.hpke_store().purge_expired(), 2, "old keys erased");
        for c in [&tofu, &pinned] {
            let a = c
                .create(&ask("m", &format!("after {round}")))
                .await
                .unwrap();
            assert_eq!(a.text(), Some(format!("echo: after {round}").as_str()));
        }
    }
    let now = tofu.hpke_keys().await.unwrap();
    assert_ne!(
        now.fingerprint(),
        first.fingerprint(),
        "keys were refetched"
    );
    assert_eq!(now.config().key_id, st.hpke_keys().key_ids()[1]);
    assert_eq!(now.signed_by(), Some(v1_fp));
    // Trusted through the v1 key verified at first contact (and cached).
    assert!(
        matches!(now.trust(), TrustDecision::FirstUse { .. }),
        "{:?}",
        now.trust()
    );
    assert_eq!(
        pinned.hpke_keys().await.unwrap().trust(),
        &TrustDecision::Pinned
    );
    // A new client after the rotations: the same single record.
    let fresh = recording(&s, &file).build().unwrap();
    fresh.create(&ask("m", "fresh")).await.unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), recorded);
    assert!(!recorded.contains("#v2"), "{recorded}");
}

/// Without the signature (a third-party EHBP server) a rotation looks like
/// any key change to a recorded config: refused, as before.
#[tokio::test]
async fn unsigned_rotation_is_a_key_change() {
    let st = rotating_state();
    let s = start(st.clone()).await;
    s.keys.write().unwrap().signature = Some(None);
    let (_dir, file) = known_servers_file();
    let client = recording(&s, &file).build().unwrap();
    client.create(&ask("m", "before")).await.unwrap();
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("#v2-x-wing"));
    st.rotate_hpke_keys().await.unwrap();
    st.hpke_store().purge_expired();
    let err = client.create(&ask("m", "after")).await.unwrap_err();
    assert!(matches!(err, Error::ServerKeyChanged { .. }), "{err:?}");
}

/// Changes one base64 character of the `sig=` parameter (another valid
/// signature length, other bytes).
fn corrupt_sig(header: &str) -> String {
    let at = header.find("sig=").unwrap() + 4 + 20;
    let mut b = header.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

/// Someone in the middle substitutes their own key configs and keeps the
/// server's signature (or alters the signature): refused as a security
/// error, before anything is sent, with or without a pin.
#[tokio::test]
async fn tampered_key_list_is_refused() {
    let s = start(state(None)).await;
    let foreign = HpkeKeySet::from_pairs(vec![
        ServerKeyPair::generate(0, Kem::X25519),
        ServerKeyPair::generate(1, Kem::XWing),
    ]);
    s.keys.write().unwrap().body = Some(foreign.encoded().to_vec());
    let (_dir, file) = known_servers_file();
    let v1_fp = shared_key(1).public_key().fingerprint();
    for client in [
        recording(&s, &file).build().unwrap(),
        builder(&s).pin(v1_fp).build().unwrap(),
    ] {
        let err = client.create(&ask("m", "secret")).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::KeysSignature {
                    reason: KeysSignatureError::BadSignature,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_security());
        assert!(err.to_string().contains("does not verify"), "{err}");
    }
    // The real list with a corrupted signature.
    s.keys.write().unwrap().body = None;
    let real = start(state(None)).await;
    let body = reqwest::get(format!("{}{HPKE_KEYS_PATH}", real.url))
        .await
        .unwrap();
    let header = body.headers()[SIG_HEADER].to_str().unwrap().to_owned();
    let bad = corrupt_sig(&header);
    assert_ne!(
        KeysSignature::parse(&bad).unwrap(),
        KeysSignature::parse(&header).unwrap()
    );
    s.keys.write().unwrap().signature = Some(Some(bad));
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(matches!(err, Error::KeysSignature { .. }), "{err:?}");
    // A malformed header is refused too (fail closed, not "unsigned").
    s.keys.write().unwrap().signature = Some(Some("rsa-pss-sha256;key=x".into()));
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeysSignature {
                reason: KeysSignatureError::Malformed(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
    // The known-servers file got the (genuine) v1 key only.
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, format!("{} {v1_fp}\n", s.url));
}

/// A list signed by another RSA key, named as such or claiming to be the
/// server's: refused (the client refetches the v1 key once, finds it
/// unchanged, and does not trust the other key).
#[tokio::test]
async fn signature_by_another_key_is_refused() {
    let s = start(state(None)).await;
    let body = reqwest::get(format!("{}{HPKE_KEYS_PATH}", s.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let intruder = shared_key(3);
    let v1_fp = shared_key(1).public_key().fingerprint();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let window = nomyo_core::keys_signature::Validity::new(now - 60, now + 3600).unwrap();
    let named = KeysSignature::sign(&intruder, &body, window)
        .unwrap()
        .to_header_value();
    let claimed = named.replace(
        &intruder.public_key().fingerprint().to_string(),
        &v1_fp.to_string(),
    );
    assert_ne!(claimed, named);
    let (_dir, file) = known_servers_file();
    for (header, expect_wrong_key) in [(named, true), (claimed, false)] {
        s.keys.write().unwrap().signature = Some(Some(header));
        for client in [
            recording(&s, &file).build().unwrap(),
            builder(&s).pin(v1_fp).build().unwrap(),
            builder(&s).build().unwrap(),
        ] {
            let err = client.create(&ask("m", "secret")).await.unwrap_err();
            match &err {
                Error::KeysSignature {
                    reason: KeysSignatureError::WrongKey { expected, found },
                    ..
                } => {
                    assert!(expect_wrong_key, "{err:?}");
                    assert_eq!(*expected, v1_fp);
                    assert_eq!(*found, intruder.public_key().fingerprint());
                }
                Error::KeysSignature {
                    reason: KeysSignatureError::BadSignature,
                    ..
                } => assert!(!expect_wrong_key, "{err:?}"),
                other => panic!("expected a signature error, got {other:?}"),
            }
            assert!(err.is_security());
        }
    }
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
}

/// The server rotates its RSA key: its key list is now signed by the new
/// key, which a client that recorded the old one refuses as a changed key
/// (exactly as v1 does), and a client pinning both keys accepts.
#[tokio::test]
async fn rsa_rotation_is_checked_like_v1() {
    let st = rotating_state();
    let s = start(st.clone()).await;
    let (_dir, file) = known_servers_file();
    let client = recording(&s, &file).build().unwrap();
    client.create(&ask("m", "before")).await.unwrap();
    let old = shared_key(1).public_key().fingerprint();
    let new = st.rotate_key().await.unwrap();
    st.rotate_hpke_keys().await.unwrap();
    st.hpke_store().purge_expired();
    let err = client.create(&ask("m", "after")).await.unwrap_err();
    assert!(matches!(err, Error::ServerKeyChanged { .. }), "{err:?}");
    let both = builder(&s).pins([old, new]).build().unwrap();
    both.create(&ask("m", "pinned both")).await.unwrap();
    assert_eq!(both.hpke_keys().await.unwrap().signed_by(), Some(new));
}
