//! The hostile-input matrix: every case over one connection each, both
//! protocols, checked for status, speed, leaks and the server's health
//! after it. The v2 wire-field rows are in [`super::v2_fields`], the HTTP
//! framing rows in [`super::framing`].

use super::cases::{case, hostile_plaintexts, Case};
use super::framing::http_framing;
use super::v2_fields::v2_wire_fields;
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
    cases.extend(v2_wire_fields(
        &configs,
        xwing,
        x25519,
        enc_hex.clone(),
        good_frames,
        &good_plain,
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
    cases.extend(http_framing(&enc_hex));

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
