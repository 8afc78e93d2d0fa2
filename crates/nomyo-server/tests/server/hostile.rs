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

/// A v2 wire-field row: name, `Ehbp-Encapsulated-Key` value, more headers,
/// body, expected statuses.
type V2Field = (
    &'static str,
    String,
    Vec<(&'static str, String)>,
    Vec<u8>,
    &'static [u16],
);

/// One row: name, request bytes, the v2 context if any, expected statuses.
struct Case {
    name: String,
    bytes: Vec<u8>,
    sealer: Option<RequestSealer>,
    expect: &'static [u16],
}

fn case(name: impl Into<String>, bytes: Vec<u8>, expect: &'static [u16]) -> Case {
    Case {
        name: name.into(),
        bytes,
        sealer: None,
        expect,
    }
}

/// Plaintext the server decrypts and must refuse, for both protocols.
fn hostile_plaintexts() -> Vec<(&'static str, Vec<u8>, &'static [u16])> {
    let deep_model = format!(
        r#"{{"model":{},"messages":[{{"role":"user","content":"x"}}]}}"#,
        nested(100_000)
    );
    let deep_messages = format!(r#"{{"model":"m","messages":[{}]}}"#, nested(5_000));
    let mut bad_utf8_string = br#"{"model":"m","messages":[{"role":"user","content":""#.to_vec();
    bad_utf8_string.extend_from_slice(&[0xC3, 0x28, 0xFF]);
    bad_utf8_string.extend_from_slice(br#""}]}"#);
    let lone_surrogate = br#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#;
    vec![
        (
            "plaintext invalid UTF-8",
            vec![0xFF, 0xFE, 0xFD, b'{', b'}'],
            &[400],
        ),
        (
            "invalid UTF-8 inside a JSON string",
            bad_utf8_string,
            &[400],
        ),
        // serde_json accepts an escaped lone surrogate only as an error.
        ("lone surrogate escape", lone_surrogate.to_vec(), &[400]),
        (
            "100k nested arrays as the model",
            deep_model.into_bytes(),
            &[400],
        ),
        ("100k bare [", "[".repeat(100_000).into_bytes(), &[400]),
        (
            "5k nested arrays in messages",
            deep_messages.into_bytes(),
            &[400],
        ),
        (
            "model a number",
            chat_bytes(&json!({"model": 7, "messages": [{"role": "user", "content": "x"}]})),
            &[400],
        ),
        (
            "model empty",
            chat_bytes(&json!({"model": "", "messages": [{"role": "user", "content": "x"}]})),
            &[400],
        ),
        (
            "messages null",
            chat_bytes(&json!({"model": "m", "messages": null})),
            &[400],
        ),
        (
            "unknown model",
            chat_bytes(
                &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
            ),
            &[404],
        ),
        (
            "JSON with trailing garbage",
            b"{\"model\":\"m\",\"messages\":[1]} trailing".to_vec(),
            &[400],
        ),
        ("NUL bytes", vec![0u8; 1024], &[400]),
    ]
}

#[tokio::test]
async fn hostile_input_matrix_both_protocols() {
    let (addr, configs) = server().await;
    let xwing = configs.iter().find(|c| c.kem == Kem::XWing).unwrap();
    let x25519 = configs.iter().find(|c| c.kem == Kem::X25519).unwrap();
    let good_plain = chat_bytes(&chat("m", "hello"));
    let mut cases: Vec<Case> = Vec::new();

    // --- The decrypted plaintext, both protocols -------------------------
    for (name, plain, expect) in hostile_plaintexts() {
        cases.push(case(format!("v1 {name}"), v1_request(&plain, &[]), expect));
        let (sealer, bytes) = v2_request(xwing, &plain, &[]);
        cases.push(Case {
            name: format!("v2 {name}"),
            bytes,
            sealer: Some(sealer),
            expect,
        });
    }

    // --- Huge `messages` ---------------------------------------------------
    // Within the body limit: served (the limit is what bounds memory).
    let many: Vec<Value> = (0..8_000)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let within = chat_bytes(&json!({"model": "m", "messages": many}));
    assert!(within.len() * 4 / 3 < LIMIT);
    cases.push(case(
        "v1 8k messages within the limit",
        v1_request(&within, &[]),
        &[200],
    ));
    let (sealer, bytes) = v2_request(xwing, &within, &[]);
    cases.push(Case {
        name: "v2 8k messages within the limit".into(),
        bytes,
        sealer: Some(sealer),
        expect: &[200],
    });
    // Beyond it: 413.
    let many: Vec<Value> = (0..60_000)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let beyond = chat_bytes(&json!({"model": "m", "messages": many}));
    assert!(beyond.len() > LIMIT);
    cases.push(case(
        "v1 60k messages beyond the limit",
        v1_request(&beyond, &[]),
        &[413],
    ));
    let (_, bytes) = v2_request(xwing, &beyond, &[]);
    cases.push(case("v2 60k messages beyond the limit", bytes, &[413]));

    // --- v1: the outer package as hostile JSON ------------------------------
    let pk = seal_json(&chat("m", "x")).public_key_header;
    cases.push(case(
        "v1 package of 100k nested arrays",
        v1_raw(&payload_id(), &pk, nested(100_000).as_bytes(), &[]),
        &[400],
    ));
    cases.push(case(
        "v1 package of 100k bare [",
        v1_raw(&payload_id(), &pk, "[".repeat(100_000).as_bytes(), &[]),
        &[400],
    ));
    let deep_field = format!(
        r#"{{"version":"1.0","algorithm":"hybrid-aes256-rsa4096","encrypted_payload":{},"encrypted_aes_key":"AA==","key_algorithm":"RSA-OAEP-SHA256","payload_algorithm":"AES-256-GCM"}}"#,
        nested(50_000)
    );
    cases.push(case(
        "v1 package with a 50k-deep field",
        v1_raw(&payload_id(), &pk, deep_field.as_bytes(), &[]),
        &[400],
    ));
    let huge_string = format!(
        r#"{{"version":"1.0","algorithm":"hybrid-aes256-rsa4096","encrypted_payload":{{"ciphertext":"{}","nonce":"AAAAAAAAAAAAAAAA","tag":"AAAAAAAAAAAAAAAAAAAAAA=="}},"encrypted_aes_key":"AA==","key_algorithm":"RSA-OAEP-SHA256","payload_algorithm":"AES-256-GCM"}}"#,
        "A".repeat(900_000)
    );
    cases.push(case(
        "v1 package with a 900 KB ciphertext and a bad key",
        v1_raw(&payload_id(), &pk, huge_string.as_bytes(), &[]),
        &[400],
    ));
    cases.push(case(
        "v1 package of invalid UTF-8 in a string",
        v1_raw(&payload_id(), &pk, b"{\"version\":\"\xff\xfe\"}", &[]),
        &[400],
    ));

    // --- v2: every wire field ----------------------------------------------
    let (enc, mut sealer) = RequestSealer::new(xwing).unwrap();
    let enc_hex = hex::encode(&enc);
    let good_frames = sealer.seal_chunk(&good_plain).unwrap();
    // Key ids are random per key set: pick one the server does not have.
    let unknown_id = (0..=255u8)
        .find(|id| configs.iter().all(|c| c.key_id != *id))
        .unwrap()
        .to_string();
    let v2_field_cases: Vec<V2Field> = vec![
        (
            "enc not hex",
            "zz".repeat(1120),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc odd length",
            format!("{enc_hex}0"),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc uppercase+spaces",
            format!(" {} ", "G".repeat(64)),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc empty",
            String::new(),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc 8 KiB",
            "ab".repeat(4096),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc of no suite's length",
            enc_hex[..200].to_owned(),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id negative",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", "-1".into())],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id 256",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", "256".into())],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id 1.0",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", "1.0".into())],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id empty",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", String::new())],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id unknown",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", unknown_id.clone())],
            good_frames.clone(),
            &[422],
        ),
        (
            "tier invalid",
            enc_hex.clone(),
            vec![("X-Security-Tier", "ultra".into())],
            good_frames.clone(),
            &[400],
        ),
        ("body empty", enc_hex.clone(), vec![], Vec::new(), &[400]),
        (
            "body of zero-length frames only",
            enc_hex.clone(),
            vec![],
            vec![0u8; 64],
            &[400],
        ),
        (
            "body 3 bytes (inside a prefix)",
            enc_hex.clone(),
            vec![],
            vec![0, 0, 1],
            &[400],
        ),
        (
            "frame announcing 4 GiB",
            enc_hex.clone(),
            vec![],
            {
                let mut b = u32::MAX.to_be_bytes().to_vec();
                b.extend_from_slice(&[7u8; 100]);
                b
            },
            &[400],
        ),
        (
            "frame of garbage ciphertext",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", xwing.key_id.to_string())],
            {
                let mut b = Vec::new();
                encode_frame(&[0x55u8; 300], &mut b);
                b
            },
            &[400],
        ),
        (
            "plaintext JSON body, no enc header",
            String::new(),
            vec![],
            good_plain.clone(),
            &[400],
        ),
    ];
    for (name, enc_value, extra, body, expect) in v2_field_cases {
        let bytes = if name.contains("no enc header") {
            request(
                "/v1/chat/completions",
                &[("Content-Type", "application/json".into())],
                &body,
                Some(body.len()),
            )
        } else {
            v2_raw(&enc_value, &extra, &body)
        };
        cases.push(case(format!("v2 {name}"), bytes, expect));
    }
    // X25519 enc sent with the X-Wing key's id: 400, not a downgrade.
    let (xe, mut xs) = RequestSealer::new(x25519).unwrap();
    let body = xs.seal_chunk(&good_plain).unwrap();
    cases.push(case(
        "v2 X25519 enc under the X-Wing key id",
        v2_raw(
            &hex::encode(xe),
            &[("Nomyo-Key-Id", xwing.key_id.to_string())],
            &body,
        ),
        &[400],
    ));

    // --- Content types: not part of the protocol's security ----------------
    // The body is authenticated ciphertext; the server does not dispatch on
    // Content-Type, so a wrong one neither breaks a good request nor makes a
    // bad one pass.
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-16",
        "\u{7f}",
    ] {
        let extra = [("Content-Type", ct.to_owned())];
        let expect_good: &'static [u16] = if ct == "\u{7f}" { &[400] } else { &[200] };
        cases.push(case(
            format!("v1 good body, Content-Type {ct:?}"),
            v1_request(&good_plain, &extra),
            expect_good,
        ));
        let (sealer, bytes) = v2_request(xwing, &good_plain, &extra);
        cases.push(Case {
            name: format!("v2 good body, Content-Type {ct:?}"),
            bytes,
            sealer: Some(sealer),
            expect: expect_good,
        });
        cases.push(case(
            format!("v1 garbage body, Content-Type {ct:?}"),
            v1_raw(&payload_id(), &pk, b"a=b&c=d", &extra),
            &[400],
        ));
    }

    // --- HTTP framing --------------------------------------------------------
    let g = seal_json(&chat("m", "x"));
    let v1_headers = |id: &str| {
        format!(
            "X-Payload-ID: {id}\r\nX-Public-Key: {}\r\nContent-Type: application/octet-stream\r\n",
            g.public_key_header
        )
    };
    cases.push(case(
        "header value of 1 MiB",
        format!(
            "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(1 << 20)
        )
        .into_bytes(),
        &[431, 0],
    ));
    cases.push(case(
        "X-Public-Key of 64 KiB",
        v1_raw(&payload_id(), &"A".repeat(64 * 1024), &g.body, &[]),
        &[400, 431],
    ));
    cases.push(case(
        "200 headers",
        {
            let mut h = String::from("GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
            for i in 0..200 {
                h.push_str(&format!("X-H{i}: v\r\n"));
            }
            h.push_str("\r\n");
            h.into_bytes()
        },
        &[431, 0],
    ));
    cases.push(case(
        "control character in a header value",
        b"GET /health HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\nConnection: close\r\n\r\n".to_vec(),
        &[400, 0],
    ));
    cases.push(case(
        "garbage request line",
        b"\x16\x03\x01 NOT HTTP AT ALL\r\n\r\n".to_vec(),
        &[400, 0],
    ));
    cases.push(case(
        "Content-Length and Transfer-Encoding together",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            v1_headers(&payload_id())
        )
        .into_bytes(),
        &[400, 0],
    ));
    cases.push(case(
        "two different Content-Lengths",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Content-Length: 5\r\nContent-Length: 7\r\n\r\nabcdefg",
            v1_headers(&payload_id())
        )
        .into_bytes(),
        &[400, 0],
    ));
    cases.push(case(
        "Content-Length not a number",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Content-Length: 12abc\r\n\r\nabc",
            v1_headers(&payload_id())
        )
        .into_bytes(),
        &[400, 0],
    ));
    cases.push(case(
        "chunked body with a bad chunk size",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Transfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n",
            v1_headers(&payload_id())
        )
        .into_bytes(),
        &[400, 0],
    ));
    cases.push(case(
        "chunked body beyond the limit (no Content-Length)",
        {
            let mut b = format!(
                "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Transfer-Encoding: chunked\r\n\r\n",
                v1_headers(&payload_id())
            )
            .into_bytes();
            let chunk = vec![b' '; 256 * 1024];
            for _ in 0..5 {
                b.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                b.extend_from_slice(&chunk);
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"0\r\n\r\n");
            b
        },
        &[413],
    ));
    cases.push(case(
        "chunked good v1 body",
        {
            let mut b = format!(
                "POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Transfer-Encoding: chunked\r\n\r\n",
                v1_headers(&g.id)
            )
            .into_bytes();
            for c in g.body.chunks(100) {
                b.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                b.extend_from_slice(c);
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"0\r\n\r\n");
            b
        },
        &[200],
    ));
    cases.push(case(
        "Expect: 100-continue with a Content-Length beyond the limit",
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\nEhbp-Encapsulated-Key: {enc_hex}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            LIMIT * 4
        )
        .into_bytes(),
        &[413],
    ));
    cases.push(case(
        "HTTP/1.0 GET /health",
        b"GET /health HTTP/1.0\r\n\r\n".to_vec(),
        &[200],
    ));
    let g10 = seal_json(&chat("m", "over HTTP/1.0"));
    cases.push(case(
        "HTTP/1.0 v1 request with Content-Length",
        {
            let mut b = format!(
                "POST /v1/chat/secure_completion HTTP/1.0\r\n{}Content-Length: {}\r\n\r\n",
                v1_headers(&g10.id).replace(&g.public_key_header, &g10.public_key_header),
                g10.body.len()
            )
            .into_bytes();
            b.extend_from_slice(&g10.body);
            b
        },
        &[200],
    ));
    cases.push(case(
        "HTTP/1.0 v1 request without Content-Length (no body)",
        format!(
            "POST /v1/chat/secure_completion HTTP/1.0\r\n{}\r\n{}",
            v1_headers(&payload_id()),
            String::from_utf8_lossy(&g.body)
        )
        .into_bytes(),
        &[400],
    ));
    cases.push(case(
        "HTTP/2 preface then garbage",
        {
            let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            b.extend_from_slice(&[0xff; 64]);
            b
        },
        // The server speaks HTTP/2 after the preface and closes with GOAWAY.
        &[0],
    ));
    cases.push(case(
        "unknown HTTP version",
        b"GET /health HTTP/3.7\r\nHost: t\r\n\r\n".to_vec(),
        &[400, 505, 0],
    ));
    cases.push(case(
        "absolute-form target to another host",
        b"GET http://evil.example/health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_vec(),
        &[200, 400, 404],
    ));
    cases.push(case(
        "path traversal",
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
        &[400, 404],
    ));

    let mut summary = Vec::new();
    for c in &cases {
        let t = Instant::now();
        let a = exchange(addr, &c.bytes).await;
        let took = t.elapsed();
        assert!(
            c.expect.contains(&a.status),
            "{}: got {} (want {:?}): {} {}",
            c.name,
            a.status,
            c.expect,
            a.head,
            String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
        );
        assert!(took < QUICK, "{}: took {took:?}", c.name);
        assert_no_internals(&c.name, &a.head);
        if (400..500).contains(&a.status) && !a.body.is_empty() {
            let d = error_detail(&c.name, &a, c.sealer.as_ref());
            summary.push(format!(
                "{:60} {} {:>5} ms  {d}",
                c.name,
                a.status,
                took.as_millis()
            ));
        } else {
            // A sealed answer's body is ciphertext (random bytes, which can
            // hold "::" by chance); it has no readable internals to check.
            if a.header("ehbp-response-nonce").is_none() {
                assert_no_internals(&c.name, &String::from_utf8_lossy(&a.body));
            }
            summary.push(format!(
                "{:60} {} {:>5} ms",
                c.name,
                a.status,
                took.as_millis()
            ));
        }
        assert_healthy(addr, &c.name).await;
    }
    eprintln!("{}", summary.join("\n"));
}

/// Slow clients: a body dripped a byte at a time gets 408 once the body
/// timeout (1 s here) has passed, on both protocols; headers that never
/// finish and connections that send nothing hold no worker: `/health` and a
/// real request are served meanwhile.
#[tokio::test]
async fn slow_clients_time_out_and_do_not_block_others() {
    let (addr, configs) = server().await;
    let xwing = configs.iter().find(|c| c.kem == Kem::XWing).unwrap();
    // Idle connections and never-finished headers, held open throughout.
    let mut idle = Vec::new();
    for i in 0..50 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nX-Payload-ID: ")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    assert_healthy(addr, "50 idle connections").await;

    let v1 = v1_request(&chat_bytes(&chat("m", "slowly")), &[]);
    let (_, v2) = v2_request(xwing, &chat_bytes(&chat("m", "slowly")), &[]);
    for (name, bytes) in [("v1", v1), ("v2", v2)] {
        let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes[..head_end]).await.unwrap();
        let t = Instant::now();
        let drip = async {
            for b in &bytes[head_end..] {
                if s.write_all(std::slice::from_ref(b)).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        // Meanwhile another client is served.
        let other = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t = Instant::now();
            assert_healthy(addr, "a dripping body").await;
            t.elapsed()
        };
        let (_, health_took) =
            tokio::join!(tokio::time::timeout(Duration::from_secs(4), drip), other);
        assert!(health_took < Duration::from_secs(1), "{health_took:?}");
        let mut out = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out))
            .await
            .expect("an answer, not a hang")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&out[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{name}: {text}");
        assert_no_internals(name, &text);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < QUICK,
            "{name}: 408 after {took:?}"
        );
    }
    // Still serving real work with the idle connections open.
    let g = seal_json(&chat("m", "after the slow ones"));
    let a = exchange(addr, &v1_raw(&g.id, &g.public_key_header, &g.body, &[])).await;
    assert_eq!(a.status, 200, "{}", a.head);
    drop(idle);
}
