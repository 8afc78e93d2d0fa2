//! The hostile-input matrix: every case over one connection each, both
//! protocols, checked for status, speed, leaks and the server's health
//! after it.

use super::cases::{case, hostile_plaintexts, Case, V2Field};
use super::*;

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
