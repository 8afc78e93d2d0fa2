//! PrivateKey::from_pem never panics, with or without a password, and a key
//! it accepts is at least 2048 bits and has a public key that parses back.
//!
//! The first byte steers: its low nibble 0 gives a password (PBKDF2 costs time
//! on every encrypted input, so most runs go without one); bits 4-5 choose
//! whether the rest is PEM text as is, or raw DER that the target wraps in a
//! `PRIVATE KEY`, `RSA PRIVATE KEY` or `ENCRYPTED PRIVATE KEY` PEM, so that the
//! fuzzer mutates DER structure instead of base64 characters.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use nomyo_core::keys::{PrivateKey, PublicKey, MIN_RSA_BITS};
use nomyo_core::SecretString;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let label = match (selector >> 4) & 3 {
        1 => "PRIVATE KEY",
        2 => "RSA PRIVATE KEY",
        3 => "ENCRYPTED PRIVATE KEY",
        _ => "",
    };
    let text = if label.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_owned(),
            Err(_) => return,
        }
    } else {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            B64.encode(rest)
        )
    };
    let password = (selector & 0x0f == 0).then(|| SecretString::from("fuzz password".to_owned()));
    if let Ok(key) = PrivateKey::from_pem(&text, password.as_ref(), "fuzz.pem") {
        assert!(key.bits() >= MIN_RSA_BITS);
        let public =
            PublicKey::from_pem(&key.public_key().to_pem()).expect("own public key parses");
        assert_eq!(&public, key.public_key());
    }
});
