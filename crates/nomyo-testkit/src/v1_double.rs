//! A scriptable v1 server double for the client's tests (feature `server`),
//! built on nomyo-core and axum, listening on 127.0.0.1 port 0.
//!
//! It answers like a correct v1 server, and can be told to fail first
//! (statuses, dropped connections), to misbehave (downgraded or tampered
//! packages, foreign payload ids), and to rotate its key.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use nomyo_client::{Backoff, Client, ClientBuilder, KnownServers, Protocol};
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

/// Retries spaced 10 to 50 ms (fast tests).
pub fn fast_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A client of the server at `url` over plain HTTP, with the shared client
/// key 0, no known-servers file, [`fast_backoff`] and protocol v1 chosen
/// explicitly (the tests of v1 behaviour; v2 tests choose their protocol).
pub fn local_client(url: &str) -> ClientBuilder {
    Client::builder()
        .protocol(Protocol::V1)
        .base_url(url)
        .allow_http(true)
        .client_key(shared_key(0))
        .known_servers(KnownServers::Off)
        .backoff(fast_backoff())
}

/// A 2048-bit key generated once per test binary (fast tests).
pub fn shared_key(slot: usize) -> Arc<PrivateKey> {
    static KEYS: OnceLock<Vec<Arc<PrivateKey>>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..4)
            .map(|_| Arc::new(PrivateKey::generate(RsaBits::B2048).unwrap()))
            .collect()
    })[slot]
        .clone()
}

/// What the next POST gets instead of a normal answer.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// This status with `{"detail": detail}` and an optional Retry-After.
    Status(u16, &'static str, Option<&'static str>),
}

/// How a 200 answer is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A correct sealed completion.
    Normal,
    /// `"version": "0.9"`.
    Downgraded,
    /// One bit of the tag flipped.
    TamperedTag,
    /// The outer `payload_id` names another request.
    ForeignOuterId,
    /// The sealed `_metadata.payload_id` names another request.
    ForeignInnerId,
    /// The sealed plaintext is not JSON.
    NotJson,
    /// Sleep longer than any test timeout.
    Hang,
}

/// One request as the double received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The HTTP version it came over.
    pub version: Version,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body (the sealed package).
    pub body: Bytes,
}

/// The double's state, shared with its handlers.
pub struct DoubleState {
    /// The server key it answers with.
    pub key: RwLock<Arc<PrivateKey>>,
    /// What the next POSTs get instead of a normal answer.
    pub script: Mutex<VecDeque<Scripted>>,
    /// Every POST received.
    pub posts: Mutex<Vec<Recorded>>,
    /// Decrypted request bodies (tests only: a double may look).
    pub plaintexts: Mutex<Vec<Value>>,
    /// `GET /pki/public_key` requests received.
    pub key_gets: AtomicUsize,
    /// Connections accepted.
    pub connections: AtomicUsize,
    /// Close this many freshly accepted connections at once.
    pub drop_connections: AtomicUsize,
    /// How 200 answers are built.
    pub answer: Mutex<Answer>,
    /// Require this bearer token (401 otherwise).
    pub api_key: Mutex<Option<String>>,
}

/// A running v1 server double.
pub struct Double {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<DoubleState>,
}

impl Double {
    fn new_state(key: Arc<PrivateKey>) -> Arc<DoubleState> {
        Arc::new(DoubleState {
            key: RwLock::new(key),
            script: Mutex::new(VecDeque::new()),
            posts: Mutex::new(Vec::new()),
            plaintexts: Mutex::new(Vec::new()),
            key_gets: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            drop_connections: AtomicUsize::new(0),
            answer: Mutex::new(Answer::Normal),
            api_key: Mutex::new(None),
        })
    }

    fn router(state: &Arc<DoubleState>) -> Router {
        Router::new()
            .route("/pki/public_key", get(public_key))
            .route("/v1/chat/secure_completion", post(secure_completion))
            .with_state(state.clone())
    }

    /// Starts a double answering with `key` on 127.0.0.1 port 0.
    pub async fn start(key: Arc<PrivateKey>) -> Double {
        let state = Self::new_state(key);
        let app = Self::router(&state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counting = Counting {
            inner: listener,
            state: state.clone(),
        };
        tokio::spawn(async move {
            axum::serve(counting, app).await.unwrap();
        });
        Double { addr, state }
    }

    /// The same double over TLS (HTTP/2 and HTTP/1.1 offered by ALPN) with
    /// this certificate and key (PEM). Counts TLS connections.
    pub async fn start_tls(key: Arc<PrivateKey>, cert_pem: &str, key_pem: &str) -> Double {
        let state = Self::new_state(key);
        let app = Self::router(&state);
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert_pem.as_bytes().to_vec(),
            key_pem.as_bytes().to_vec(),
        )
        .await
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = CountingTls {
            inner: axum_server::tls_rustls::RustlsAcceptor::new(config),
            state: state.clone(),
        };
        let server = axum_server::from_tcp(listener).acceptor(acceptor);
        tokio::spawn(async move {
            server.serve(app.into_make_service()).await.unwrap();
        });
        Double { addr, state }
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues what the next POSTs get instead of a normal answer.
    pub fn script(&self, items: impl IntoIterator<Item = Scripted>) {
        self.state.script.lock().unwrap().extend(items);
    }

    /// Sets how 200 answers are built.
    pub fn set_answer(&self, a: Answer) {
        *self.state.answer.lock().unwrap() = a;
    }

    /// Rotates the server key.
    pub fn set_key(&self, key: Arc<PrivateKey>) {
        *self.state.key.write().unwrap() = key;
    }

    /// Every POST received so far.
    pub fn posts(&self) -> Vec<Recorded> {
        self.state.posts.lock().unwrap().clone()
    }

    /// The decrypted bodies of the POSTs received so far.
    pub fn plaintexts(&self) -> Vec<Value> {
        self.state.plaintexts.lock().unwrap().clone()
    }

    /// How many times its key was fetched.
    pub fn key_gets(&self) -> usize {
        self.state.key_gets.load(Ordering::SeqCst)
    }

    /// How many connections it accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

/// Counts accepted connections, and closes the first N on request.
struct Counting {
    inner: TcpListener,
    state: Arc<DoubleState>,
}

impl axum::serve::Listener for Counting {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Ok((stream, addr)) = self.inner.accept().await else {
                continue;
            };
            self.state.connections.fetch_add(1, Ordering::SeqCst);
            let dropped = self
                .state
                .drop_connections
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if dropped {
                drop(stream);
                continue;
            }
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Counts connections before the TLS handshake.
#[derive(Clone)]
struct CountingTls {
    inner: axum_server::tls_rustls::RustlsAcceptor,
    state: Arc<DoubleState>,
}

impl<I, S> axum_server::accept::Accept<I, S> for CountingTls
where
    axum_server::tls_rustls::RustlsAcceptor: axum_server::accept::Accept<I, S>,
{
    type Stream =
        <axum_server::tls_rustls::RustlsAcceptor as axum_server::accept::Accept<I, S>>::Stream;
    type Service =
        <axum_server::tls_rustls::RustlsAcceptor as axum_server::accept::Accept<I, S>>::Service;
    type Future =
        <axum_server::tls_rustls::RustlsAcceptor as axum_server::accept::Accept<I, S>>::Future;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        self.state.connections.fetch_add(1, Ordering::SeqCst);
        self.inner.accept(stream, service)
    }
}

async fn public_key(State(st): State<Arc<DoubleState>>) -> String {
    st.key_gets.fetch_add(1, Ordering::SeqCst);
    st.key.read().unwrap().public_key().to_pem()
}

fn detail(status: u16, d: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({ "detail": d })),
    )
        .into_response()
}

async fn secure_completion(
    State(st): State<Arc<DoubleState>>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    st.posts.lock().unwrap().push(Recorded {
        version,
        headers: headers.clone(),
        body: body.clone(),
    });
    let scripted = st.script.lock().unwrap().pop_front();
    if let Some(Scripted::Status(status, d, retry_after)) = scripted {
        let mut r = detail(status, d);
        if let Some(ra) = retry_after {
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static(ra));
        }
        return r;
    }
    if let Some(want) = st.api_key.lock().unwrap().clone() {
        let got = headers.get("authorization").and_then(|v| v.to_str().ok());
        if got != Some(&format!("Bearer {want}")) {
            return detail(401, "Invalid API key");
        }
    }
    let Some(id) = headers.get("x-payload-id").and_then(|v| v.to_str().ok()) else {
        return detail(400, "missing X-Payload-ID header");
    };
    let id = id.to_owned();
    let Some(client_key) = headers
        .get("x-public-key")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v1::decode_public_key_header(v).ok())
    else {
        return detail(400, "invalid X-Public-Key header");
    };
    let package = match v1::Package::from_json(&body) {
        Ok(p) => p,
        Err(e) => return detail(400, &e.to_string()),
    };
    let key = st.key.read().unwrap().clone();
    let Ok(plain) = v1::open(&package, &key) else {
        return detail(400, "decryption failed");
    };
    let request: Value = serde_json::from_slice(plain.expose_secret()).unwrap();
    st.plaintexts.lock().unwrap().push(request.clone());

    let answer = *st.answer.lock().unwrap();
    if answer == Answer::Hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let prompt = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned();
    let mut message = json!({
        "role": "assistant",
        "content": format!("echo: {prompt}"),
        "reasoning_content": "thinking about it",
    });
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let name = tools[0]["function"]["name"].clone();
        message["tool_calls"] = json!([{
            "id": "call_1", "type": "function",
            "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}
        }]);
    }
    let inner_id = if answer == Answer::ForeignInnerId {
        "someone-else".to_owned()
    } else {
        id.clone()
    };
    let completion = json!({
        "id": "chatcmpl-double",
        "object": "chat.completion",
        "created": 1764300000,
        "model": request["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        "system_fingerprint": "fp_double",
        "received": request,
        "_metadata": {
            "payload_id": inner_id,
            "processed_at": 1764300001,
            "is_encrypted": true,
            "response_status": "success",
            "security_tier": headers.get("x-security-tier").and_then(|v| v.to_str().ok()).unwrap_or("standard"),
            "memory_protection": {"platform": "linux", "memory_locking": true,
                "secure_zeroing": true, "core_dump_prevention": true},
            "cuda_device": {"available": false, "device_hash": ""}
        }
    });
    let plaintext = if answer == Answer::NotJson {
        b"this is not json".to_vec()
    } else {
        serde_json::to_vec(&completion).unwrap()
    };
    let mut sealed = v1::seal(&plaintext, &client_key).unwrap();
    sealed.payload_id = Some(if answer == Answer::ForeignOuterId {
        "someone-else".to_owned()
    } else {
        id
    });
    sealed.processed_at = Some(1764300002);
    if answer == Answer::TamperedTag {
        sealed.tag[0] ^= 1;
    }
    let mut wire = sealed.to_json();
    if answer == Answer::Downgraded {
        let mut v: Value = serde_json::from_slice(&wire).unwrap();
        v["version"] = json!("0.9");
        wire = serde_json::to_vec(&v).unwrap();
    }
    (StatusCode::OK, wire).into_response()
}
