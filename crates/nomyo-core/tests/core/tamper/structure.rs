//! Structural damage is `Malformed` naming the field: bad base64, missing,
//! unknown and duplicate fields, response-only fields, not JSON at all, and
//! trailing bytes.

use super::*;

#[test]
fn bad_base64_in_every_field() {
    let (_, v) = sealed();
    let fields = [
        (
            "/encrypted_payload/ciphertext",
            "encrypted_payload.ciphertext",
        ),
        ("/encrypted_payload/nonce", "encrypted_payload.nonce"),
        ("/encrypted_payload/tag", "encrypted_payload.tag"),
        ("/encrypted_aes_key", "encrypted_aes_key"),
    ];
    for (ptr, name) in fields {
        let good = v.pointer(ptr).unwrap().as_str().unwrap().to_owned();
        let unpadded = good.trim_end_matches('=').to_owned();
        let urlsafe = good.replace('+', "-").replace('/', "_");
        let mut variants = vec![
            ("not base64 at all".to_owned(), "garbage"),
            (format!("{good}="), "extra padding"),
            (
                format!("{}\n{}", &good[..4], &good[4..]),
                "embedded newline",
            ),
            (format!(" {good}"), "leading space"),
            (format!("{good}!"), "trailing junk"),
            ("====".to_owned(), "only padding"),
        ];
        if unpadded != good {
            variants.push((unpadded, "padding removed"));
        }
        if urlsafe != good {
            variants.push((urlsafe, "URL-safe alphabet"));
        }
        for (bad, what) in variants {
            let msg = expect(
                &format!("{name}: {what}"),
                &with(&v, |v| *v.pointer_mut(ptr).unwrap() = json!(bad)),
                Want::Malformed,
            );
            assert!(msg.contains(name), "{what}: {msg}");
        }
        // Wrong JSON type.
        for bad in [json!(null), json!(12), json!([]), json!({})] {
            expect(
                &format!("{name} = {bad}"),
                &with(&v, |v| *v.pointer_mut(ptr).unwrap() = bad.clone()),
                Want::Malformed,
            );
        }
    }
}

#[test]
fn missing_unknown_and_duplicate_fields() {
    let (wire, v) = sealed();
    for field in [
        "version",
        "algorithm",
        "encrypted_payload",
        "encrypted_aes_key",
    ] {
        let msg = expect(
            &format!("top-level {field} missing"),
            &with(&v, |v| {
                v.as_object_mut().unwrap().remove(field);
            }),
            Want::Malformed,
        );
        assert!(msg.contains(field), "{msg}");
    }
    for field in ["ciphertext", "nonce", "tag"] {
        let msg = expect(
            &format!("encrypted_payload.{field} missing"),
            &with(&v, |v| {
                v["encrypted_payload"]
                    .as_object_mut()
                    .unwrap()
                    .remove(field);
            }),
            Want::Malformed,
        );
        assert!(msg.contains(field), "{msg}");
    }
    expect(
        "unknown top-level field",
        &with(&v, |v| v["aad"] = json!("x")),
        Want::Malformed,
    );
    expect(
        "unknown nested field",
        &with(&v, |v| v["encrypted_payload"]["aad"] = json!("x")),
        Want::Malformed,
    );
    expect(
        "encrypted_payload not an object",
        &with(&v, |v| v["encrypted_payload"] = json!("x")),
        Want::Malformed,
    );
    // A duplicate key is refused rather than resolved (Python's json keeps
    // the last one; a parser that kept the first would see another package).
    let text = String::from_utf8(wire.clone()).unwrap();
    let dup = text.replacen(
        "{\"version\":\"1.0\"",
        "{\"version\":\"1.0\",\"version\":\"1.0\"",
        1,
    );
    assert_ne!(dup, text, "test setup: version must come first");
    expect("duplicate version", dup.as_bytes(), Want::Malformed);
    let dup_nonce = text.replacen("\"nonce\":", "\"nonce\":\"AAAAAAAAAAAAAAAA\",\"nonce\":", 1);
    expect("duplicate nonce", dup_nonce.as_bytes(), Want::Malformed);
}

#[test]
fn response_only_fields_are_typed() {
    let (_, v) = sealed();
    let ok = with(&v, |v| {
        v["payload_id"] = json!("5b0c4d9e-1f0a-4a55-9d8e-0123456789ab");
        v["processed_at"] = json!(1_764_300_000);
    });
    let p = Package::from_json(&ok).unwrap();
    assert_eq!(p.processed_at, Some(1_764_300_000));
    assert_eq!(parse_and_open(&ok).unwrap(), PLAINTEXT);
    expect(
        "payload_id a number",
        &with(&v, |v| v["payload_id"] = json!(5)),
        Want::Malformed,
    );
    expect(
        "processed_at a string",
        &with(&v, |v| v["processed_at"] = json!("now")),
        Want::Malformed,
    );
}

#[test]
fn not_a_package_at_all() {
    let cases: [&[u8]; 12] = [
        b"",
        b" ",
        b"null",
        b"[]",
        b"\"1.0\"",
        b"{}",
        b"{",
        b"\xff\xfe{}",
        b"{\"version\":\"1.0\"}",
        &[0u8; 64],
        b"\xef\xbb\xbf{}",
        b"{\"version\":\"1.0\",\"algorithm\":\"hybrid-aes256-rsa4096\"}",
    ];
    for c in cases {
        expect(&format!("{c:?}"), c, Want::Malformed);
    }
}

#[test]
fn trailing_bytes_refused() {
    let (wire, _) = sealed();
    for tail in [&b"x"[..], b"{}", b"\0", b",", b"}"] {
        let mut w = wire.clone();
        w.extend_from_slice(tail);
        expect(&format!("trailing {tail:?}"), &w, Want::Malformed);
    }
}
