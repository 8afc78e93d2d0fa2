//! The hostile-input matrix: raw bytes over a real socket against
//! the server (`serve::bind` / `Bound::run` on 127.0.0.1:0), for both
//! protocols. Every case must get the right 4xx quickly, leak nothing
//! internal in its body (no Rust paths or type names, no panic text), and
//! leave the server answering `/health`.
//!
//! What `socket.rs` (v1 package fields, header values, empty, truncated and
//! oversized v1 bodies, a stalled v1 body) and `v2.rs` (tampered, reordered
//! and truncated chunks, key ids, plaintext refusal) already cover is not
//! repeated; this file adds the v2 wire fields, the decrypted plaintext of
//! both protocols (invalid UTF-8, deep nesting, huge `messages`), content
//! types, HTTP framing (oversized and invalid headers, conflicting lengths,
//! chunked bodies, HTTP/1.0, an HTTP/2 preface followed by garbage) and slow
//! clients.
//!
//! The raw-socket exchange, the request builders and the leak checks live
//! here; [`matrix`] holds the one matrix test (its row types and hostile
//! plaintexts in [`cases`], its v2 wire-field rows in [`v2_fields`], its
//! HTTP framing rows in [`framing`]), [`slow`] the slow clients.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use nomyo_core::v2::framing::{encode_frame, FrameDecoder};
use nomyo_core::v2::keys::{Kem, KeyConfig};
use nomyo_core::v2::request::RequestSealer;
use nomyo_core::v2::response::parse_response_nonce;
use nomyo_server::limits::Limits;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod cases;
mod framing;
mod matrix;
mod slow;
mod v2_fields;

/// The body limit of the server under test.
const LIMIT: usize = 1024 * 1024;
/// Every refusal must come at least this fast (generous for a busy CI box).
const QUICK: Duration = Duration::from_secs(5);

async fn server() -> (SocketAddr, Vec<KeyConfig>) {
    let limits = Limits {
        max_body_bytes: LIMIT,
        body_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let st = state_with(&["m"]).limits(limits).build().unwrap();
    let configs = st.hpke_keys().configs();
    let (addr, stop, _task) = serve_real(st, None).await;
    std::mem::forget(stop);
    (addr, configs)
}

/// What came back on one connection.
#[derive(Debug)]
struct Answer {
    /// 0 when the server closed without an HTTP/1 status line.
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `bytes` on a fresh connection and reads until the server closes
/// (every request here says `Connection: close` or is refused).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything (413): a
    // failed write is not an error here.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server must answer or close, not hang");
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let body = out.get(split + 4..).unwrap_or_default().to_vec();
    let status = if head.starts_with("HTTP/1.") {
        head.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    Answer { status, head, body }
}

/// Nothing an attacker can use: no Rust paths, type names or panic text.
fn assert_no_internals(name: &str, text: &str) {
    for bad in [
        "panicked",
        ".rs:",
        "src/",
        "/work",
        "/root",
        "nomyo_",
        "::",
        "thread '",
        "RUST_BACKTRACE",
        "serde",
        "hyper",
        "Error {",
    ] {
        assert!(!text.contains(bad), "{name}: body contains {bad:?}: {text}");
    }
}

async fn assert_healthy(addr: SocketAddr, after: &str) {
    let a = exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200, "/health after {after}: {}", a.head);
}

/// A request with the given start line, headers and body; adds Host,
/// Connection: close and (unless `length` is `None`) Content-Length.
fn request(path: &str, headers: &[(&str, String)], body: &[u8], length: Option<usize>) -> Vec<u8> {
    let mut h = format!("POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = length {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    h.push_str("\r\n");
    let mut out = h.into_bytes();
    out.extend_from_slice(body);
    out
}

fn v1_request(plaintext: &[u8], extra: &[(&str, String)]) -> Vec<u8> {
    let s = seal_to(plaintext, server_key().public_key());
    v1_raw(&s.id, &s.public_key_header, &s.body, extra)
}

fn v1_raw(id: &str, pk: &str, body: &[u8], extra: &[(&str, String)]) -> Vec<u8> {
    let mut h = vec![
        ("X-Payload-ID", id.to_owned()),
        ("X-Public-Key", pk.to_owned()),
    ];
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        h.push(("Content-Type", "application/octet-stream".into()));
    }
    h.extend(extra.iter().cloned());
    request("/v1/chat/secure_completion", &h, body, Some(body.len()))
}

/// A v2 request: (sealer, raw bytes).
fn v2_request(
    config: &KeyConfig,
    plaintext: &[u8],
    extra: &[(&str, String)],
) -> (RequestSealer, Vec<u8>) {
    let (enc, mut sealer) = RequestSealer::new(config).unwrap();
    let mut body = Vec::new();
    for c in plaintext.chunks(64 * 1024) {
        body.extend_from_slice(&sealer.seal_chunk(c).unwrap());
    }
    let mut h = vec![("Ehbp-Encapsulated-Key", hex::encode(enc))];
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        h.push(("Content-Type", "application/json".into()));
    }
    h.extend(extra.iter().cloned());
    let raw = request("/v1/chat/completions", &h, &body, Some(body.len()));
    (sealer, raw)
}

/// A v2 request with raw header values and body (no sealing).
fn v2_raw(enc_hex: &str, extra: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut h = vec![
        ("Ehbp-Encapsulated-Key", enc_hex.to_owned()),
        ("Content-Type", "application/json".to_owned()),
    ];
    h.extend(extra.iter().cloned());
    request("/v1/chat/completions", &h, body, Some(body.len()))
}

/// The `detail` of an error: plain JSON, or (v2 after the request opened)
/// sealed to the request and opened here.
fn error_detail(name: &str, a: &Answer, sealer: Option<&RequestSealer>) -> String {
    let plain = match (a.header("ehbp-response-nonce"), sealer) {
        (Some(nonce), Some(sealer)) => {
            let nonce = parse_response_nonce(nonce).unwrap();
            let mut opener = sealer.response_opener(&nonce).unwrap();
            let mut frames = FrameDecoder::new(1 << 20);
            frames.push(&a.body);
            let mut out = Vec::new();
            while let Some(f) = frames.next_frame().unwrap() {
                out.extend_from_slice(opener.open_chunk(&f).unwrap().expose_secret());
            }
            out
        }
        (Some(_), None) => panic!("{name}: a sealed error without a request context"),
        (None, _) => a.body.clone(),
    };
    let text = String::from_utf8_lossy(&plain).to_string();
    assert_no_internals(name, &text);
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{name}: error body is not JSON: {text:?}"));
    let d = v["detail"]
        .as_str()
        .or(v["title"].as_str())
        .unwrap_or_else(|| panic!("{name}: no detail: {text}"));
    assert!(!d.is_empty(), "{name}");
    d.to_owned()
}

fn chat_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// `depth` nested arrays: `[[[...]]]`.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}
