//! The server side of a v2 request with attacker-chosen bytes: the
//! `Ehbp-Encapsulated-Key` header parser, HPKE decapsulation of an arbitrary
//! `enc` (X25519 or X-Wing) under fixed server keys, then the framed body
//! opened chunk by chunk and the response sealer derived. Never panics; a
//! chunk that opens yields its length minus the 16-byte tag.
//!
//! Input: selector (1; bit 0 picks the KEM, bit 1 also runs the header
//! parser over the input as text) | enc (32 or 1120 bytes) | body frames.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_core::v2::request::{parse_encapsulated_key, RequestOpener};
use nomyo_core::v2::response::parse_response_nonce;

fn keys() -> &'static [ServerKeyPair; 2] {
    static K: OnceLock<[ServerKeyPair; 2]> = OnceLock::new();
    K.get_or_init(|| {
        [
            ServerKeyPair::from_secret_bytes(0, Kem::X25519, &[0x42; 32]).expect("x25519 key"),
            ServerKeyPair::from_secret_bytes(1, Kem::XWing, &[0x43; 32]).expect("x-wing key"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 2 != 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            if let Ok(enc) = parse_encapsulated_key(text) {
                assert!(!enc.is_empty() && enc.len() <= 4096);
                let _ = Kem::from_enc_len(enc.len());
            }
            if let Ok(n) = parse_response_nonce(text) {
                assert_eq!(n.len(), 32);
            }
        }
    }
    let key = &keys()[(sel & 1) as usize];
    let n = key.kem().enc_len();
    if rest.len() < n {
        // A wrong-length enc is refused, never decapsulated.
        assert!(RequestOpener::new(key, rest).is_err());
        return;
    }
    let (enc, body) = rest.split_at(n);
    let Ok(mut opener) = RequestOpener::new(key, enc) else {
        return;
    };
    let mut frames = FrameDecoder::new(1 << 20);
    frames.push(body);
    while let Ok(Some(f)) = frames.next_frame() {
        match opener.open_chunk(&f) {
            Ok(plain) => assert_eq!(plain.len() + 16, f.len()),
            Err(_) => break,
        }
    }
    let _ = opener
        .response_sealer(&[7u8; 32])
        .map(|mut s| s.seal_chunk(b"x"));
});
