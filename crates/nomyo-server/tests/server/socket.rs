//! The server over a real socket (127.0.0.1:0) through the product's own
//! `serve::bind` / `Bound::run`: the round trip, the bad-input matrix over raw
//! HTTP (status, JSON detail, and the server stays up), graceful shutdown,
//! and TLS with a self-signed certificate.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1;
use serde_json::{json, Value};

fn wire(sealed: &Sealed) -> Value {
    serde_json::from_slice(&sealed.body).unwrap()
}

/// A secure request over reqwest (what a real HTTP client does).
async fn post(client: &reqwest::Client, base: &str, sealed: &Sealed) -> (u16, Vec<u8>) {
    let r = client
        .post(format!("{base}/v1/chat/secure_completion"))
        .header("content-type", "application/octet-stream")
        .header("x-payload-id", &sealed.id)
        .header("x-public-key", &sealed.public_key_header)
        .body(sealed.body.clone())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn round_trip_then_graceful_shutdown_finishes_in_flight() {
    let st = state_with(&["m", "slow"]).build().unwrap();
    let (addr, stop, task) = serve_real(st.clone(), None).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let pem = client
        .get(format!("{base}/pki/public_key"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, server_key().public_key().to_pem());
    let (s, body) = post(&client, &base, &seal_json(&chat("m", "over a socket"))).await;
    assert_eq!(s, 200);
    assert_eq!(
        open_response(&body).1["choices"][0]["message"]["content"],
        "echo:over a socket"
    );

    // A slow request in flight when shutdown starts still gets its answer.
    let c2 = client.clone();
    let b2 = base.clone();
    let slow = tokio::spawn(async move { post(&c2, &b2, &seal_json(&chat("slow", "x"))).await.0 });
    let t = std::time::Instant::now();
    while st.metrics().in_flight.get() < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "slow request never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), 200);
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Closed for new connections.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// XORs byte `at` of the base64 string `v` with `mask`.
fn flip_b64(v: &mut Value, at: usize, mask: u8) {
    let mut b = B64.decode(v.as_str().unwrap()).unwrap();
    b[at] ^= mask;
    *v = json!(B64.encode(b));
}

/// Raw exchange where the client stops sending early (half-close).
async fn raw_truncated(addr: std::net::SocketAddr, head: &str, part: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(part).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server must answer or close, not hang");
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// (name, payload id header, public key header, tier header, body, expected status)
type Case = (
    &'static str,
    Option<String>,
    Option<String>,
    Option<&'static str>,
    Vec<u8>,
    u16,
);

#[tokio::test]
async fn bad_input_matrix_over_raw_http() {
    let limits = nomyo_server::limits::Limits {
        max_body_bytes: 64 * 1024,
        body_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let st = state_with(&["m"]).limits(limits).build().unwrap();
    let (addr, _stop, _task) = serve_real(st, None).await;

    let good = || seal_json(&chat("m", "x"));
    let pk = good().public_key_header;
    let mutate = |f: &dyn Fn(&mut Value)| {
        let s = good();
        let mut w = wire(&s);
        f(&mut w);
        (s.id, serde_json::to_vec(&w).unwrap())
    };
    let plain = |p: &[u8]| {
        let s = seal_to(p, server_key().public_key());
        (s.id, s.body)
    };
    let other_key = PrivateKey::generate(RsaBits::B2048).unwrap();

    let mut cases: Vec<Case> = Vec::new();
    let mut add = |name, (id, body): (String, Vec<u8>), status| {
        cases.push((name, Some(id), Some(pk.clone()), None, body, status));
    };
    add("bad JSON", (payload_id(), b"{not json".to_vec()), 400);
    add(
        "JSON not an object",
        (payload_id(), b"[1,2,3]".to_vec()),
        400,
    );
    add(
        "invalid UTF-8",
        (payload_id(), vec![0xff, 0xfe, b'{', b'}']),
        400,
    );
    add(
        "trailing bytes",
        {
            let s = good();
            let mut b = s.body.clone();
            b.extend_from_slice(b" {}");
            (s.id, b)
        },
        400,
    );
    add(
        "wrong version",
        mutate(&|w| w["version"] = json!("2.0")),
        400,
    );
    add(
        "wrong algorithm",
        mutate(&|w| w["algorithm"] = json!("hybrid-aes128-rsa2048")),
        400,
    );
    add(
        "wrong key_algorithm",
        mutate(&|w| w["key_algorithm"] = json!("RSA-PKCS1")),
        400,
    );
    add("unknown field", mutate(&|w| w["extra"] = json!(1)), 400);
    add(
        "missing field",
        mutate(&|w| {
            w.as_object_mut().unwrap().remove("encrypted_aes_key");
        }),
        400,
    );
    add(
        "bad base64 ciphertext",
        mutate(&|w| w["encrypted_payload"]["ciphertext"] = json!("!!!not base64")),
        400,
    );
    add(
        "bad base64 key",
        mutate(&|w| w["encrypted_aes_key"] = json!("@@@")),
        400,
    );
    add(
        "nonce of 8 bytes",
        mutate(&|w| w["encrypted_payload"]["nonce"] = json!(B64.encode([0u8; 8]))),
        400,
    );
    add(
        "tag of 15 bytes",
        mutate(&|w| w["encrypted_payload"]["tag"] = json!(B64.encode([0u8; 15]))),
        400,
    );
    add(
        "wrapped key of 100 bytes",
        mutate(&|w| w["encrypted_aes_key"] = json!(B64.encode([1u8; 100]))),
        400,
    );
    add(
        "tampered tag",
        mutate(&|w| flip_b64(&mut w["encrypted_payload"]["tag"], 0, 1)),
        400,
    );
    add(
        "tampered ciphertext",
        mutate(&|w| flip_b64(&mut w["encrypted_payload"]["ciphertext"], 0, 0x80)),
        400,
    );
    add(
        "tampered wrapped key",
        mutate(&|w| flip_b64(&mut w["encrypted_aes_key"], 10, 1)),
        400,
    );
    add(
        "sealed to another key",
        {
            let s = seal_to(
                &serde_json::to_vec(&chat("m", "x")).unwrap(),
                other_key.public_key(),
            );
            (s.id, s.body)
        },
        400,
    );
    add("plaintext not JSON", plain(b"hello, not json"), 400);
    add("plaintext a JSON array", plain(b"[1]"), 400);
    add(
        "empty messages",
        plain(br#"{"model":"m","messages":[]}"#),
        400,
    );
    add(
        "messages not an array",
        plain(br#"{"model":"m","messages":"hi"}"#),
        400,
    );
    add(
        "missing model",
        plain(br#"{"messages":[{"role":"user","content":"x"}]}"#),
        400,
    );
    add(
        "stream true",
        plain(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#),
        400,
    );
    add(
        "stream not a bool",
        plain(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#),
        400,
    );
    add("empty body", (payload_id(), Vec::new()), 400);
    add(
        "body over the limit",
        (payload_id(), vec![b' '; 65 * 1024]),
        413,
    );

    let g = good();
    cases.push((
        "missing X-Public-Key",
        Some(g.id.clone()),
        None,
        None,
        g.body.clone(),
        400,
    ));
    cases.push((
        "garbage X-Public-Key",
        Some(payload_id()),
        Some("hello%20world".into()),
        None,
        good().body,
        400,
    ));
    cases.push((
        "X-Public-Key truncated PEM",
        Some(payload_id()),
        Some(v1::encode_public_key_header(
            &client_key().public_key().to_pem()[..200],
        )),
        None,
        good().body,
        400,
    ));
    cases.push((
        "missing X-Payload-ID",
        None,
        Some(pk.clone()),
        None,
        good().body,
        400,
    ));
    cases.push((
        "X-Payload-ID with spaces",
        Some("a b".into()),
        Some(pk.clone()),
        None,
        good().body,
        400,
    ));
    cases.push((
        "X-Payload-ID too long",
        Some("a".repeat(200)),
        Some(pk.clone()),
        None,
        good().body,
        400,
    ));
    cases.push((
        "bad tier",
        Some(payload_id()),
        Some(pk.clone()),
        Some("ultra"),
        good().body,
        400,
    ));
    cases.push((
        "tier in capitals",
        Some(payload_id()),
        Some(pk.clone()),
        Some("HIGH"),
        good().body,
        400,
    ));

    for (name, id, key, tier, body, expected) in cases {
        let mut extra: Vec<(&str, &str)> = vec![("Content-Type", "application/octet-stream")];
        if let Some(id) = &id {
            extra.push(("X-Payload-ID", id));
        }
        if let Some(k) = &key {
            extra.push(("X-Public-Key", k));
        }
        if let Some(t) = tier {
            extra.push(("X-Security-Tier", t));
        }
        let (status, resp) = raw_http(addr, &raw_head(&extra, body.len()), &body).await;
        assert_eq!(status, expected, "{name}: {resp}");
        let v: Value =
            serde_json::from_str(&resp).unwrap_or_else(|_| panic!("{name}: not JSON: {resp}"));
        let d = v["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no detail: {resp}"));
        assert!(!d.is_empty(), "{name}");
        eprintln!("{name:28} -> {status} {d}");
    }

    // A Content-Length far beyond the limit is refused before reading.
    let g = good();
    let head = raw_head(&[("X-Payload-ID", &g.id), ("X-Public-Key", &pk)], 1 << 30);
    let (status, _) = raw_http(addr, &head, b"{").await;
    assert_eq!(status, 413);
    // A body cut short (client half-closes) is a 4xx, not a hang or a 500.
    let g = good();
    let head = raw_head(
        &[("X-Payload-ID", &g.id), ("X-Public-Key", &pk)],
        g.body.len(),
    );
    let status = raw_truncated(addr, &head, &g.body[..20]).await;
    assert!(
        status == 0 || (400..500).contains(&status),
        "truncated body: {status}"
    );
    // A body that never finishes arriving gets 408 after the body timeout.
    let g = good();
    let head = raw_head(
        &[("X-Payload-ID", &g.id), ("X-Public-Key", &pk)],
        g.body.len(),
    );
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&g.body[..20]).await.unwrap();
        let mut out = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut out))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }

    // The server is still up and serves a good request.
    let g = good();
    let head = raw_head(
        &[
            ("X-Payload-ID", &g.id),
            ("X-Public-Key", &g.public_key_header),
            ("X-Security-Tier", "standard"),
        ],
        g.body.len(),
    );
    let (status, resp) = raw_http(addr, &head, &g.body).await;
    assert_eq!(status, 200, "{resp}");
    let (status, _) = raw_http(
        addr,
        "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert_pem) = self_signed_tls(dir.path());
    let bound = nomyo_server::serve::bind("127.0.0.1:0".parse().unwrap(), Some(&tls))
        .await
        .unwrap();
    assert!(bound.url().starts_with("https://127.0.0.1:"));
    let (addr, _stop, _task) = serve_real(state_with(&["m"]).build().unwrap(), Some(&tls)).await;
    drop(bound);
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (s, body) = post(&client, &base, &seal_json(&chat("m", "over tls"))).await;
    assert_eq!(s, 200);
    assert_eq!(
        open_response(&body).1["choices"][0]["message"]["content"],
        "echo:over tls"
    );
    // Plain HTTP on the TLS port gets no answer a client could take for success.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health", addr.port()))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn bad_tls_files_are_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.pem");
    std::fs::write(&c, "not a cert").unwrap();
    let tls = nomyo_server::config::TlsFiles {
        cert: c.clone(),
        key: c,
    };
    let e = nomyo_server::serve::bind("127.0.0.1:0".parse().unwrap(), Some(&tls))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
}

/// One raw exchange from a chosen loopback source address.
async fn raw_from(src: &str, addr: std::net::SocketAddr, head: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn open_server_rate_limits_each_peer_address() {
    let limits = nomyo_server::limits::Limits {
        rate_per_minute: 1,
        rate_burst: 1,
        ..Default::default()
    };
    let st = state_with(&["m"]).limits(limits).build().unwrap();
    let (addr, _stop, _task) = serve_real(st, None).await;
    let send = |src: &'static str| async move {
        let g = seal_json(&chat("m", "x"));
        let head = raw_head(
            &[
                ("X-Payload-ID", &g.id),
                ("X-Public-Key", &g.public_key_header),
            ],
            g.body.len(),
        );
        raw_from(src, addr, &head, &g.body).await
    };
    assert_eq!(send("127.0.0.1").await, 200);
    assert_eq!(send("127.0.0.1").await, 429);
    // Another peer has its own bucket (all of 127/8 is loopback on Linux).
    assert_eq!(send("127.0.0.2").await, 200);
    assert_eq!(send("127.0.0.2").await, 429);
}

/// A request refused on its headers alone (here: plaintext to the v2 route
/// and a v1 request without its headers, refused before the body is read)
/// leaves its body unread, so the server ends the connection after the
/// refusal: the response must say `Connection: close`, or a client that
/// reuses the connection sends its next request into a connection the
/// server closes, and gets no answer at all ("Server disconnected without
/// sending a response", seen with an EHBP client that streams its body).
#[tokio::test]
async fn a_refusal_before_the_body_says_the_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let st = state_with(&["m"]).build().unwrap();
    let (addr, _stop, _task) = serve_real(st, None).await;
    let body = "x".repeat(300);
    for path in ["/v1/chat/completions", "/v1/chat/secure_completion"] {
        let sized = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len(),
        );
        // Chunked, as an EHBP client streams its body.
        let chunked = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len(),
        );
        for request in [&sized, &chunked] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // The head first; the body once the refusal is on its way.
            let (head, rest) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
            s.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = s.write_all(rest.as_bytes()).await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
                .await
                .expect("the server must answer and close, not hang");
            let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
            assert!(text.starts_with("http/1.1 4"), "{path}: {text}");
            assert!(text.contains("\r\nconnection: close\r\n"), "{path}: {text}");
        }
    }
}
