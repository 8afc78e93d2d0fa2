//! Streaming passthrough from an OpenAI-compatible upstream over protocol v2:
//! a scripted upstream double (tests only) sends server-sent events when the
//! test says so; the server must seal and forward each chunk as it arrives,
//! end cleanly only after the upstream's `[DONE]`, cut the client's stream
//! when the upstream's is cut, and map upstream HTTP errors as the
//! non-streaming path does.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt as _;
use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::keys::{Kem, KeyConfig};
use nomyo_core::v2::request::RequestSealer;
use nomyo_core::v2::response::parse_response_nonce;
use nomyo_core::v2::response::ResponseOpener;
use nomyo_server::upstream::{UpstreamBackend, UpstreamConfig};
use nomyo_server::{app, AppState};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// What the double sends next on its event stream.
enum Step {
    /// Raw bytes (one or more SSE lines, possibly partial).
    Bytes(&'static str),
    Event(Value),
    /// Abort the HTTP body mid-way (the connection is reset, no final chunk).
    Cut,
}

/// How the double answers a chat request.
#[derive(Clone)]
enum Mode {
    /// `text/event-stream`, fed by the test through a channel.
    Stream(Arc<Mutex<Option<mpsc::UnboundedReceiver<Step>>>>),
    /// One JSON completion (an upstream that ignores `"stream"`).
    Json,
    /// This status, with a body quoting the prompt.
    Status(u16),
}

#[derive(Clone)]
struct Double {
    mode: Mode,
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn double_chat(State(d): State<Double>, Json(body): Json<Value>) -> Response {
    d.bodies.lock().unwrap().push(body.clone());
    let prompt = body["messages"][0]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    match &d.mode {
        Mode::Json => Json(completion("m", &format!("whole:{prompt}"))).into_response(),
        Mode::Status(s) => (
            StatusCode::from_u16(*s).unwrap(),
            [("retry-after", "7")],
            format!("failed on {prompt}"),
        )
            .into_response(),
        Mode::Stream(rx) => {
            let rx = rx.lock().unwrap().take().expect("one stream per double");
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                let item = match rx.recv().await? {
                    Step::Bytes(s) => Ok(Bytes::from_static(s.as_bytes())),
                    Step::Event(v) => Ok(Bytes::from(format!("data: {v}\n\n"))),
                    Step::Cut => Err(std::io::Error::other("cut")),
                };
                Some((item, rx))
            });
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

/// Starts the double; returns the server state in front of it and the
/// request bodies it received.
async fn server_for(mode: Mode) -> (axum::Router, Arc<Mutex<Vec<Value>>>) {
    let (app, bodies, _) = server_and_state(mode).await;
    (app, bodies)
}

async fn server_and_state(mode: Mode) -> (axum::Router, Arc<Mutex<Vec<Value>>>, AppState) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let d = Double {
        mode,
        bodies: Arc::clone(&bodies),
    };
    let router = Router::new()
        .route("/v1/chat/completions", post(double_chat))
        .with_state(d);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let mut cfg = UpstreamConfig::new(format!("http://{addr}/v1"));
    cfg.models = vec!["m".into()];
    let backend = UpstreamBackend::connect(cfg).await.unwrap();
    let state = AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
        .backend("up", Arc::new(backend))
        .build()
        .unwrap();
    (app(state.clone()), bodies, state)
}

fn delta(content: &str) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
}

async fn x25519_config(app: &axum::Router) -> KeyConfig {
    KeyConfig::parse_list(&fetch_hpke_keys(app).await)
        .unwrap()
        .into_iter()
        .find(|c| c.kem == Kem::X25519)
        .unwrap()
}

/// A sealed streamed request for `prompt`; returns it and the sealer.
fn sealed(config: &KeyConfig, prompt: &str) -> (Request<Body>, RequestSealer) {
    let (enc, mut sealer) = RequestSealer::new(config).unwrap();
    let mut body = chat("m", prompt);
    body["stream"] = json!(true);
    let sealed = sealer
        .seal_chunk(&serde_json::to_vec(&body).unwrap())
        .unwrap();
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("ehbp-encapsulated-key", hex::encode(enc))
        .body(Body::from(sealed))
        .unwrap();
    (req, sealer)
}

/// Decrypts response frames incrementally, like a client reading a stream.
struct Reader {
    opener: ResponseOpener,
    frames: FrameDecoder,
}

impl Reader {
    fn new(sealer: &RequestSealer, headers: &HeaderMap) -> Self {
        let nonce = parse_response_nonce(headers["ehbp-response-nonce"].to_str().unwrap()).unwrap();
        Self {
            opener: sealer.response_opener(&nonce).unwrap(),
            frames: FrameDecoder::new(1 << 20),
        }
    }
    /// The SSE event payloads in `bytes` (each sealed chunk is one event).
    fn events(&mut self, bytes: &[u8]) -> Vec<String> {
        self.frames.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = self.frames.next_frame().unwrap() {
            let plain = self.opener.open_chunk(&f).unwrap();
            let s = String::from_utf8(plain.expose_secret().to_vec()).unwrap();
            assert!(s.starts_with("data: ") && s.ends_with("\n\n"), "{s:?}");
            out.push(s["data: ".len()..s.len() - 2].to_owned());
        }
        out
    }
}

/// A streamed request whose upstream has sent its first token and waits
/// for the test to send the rest through `tx`.
struct Streaming {
    tx: mpsc::UnboundedSender<Step>,
    /// The answer's headers (its status, 200, is checked).
    headers: HeaderMap,
    reader: Reader,
    body: Body,
    /// The request bodies the upstream received.
    bodies: Arc<Mutex<Vec<Value>>>,
    state: AppState,
}

impl Streaming {
    /// Sends a sealed streamed request for `prompt`; the upstream answers
    /// with the token `first`, then waits.
    async fn start(prompt: &str, first: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (app, bodies, state) =
            server_and_state(Mode::Stream(Arc::new(Mutex::new(Some(rx))))).await;
        let cfg = x25519_config(&app).await;
        let (req, sealer) = sealed(&cfg, prompt);
        tx.send(Step::Event(delta(first))).unwrap();
        let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let reader = Reader::new(&sealer, resp.headers());
        let (parts, body) = resp.into_parts();
        Self {
            tx,
            headers: parts.headers,
            reader,
            body,
            bodies,
            state,
        }
    }

    /// The events of the answer's first frame, which must arrive within 10 s
    /// (while the upstream still waits).
    async fn first_events(&mut self) -> Vec<String> {
        let first = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
            .await
            .expect("the first token must arrive while the upstream is still generating")
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        self.reader.events(&first)
    }
}

fn content(event: &str) -> String {
    let v: Value = serde_json::from_str(event).unwrap();
    v["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn first_sealed_chunk_arrives_before_the_upstream_sends_the_last() {
    // The upstream sends its first token, then waits: the test sends the
    // rest only after the client has decrypted that first token.
    let mut s = Streaming::start("stream me", "Hel").await;
    assert_eq!(s.headers["content-type"], "text/event-stream");
    let events = s.first_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(content(&events[0]), "Hel");
    let meta: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(meta["_metadata"]["protocol"], "v2");
    // The upstream was asked to stream.
    assert_eq!(s.bodies.lock().unwrap()[0]["stream"], true);
    // The rest, split awkwardly: an event across two writes, CRLF lines, a
    // comment, a two-line event, then [DONE].
    s.tx.send(Step::Bytes(": keep-alive\r\n\r\ndata: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}"))
        .unwrap();
    s.tx.send(Step::Bytes(",\"finish_reason\":null}]}\r\n\r\n"))
        .unwrap();
    s.tx.send(Step::Bytes("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\ndata: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"},\"finish_reason\":\"stop\"}]}\n\n"))
        .unwrap();
    s.tx.send(Step::Bytes("data: [DONE]\n\n")).unwrap();
    drop(s.tx);
    let rest = s.body.collect().await.unwrap().to_bytes();
    let events = s.reader.events(&rest);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(content(&events[0]), "lo");
    assert_eq!(content(&events[1]), "!");
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test]
async fn a_stream_is_in_flight_and_holds_its_slot_until_it_ends() {
    let mut s = Streaming::start("hold me", "one").await;
    s.first_events().await;
    // The handler has returned the response head; the stream still runs
    // and holds a processing slot, which the gauge counts.
    assert_eq!(s.state.metrics().in_flight.get(), 1);
    s.tx.send(Step::Bytes("data: [DONE]\n\n")).unwrap();
    drop(s.tx);
    let rest = s.body.collect().await.unwrap().to_bytes();
    assert_eq!(s.reader.events(&rest), ["[DONE]"]);
    // The task that fed the stream gives the slot back as it ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.state.metrics().in_flight.get() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the finished stream still counts as in flight"
        );
        tokio::task::yield_now().await;
    }
}

/// Runs a stream whose upstream sends one token, and `end` once the client
/// has read that token; returns the events the client could decrypt.
async fn stream_then(end: Vec<Step>) -> Vec<String> {
    let mut s = Streaming::start("cut me", "one").await;
    let mut events = s.first_events().await;
    for step in end {
        s.tx.send(step).unwrap();
    }
    drop(s.tx);
    let rest = tokio::time::timeout(Duration::from_secs(20), s.body.collect())
        .await
        .expect("a cut upstream must end the response, not hang")
        .unwrap()
        .to_bytes();
    events.extend(s.reader.events(&rest));
    events
}

#[tokio::test]
async fn a_cut_upstream_stream_reaches_the_client_as_a_cut_stream() {
    // Connection reset mid-stream.
    let events = stream_then(vec![Step::Cut]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(content(&events[0]), "one");
    // A clean HTTP end, but no [DONE]: still incomplete.
    let events = stream_then(vec![Step::Event(delta("two"))]).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    // A partial event at the end.
    let events = stream_then(vec![Step::Bytes("data: {\"id\":")]).await;
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    // An in-stream error event (vLLM, llama.cpp): cut, its text not forwarded.
    let events = stream_then(vec![
        Step::Event(json!({"error": {"message": "secret prompt text"}})),
        Step::Bytes("data: [DONE]\n\n"),
    ])
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    // Not JSON.
    let events = stream_then(vec![Step::Bytes("data: nonsense\n\ndata: [DONE]\n\n")]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    // And the complete case, for contrast: [DONE] without a trailing blank line.
    let events = stream_then(vec![Step::Bytes("data: [DONE]")]).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn upstream_http_errors_map_as_for_plain_requests() {
    for (upstream, ours) in [(503, 503), (504, 504), (500, 502), (404, 404), (400, 400)] {
        let (app, _) = server_for(Mode::Status(upstream)).await;
        let cfg = x25519_config(&app).await;
        let (req, sealer) = sealed(&cfg, "secret prompt");
        let (s, h, b) = oneshot(&app, req).await;
        assert_eq!(s.as_u16(), ours, "upstream {upstream}");
        if upstream == 503 {
            assert_eq!(h["retry-after"], "7");
        }
        // The error body is sealed and never quotes the upstream's body.
        let mut reader = Reader::new(&sealer, &h);
        reader.frames.push(&b);
        let f = reader.frames.next_frame().unwrap().unwrap();
        let plain = reader.opener.open_chunk(&f).unwrap();
        let text = String::from_utf8_lossy(plain.expose_secret()).to_string();
        assert!(!text.contains("secret prompt"), "{text}");
    }
}

#[tokio::test]
async fn an_upstream_that_ignores_stream_gives_one_chunk() {
    let (app, bodies) = server_for(Mode::Json).await;
    let cfg = x25519_config(&app).await;
    let (req, sealer) = sealed(&cfg, "hi");
    let resp = tower::ServiceExt::oneshot(app, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut reader = Reader::new(&sealer, resp.headers());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let events = reader.events(&bytes);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(content(&events[0]), "whole:hi");
    assert_eq!(events[1], "[DONE]");
    assert_eq!(bodies.lock().unwrap().len(), 1, "asked once, not twice");
}
