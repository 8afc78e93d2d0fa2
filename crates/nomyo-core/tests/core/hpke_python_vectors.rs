//! Protocol v2 HPKE against an independent implementation: data sealed by
//! Python `cryptography` 48 (tests/vectors/hpke/, made by gen_hpke_vectors.py)
//! for DHKEM(X25519) and X-Wing, with HKDF-SHA256 and AES-256-GCM, info
//! "ehbp request". Rust must derive the same public keys and open every case.

// Tests may unwrap: a panic there is a test failure with a location.
#![allow(clippy::unwrap_used)]

use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_core::v2::request::RequestOpener;
use nomyo_core::v2::V2Error;
use serde_json::Value;

fn cases() -> Vec<Value> {
    let p = format!(
        "{}/tests/vectors/hpke/hpke_python.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn h(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(v[k].as_str().unwrap()).unwrap()
}

fn kem(v: &Value) -> Kem {
    match v["kem"].as_str().unwrap() {
        "x25519" => Kem::X25519,
        "x-wing" => Kem::XWing,
        other => panic!("unknown kem {other}"),
    }
}

#[test]
fn python_sealed_opens_in_rust() {
    let cases = cases();
    assert!(cases.iter().any(|c| kem(c) == Kem::XWing));
    assert!(cases.iter().any(|c| kem(c) == Kem::X25519));
    for c in &cases {
        let k = kem(c);
        let key = ServerKeyPair::from_secret_bytes(0, k, &h(c, "secretKey")).unwrap();
        assert_eq!(
            key.config().public_key,
            h(c, "publicKey"),
            "{k}: public key derivation"
        );
        assert_eq!(h(c, "info"), b"ehbp request");
        let sealed = h(c, "sealed");
        let (enc, ct) = sealed.split_at(k.enc_len());
        let mut opener = RequestOpener::new(&key, enc).unwrap();
        let pt = opener.open_chunk(ct).unwrap();
        assert_eq!(pt.expose_secret(), h(c, "plaintext").as_slice(), "{k}");
    }
}

#[test]
fn python_sealed_tampered_fails() {
    for c in cases().iter().take(8) {
        let k = kem(c);
        let key = ServerKeyPair::from_secret_bytes(0, k, &h(c, "secretKey")).unwrap();
        let sealed = h(c, "sealed");
        // Flip one bit in the enc, then in the ciphertext: both fail, opaquely.
        for pos in [0, k.enc_len() - 1, k.enc_len(), sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[pos] ^= 0x80;
            let (enc, ct) = bad.split_at(k.enc_len());
            let r = RequestOpener::new(&key, enc).and_then(|mut o| o.open_chunk(ct));
            assert_eq!(r.unwrap_err(), V2Error::AeadDecryptFailed, "{k} pos {pos}");
        }
    }
}
