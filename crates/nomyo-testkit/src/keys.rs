//! Key fixtures: RSA keys generated once per test process and shared by its
//! tests (generating a key takes a noticeable time in a debug build).

use std::sync::OnceLock;

use nomyo_core::keys::{PrivateKey, RsaBits};

/// A 2048-bit server key shared by tests (the server key size does not
/// matter for what these tests check; 2048 keeps them fast).
pub fn server_key_pem() -> &'static str {
    static K: OnceLock<String> = OnceLock::new();
    K.get_or_init(|| {
        let k = PrivateKey::generate(RsaBits::B2048).unwrap();
        k.to_pkcs8_pem(None).unwrap().to_string()
    })
}

/// A fresh copy of the shared server key.
pub fn server_key() -> PrivateKey {
    PrivateKey::from_pem(server_key_pem(), None, "test").unwrap()
}

/// The client's key pair.
pub fn client_key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate(RsaBits::B2048).unwrap())
}
