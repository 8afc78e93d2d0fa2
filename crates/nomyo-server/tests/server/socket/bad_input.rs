//! The bad-input matrix over raw HTTP: malformed, tampered and misaddressed
//! packages, bad headers, oversized, truncated and stalled bodies; each gets
//! its status and a JSON detail, and the server stays up.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1;
use serde_json::{json, Value};

use crate::common::*;

fn wire(sealed: &Sealed) -> Value {
    serde_json::from_slice(&sealed.body).unwrap()
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
