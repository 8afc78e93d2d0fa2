//! PrivateKey::from_pem never panics, with or without a password, and a key
//! it accepts is at least 2048 bits and has a public key that parses back.
//!
//! The first byte chooses whether a password is given (PBKDF2 costs time on
//! every encrypted input, so most runs go without one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_core::keys::{PrivateKey, PublicKey, MIN_RSA_BITS};
use nomyo_core::SecretString;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let password = (selector & 0x0f == 0).then(|| SecretString::from("fuzz password".to_owned()));
    if let Ok(key) = PrivateKey::from_pem(text, password.as_ref(), "fuzz.pem") {
        assert!(key.bits() >= MIN_RSA_BITS);
        let public =
            PublicKey::from_pem(&key.public_key().to_pem()).expect("own public key parses");
        assert_eq!(&public, key.public_key());
    }
});
