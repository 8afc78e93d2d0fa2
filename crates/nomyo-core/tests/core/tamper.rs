//! Every field of a v1 package, tampered with, is refused: a cryptographic
//! change is the one opaque `DecryptionFailed`; a structural one is
//! `Malformed` naming the field; a version or algorithm change is
//! `Unsupported*` naming what was expected (the downgrade guard). Plus every
//! truncation, every single-byte deletion and every one-bit flip of the wire
//! bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;

use aws_lc_rs::rsa::{
    OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1::{self, Package};
use nomyo_core::Error;
use serde_json::{json, Value};

const PLAINTEXT: &[u8] =
    br#"{"model":"m","messages":[{"role":"user","content":"tamper canary 7f3a"}]}"#;

fn key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate(RsaBits::B2048).expect("keygen"))
}

/// One sealed package, its wire bytes and their JSON value.
fn sealed() -> (Vec<u8>, Value) {
    let p = v1::seal(PLAINTEXT, key().public_key()).expect("seal");
    let wire = p.to_json();
    let value = serde_json::from_slice(&wire).expect("json");
    (wire, value)
}

/// Parses and opens; returns what went wrong, or the plaintext.
fn parse_and_open(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let p = Package::from_json(bytes)?;
    v1::open(&p, key()).map(|b| b.expose_secret().to_vec())
}

fn with(value: &Value, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = value.clone();
    f(&mut v);
    serde_json::to_vec(&v).expect("json")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Decryption,
    Malformed,
    Version,
    Algorithm,
}

#[track_caller]
fn expect(case: &str, bytes: &[u8], want: Want) -> String {
    let err = match parse_and_open(bytes) {
        Ok(_) => panic!("{case}: a tampered package opened"),
        Err(e) => e,
    };
    let ok = matches!(
        (&err, want),
        (Error::DecryptionFailed, Want::Decryption)
            | (Error::Malformed(_), Want::Malformed)
            | (Error::UnsupportedVersion { .. }, Want::Version)
            | (Error::UnsupportedAlgorithm { .. }, Want::Algorithm)
    );
    assert!(ok, "{case}: wanted {want:?}, got {err:?}");
    let msg = err.to_string();
    assert!(
        !msg.contains("tamper canary"),
        "{case}: plaintext in error: {msg}"
    );
    msg
}

fn b64_of(value: &Value, pointer: &str) -> Vec<u8> {
    B64.decode(value.pointer(pointer).unwrap().as_str().unwrap())
        .unwrap()
}

fn set_b64(v: &mut Value, pointer: &str, bytes: &[u8]) {
    *v.pointer_mut(pointer).unwrap() = Value::String(B64.encode(bytes));
}

#[test]
fn untouched_package_opens() {
    let (wire, _) = sealed();
    assert_eq!(parse_and_open(&wire).unwrap(), PLAINTEXT);
}

#[test]
fn version_is_the_downgrade_guard() {
    let (_, v) = sealed();
    for bad in ["1.1", "0.9", "2.0", "1", "1.0 ", " 1.0", "", "v1"] {
        let msg = expect(
            &format!("version {bad:?}"),
            &with(&v, |v| v["version"] = json!(bad)),
            Want::Version,
        );
        assert!(msg.contains("expected '1.0'"), "{msg}");
    }
    for bad in [json!(1.0), json!(null), json!(["1.0"]), json!({"v": "1.0"})] {
        expect(
            &format!("version {bad}"),
            &with(&v, |v| v["version"] = bad.clone()),
            Want::Malformed,
        );
    }
    let msg = expect(
        "version missing",
        &with(&v, |v| {
            v.as_object_mut().unwrap().remove("version");
        }),
        Want::Malformed,
    );
    assert!(msg.contains("version"), "{msg}");
    // An attacker-sized version string is echoed truncated and without
    // control characters.
    let long = format!("\u{1b}[31m{}", "9".repeat(10_000));
    let msg = expect(
        "long version",
        &with(&v, |v| v["version"] = json!(long)),
        Want::Version,
    );
    assert!(msg.len() < 200, "{msg}");
    assert!(!msg.contains('\u{1b}'), "{msg:?}");
}

#[test]
fn algorithms_are_the_downgrade_guard() {
    let (_, v) = sealed();
    let cases = [
        (
            "algorithm",
            "hybrid-aes128-rsa2048",
            "hybrid-aes256-rsa4096",
        ),
        (
            "algorithm",
            "HYBRID-AES256-RSA4096",
            "hybrid-aes256-rsa4096",
        ),
        ("algorithm", "none", "hybrid-aes256-rsa4096"),
        ("key_algorithm", "RSA-OAEP-SHA1", "RSA-OAEP-SHA256"),
        ("key_algorithm", "RSA-PKCS1v15", "RSA-OAEP-SHA256"),
        ("payload_algorithm", "AES-128-GCM", "AES-256-GCM"),
        ("payload_algorithm", "AES-256-CBC", "AES-256-GCM"),
        ("payload_algorithm", "", "AES-256-GCM"),
    ];
    for (field, bad, expected) in cases {
        let msg = expect(
            &format!("{field} {bad:?}"),
            &with(&v, |v| v[field] = json!(bad)),
            Want::Algorithm,
        );
        assert!(msg.contains(field), "{msg}");
        assert!(msg.contains(&format!("expected '{expected}'")), "{msg}");
    }
    expect(
        "algorithm missing",
        &with(&v, |v| {
            v.as_object_mut().unwrap().remove("algorithm");
        }),
        Want::Malformed,
    );
}

#[test]
fn optional_algorithm_names_may_be_absent() {
    // The reference client's response check requires only version,
    // algorithm, encrypted_payload and encrypted_aes_key, so a package
    // without key_algorithm/payload_algorithm is valid v1.
    let (_, v) = sealed();
    let bytes = with(&v, |v| {
        let o = v.as_object_mut().unwrap();
        o.remove("key_algorithm");
        o.remove("payload_algorithm");
    });
    assert_eq!(parse_and_open(&bytes).unwrap(), PLAINTEXT);
}

#[test]
fn ciphertext_tampering() {
    let (_, v) = sealed();
    let ct = b64_of(&v, "/encrypted_payload/ciphertext");
    for i in [0, 1, ct.len() / 2, ct.len() - 1] {
        for bit in [0x01u8, 0x80] {
            let mut c = ct.clone();
            c[i] ^= bit;
            expect(
                &format!("ciphertext byte {i} ^ {bit:#x}"),
                &with(&v, |v| set_b64(v, "/encrypted_payload/ciphertext", &c)),
                Want::Decryption,
            );
        }
    }
    let mut longer = ct.clone();
    longer.push(0);
    for (name, c) in [
        ("shortened", ct[..ct.len() - 1].to_vec()),
        ("lengthened", longer),
        ("emptied", Vec::new()),
    ] {
        expect(
            &format!("ciphertext {name}"),
            &with(&v, |v| set_b64(v, "/encrypted_payload/ciphertext", &c)),
            Want::Decryption,
        );
    }
}

#[test]
fn nonce_and_tag_tampering_and_lengths() {
    let (_, v) = sealed();
    for (field, len) in [("nonce", 12usize), ("tag", 16)] {
        let ptr = format!("/encrypted_payload/{field}");
        let good = b64_of(&v, &ptr);
        assert_eq!(good.len(), len);
        for i in 0..len {
            let mut b = good.clone();
            b[i] ^= 0x01;
            expect(
                &format!("{field} byte {i} flipped"),
                &with(&v, |v| set_b64(v, &ptr, &b)),
                Want::Decryption,
            );
        }
        for bad_len in [0, 1, len - 1, len + 1, 32] {
            let b = vec![0u8; bad_len];
            let msg = expect(
                &format!("{field} of {bad_len} bytes"),
                &with(&v, |v| set_b64(v, &ptr, &b)),
                Want::Malformed,
            );
            assert!(
                msg.contains(&format!("encrypted_payload.{field} must be {len} bytes")),
                "{msg}"
            );
        }
    }
}

#[test]
fn encrypted_aes_key_tampering() {
    let (_, v) = sealed();
    let ek = b64_of(&v, "/encrypted_aes_key");
    assert_eq!(ek.len(), 256);
    for i in [0, 1, 127, 255] {
        let mut b = ek.clone();
        b[i] ^= 0x01;
        expect(
            &format!("encrypted_aes_key byte {i} flipped"),
            &with(&v, |v| set_b64(v, "/encrypted_aes_key", &b)),
            Want::Decryption,
        );
    }
    expect(
        "encrypted_aes_key all zero",
        &with(&v, |v| set_b64(v, "/encrypted_aes_key", &[0u8; 256])),
        Want::Decryption,
    );
    expect(
        "encrypted_aes_key all 0xff (above the modulus)",
        &with(&v, |v| set_b64(v, "/encrypted_aes_key", &[0xffu8; 256])),
        Want::Decryption,
    );
    // Its length is public (the modulus size): a wrong length is malformed.
    for bad_len in [0usize, 255, 257, 512] {
        let b = vec![7u8; bad_len];
        let msg = expect(
            &format!("encrypted_aes_key of {bad_len} bytes"),
            &with(&v, |v| set_b64(v, "/encrypted_aes_key", &b)),
            Want::Malformed,
        );
        assert!(msg.contains("encrypted_aes_key"), "{msg}");
    }
}

/// Valid RSA-OAEP ciphertexts that are still wrong: OAEP with SHA-1, and a
/// correctly wrapped key of the wrong length. Both are the same opaque error.
#[test]
fn well_formed_but_wrong_key_wrapping() {
    let (_, v) = sealed();
    let public = PublicEncryptingKey::from_der(key().public_key().spki_der()).unwrap();
    let oaep = OaepPublicEncryptingKey::new(public).unwrap();
    let mut out = vec![0u8; oaep.ciphertext_size()];

    let n = oaep
        .encrypt(&OAEP_SHA1_MGF1SHA1, &[0x11; 32], &mut out, None)
        .unwrap()
        .len();
    expect(
        "AES key wrapped with OAEP-SHA1",
        &with(&v, |v| set_b64(v, "/encrypted_aes_key", &out[..n])),
        Want::Decryption,
    );
    for wrong_len in [0usize, 16, 24, 31, 33, 64] {
        let n = oaep
            .encrypt(
                &OAEP_SHA256_MGF1SHA256,
                &vec![0x22; wrong_len],
                &mut out,
                None,
            )
            .unwrap()
            .len();
        expect(
            &format!("a {wrong_len}-byte AES key"),
            &with(&v, |v| set_b64(v, "/encrypted_aes_key", &out[..n])),
            Want::Decryption,
        );
    }
    // A label other than the empty one.
    let n = oaep
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            &[0x11; 32],
            &mut out,
            Some(b"label"),
        )
        .unwrap()
        .len();
    expect(
        "OAEP with a label",
        &with(&v, |v| set_b64(v, "/encrypted_aes_key", &out[..n])),
        Want::Decryption,
    );
}

#[test]
fn fields_spliced_from_another_package() {
    let (_, a) = sealed();
    let (_, b) = sealed();
    for ptr in [
        "/encrypted_payload/ciphertext",
        "/encrypted_payload/nonce",
        "/encrypted_payload/tag",
        "/encrypted_aes_key",
    ] {
        let from_b = b.pointer(ptr).unwrap().clone();
        expect(
            &format!("{ptr} from another package"),
            &with(&a, |v| *v.pointer_mut(ptr).unwrap() = from_b),
            Want::Decryption,
        );
    }
    // To another recipient entirely.
    let other = PrivateKey::generate(RsaBits::B2048).unwrap();
    let for_other = v1::seal(PLAINTEXT, other.public_key()).unwrap().to_json();
    expect("sealed to another key", &for_other, Want::Decryption);
}

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

#[test]
fn every_truncation_is_refused() {
    let (wire, _) = sealed();
    for n in 0..wire.len() {
        let err = Package::from_json(&wire[..n]).expect_err(&format!("prefix of {n} bytes parsed"));
        assert!(matches!(err, Error::Malformed(_)), "prefix {n}: {err:?}");
    }
    // The same for a package as Python lays it out (with spaces after ':' and ','),
    // from the known-answer vectors.
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1_packages.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let py = vectors["packages"][0]["package"]
        .as_str()
        .unwrap()
        .as_bytes();
    Package::from_json(py).unwrap();
    for n in 0..py.len() {
        assert!(
            Package::from_json(&py[..n]).is_err(),
            "python package prefix of {n} bytes parsed"
        );
    }
}

#[test]
fn every_single_byte_deletion_is_refused() {
    let (wire, _) = sealed();
    for i in 0..wire.len() {
        let mut w = wire.clone();
        w.remove(i);
        assert!(
            parse_and_open(&w).is_err(),
            "deleting byte {i} ({:?}) still opened",
            wire[i] as char
        );
    }
}

#[test]
fn every_one_bit_flip_is_refused() {
    let (wire, _) = sealed();
    for i in 0..wire.len() {
        for bit in [0x01u8, 0x20] {
            let mut w = wire.clone();
            w[i] ^= bit;
            match parse_and_open(&w) {
                Ok(_) => panic!(
                    "flipping bit {bit:#x} of byte {i} ({:?}) still opened",
                    wire[i] as char
                ),
                Err(
                    Error::DecryptionFailed
                    | Error::Malformed(_)
                    | Error::UnsupportedVersion { .. }
                    | Error::UnsupportedAlgorithm { .. },
                ) => {}
                Err(other) => panic!("byte {i}: unexpected error kind {other:?}"),
            }
        }
    }
}

#[test]
fn errors_do_not_leak_the_plaintext_or_key() {
    // Debug of a package shows sizes only; Debug of the key no key material.
    let p = v1::seal(PLAINTEXT, key().public_key()).unwrap();
    let dbg = format!("{p:?}");
    assert!(!dbg.contains(&B64.encode(&p.ciphertext)), "{dbg}");
    let opened = v1::open(&p, key()).unwrap();
    let dbg = format!("{opened:?}");
    assert!(!dbg.contains("tamper canary"), "{dbg}");
    let kdbg = format!("{:?}", key());
    assert!(kdbg.contains("redacted"), "{kdbg}");
    let pem = key().to_pkcs8_pem(None).unwrap();
    let body: String = pem.lines().nth(3).unwrap().to_owned();
    assert!(!kdbg.contains(&body));
}
