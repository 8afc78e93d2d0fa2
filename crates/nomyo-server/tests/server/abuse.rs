//! Abuse of the server's own rules, each test named after the attack and
//! driving the real server (`serve::bind` + `run` on 127.0.0.1): `maximum`
//! asked for over RSA (v1), a cancelled or failed request sent again to run
//! the backend twice, slow clients holding every processing slot, and one
//! caller filling the replay store for everyone.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use http::{Method, Request, StatusCode};
use nomyo_core::v2::keys::{Kem, KeyConfig};
use nomyo_core::SecurityTier;
use nomyo_server::limits::Limits;
use nomyo_server::policy::ApiKeys;
use nomyo_server::AppState;
use nomyo_testkit::backend::{text_chunk, Double};
use serde_json::Value;

/// The real server on 127.0.0.1:0 (kept for the whole test process).
async fn serve(state: AppState) -> SocketAddr {
    let (addr, stop, _task) = serve_real(state, None).await;
    std::mem::forget(stop);
    addr
}

fn echo(models: &[&str]) -> (nomyo_server::state::AppStateBuilder, Arc<Double>) {
    let backend = echo_backend(models);
    let b = AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
        .backend("echo", backend.clone());
    (b, backend)
}

/// Sends a sealed v1 request over HTTP/1.1; returns status and body.
async fn post_v1(
    addr: SocketAddr,
    s: &Sealed,
    api_key: Option<&str>,
    tier: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/secure_completion"))
        .header("content-type", "application/octet-stream")
        .header("x-payload-id", &s.id)
        .header("x-public-key", &s.public_key_header)
        .body(s.body.clone());
    if let Some(k) = api_key {
        r = r.bearer_auth(k);
    }
    if let Some(t) = tier {
        r = r.header("x-security-tier", t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

async fn h2_connect(addr: SocketAddr, window: Option<u32>) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut b = h2::client::Builder::new();
    if let Some(w) = window {
        b.initial_window_size(w);
    }
    let (send, conn) = b.handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.unwrap()
}

/// A v1 request as an HTTP/2 request head (the body is sent separately).
fn v1_head(s: &Sealed) -> Request<()> {
    Request::builder()
        .method(Method::POST)
        .uri("http://localhost/v1/chat/secure_completion")
        .header("content-type", "application/octet-stream")
        .header("x-payload-id", &s.id)
        .header("x-public-key", &s.public_key_header)
        .body(())
        .unwrap()
}

async fn x25519_config(addr: SocketAddr) -> KeyConfig {
    let b = reqwest::get(format!("http://{addr}/.well-known/hpke-keys"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    KeyConfig::parse_list(&b)
        .unwrap()
        .into_iter()
        .find(|c| c.kem == Kem::X25519)
        .unwrap()
}

/// A v2 streamed chat request sealed to `config`: (enc hex, body).
fn v2_stream_request(config: &KeyConfig, prompt: &str) -> (String, Vec<u8>) {
    let mut req = chat("m", prompt);
    req["stream"] = Value::Bool(true);
    let sealed = seal_v2(config, &req);
    let body = sealed.body();
    (sealed.enc_hex, body)
}

/// Polls `f` until it is true or `within` has passed.
async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// `maximum` over RSA
// ---------------------------------------------------------------------------

/// A client asks a default server for `maximum` over v1 (RSA-OAEP, not
/// post-quantum): refused with 403 naming the rule, exactly as v2 refuses
/// X25519 there, whether the tier comes from the header or from the model.
/// Only an operator's explicit `require_post_quantum = false` serves it.
#[tokio::test]
async fn maximum_tier_over_v1_rsa_is_refused_with_403() {
    let (b, backend) = echo(&["m", "secret"]);
    let b = b
        .tier(SecurityTier::Standard, allow_models(&["m"]))
        .tier(SecurityTier::Maximum, allow_models(&["m", "secret"]));
    let addr = serve(b.build().unwrap()).await;
    for (model, tier) in [("m", Some("maximum")), ("secret", None)] {
        let s = seal_json(&chat(model, "x"));
        let (status, body) = post_v1(addr, &s, None, tier).await;
        assert_eq!(
            status,
            403,
            "{model} {tier:?}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            detail(&body).contains("require_post_quantum"),
            "{}",
            detail(&body)
        );
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
    // `standard` over v1 is served as before.
    let s = seal_json(&chat("m", "x"));
    assert_eq!(post_v1(addr, &s, None, Some("standard")).await.0, 200);

    // The operator opts out for the tier: served over v1.
    let (b, _) = echo(&["m"]);
    let b = b
        .tier(SecurityTier::Maximum, allow_models(&["m"]))
        .require_post_quantum(SecurityTier::Maximum, false);
    let addr = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("m", "x"));
    let (status, body) = post_v1(addr, &s, None, Some("maximum")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        open_response(&body).1["_metadata"]["security_tier"],
        "maximum"
    );
}

// ---------------------------------------------------------------------------
// Running the backend twice
// ---------------------------------------------------------------------------

/// A slow request is cancelled mid-way (HTTP/2 stream reset while the
/// backend runs) and the very same bytes are sent again: the second is a
/// replay (409) and the backend ran once.
#[tokio::test]
async fn cancelled_mid_request_and_resent_is_409_and_the_backend_runs_once() {
    let (b, backend) = echo(&["slow"]);
    let addr = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("slow", "run me twice"));
    let mut send = h2_connect(addr, None).await;
    let (resp, mut body) = send.send_request(v1_head(&s), false).unwrap();
    body.send_data(Bytes::from(s.body.clone()), true).unwrap();
    // Reset once the backend has the request (the echo "slow" model sleeps
    // 600 ms).
    assert!(
        eventually(Duration::from_secs(10), async || backend
            .calls
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    drop(resp);
    body.send_reset(h2::Reason::CANCEL);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (status, answer) = post_v1(addr, &s, None, None).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&answer));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
}

/// The request time-out (504) and a backend failure (502) come after the
/// backend was given the request: sending the same bytes again is a replay.
#[tokio::test]
async fn timed_out_or_failed_request_resent_is_409_and_the_backend_runs_once() {
    let (b, backend) = echo(&["slow", "broken"]);
    let b = b.limits(Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    for (model, first) in [("slow", 504), ("broken", 502)] {
        let before = backend.calls.load(Ordering::SeqCst);
        let s = seal_json(&chat(model, "x"));
        assert_eq!(post_v1(addr, &s, None, None).await.0, first, "{model}");
        let (status, answer) = post_v1(addr, &s, None, None).await;
        assert_eq!(status, 409, "{model}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(backend.calls.load(Ordering::SeqCst), before + 1, "{model}");
    }
}

/// A request refused before it reached the backend (the processing queue
/// full: 503) keeps nothing: the client's retry of the same bytes (what the
/// reference client does after 503) is served.
#[tokio::test]
async fn retry_after_a_refusal_before_dispatch_is_served() {
    let (b, backend) = echo(&["m", "slow"]);
    let b = b.limits(Limits {
        max_concurrency: 1,
        max_queue: 0,
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    let slow = seal_json(&chat("slow", "hold the slot"));
    let holder = tokio::spawn(async move { post_v1(addr, &slow, None, None).await.0 });
    assert!(
        eventually(Duration::from_secs(10), async || backend
            .calls
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    let s = seal_json(&chat("m", "retry me"));
    assert_eq!(post_v1(addr, &s, None, None).await.0, 503);
    assert_eq!(holder.await.unwrap(), 200);
    let (status, answer) = post_v1(addr, &s, None, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(
        open_response(&answer).1["choices"][0]["message"]["content"],
        "echo:retry me"
    );
}

// ---------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------

/// Clients that send their headers, then the body a trickle at a time,
/// hold no processing slot: with `max_concurrency = 2` and no queue, two of
/// them leave the server answering everyone else at once.
#[tokio::test]
async fn slow_body_senders_do_not_hold_the_processing_slots() {
    use tokio::io::AsyncWriteExt;
    let (b, _) = echo(&["m"]);
    let b = b.limits(Limits {
        max_concurrency: 2,
        max_queue: 0,
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let s = seal_json(&chat("m", "slowly"));
        let head = raw_head(
            &[
                ("X-Payload-ID", &s.id),
                ("X-Public-Key", &s.public_key_header),
            ],
            s.body.len(),
        );
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&s.body[..10]).await.unwrap();
        slow.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let s = seal_json(&chat("m", "meanwhile"));
        let (status, body) = post_v1(addr, &s, None, None).await;
        assert_eq!(
            status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    drop(slow);
}

/// A backend whose streams never end: a 4 KiB chunk whenever asked. Counts
/// in `alive` the streams still alive (dropped when the server cuts them).
fn endless_streams(alive: &Arc<std::sync::atomic::AtomicUsize>) -> Arc<Double> {
    let alive = Arc::clone(alive);
    Double::new("endless", &["m"])
        .answer(|r| Ok(completion(r.model(), "short")))
        .stream(move |_| {
            alive.fetch_add(1, Ordering::SeqCst);
            let alive = Alive(Arc::clone(&alive));
            let text = "x".repeat(4096);
            Ok(futures::stream::repeat_with(move || {
                let _ = &alive;
                Ok(text_chunk("m", &text))
            })
            .boxed())
        })
        .arc()
}

struct Alive(Arc<std::sync::atomic::AtomicUsize>);
impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Clients that send most of a large body and then stall cannot make the
/// server buffer without bound: bodies count against
/// `max_buffered_body_bytes`, a body that would exceed it is refused (503)
/// while small requests still fit and are served.
#[tokio::test]
async fn stalled_large_bodies_cannot_fill_the_servers_memory() {
    use tokio::io::AsyncWriteExt;
    let (b, _) = echo(&["m"]);
    let b = b.limits(Limits {
        max_body_bytes: 64 * 1024,
        max_buffered_body_bytes: 96 * 1024,
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    // 60 KiB of a 64 KiB body, then nothing.
    let s = seal_json(&chat("m", "x"));
    let head = raw_head(
        &[
            ("X-Payload-ID", &s.id),
            ("X-Public-Key", &s.public_key_header),
        ],
        64 * 1024,
    );
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&vec![b' '; 60 * 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second large body does not fit in what is left...
    let big = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (status, body) = {
        let mut big = big;
        big.write_all(head.as_bytes()).await.unwrap();
        let _ = big.write_all(&vec![b' '; 60 * 1024]).await;
        let mut out = Vec::new();
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(Duration::from_secs(10), big.read_to_end(&mut out))
            .await
            .expect("answered at once")
            .unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        (
            text.split_whitespace().nth(1).unwrap_or("").to_owned(),
            text,
        )
    };
    assert_eq!(status, "503", "{body}");
    // ...a small request does.
    let s = seal_json(&chat("m", "small"));
    let (status, body) = post_v1(addr, &s, None, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    drop(stalled);
}

/// Two HTTP/2 clients ask for v2 streams and never read them (a zero
/// flow-control window): with `max_concurrency = 2` and no queue, the
/// streams are cut after the write time-out, the backend's streams are
/// dropped and the slots come back, so others are served.
#[tokio::test]
async fn stalled_stream_readers_do_not_hold_the_processing_slots() {
    let alive = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b = AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
        .backend("endless", endless_streams(&alive))
        .limits(Limits {
            max_concurrency: 2,
            max_queue: 0,
            stream_write_timeout: Duration::from_secs(1),
            ..Limits::default()
        });
    let addr = serve(b.build().unwrap()).await;
    let config = x25519_config(addr).await;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut send = h2_connect(addr, Some(0)).await;
        let (enc, body) = v2_stream_request(&config, &format!("never read {i}"));
        let req = Request::builder()
            .method(Method::POST)
            .uri("http://localhost/v1/chat/completions")
            .header("content-type", "application/json")
            .header("ehbp-encapsulated-key", enc)
            .body(())
            .unwrap();
        let (resp, mut tx) = send.send_request(req, false).unwrap();
        tx.send_data(Bytes::from(body), true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // Kept, never read.
        held.push((send, resp));
    }
    assert_eq!(alive.load(Ordering::SeqCst), 2);
    let t = Instant::now();
    let served = eventually(Duration::from_secs(20), async || {
        let s = seal_json(&chat("m", "meanwhile"));
        post_v1(addr, &s, None, None).await.0 == 200
    })
    .await;
    assert!(served, "the stalled streams still hold every slot");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        alive.load(Ordering::SeqCst),
        0,
        "backend streams left running"
    );
    drop(held);
}

/// A backend stream that stops producing is cut after the idle time-out
/// and gives its slot back.
#[tokio::test]
async fn silent_backend_streams_are_cut_after_the_idle_timeout() {
    let silent = Double::new("silent", &["m"])
        .answer(|r| Ok(completion(r.model(), "short")))
        .stream(|_| Ok(futures::stream::pending().boxed()));
    let b = AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
        .backend("silent", silent.arc())
        .limits(Limits {
            max_concurrency: 1,
            max_queue: 0,
            stream_idle_timeout: Duration::from_secs(1),
            ..Limits::default()
        });
    let addr = serve(b.build().unwrap()).await;
    let config = x25519_config(addr).await;
    let (enc, body) = v2_stream_request(&config, "wait forever");
    let t = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("ehbp-encapsulated-key", enc)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The body ends (cut: no sealed [DONE]) after about the idle time-out.
    let _ = tokio::time::timeout(Duration::from_secs(10), resp.bytes())
        .await
        .expect("the silent stream was never cut");
    assert!(t.elapsed() >= Duration::from_millis(900));
    let s = seal_json(&chat("m", "next"));
    assert_eq!(post_v1(addr, &s, None, None).await.0, 200);
}

// ---------------------------------------------------------------------------
// One caller filling the replay store
// ---------------------------------------------------------------------------

/// One API key sends cheap requests until the replay store refuses it; a
/// second API key is still served: no caller may hold more than its share
/// of the store.
#[tokio::test]
async fn one_api_key_filling_the_replay_store_leaves_room_for_others() {
    let (b, _) = echo(&["m"]);
    let mut keys = ApiKeys::open();
    keys.add_key("key-a");
    keys.add_key("key-b");
    let capacity = 16;
    let b = b.api_keys(keys).limits(Limits {
        replay_capacity: capacity,
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    let mut served_a = 0;
    let mut refused_a = false;
    for _ in 0..capacity {
        let s = seal_json(&chat("m", "fill"));
        match post_v1(addr, &s, Some("key-a"), None).await.0 {
            200 => served_a += 1,
            429 => {
                refused_a = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused_a, "key-a was never refused (429)");
    // Each request holds two entries (its id and its package).
    assert!(served_a * 2 < capacity, "key-a held {served_a} requests");
    let s = seal_json(&chat("m", "still served"));
    let (status, body) = post_v1(addr, &s, Some("key-b"), None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

// ---------------------------------------------------------------------------
// A restart reopening the replay window
// ---------------------------------------------------------------------------

/// A request captured (say, from a TLS terminator's log) is sent again after
/// the server restarted with the same key directory: still 409, and the
/// backend ran once. v1 packages carry no time, so only the journaled
/// replay window (`replay_window.log` in the key directory) stops this.
#[tokio::test]
async fn captured_request_replayed_after_a_restart_is_409() {
    use nomyo_server::serve::{self, EmbeddedParams};
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend(&["m"]);
    let start = || {
        let toml = format!(
            "key_dir = \"{}\"\nkey_bits = 2048\n[[backends]]\nname = \"local\"\ntype = \"embedded\"\n",
            dir.path().display()
        );
        let settings = common::settings(&toml);
        let backend = Arc::clone(&backend);
        async move {
            let prepared = serve::prepare(settings, move |_p: EmbeddedParams| {
                Ok(Arc::clone(&backend) as Arc<dyn nomyo_server::backend::Backend>)
            })
            .await
            .unwrap();
            nomyo_server::app(prepared.state)
        }
    };
    let app = start().await;
    let key = fetch_public_key(&app).await;
    let s = seal_to(&serde_json::to_vec(&chat("m", "once")).unwrap(), &key);
    let (status, _, _) = oneshot(&app, s.request(None, None)).await;
    assert_eq!(status, StatusCode::OK);
    drop(app);

    // The restarted server (same key directory) refuses the same bytes.
    let app = start().await;
    let (status, _, body) = oneshot(&app, s.request(None, None)).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
    // Under a fresh id too (the package itself is recorded).
    let mut again = s.request(None, None);
    again
        .headers_mut()
        .insert("x-payload-id", payload_id().parse().unwrap());
    assert_eq!(oneshot(&app, again).await.0, StatusCode::CONFLICT);
    assert!(dir.path().join("replay_window.log").exists());
}
