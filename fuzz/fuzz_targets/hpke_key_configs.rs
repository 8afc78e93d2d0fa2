//! KeyConfig::parse_list (the `/.well-known/hpke-keys` body a v2 client
//! reads) never panics; what it accepts re-encodes to exactly the input, and
//! a client can set up a request to every accepted config that offers our
//! suite without panicking (arbitrary X25519 / X-Wing public keys go into
//! the KEM's encapsulation).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_core::v2::keys::KeyConfig;
use nomyo_core::v2::request::RequestSealer;

fuzz_target!(|data: &[u8]| {
    let Ok(configs) = KeyConfig::parse_list(data) else {
        return;
    };
    assert!(!configs.is_empty());
    assert_eq!(KeyConfig::encode_list(&configs), data, "canonical encoding");
    for c in configs.iter().take(2) {
        assert_eq!(c.public_key.len(), c.kem.public_key_len());
        let _ = c.fingerprint();
        if c.supports_our_suite() {
            if let Ok((enc, mut sealer)) = RequestSealer::new(c) {
                assert_eq!(enc.len(), c.kem.enc_len());
                let _ = sealer.seal_chunk(b"{}");
            }
        }
    }
});
