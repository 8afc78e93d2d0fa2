//! The v2 chunk framing (FrameDecoder, `u32 length || ciphertext`) and the
//! client's response opener over it never panic. Bytes pushed in pieces
//! give the same frames and the same verdict as pushed at once, no frame
//! exceeds the decoder's limit, and a frame that opens yields exactly its
//! length minus the 16-byte tag.
//!
//! Input: selector (1) | exported secret (32) | enc length (2, BE) | enc |
//! response nonce (32) | the response body. The selector picks the frame
//! limit and the piece size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::response::ResponseOpener;

fn frames(body: &[u8], max: usize, piece: usize) -> (Vec<Vec<u8>>, bool) {
    let mut d = FrameDecoder::new(max);
    let mut out = Vec::new();
    for p in body.chunks(piece.max(1)) {
        d.push(p);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(!f.is_empty() && f.len() <= max);
                    out.push(f);
                }
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    let ok = d.finish().is_ok();
    (out, ok)
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if rest.len() < 34 {
        return;
    }
    let (secret, rest) = rest.split_at(32);
    let enc_len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    if rest.len() < enc_len + 32 {
        return;
    }
    let (enc, rest) = rest.split_at(enc_len);
    let (nonce, body) = rest.split_at(32);

    let max = [16usize, 1024, 1 << 20][(sel % 3) as usize];
    let piece = 1 + (sel as usize >> 2);
    let whole = frames(body, max, body.len());
    let pieces = frames(body, max, piece);
    assert_eq!(whole, pieces, "framing depends on how the bytes arrived");

    let Ok(mut opener) = ResponseOpener::new(secret, enc, nonce) else {
        return;
    };
    for f in &whole.0 {
        match opener.open_chunk(f) {
            Ok(plain) => assert_eq!(plain.len() + 16, f.len()),
            Err(_) => break,
        }
    }
});
