//! Attacks on the protocol: each test is
//! named after the attack and checks that it fails closed, driving the real
//! server (`nomyo_server::app`) over 127.0.0.1 sockets, with `nomyo_core` or
//! `nomyo-client` as the client and, where the attacker sits in the middle, a
//! tampering proxy in front of the server.
//!
//! Where protocol v1 cannot defend (docs/PROTOCOL.md §3.9),
//! the test asserts what really happens and its name ends in `_v1_weakness`;
//! SECURITY.md says the same.
//!
//! What the tests share (requests, states, the tampering proxy) lives
//! here; the tests are grouped by attack: [`downgrade`], [`replay`],
//! [`answers`] (swapped, forged and stripped answers), [`key_change`],
//! [`tier_header`] and [`api_keys`].

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use common::*;
use nomyo_client::{
    ChatMessage, ChatRequest, Client, ClientBuilder, Error, KnownServers, Protocol, RequestOptions,
};
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1::{self, Package};
use nomyo_core::v2::keys::{Kem, KeyConfig, ServerKeyPair};
use nomyo_core::SecurityTier;
use nomyo_server::hpke_keys::HpkeKeySet;
use nomyo_server::policy::ApiKeys;
use nomyo_server::AppState;
use serde_json::{json, Value};
use tower::ServiceExt;

mod answers;
mod api_keys;
mod downgrade;
mod key_change;
mod replay;
mod tier_header;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The real server on 127.0.0.1:0; returns its base URL.
async fn serve(state: AppState) -> (String, SocketAddr) {
    let (addr, stop, _task) = serve_real(state, None).await;
    // Keep the server for the whole test process.
    std::mem::forget(stop);
    (format!("http://{addr}"), addr)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// The state used by most tests, with its echo backend (to count calls).
fn echo_state(models: &[&str]) -> (nomyo_server::state::AppStateBuilder, Arc<Double>) {
    let backend = echo_backend(models);
    let b = AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
        .backend("echo", backend.clone());
    (b, backend)
}

/// Sends a v1 request body with the given headers.
async fn post_v1(
    base: &str,
    id: &str,
    public_key_header: &str,
    tier: Option<&str>,
    body: Vec<u8>,
) -> (u16, HeaderMap, Vec<u8>) {
    let r = http()
        .post(format!("{base}/v1/chat/secure_completion"))
        .header("content-type", "application/octet-stream")
        .header("x-payload-id", id)
        .header("x-public-key", public_key_header)
        .body(body);
    send_with_tier(r, tier).await
}

/// Sends `r` with `X-Security-Tier: tier` if given; returns the answer's
/// status, headers and body.
async fn send_with_tier(
    mut r: reqwest::RequestBuilder,
    tier: Option<&str>,
) -> (u16, HeaderMap, Vec<u8>) {
    if let Some(t) = tier {
        r = r.header("x-security-tier", t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

/// Parses, mutates and re-serialises a v1 package.
fn mutate_package(body: &[u8], f: impl Fn(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(body).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// A second client key pair (another client, or an attacker).
fn other_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate(RsaBits::B2048).unwrap())
}

fn shared(key: &'static PrivateKey) -> Arc<PrivateKey> {
    Arc::new(PrivateKey::from_pem(&key.to_pkcs8_pem(None).unwrap(), None, "test").unwrap())
}

async fn key_configs(base: &str) -> Vec<KeyConfig> {
    let b = http()
        .get(format!("{base}/.well-known/hpke-keys"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    KeyConfig::parse_list(&b).unwrap()
}

async fn post_v2(
    base: &str,
    enc_hex: &str,
    key_id: Option<&str>,
    tier: Option<&str>,
    body: Vec<u8>,
) -> (u16, HeaderMap, Vec<u8>) {
    let mut r = http()
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("ehbp-encapsulated-key", enc_hex)
        .body(body);
    if let Some(k) = key_id {
        r = r.header("nomyo-key-id", k);
    }
    send_with_tier(r, tier).await
}

// ---------------------------------------------------------------------------
// The tampering proxy: an attacker between client and server
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Mode {
    /// Forward unchanged.
    Pass,
    /// Remove `Ehbp-Response-Nonce` from every answer.
    StripNonce,
    /// Answer each chat request with the answer to the previous one (v1:
    /// with the outer `payload_id` rewritten to the current request's id).
    SwapAnswers,
    /// Set `X-Security-Tier` on every chat request to this value.
    RewriteTier(&'static str),
    /// Set the answer package's `version` to "0.9".
    DowngradeV1Answer,
    /// Do not forward v1 chat requests: answer with a completion sealed to
    /// the `X-Public-Key` the client sent (the proxy holds no server key).
    ForgeV1Answer,
}

struct Proxy {
    url: String,
    app: RwLock<Router>,
    mode: Mutex<Mode>,
    /// Chat requests that reached the server.
    forwarded: AtomicUsize,
    /// The previous chat answer (status, headers, body).
    last: Mutex<Option<(StatusCode, HeaderMap, bytes::Bytes)>>,
}

impl Proxy {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn swap_server(&self, state: AppState) {
        *self.app.write().unwrap() = nomyo_server::app(state);
    }
    /// A client through the proxy speaking v1 unless the test says otherwise.
    fn client(&self) -> ClientBuilder {
        Client::builder()
            .protocol(Protocol::V1)
            .base_url(&self.url)
            .allow_http(true)
            .max_retries(0)
            .client_key(shared(client_key()))
            .known_servers(KnownServers::Off)
    }
}

fn is_chat(req: &Request) -> bool {
    req.method() == axum::http::Method::POST
        && matches!(
            req.uri().path(),
            "/v1/chat/secure_completion" | "/v1/chat/completions"
        )
}

async fn front(State(p): State<Arc<Proxy>>, mut req: Request) -> Response {
    let mode = p.mode.lock().unwrap().clone();
    let chat = is_chat(&req);
    let v1_chat = chat && req.uri().path() == "/v1/chat/secure_completion";
    if chat {
        if let Mode::RewriteTier(t) = &mode {
            req.headers_mut()
                .insert("x-security-tier", HeaderValue::from_static(t));
        }
    }
    let id = req
        .headers()
        .get("x-payload-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if v1_chat && mode == Mode::ForgeV1Answer {
        let pk =
            v1::decode_public_key_header(req.headers()["x-public-key"].to_str().unwrap()).unwrap();
        let mut answer = completion("m", "forged by the man in the middle");
        answer["_metadata"] = json!({"payload_id": id, "is_encrypted": true,
            "security_tier": "maximum"});
        let mut pkg = v1::seal(&serde_json::to_vec(&answer).unwrap(), &pk).unwrap();
        pkg.payload_id = Some(id);
        return Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(pkg.to_json()))
            .unwrap();
    }
    if chat {
        p.forwarded.fetch_add(1, Ordering::SeqCst);
    }
    let inner = p.app.read().unwrap().clone();
    let resp = inner.oneshot(req).await.unwrap();
    if !chat {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let mut body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    match mode {
        Mode::StripNonce => {
            parts.headers.remove("ehbp-response-nonce");
        }
        Mode::SwapAnswers => {
            let now = (parts.status, parts.headers.clone(), body.clone());
            if let Some((s, h, b)) = p.last.lock().unwrap().replace(now) {
                parts.status = s;
                parts.headers = h;
                body = b;
                if v1_chat {
                    body = mutate_package(&body, |v| v["payload_id"] = json!(id)).into();
                }
                parts.headers.remove("content-length");
            }
        }
        Mode::DowngradeV1Answer if v1_chat => {
            body = mutate_package(&body, |v| v["version"] = json!("0.9")).into();
            parts.headers.remove("content-length");
        }
        _ => {}
    }
    Response::from_parts(parts, Body::from(body))
}

async fn start_proxy(state: AppState) -> Arc<Proxy> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let p = Arc::new(Proxy {
        url: format!("http://{addr}"),
        app: RwLock::new(nomyo_server::app(state)),
        mode: Mutex::new(Mode::Pass),
        forwarded: AtomicUsize::new(0),
        last: Mutex::new(None),
    });
    let front = Router::new().fallback(front).with_state(p.clone());
    tokio::spawn(async move { axum::serve(listener, front).await.unwrap() });
    p
}

/// A proxy in `mode` in front of a server for model `m`.
async fn proxy_in(mode: Mode) -> Arc<Proxy> {
    let p = start_proxy(state_with(&["m"]).build().unwrap()).await;
    p.set(mode);
    p
}

fn ask(prompt: &str) -> ChatRequest {
    ask_model("m", prompt)
}

fn ask_model(model: &str, prompt: &str) -> ChatRequest {
    ChatRequest::new(model).message(ChatMessage::user(prompt))
}
