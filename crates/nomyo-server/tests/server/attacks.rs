//! Attacks on the protocol: each test is
//! named after the attack and checks that it fails closed, driving the real
//! server (`nomyo_server::app`) over 127.0.0.1 sockets, with `nomyo_core` or
//! `nomyo-client` as the client and, where the attacker sits in the middle, a
//! tampering proxy in front of the server.
//!
//! Where protocol v1 cannot defend (docs/PROTOCOL.md §3.9),
//! the test asserts what really happens and its name ends in `_v1_weakness`;
//! SECURITY.md says the same.

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

// ---------------------------------------------------------------------------
// Downgrade
// ---------------------------------------------------------------------------

/// A v1 package whose `version`, `algorithm`, `key_algorithm` or
/// `payload_algorithm` was changed in transit is refused with 400 before any
/// decryption or backend call; an answer whose `version` was changed is
/// refused by the client.
#[tokio::test]
async fn downgrade_v1_package_fields_are_refused() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let fields: &[(&str, &str)] = &[
        ("version", "0.9"),
        ("version", "1.1"),
        ("version", ""),
        ("algorithm", "hybrid-aes128-rsa2048"),
        ("algorithm", "none"),
        ("key_algorithm", "RSA-OAEP-SHA1"),
        ("key_algorithm", "RSA-PKCS1-v1_5"),
        ("payload_algorithm", "AES-128-GCM"),
        ("payload_algorithm", "AES-256-CBC"),
    ];
    for (field, value) in fields {
        let s = seal_json(&chat("m", "downgrade me"));
        let body = mutate_package(&s.body, |v| v[*field] = json!(value));
        let (status, _, resp) = post_v1(&base, &s.id, &s.public_key_header, None, body).await;
        assert_eq!(
            status,
            400,
            "{field}={value}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert!(!detail(&resp).is_empty());
    }
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );

    // The answer side: the client checks the package before decrypting.
    let p = proxy_in(Mode::DowngradeV1Answer).await;
    let client = p.client().build().unwrap();
    let err = client.create(&ask("hi")).await.unwrap_err();
    assert!(matches!(err, Error::Security(_)), "{err:?}");
}

/// v2 suite downgrade: an `enc` of one KEM presented under the other suite's
/// key id, an `enc` of no suite's length, and an X25519 request on a tier
/// that requires the post-quantum suite are all refused before the backend.
#[tokio::test]
async fn downgrade_v2_suite_and_kem_mismatch_is_refused() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let configs = key_configs(&base).await;
    let x = kem_config(&configs, Kem::X25519);
    let xw = kem_config(&configs, Kem::XWing);

    // X-Wing enc (1120 bytes) claimed to be for the X25519 key and vice versa.
    for (sealed_to, claimed) in [(&xw, &x), (&x, &xw)] {
        let r = seal_v2(sealed_to, &chat("m", "downgrade"));
        let id = claimed.key_id.to_string();
        let (s, h, b) = post_v2(&base, &r.enc_hex, Some(&id), None, r.body()).await;
        assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
        assert!(
            detail(&b).contains("Ehbp-Encapsulated-Key"),
            "{}",
            detail(&b)
        );
        assert!(h.get("ehbp-response-nonce").is_none());
    }
    // An X-Wing enc cut to 32 bytes (what an X25519 enc looks like): the
    // X25519 key cannot open it.
    let r = seal_v2(&xw, &chat("m", "downgrade"));
    let x_id = x.key_id.to_string();
    let (s, _, _) = post_v2(&base, &r.enc_hex[..64], Some(&x_id), None, r.body()).await;
    assert_eq!(s, 400);
    // An enc of neither length.
    let (s, _, _) = post_v2(&base, &r.enc_hex[..100], None, None, r.body()).await;
    assert_eq!(s, 400);
    // X25519 on `maximum`, which requires X-Wing by default.
    let r = seal_v2(&x, &chat("m", "downgrade"));
    let (s, _, b) = post_v2(&base, &r.enc_hex, None, Some("maximum"), r.body()).await;
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&b));
    assert!(
        detail(&b).to_lowercase().contains("post-quantum"),
        "{}",
        detail(&b)
    );
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );
}

// ---------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------

/// A captured v1 request sent again: the same `X-Payload-ID` → 409; the
/// same package under a fresh id → 409. The backend runs once.
#[tokio::test]
async fn replay_v1_captured_request_is_409() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("m", "once"));
    let (st, _, _) = post_v1(&base, &s.id, &s.public_key_header, None, s.body.clone()).await;
    assert_eq!(st, 200);
    let (st, _, b) = post_v1(&base, &s.id, &s.public_key_header, None, s.body.clone()).await;
    assert_eq!(st, 409);
    assert!(detail(&b).contains("replayed"));
    let (st, _, _) = post_v1(&base, &payload_id(), &s.public_key_header, None, s.body).await;
    assert_eq!(st, 409);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
}

/// A captured v2 request sent again (same `enc`, same body) → 409; the same
/// `enc` with other chunks sealed in the same context → 409.
#[tokio::test]
async fn replay_v2_captured_request_is_409() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let configs = key_configs(&base).await;
    for kem in [Kem::X25519, Kem::XWing] {
        let mut r = seal_v2(&kem_config(&configs, kem), &chat("m", "once"));
        let (s, h, b) = post_v2(&base, &r.enc_hex, None, None, r.body()).await;
        assert_eq!(s, 200);
        r.try_open(&h, &b).unwrap();
        let (s, h, b) = post_v2(&base, &r.enc_hex, None, None, r.body()).await;
        assert_eq!(s, 409, "{kem}");
        assert!(detail(&b).contains("replayed"));
        assert!(h.get("ehbp-response-nonce").is_none());
        let more = r
            .sealer
            .seal_chunk(&serde_json::to_vec(&chat("m", "again")).unwrap())
            .unwrap();
        let (s, _, _) = post_v2(&base, &r.enc_hex, None, None, more).await;
        assert_eq!(s, 409, "{kem}");
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// Response swapping
// ---------------------------------------------------------------------------

/// v2 binds each answer to its request: two concurrent requests, and B's
/// answer cannot be opened with A's context (nor A's with B's); through a
/// swapping proxy the client refuses the other request's answer.
#[tokio::test]
async fn response_swap_v2_is_refused() {
    let (base, _) = serve(state_with(&["m"]).build().unwrap()).await;
    let configs = key_configs(&base).await;
    for kem in [Kem::X25519, Kem::XWing] {
        let cfg = kem_config(&configs, kem);
        let a = seal_v2(&cfg, &chat("m", "request A"));
        let b = seal_v2(&cfg, &chat("m", "request B"));
        let (ra, rb) = tokio::join!(
            post_v2(&base, &a.enc_hex, None, None, a.body()),
            post_v2(&base, &b.enc_hex, None, None, b.body())
        );
        assert_eq!((ra.0, rb.0), (200, 200));
        assert!(a.try_open(&ra.1, &ra.2).is_ok());
        assert!(b.try_open(&rb.1, &rb.2).is_ok());
        assert!(a.try_open(&rb.1, &rb.2).is_err(), "{kem}: B opened with A");
        assert!(b.try_open(&ra.1, &ra.2).is_err(), "{kem}: A opened with B");
        // A's body under B's nonce header: still refused.
        assert!(a.try_open(&rb.1, &ra.2).is_err());
    }

    let p = proxy_in(Mode::SwapAnswers).await;
    let client = p.client().protocol(Protocol::V2).build().unwrap();
    client.create(&ask("first")).await.unwrap();
    let err = client.create(&ask("second")).await.unwrap_err();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
}

/// v1: an answer sealed to another client's key cannot be opened; the answer
/// to the same client's earlier request (outer `payload_id` rewritten) is
/// refused by the check of the encrypted `_metadata.payload_id`.
#[tokio::test]
async fn response_swap_v1_is_refused() {
    let p = proxy_in(Mode::SwapAnswers).await;
    let me = p.client().build().unwrap();
    me.create(&ask("first")).await.unwrap();
    let err = me.create(&ask("second")).await.unwrap_err();
    assert!(matches!(err, Error::ResponseMismatch(_)), "{err:?}");

    // The next answer the proxy holds is `me`'s; another client gets it.
    let other = p.client().client_key(shared(other_key())).build().unwrap();
    let err = other.create(&ask("third")).await.unwrap_err();
    assert!(matches!(err, Error::Security(_)), "{err:?}");
    assert!(err.is_security());
}

/// v1 has no response authentication: anyone who sees the request's
/// `X-Public-Key` (it travels in clear) can seal a complete answer to it,
/// and the client accepts it. Only TLS stops this in v1 (SECURITY.md); v2
/// answers are keyed by the request's HPKE secret (see
/// `response_swap_v2_is_refused`).
#[tokio::test]
async fn forged_answer_sealed_to_the_sent_public_key_is_accepted_v1_weakness() {
    let p = proxy_in(Mode::ForgeV1Answer).await;
    let client = p.client().build().unwrap();
    let answer = client.create(&ask("hi")).await.unwrap();
    assert_eq!(answer.text(), Some("forged by the man in the middle"));
    assert_eq!(
        p.forwarded.load(Ordering::SeqCst),
        0,
        "the server never saw it"
    );
}

// ---------------------------------------------------------------------------
// Stripped response nonce
// ---------------------------------------------------------------------------

/// A 2xx v2 answer without `Ehbp-Response-Nonce` is treated as unencrypted
/// and refused by the client, plain and streamed.
#[tokio::test]
async fn stripped_response_nonce_fails_closed() {
    let p = proxy_in(Mode::StripNonce).await;
    let client = p.client().protocol(Protocol::V2).build().unwrap();
    let err = client.create(&ask("hello")).await.unwrap_err();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
    assert!(err.to_string().contains("MISSING_RESPONSE_NONCE"), "{err}");
    let err = client.create_stream(&ask("hello")).await.err().unwrap();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
}

// ---------------------------------------------------------------------------
// Substituted X-Public-Key with a replayed body
// ---------------------------------------------------------------------------

/// An attacker replays a captured v1 body with their own `X-Public-Key` and
/// a fresh `X-Payload-ID` after the original was served: 409 (the package
/// itself is remembered for the replay window), nothing for the attacker.
#[tokio::test]
async fn substituted_public_key_with_replayed_body_is_409() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("m", "victim's prompt"));
    let (st, _, _) = post_v1(&base, &s.id, &s.public_key_header, None, s.body.clone()).await;
    assert_eq!(st, 200);
    let attacker = v1::encode_public_key_header(&other_key().public_key().to_pem());
    let (st, _, b) = post_v1(&base, &payload_id(), &attacker, None, s.body.clone()).await;
    assert_eq!(st, 409, "{}", String::from_utf8_lossy(&b));
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
}

/// The same attack when the attacker's copy arrives first (they hold the
/// victim's request back): v1 does not bind the answer key to the package,
/// so the server answers the attacker, who can read it. The victim's own
/// request then gets 409. docs/PROTOCOL.md §3.9; only TLS
/// stops this. In v2 there is no key header to substitute: the replayed
/// body is answered under the victim's HPKE context, which the attacker
/// cannot open.
#[tokio::test]
async fn substituted_public_key_replay_winning_the_race_reads_the_answer_v1_weakness() {
    let (b, _) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("m", "victim's prompt"));
    let attacker = v1::encode_public_key_header(&other_key().public_key().to_pem());
    let (st, _, body) = post_v1(&base, &payload_id(), &attacker, None, s.body.clone()).await;
    assert_eq!(st, 200);
    let pkg = Package::from_json(&body).unwrap();
    let plain = v1::open(&pkg, other_key()).unwrap();
    let v: Value = serde_json::from_slice(plain.expose_secret()).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "echo:victim's prompt"
    );
    let (st, _, _) = post_v1(&base, &s.id, &s.public_key_header, None, s.body).await;
    assert_eq!(st, 409, "the victim notices: their request is a replay now");

    // v2: the attacker relays the victim's body first; the answer is sealed
    // to the victim's context. The attacker's own context cannot open it.
    let configs = key_configs(&base).await;
    let victim = seal_v2(&kem_config(&configs, Kem::XWing), &chat("m", "victim v2"));
    let attacker = seal_v2(&kem_config(&configs, Kem::XWing), &chat("m", "attacker"));
    let (st, h, b) = post_v2(&base, &victim.enc_hex, None, None, victim.body()).await;
    assert_eq!(st, 200);
    assert!(attacker.try_open(&h, &b).is_err());
    assert!(victim.try_open(&h, &b).is_ok());
}

// ---------------------------------------------------------------------------
// Server key change mid-session
// ---------------------------------------------------------------------------

/// Clients that recorded the server's keys (trust on first use, a
/// known-servers file), then the server behind the same origin presents
/// other keys: RSA for v1, HPKE with the given key ids for v2.
struct KeyChange {
    proxy: Arc<Proxy>,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    cached: [Client; 2],
}

/// A client through `proxy` speaking `proto` that records the server's keys
/// in the known-servers file `file`.
fn recording_client(proxy: &Proxy, file: &std::path::Path, proto: Protocol) -> Client {
    proxy
        .client()
        .protocol(proto)
        .known_servers(KnownServers::File(file.to_owned()))
        .build()
        .unwrap()
}

async fn key_change(hpke_ids: (u8, u8)) -> KeyChange {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_servers");
    let proxy = start_proxy(state_with(&["m"]).build().unwrap()).await;
    let cached = [
        recording_client(&proxy, &file, Protocol::V1),
        recording_client(&proxy, &file, Protocol::V2),
    ];
    for c in &cached {
        c.create(&ask("before")).await.unwrap();
    }
    let new_hpke = HpkeKeySet::from_pairs(vec![
        ServerKeyPair::generate(hpke_ids.0, Kem::X25519),
        ServerKeyPair::generate(hpke_ids.1, Kem::XWing),
    ]);
    proxy.swap_server(
        AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(
            PrivateKey::generate(RsaBits::B2048).unwrap(),
        ))
        .backend("echo", echo_backend(&["m"]))
        .hpke_keys(new_hpke)
        .build()
        .unwrap(),
    );
    KeyChange {
        proxy,
        _dir: dir,
        file,
        cached,
    }
}

impl KeyChange {
    /// Both clients that cached the old keys refuse their next request as a
    /// changed key.
    async fn cached_clients_refuse(&self) {
        for (c, proto) in self.cached.iter().zip(["v1", "v2"]) {
            let err = c.create(&ask("after")).await.unwrap_err();
            assert!(
                matches!(err, Error::ServerKeyChanged { .. }),
                "{proto}: {err:?}"
            );
        }
    }
}

/// The server key changes mid-session (new RSA key; new HPKE keys under new
/// key ids, as a rotation publishes them): new v1 and v2 clients refuse with
/// `Error::ServerKeyChanged` before sending anything, and clients that cached
/// the old keys refuse at their next request (v1 after the 400, v2 after the
/// 422 that makes it refetch the keys).
#[tokio::test]
async fn server_key_change_mid_session_is_refused() {
    let k = key_change((7, 8)).await;
    let before = k.proxy.forwarded.load(Ordering::SeqCst);
    for proto in [Protocol::V1, Protocol::V2] {
        let c = recording_client(&k.proxy, &k.file, proto);
        let err = c.create(&ask("after")).await.unwrap_err();
        assert!(
            matches!(err, Error::ServerKeyChanged { .. }),
            "{proto:?}: {err:?}"
        );
        assert!(err.is_security());
    }
    assert_eq!(
        k.proxy.forwarded.load(Ordering::SeqCst),
        before,
        "nothing sent to a changed key"
    );
    k.cached_clients_refuse().await;
}

/// A server restarted with freshly generated HPKE keys reuses key ids 0 and
/// 1 (`HpkeKeySet::generate`). A v2 client that cached the old configs names
/// key id 1; the server cannot open the request and answers an unsealed 400
/// "decryption failed" (correct: with a key id it holds, that is what
/// tampering looks like). The client then refetches the key list once, finds
/// it signed by a different server key, and refuses it as a changed key.
#[tokio::test]
async fn server_key_change_with_reused_key_ids_is_noticed_by_a_cached_v2_client() {
    let k = key_change((0, 1)).await;
    let err = k.cached[1].create(&ask("after")).await.unwrap_err();
    assert!(matches!(err, Error::ServerKeyChanged { .. }), "{err:?}");
    assert!(err.is_security());
}

/// Both cached clients (v1 and v2) fail closed after the key change: an
/// error, never an answer, and nothing decrypted under the wrong key.
#[tokio::test]
async fn server_key_change_with_reused_key_ids_fails_closed() {
    let k = key_change((0, 1)).await;
    k.cached_clients_refuse().await;
}

// ---------------------------------------------------------------------------
// Tier header tampering
// ---------------------------------------------------------------------------

/// `public` is allowed on every tier, `secret` only on `maximum`.
fn tiered_state() -> (nomyo_server::state::AppStateBuilder, Arc<Double>) {
    let (b, backend) = echo_state(&["public", "secret"]);
    let b = b
        .tier(SecurityTier::Standard, allow_models(&["public"]))
        .tier(SecurityTier::High, allow_models(&["public"]))
        .tier(SecurityTier::Maximum, allow_models(&["public", "secret"]));
    (b, backend)
}

/// A proxy in front of [`tiered_state`] that rewrites `X-Security-Tier` on
/// every chat request to `standard`.
async fn tier_downgrading_proxy() -> Arc<Proxy> {
    let (b, _) = tiered_state();
    let p = start_proxy(b.build().unwrap()).await;
    p.set(Mode::RewriteTier("standard"));
    p
}

/// Request options asking for the `maximum` tier.
fn maximum() -> RequestOptions {
    RequestOptions::default().security_tier(SecurityTier::Maximum)
}

/// The errors a v1 and a v2 client get through `p` for a one-message
/// request to `model` that asks for `maximum`.
async fn downgraded(p: &Proxy, model: &str) -> Vec<(Protocol, Error)> {
    let mut errors = Vec::new();
    for proto in [Protocol::V1, Protocol::V2] {
        let c = p.client().protocol(proto).build().unwrap();
        let err = c.create_with(&ask_model(model, "x"), &maximum()).await;
        errors.push((proto, err.unwrap_err()));
    }
    errors
}

/// `X-Security-Tier` is a plain header (TLS protects it). Changed in
/// transit, it never gets a model served on a tier whose policy does not
/// allow it (403), an invalid value is 400, and on v2 a raised tier that
/// requires post-quantum refuses an X25519 request (403). Nothing reaches
/// the backend.
#[tokio::test]
async fn tier_header_tampering_never_grants_a_tier_the_policy_refuses() {
    let (b, backend) = tiered_state();
    let (base, _) = serve(b.build().unwrap()).await;
    for (model, tier, want) in [
        ("secret", "standard", 403),
        ("secret", "high", 403),
        ("public", "Maximum", 400),
        ("public", "ultra", 400),
    ] {
        let s = seal_json(&chat(model, "x"));
        let (st, _, b) = post_v1(&base, &s.id, &s.public_key_header, Some(tier), s.body).await;
        assert_eq!(
            st,
            want,
            "v1 {model} on {tier:?}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    let configs = key_configs(&base).await;
    let x = kem_config(&configs, Kem::X25519);
    for (model, tier, want) in [
        ("secret", "high", 403),
        ("public", "maximum", 403),
        ("public", "ultra", 400),
    ] {
        let r = seal_v2(&x, &chat(model, "x"));
        let (st, _, b) = post_v2(&base, &r.enc_hex, None, Some(tier), r.body()).await;
        assert_eq!(
            st,
            want,
            "v2 {model} on {tier}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
}

/// A man in the middle lowers `X-Security-Tier` from `maximum` to
/// `standard` for a model both tiers allow: the server applies `standard`
/// and says so in the sealed `_metadata.security_tier` (authenticated in v2),
/// which the client reads and refuses (next test); a model only `maximum`
/// allows is refused by the server, never served lower.
#[tokio::test]
async fn tier_header_downgrade_is_visible_in_the_sealed_metadata() {
    let p = tier_downgrading_proxy().await;
    for (proto, err) in downgraded(&p, "public").await {
        assert!(
            matches!(
                err,
                Error::TierDowngrade {
                    served: Some(SecurityTier::Standard),
                    ..
                }
            ),
            "{proto:?}: {err:?}"
        );
    }
    for (proto, err) in downgraded(&p, "secret").await {
        assert!(matches!(err, Error::Forbidden(_)), "{proto:?}: {err:?}");
    }
}

/// What the client does with the downgrade above: the sealed
/// `_metadata.security_tier` says `standard`, the request asked for
/// `maximum`, so the answer is refused as a security failure.
#[tokio::test]
async fn tier_header_downgrade_is_refused_by_the_client() {
    let p = tier_downgrading_proxy().await;
    for (proto, err) in downgraded(&p, "public").await {
        assert!(
            matches!(
                err,
                Error::TierDowngrade {
                    requested: SecurityTier::Maximum,
                    served: Some(SecurityTier::Standard)
                }
            ),
            "{proto:?}: {err:?}"
        );
        assert!(err.is_security());
    }
}

/// The same downgrade on a v2 stream: the first chunk's sealed `_metadata`
/// names the lower tier, so the stream yields the security error and no text.
#[tokio::test]
async fn tier_header_downgrade_on_a_stream_is_refused_by_the_client() {
    let p = tier_downgrading_proxy().await;
    let c = p.client().protocol(Protocol::V2).build().unwrap();
    let mut stream = c
        .create_stream_with(&ask_model("public", "x"), &maximum())
        .await
        .unwrap();
    let first = futures::StreamExt::next(&mut stream).await.unwrap();
    let err = first.unwrap_err();
    assert!(matches!(err, Error::TierDowngrade { .. }), "{err:?}");
    assert!(futures::StreamExt::next(&mut stream).await.is_none());
}

// ---------------------------------------------------------------------------
// API key timing
// ---------------------------------------------------------------------------

/// A sealed v1 request for model `m` with `Authorization: Bearer {key}`.
async fn post_v1_with_key(base: &str, key: &str) -> reqwest::Response {
    let s = seal_json(&chat("m", "x"));
    http()
        .post(format!("{base}/v1/chat/secure_completion"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-payload-id", &s.id)
        .header("x-public-key", &s.public_key_header)
        .body(s.body)
        .send()
        .await
        .unwrap()
}

/// Wrong API keys sharing 0, 1, half, all-but-one characters with a real
/// key (and the key with a character added or removed) all get the same 401
/// with byte-identical bodies, on both protocols: nothing in the answer
/// tells how close a guess was. (The comparison itself is of SHA-256 hashes
/// in constant time, `policy::ApiKeys::authenticate`; timings are not
/// asserted here: they are too noisy on a shared machine.)
#[tokio::test]
async fn api_key_guesses_sharing_a_prefix_get_identical_401s() {
    let real = "sk-nomyo-0123456789abcdefghijklmnopqrstuv";
    let mut keys = ApiKeys::default();
    keys.add_key(real);
    keys.add_key("sk-another-key-entirely-000000000000000");
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.api_keys(keys).build().unwrap()).await;
    let n = real.len();
    let mut guesses: Vec<String> = [0, 1, n / 2, n - 1]
        .iter()
        .map(|&k| {
            let mut g: Vec<u8> = real.as_bytes().to_vec();
            for c in g.iter_mut().skip(k) {
                *c = if *c == b'x' { b'y' } else { b'x' };
            }
            String::from_utf8(g).unwrap()
        })
        .collect();
    guesses.push(format!("{real}x"));
    guesses.push(real[..n - 1].to_owned());
    guesses.push(real.to_uppercase());
    let configs = key_configs(&base).await;
    let mut bodies = std::collections::BTreeSet::new();
    let mut v2_bodies = std::collections::BTreeSet::new();
    for g in &guesses {
        let resp = post_v1_with_key(&base, g).await;
        assert_eq!(resp.status(), 401, "{g}");
        bodies.insert(resp.bytes().await.unwrap().to_vec());
        let r = seal_v2(&kem_config(&configs, Kem::XWing), &chat("m", "x"));
        let resp = http()
            .post(format!("{base}/v1/chat/completions"))
            .header("authorization", format!("Bearer {g}"))
            .header("ehbp-encapsulated-key", &r.enc_hex)
            .body(r.body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{g}");
        v2_bodies.insert(resp.bytes().await.unwrap().to_vec());
    }
    assert_eq!(bodies.len(), 1, "v1 401 bodies differ: {bodies:?}");
    assert_eq!(v2_bodies.len(), 1, "v2 401 bodies differ: {v2_bodies:?}");
    let body = bodies.into_iter().next().unwrap();
    assert!(!String::from_utf8_lossy(&body).contains("sk-"));
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
    // The real key works (the test would be vacuous otherwise).
    let resp = post_v1_with_key(&base, real).await;
    assert_eq!(resp.status(), 200);
}
