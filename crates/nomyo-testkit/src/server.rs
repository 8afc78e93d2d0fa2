//! The server's test helpers (feature `server`): sealing requests as the
//! reference client does, an in-process backend double, an OpenAI-compatible
//! upstream double (axum on 127.0.0.1:0), the router driven in-process and
//! the product's own `serve` path on a real socket. Test doubles live here,
//! never in the product.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::FutureExt;
use http_body_util::BodyExt;
use nomyo_core::v1::{self, Package};
use nomyo_core::v2::{
    self,
    framing::FrameDecoder,
    keys::{Kem, KeyConfig},
    request::RequestSealer,
    response::parse_response_nonce,
};
use nomyo_server::backend::BackendError;
use nomyo_server::keystore::KeyStore;
use nomyo_server::policy::{ModelSet, TierRule};
use nomyo_server::AppState;
use serde_json::{json, Value};
use tower::ServiceExt;

pub use crate::backend::{completion, Double};
pub use crate::keys::{client_key, server_key, server_key_pem};
pub use crate::log::Capture;

/// A fresh UUIDv4, as the reference client sends.
pub fn payload_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The chat request a test sends.
pub fn chat(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.1})
}

/// A sealed request: body bytes and headers, as nomyo 0.2.9 sends them.
pub struct Sealed {
    /// The `X-Payload-Id`.
    pub id: String,
    /// The package (JSON).
    pub body: Vec<u8>,
    /// The client's public key as the `X-Public-Key` header carries it.
    pub public_key_header: String,
}

/// Seals `plaintext` to `server` with the client key, as nomyo 0.2.9 does.
pub fn seal_to(plaintext: &[u8], server: &nomyo_core::PublicKey) -> Sealed {
    let p = v1::seal(plaintext, server).unwrap();
    Sealed {
        id: payload_id(),
        body: p.to_json(),
        public_key_header: v1::encode_public_key_header(&client_key().public_key().to_pem()),
    }
}

/// Seals `v` (as JSON) to the shared server key.
pub fn seal_json(v: &Value) -> Sealed {
    seal_to(&serde_json::to_vec(v).unwrap(), server_key().public_key())
}

impl Sealed {
    /// The HTTP request with the usual headers.
    pub fn request(&self, api_key: Option<&str>, tier: Option<&str>) -> Request<Body> {
        let mut b = Request::post("/v1/chat/secure_completion")
            .header("content-type", "application/octet-stream")
            .header("x-payload-id", &self.id)
            .header("x-public-key", &self.public_key_header);
        if let Some(k) = api_key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        if let Some(t) = tier {
            b = b.header("x-security-tier", t);
        }
        b.body(Body::from(self.body.clone())).unwrap()
    }
}

/// Opens a 200 response as the client does: checks the package and decrypts.
pub fn open_response(body: &[u8]) -> (Package, Value) {
    let pkg = Package::from_json(body).unwrap();
    let plain = v1::open(&pkg, client_key()).unwrap();
    (pkg, serde_json::from_slice(plain.expose_secret()).unwrap())
}

/// Sends one request through the router in-process.
pub async fn oneshot(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

/// `GET path` (no headers) on an in-process server.
pub async fn oneshot_get(app: &Router, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    oneshot(app, Request::get(path).body(Body::empty()).unwrap()).await
}

/// `GET /pki/public_key` of an in-process server: its v1 key.
pub async fn fetch_public_key(app: &Router) -> nomyo_core::PublicKey {
    let (s, _, b) = oneshot_get(app, "/pki/public_key").await;
    assert_eq!(s, StatusCode::OK);
    nomyo_core::PublicKey::from_pem(std::str::from_utf8(&b).unwrap()).unwrap()
}

/// A tier rule that allows these models, on any backend.
pub fn allow_models(names: &[&str]) -> TierRule {
    TierRule {
        backends: vec![],
        models: ModelSet::from_names(names.iter().copied()),
    }
}

/// `GET /.well-known/hpke-keys` of an in-process server: the raw key list.
pub async fn fetch_hpke_keys(app: &Router) -> Vec<u8> {
    fetch_hpke_keys_with_headers(app).await.1
}

/// [`fetch_hpke_keys`] with the answer's headers (e.g. the list's
/// `Nomyo-Keys-Signature`).
pub async fn fetch_hpke_keys_with_headers(app: &Router) -> (HeaderMap, Vec<u8>) {
    let (s, h, b) = oneshot_get(app, "/.well-known/hpke-keys").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "application/ohttp-keys");
    (h, b)
}

/// The key config of `kem` in a published list.
pub fn kem_config(configs: &[KeyConfig], kem: Kem) -> KeyConfig {
    configs.iter().find(|c| c.kem == kem).unwrap().clone()
}

/// A v2 (EHBP) request sealed as a client seals it ([`seal_v2`],
/// [`seal_v2_frames`]), and the context that opens its answer.
pub struct V2Sealed {
    /// The request's sealing context (it also opens the answer).
    pub sealer: RequestSealer,
    /// `Ehbp-Encapsulated-Key`, lowercase hex.
    pub enc_hex: String,
    /// The sealed frames, in order.
    pub frames: Vec<Vec<u8>>,
}

/// `body` sealed to `config` in one frame.
pub fn seal_v2(config: &KeyConfig, body: &Value) -> V2Sealed {
    seal_v2_frames(config, body, usize::MAX)
}

/// `body` sealed to `config`, split into frames of `frame` plaintext bytes.
pub fn seal_v2_frames(config: &KeyConfig, body: &Value, frame: usize) -> V2Sealed {
    let (enc, mut sealer) = RequestSealer::new(config).unwrap();
    let plain = serde_json::to_vec(body).unwrap();
    let frames = plain
        .chunks(frame)
        .map(|c| sealer.seal_chunk(c).unwrap())
        .collect();
    V2Sealed {
        sealer,
        enc_hex: hex::encode(enc),
        frames,
    }
}

impl V2Sealed {
    /// The request body: every frame.
    pub fn body(&self) -> Vec<u8> {
        self.frames.concat()
    }

    /// `POST /v1/chat/completions` with this body, the key id and tier
    /// headers when given.
    pub fn request(&self, key_id: Option<u8>, tier: Option<&str>) -> Request<Body> {
        self.request_with(self.body(), key_id, tier)
    }

    /// [`V2Sealed::request`] with another body (a tampered or cut one).
    pub fn request_with(
        &self,
        body: Vec<u8>,
        key_id: Option<u8>,
        tier: Option<&str>,
    ) -> Request<Body> {
        let mut b = Request::post(v2::CHAT_COMPLETIONS_PATH)
            .header("content-type", "application/json")
            .header(v2::HEADER_ENCAPSULATED_KEY, &self.enc_hex);
        if let Some(id) = key_id {
            b = b.header(v2::HEADER_KEY_ID, id.to_string());
        }
        if let Some(t) = tier {
            b = b.header(nomyo_core::tier::HEADER_SECURITY_TIER, t);
        }
        b.body(Body::from(body)).unwrap()
    }

    /// Opens an answer as a client does: each chunk's plaintext, or why it
    /// does not open.
    pub fn try_open(&self, headers: &HeaderMap, body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let nonce = headers
            .get(v2::HEADER_RESPONSE_NONCE)
            .ok_or("no response nonce")?
            .to_str()
            .map_err(|e| e.to_string())?;
        let nonce = parse_response_nonce(nonce).map_err(|e| e.to_string())?;
        let mut opener = self
            .sealer
            .response_opener(&nonce)
            .map_err(|e| e.to_string())?;
        let mut frames = FrameDecoder::new(1 << 20);
        frames.push(body);
        let mut out = Vec::new();
        while let Some(f) = frames.next_frame().map_err(|e| e.to_string())? {
            let chunk = opener.open_chunk(&f).map_err(|e| e.to_string())?;
            out.push(chunk.expose_secret().to_vec());
        }
        frames.finish().map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// [`V2Sealed::try_open`], which must succeed.
    pub fn open(&self, headers: &HeaderMap, body: &[u8]) -> Vec<Vec<u8>> {
        self.try_open(headers, body).unwrap()
    }

    /// The opened answer as JSON.
    pub fn open_json(&self, headers: &HeaderMap, body: &[u8]) -> Value {
        serde_json::from_slice(&self.open(headers, body).concat()).unwrap()
    }
}

/// The `detail` of an error body.
pub fn detail(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!(
            "error body is not JSON: {:?}",
            String::from_utf8_lossy(body)
        )
    });
    v["detail"].as_str().expect("detail string").to_owned()
}

/// The server tests' backend: a [`Double`] named `echo` serving `models`
/// that answers "echo:<last message>"; behaviour by model name: `slow` sleeps
/// 600 ms, `very-slow` 5 s, `busy-once` is unavailable once then answers,
/// `broken` fails upstream, `not-object` returns a JSON array.
pub fn echo_backend(models: &[&str]) -> Arc<Double> {
    let busy_left = Arc::new(AtomicUsize::new(1));
    Double::new("echo", models)
        .answer_async(move |request| {
            let busy_left = Arc::clone(&busy_left);
            async move {
                let model = request.model().to_owned();
                match model.as_str() {
                    "slow" => tokio::time::sleep(Duration::from_millis(600)).await,
                    "very-slow" => tokio::time::sleep(Duration::from_secs(5)).await,
                    "busy-once"
                        if busy_left
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok() =>
                    {
                        return Err(BackendError::Unavailable {
                            retry_after: Some(Duration::from_secs(2)),
                        });
                    }
                    "broken" => return Err(BackendError::Upstream("status 500".into())),
                    "not-object" => return Ok(json!([1, 2])),
                    _ => {}
                }
                Ok(completion(
                    &model,
                    &format!("echo:{}", last_content(&request.body)),
                ))
            }
            .boxed()
        })
        .arc()
}

fn last_content(body: &serde_json::Map<String, Value>) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|a| a.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// The server's settings from a configuration file's text (parsed and
/// resolved as `nomyo serve --config` does).
pub fn settings(toml: &str) -> nomyo_server::config::Settings {
    nomyo_server::config::FileConfig::from_toml(toml)
        .unwrap()
        .resolve()
        .unwrap()
}

/// A state with the shared server key and one echo backend serving `models`.
pub fn state_with(models: &[&str]) -> nomyo_server::state::AppStateBuilder {
    AppState::builder(KeyStore::ephemeral(server_key())).backend("echo", echo_backend(models))
}

// ---------------------------------------------------------------------------
// OpenAI-compatible upstream double
// ---------------------------------------------------------------------------

/// What the upstream double saw.
#[derive(Default)]
pub struct UpstreamSeen {
    /// Chat requests received.
    pub requests: AtomicUsize,
    /// The `Authorization` header of the last one.
    pub last_auth: std::sync::Mutex<Option<String>>,
}

async fn up_models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "m"}, {"id": "slow"}, {"id": "fail"}, {"id": "busy"}, {"id": "gone"}, {"id": "garbage"}]}),
    )
}

async fn up_chat(
    State(seen): State<Arc<UpstreamSeen>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    *seen.last_auth.lock().unwrap() = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let prompt = body["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    match model.as_str() {
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Json(completion(&model, "late")).into_response()
        }
        // An upstream error that quotes the prompt: must never reach the
        // client (errors travel in clear) or the logs.
        "fail" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("model crashed on: {prompt}"),
        )
            .into_response(),
        "busy" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "7")],
            format!("busy: {prompt}"),
        )
            .into_response(),
        "gone" => (StatusCode::NOT_FOUND, format!("no such model for {prompt}")).into_response(),
        "garbage" => (StatusCode::OK, format!("not json {prompt}")).into_response(),
        "bad" => (StatusCode::BAD_REQUEST, format!("bad: {prompt}")).into_response(),
        _ => Json(completion(&model, &format!("upstream-echo:{prompt}"))).into_response(),
    }
}

/// Starts the upstream double; returns its base URL (`http://127.0.0.1:PORT/v1`).
pub async fn start_upstream() -> (String, Arc<UpstreamSeen>) {
    let seen = Arc::new(UpstreamSeen::default());
    let app = Router::new()
        .route("/v1/models", get(up_models))
        .route("/v1/chat/completions", post(up_chat))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), seen)
}

/// Starts the upstream double on `addr` (an address a test reserved, so that
/// the upstream can come up after a server that points at it).
pub async fn start_upstream_on(addr: SocketAddr) -> Arc<UpstreamSeen> {
    let seen = Arc::new(UpstreamSeen::default());
    let app = Router::new()
        .route("/v1/models", get(up_models))
        .route("/v1/chat/completions", post(up_chat))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    seen
}

/// Serves `app` on 127.0.0.1:0 through the product's own `serve` path;
/// returns the address and a trigger that starts graceful shutdown.
pub async fn serve_real(
    state: AppState,
    tls: Option<&nomyo_server::config::TlsFiles>,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let bound = nomyo_server::serve::bind("127.0.0.1:0".parse().unwrap(), tls)
        .await
        .unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.run(state, Duration::from_secs(10), async move {
        let _ = rx.await;
    }));
    (addr, tx, task)
}

/// One raw HTTP/1.1 exchange over a fresh TCP connection; returns the status
/// and the body (the server closes: `Connection: close`).
pub async fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server must answer, not hang")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// Headers of a raw secure request with a given body length.
pub fn raw_head(extra: &[(&str, &str)], len: usize) -> String {
    let mut h = String::from(
        "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: test\r\nConnection: close\r\n",
    );
    for (k, v) in extra {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    h
}
