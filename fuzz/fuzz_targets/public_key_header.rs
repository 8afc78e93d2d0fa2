//! decode_public_key_header never panics, and a key it accepts is at least
//! 2048 bits and survives encode -> decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_core::keys::MIN_RSA_BITS;
use nomyo_core::v1::{decode_public_key_header, encode_public_key_header};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = decode_public_key_header(header) {
        assert!(key.bits() >= MIN_RSA_BITS);
        let again = decode_public_key_header(&encode_public_key_header(&key.to_pem()))
            .expect("own encoding decodes");
        assert_eq!(again, key);
    }
});
