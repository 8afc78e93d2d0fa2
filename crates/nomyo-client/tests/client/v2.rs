//! The client's protocol v2 (EHBP) against the real server
//! (`nomyo_server::app`) over a socket on 127.0.0.1: both suites, streaming
//! (complete and cut), a stripped `Ehbp-Response-Nonce`, a 422 after a key
//! change, pins, `Protocol::Auto`, and the trust of key lists signed by the
//! server's v1 key (`Nomyo-Keys-Signature`): rotations accepted without a
//! record, tampered, foreign-signed and expired lists refused, unsigned
//! lists refused for a server known to sign (signature stripping, also on
//! the refetch after a 422 or 400) and trusted on first use otherwise, and
//! protocol auto's downgrade guards.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use common::shared_key;
use futures::StreamExt;
use nomyo_client::{
    ChatMessage, ChatRequest, Client, ClientBuilder, Downgrade, Error, KnownBy, KnownServers,
    Protocol, SecurityTier, TrustDecision,
};
use nomyo_core::keys::PrivateKey;
use nomyo_core::keys_signature::{KeysSignature, KeysSignatureError};
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_server::hpke_keys::{HpkeKeySet, HpkeKeyStore};
use nomyo_server::keystore::KeyStore;
use nomyo_server::AppState;
use nomyo_testkit::backend::{words, Double};

use nomyo_core::keys_signature::HEADER as SIG_HEADER;
use nomyo_core::v2::HPKE_KEYS_PATH;
use tower::ServiceExt;

/// Echoes the prompt; streams it word by word ([`words`]): model `cut` dies
/// after the first chunk (the server then ends the body without `[DONE]`).
fn words_backend() -> Arc<Double> {
    Double::new("words", &["m", "cut"]).stream(words).arc()
}

fn state(hpke: Option<HpkeKeySet>) -> AppState {
    state_signed_by(1, hpke)
}

/// [`state`] with the v1 (signing) key of slot `slot`.
fn state_signed_by(slot: usize, hpke: Option<HpkeKeySet>) -> AppState {
    let pem = shared_key(slot).to_pkcs8_pem(None).unwrap();
    let key = PrivateKey::from_pem(&pem, None, "test").unwrap();
    let mut b = AppState::builder(KeyStore::ephemeral(key)).backend("words", words_backend());
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
    /// Answer with this status instead (e.g. 404: "no v2 here").
    status: Option<u16>,
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
    /// The `Nomyo-Key-Id` of every POST that reached the front.
    post_key_ids: Arc<Mutex<Vec<u16>>>,
    /// The next POST gets this answer (status, JSON body) from the front
    /// instead of reaching the server.
    post_reply: Arc<Mutex<Option<(u16, String)>>>,
}

async fn start(state: AppState) -> Server {
    let app = Arc::new(RwLock::new(nomyo_server::app(state)));
    let strip_nonce = Arc::new(AtomicBool::new(false));
    let tamper = Arc::new(AtomicBool::new(false));
    let keys = Arc::new(RwLock::new(KeysRewrite::default()));
    let posts = Arc::new(AtomicUsize::new(0));
    let post_key_ids = Arc::new(Mutex::new(Vec::new()));
    let post_reply = Arc::new(Mutex::new(None));
    let (a, s, t, k, p) = (
        app.clone(),
        strip_nonce.clone(),
        tamper.clone(),
        keys.clone(),
        posts.clone(),
    );
    let (pk, pr) = (post_key_ids.clone(), post_reply.clone());
    let front = Router::new().fallback(move |req: Request| {
        let inner = a.read().unwrap().clone();
        let strip = s.load(Ordering::SeqCst);
        let flip = t.load(Ordering::SeqCst);
        let is_keys = req.uri().path() == HPKE_KEYS_PATH;
        let mut reply = None;
        if req.method() == axum::http::Method::POST {
            p.fetch_add(1, Ordering::SeqCst);
            if let Some(id) = req
                .headers()
                .get("nomyo-key-id")
                .and_then(|v| v.to_str().ok()?.parse().ok())
            {
                pk.lock().unwrap().push(id);
            }
            reply = pr.lock().unwrap().take();
        }
        let rewrite = k.read().unwrap().clone();
        if is_keys {
            if let Some(status) = rewrite.status {
                reply = Some((status, r#"{"detail":"Not Found"}"#.to_owned()));
            }
        }
        async move {
            if let Some((status, body)) = reply {
                return axum::response::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap();
            }
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
        post_key_ids,
        post_reply,
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

/// What a client recording trust in `file` and a client pinning the v1 key
/// get when they ask `s`: both must be refused with a security error; the
/// two errors.
async fn refusals(s: &Server, file: &Path) -> Vec<Error> {
    let v1_fp = shared_key(1).public_key().fingerprint();
    let mut errors = Vec::new();
    for client in [
        recording(s, file).build().unwrap(),
        builder(s).pin(v1_fp).build().unwrap(),
    ] {
        let err = client.create(&ask("m", "secret")).await.unwrap_err();
        assert!(err.is_security(), "{err:?}");
        errors.push(err);
    }
    errors
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

    // Against an unsigned list a v1 pin proves nothing, and the pinned
    // server signs its lists: refused as a stripped signature.
    s.keys.write().unwrap().signature = Some(None);
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Downgrade {
                refused: Downgrade::UnsignedKeyList,
                known_by: KnownBy::Pin,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_security());
}

/// The lines of a known-servers file that are not comments.
fn records(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
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
    assert_eq!(
        records(&file),
        [format!("{} v1={v1_fp} v2=signed", s.url)],
        "{text}"
    );
    // A v1 client of the same origin finds the key recorded.
    let v1 = recording(&s, &file).protocol(Protocol::V1).build().unwrap();
    v1.create(&ask("m", "v1 next")).await.unwrap();
    assert!(matches!(
        v1.server_key().await.unwrap().trust(),
        TrustDecision::Known { .. }
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

/// An unsigned list from a server nothing is known about (a third-party
/// EHBP server): its config is trusted on first use and recorded on the
/// origin's line (`v2=unsigned v2-key=...`).
#[tokio::test]
async fn unsigned_list_of_an_unknown_server_is_trusted_on_first_use() {
    let s = start(state(None)).await;
    s.keys.write().unwrap().signature = Some(None);
    let (_dir, file) = known_servers_file();
    let v2 = recording(&s, &file).build().unwrap();
    v2.create(&ask("m", "v2 first")).await.unwrap();
    let keys = v2.hpke_keys().await.unwrap();
    assert!(matches!(keys.trust(), TrustDecision::FirstUse { .. }));
    assert_eq!(keys.signed_by(), None);
    assert_eq!(
        records(&file),
        [format!(
            "{} v2=unsigned v2-key=x-wing:{}",
            s.url,
            keys.fingerprint()
        )]
    );
    // A second v2 client finds the recorded key.
    let again = recording(&s, &file).build().unwrap();
    again.create(&ask("m", "again")).await.unwrap();
    assert!(matches!(
        again.hpke_keys().await.unwrap().trust(),
        TrustDecision::Known { .. }
    ));
}

/// A foreign key set (a middleman's own X-Wing and X25519 keys, with key
/// ids the server does not use), encoded as a key list.
fn middleman_keys() -> (HpkeKeySet, Vec<u8>) {
    let set = HpkeKeySet::from_pairs(vec![
        ServerKeyPair::generate(90, Kem::X25519),
        ServerKeyPair::generate(91, Kem::XWing),
    ]);
    let body = set.encoded().to_vec();
    (set, body)
}

/// POSTs sealed to one of the middleman's key ids.
fn sealed_to_middleman(s: &Server) -> usize {
    s.post_key_ids
        .lock()
        .unwrap()
        .iter()
        .filter(|id| **id == 90 || **id == 91)
        .count()
}

/// Signature stripping on the first GET: the known-servers file holds the
/// server's v1 key from an earlier v1 session, and a middleman serves its
/// own unsigned X-Wing list. Before the fix the list counted as a first use
/// ("first contact ... trusting its x-wing key") and the prompt was sealed
/// to the middleman; now it is refused before anything is sent.
#[tokio::test]
async fn unsigned_key_list_for_a_server_with_a_recorded_v1_key_is_refused() {
    let s = start(state(None)).await;
    let (_dir, file) = known_servers_file();
    let v1 = recording(&s, &file).protocol(Protocol::V1).build().unwrap();
    v1.create(&ask("m", "v1 first")).await.unwrap();
    let before = std::fs::read_to_string(&file).unwrap();
    let (_set, body) = middleman_keys();
    *s.keys.write().unwrap() = KeysRewrite {
        body: Some(body),
        signature: Some(None),
        status: None,
    };
    for protocol in [Protocol::V2, Protocol::Auto] {
        let v2 = recording(&s, &file).protocol(protocol).build().unwrap();
        let err = v2.create(&ask("m", "my secret")).await.unwrap_err();
        match &err {
            Error::Downgrade {
                refused: Downgrade::UnsignedKeyList,
                known_by: KnownBy::Record { line, .. },
                ..
            } => assert_eq!(*line, 3),
            other => panic!("{protocol:?}: expected a refused downgrade, got {other:?}"),
        }
        assert!(err.is_security());
        assert!(err.to_string().contains("delete line 3 of"), "{err}");
    }
    assert_eq!(
        sealed_to_middleman(&s),
        0,
        "nothing sealed to the middleman"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "nothing recorded"
    );
}

/// The attack of the man-in-the-middle run: the known-servers file holds the
/// server's v1 key; the client's first list is the server's signed one; the
/// middleman answers a POST with the server's 422 key-config problem (or a
/// plain 400), which makes the client refetch the keys, and serves its own
/// unsigned X-Wing list. Before the fix the client took that list as a
/// first use and sealed the retried prompt to the middleman; now the refetch
/// is verified like the first fetch and refused, with or without a
/// known-servers file, and nothing is sealed to the middleman's keys.
#[tokio::test]
async fn signature_stripped_on_the_refetch_after_422_or_400_is_refused() {
    let problem = format!(
        r#"{{"type":"{}","title":"key configuration mismatch"}}"#,
        nomyo_core::v2::KEY_CONFIG_PROBLEM_TYPE
    );
    for (status, reply) in [
        (422u16, problem.clone()),
        (400, r#"{"detail":"decryption failed"}"#.to_owned()),
    ] {
        let s = start(state(None)).await;
        let (_dir, file) = known_servers_file();
        recording(&s, &file)
            .protocol(Protocol::V1)
            .build()
            .unwrap()
            .create(&ask("m", "v1 first"))
            .await
            .unwrap();
        let with_file = recording(&s, &file).build().unwrap();
        let without_file = builder(&s).build().unwrap();
        for client in [&with_file, &without_file] {
            client.create(&ask("m", "before")).await.unwrap();
        }
        // The server's own key ids are random and may be 90 or 91: count
        // only what is sealed from here on.
        let sealed_before = sealed_to_middleman(&s);
        let (_set, body) = middleman_keys();
        for (client, from_record) in [(&with_file, true), (&without_file, false)] {
            *s.keys.write().unwrap() = KeysRewrite {
                body: Some(body.clone()),
                signature: Some(None),
                status: None,
            };
            *s.post_reply.lock().unwrap() = Some((status, reply.clone()));
            let err = client.create(&ask("m", "my secret")).await.unwrap_err();
            match (&err, from_record) {
                (
                    Error::Downgrade {
                        refused: Downgrade::UnsignedKeyList,
                        known_by: KnownBy::Record { .. },
                        ..
                    },
                    true,
                )
                | (
                    Error::Downgrade {
                        refused: Downgrade::UnsignedKeyList,
                        known_by: KnownBy::SignedListSeen,
                        ..
                    },
                    false,
                ) => {}
                _ => panic!("after {status}: expected a refused downgrade, got {err:?}"),
            }
            assert!(err.is_security());
            *s.keys.write().unwrap() = KeysRewrite::default();
        }
        assert_eq!(
            sealed_to_middleman(&s) - sealed_before,
            0,
            "after {status}: nothing sealed to the middleman"
        );
        assert!(
            records(&file)[0].ends_with("v2=signed"),
            "{:?}",
            records(&file)
        );
    }
}

/// A client without pins or a known-servers file (nothing vouches for any
/// key) that has verified a list signed by the server: the middleman
/// answers as a server of its own (its own RSA key at /pki/public_key, its
/// own HPKE keys under the same ids, its own signature). The cached keys
/// get 400 and the refetched list, signed by another key, is refused within
/// the session; before, the new signer was accepted as "unverified".
#[tokio::test]
async fn another_signer_within_a_session_is_refused_without_a_record() {
    let s = start(state(None)).await;
    let client = builder(&s).build().unwrap();
    client.create(&ask("m", "before")).await.unwrap();
    *s.app.write().unwrap() = nomyo_server::app(state_signed_by(3, None));
    let posts = s.posts.load(Ordering::SeqCst);
    let err = client.create(&ask("m", "my secret")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeysSignature {
                reason: KeysSignatureError::WrongKey { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        s.posts.load(Ordering::SeqCst),
        posts + 1,
        "only the request sealed to the genuine keys was sent"
    );
}

/// A key list the server signed before a rotation (its window has passed),
/// replayed by someone who kept it (and may since have learnt its private
/// keys): refused as expired, through a pin and through the known-servers
/// file alike, and nothing is sent.
#[tokio::test]
async fn a_key_list_captured_before_a_rotation_is_refused_as_expired() {
    let s = start(state(None)).await;
    let body = reqwest::get(format!("{}{HPKE_KEYS_PATH}", s.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Signed by the server's own key for a day that ended a day ago.
    let past = nomyo_core::keys_signature::Validity::new(now - 2 * 86_400, now - 86_400).unwrap();
    let old = KeysSignature::sign(&shared_key(1), &body, past)
        .unwrap()
        .to_header_value();
    s.keys.write().unwrap().signature = Some(Some(old));
    let (_dir, file) = known_servers_file();
    for err in refusals(&s, &file).await {
        assert!(
            matches!(
                err,
                Error::KeysSignature {
                    reason: KeysSignatureError::Expired { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("expired"), "{err}");
    }
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
}

/// Protocol auto and a server recorded as speaking v2 whose key list now
/// answers 404 (a middleman hiding it to force v1): refused with the reason
/// and the line to delete; protocol v1 chosen explicitly still works.
#[tokio::test]
async fn auto_refuses_to_fall_back_to_v1_for_a_server_known_to_speak_v2() {
    let s = start(state(None)).await;
    let (_dir, file) = known_servers_file();
    let first = recording(&s, &file)
        .protocol(Protocol::Auto)
        .build()
        .unwrap();
    assert!(first.uses_v2().await.unwrap());
    s.keys.write().unwrap().status = Some(404);
    let auto = recording(&s, &file)
        .protocol(Protocol::Auto)
        .build()
        .unwrap();
    let err = auto.create(&ask("m", "my secret")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Downgrade {
                refused: Downgrade::NoV2Keys,
                known_by: KnownBy::Record { line: 3, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_security());
    let text = err.to_string();
    assert!(
        text.contains("--protocol v1") && text.contains("delete line 3"),
        "{text}"
    );
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
    let v1 = recording(&s, &file).protocol(Protocol::V1).build().unwrap();
    v1.create(&ask("m", "explicit v1")).await.unwrap();
}

/// Protocol auto against a server without v2 keys (first contact): the
/// standard tier goes over v1, `high` and `maximum` never do unless v1 was
/// chosen explicitly. Auto is the builder's default.
#[tokio::test]
async fn auto_never_sends_high_or_maximum_over_v1() {
    assert_eq!(Protocol::default(), Protocol::Auto);
    let s = start(state(None)).await;
    s.keys.write().unwrap().status = Some(404);
    for tier in [SecurityTier::High, SecurityTier::Maximum] {
        let auto = common::local_client(&s.url)
            .protocol(Protocol::default())
            .security_tier(tier)
            .build()
            .unwrap();
        assert!(!auto.uses_v2().await.unwrap());
        let err = auto.create(&ask("m", "secret")).await.unwrap_err();
        assert!(matches!(err, Error::TierNeedsV2 { .. }), "{err:?}");
        assert!(err.is_security());
        assert!(err.to_string().contains("--protocol v1"), "{err}");
    }
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
    let standard = common::local_client(&s.url)
        .protocol(Protocol::default())
        .build()
        .unwrap();
    standard.create(&ask("m", "plain")).await.unwrap();
    let explicit = common::local_client(&s.url)
        .protocol(Protocol::V1)
        .security_tier(SecurityTier::High)
        .build()
        .unwrap();
    let sent = explicit.create(&ask("m", "explicit")).await;
    assert!(!matches!(sent, Err(Error::TierNeedsV2 { .. })), "{sent:?}");
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
        .backend("words", words_backend())
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
        .contains(" v2=unsigned v2-key=x-wing:"));
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
    for err in refusals(&s, &file).await {
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
    assert_eq!(records(&file), [format!("{} v1={v1_fp}", s.url)]);
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
