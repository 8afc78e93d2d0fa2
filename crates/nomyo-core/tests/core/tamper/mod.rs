//! Every field of a v1 package, tampered with, is refused: a cryptographic
//! change is the one opaque `DecryptionFailed`; a structural one is
//! `Malformed` naming the field; a version or algorithm change is
//! `Unsupported*` naming what was expected (the downgrade guard). Plus every
//! truncation, every single-byte deletion and every one-bit flip of the wire
//! bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod crypto_fields;
mod downgrade;
mod structure;
mod wire_bytes;

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
