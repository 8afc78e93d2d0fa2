//! The client's protocol v2 (EHBP) against the real server
//! (`nomyo_server::app`) over a socket on 127.0.0.1: both suites, streaming
//! (complete and cut), a stripped `Ehbp-Response-Nonce`, a 422 after a key
//! change, pins, `Protocol::Auto`, and the trust of key lists signed by the
//! server's v1 key (`Nomyo-Keys-Signature`): rotations accepted without a
//! record, tampered, foreign-signed and expired lists refused, unsigned
//! lists refused for a server known to sign (signature stripping, also on
//! the refetch after a 422 or 400) and trusted on first use otherwise, and
//! protocol auto's downgrade guards. What the tests share: the server's
//! state, the server behind a front that can swap its app or rewrite its
//! answers, and the clients of it.
#![allow(clippy::unwrap_used)]

mod auto;
mod downgrade;
mod exchange;
mod rotation;
mod signatures;
mod trust;

use crate::common::{self, shared_key};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::Request;
use axum::Router;
use nomyo_client::{ChatMessage, ChatRequest, Client, ClientBuilder, KnownServers, Protocol};
use nomyo_core::keys::PrivateKey;
use nomyo_server::hpke_keys::HpkeKeySet;
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

/// The lines of a known-servers file that are not comments.
fn records(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}
