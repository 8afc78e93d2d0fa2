//! EHBP v0.3.1 test vectors (tests/vectors/ehbp/, taken unchanged from
//! tinfoilsh/encrypted-http-body-protocol; shared by its Go, JS, Python, Rust
//! and Swift implementations), plus v2 attack tests against ourselves.

// Tests may unwrap: a panic there is a test failure with a location.
#![allow(clippy::unwrap_used)]

use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_core::v2::request::{RequestOpener, RequestSealer};
use nomyo_core::v2::response::{derive_response_keys, random_response_nonce, ResponseOpener};
use nomyo_core::v2::V2Error;
use serde_json::Value;

fn vector(name: &str) -> Value {
    let p = format!("{}/tests/vectors/ehbp/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn hexfield(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(v[k].as_str().unwrap()).unwrap()
}

#[test]
fn derive_matches_vector() {
    let v = vector("derive.json");
    let (key, nonce) = derive_response_keys(
        &hexfield(&v, "exportedSecret"),
        &hexfield(&v, "requestEnc"),
        &hexfield(&v, "responseNonce"),
    )
    .unwrap();
    assert_eq!(key.expose_secret(), hexfield(&v, "derivedKey").as_slice());
    assert_eq!(
        nonce.as_slice(),
        hexfield(&v, "derivedNonceBase").as_slice()
    );
}

#[test]
fn response_decryption_matches_vector() {
    let v = vector("response-decryption.json");
    let mut opener = ResponseOpener::new(
        &hexfield(&v, "exportedSecret"),
        &hexfield(&v, "requestEnc"),
        &hexfield(&v, "responseNonce"),
    )
    .unwrap();
    let mut d = FrameDecoder::new(1 << 20);
    d.push(&hexfield(&v, "encryptedResponse"));
    let mut plain = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        plain.extend_from_slice(opener.open_chunk(&f).unwrap().expose_secret());
    }
    d.finish().unwrap();
    assert_eq!(plain, hexfield(&v, "plaintext"));
}

#[test]
fn response_vector_tampering_fails() {
    let v = vector("response-decryption.json");
    let wire = hexfield(&v, "encryptedResponse");
    for i in 4..wire.len() {
        let mut bad = wire.clone();
        bad[i] ^= 0x01;
        let mut opener = ResponseOpener::new(
            &hexfield(&v, "exportedSecret"),
            &hexfield(&v, "requestEnc"),
            &hexfield(&v, "responseNonce"),
        )
        .unwrap();
        let mut d = FrameDecoder::new(1 << 20);
        d.push(&bad);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(
            opener.open_chunk(&f).unwrap_err(),
            V2Error::AeadDecryptFailed
        );
    }
}

fn frames(wire: &[u8]) -> Vec<Vec<u8>> {
    let mut d = FrameDecoder::new(1 << 24);
    d.push(wire);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        out.push(f);
    }
    d.finish().unwrap();
    out
}

#[test]
fn round_trip_both_suites_multi_chunk() {
    for kem in [Kem::X25519, Kem::XWing] {
        let server = ServerKeyPair::generate(3, kem);
        let (enc, mut sealer) = RequestSealer::new(server.config()).unwrap();
        assert_eq!(enc.len(), kem.enc_len());
        let mut wire = sealer.seal_chunk(b"part one, ").unwrap();
        wire.extend(sealer.seal_chunk(b"part two").unwrap());
        let mut opener = RequestOpener::new(&server, &enc).unwrap();
        let mut plain = Vec::new();
        for f in frames(&wire) {
            plain.extend_from_slice(opener.open_chunk(&f).unwrap().expose_secret());
        }
        assert_eq!(plain, b"part one, part two");

        let nonce = random_response_nonce().unwrap();
        let mut rs = opener.response_sealer(&nonce).unwrap();
        let mut resp = rs.seal_chunk(b"data: a\n\n").unwrap();
        resp.extend(rs.seal_chunk(b"data: [DONE]\n\n").unwrap());
        let mut ro = sealer.response_opener(&nonce).unwrap();
        let mut got = Vec::new();
        for f in frames(&resp) {
            got.extend_from_slice(ro.open_chunk(&f).unwrap().expose_secret());
        }
        assert_eq!(got, b"data: a\n\ndata: [DONE]\n\n");
    }
}

#[test]
fn reordered_request_chunks_fail() {
    let server = ServerKeyPair::generate(0, Kem::X25519);
    let (enc, mut sealer) = RequestSealer::new(server.config()).unwrap();
    let a = sealer.seal_chunk(b"first").unwrap();
    let b = sealer.seal_chunk(b"second").unwrap();
    let mut opener = RequestOpener::new(&server, &enc).unwrap();
    let fb = frames(&b).remove(0);
    assert_eq!(
        opener.open_chunk(&fb).unwrap_err(),
        V2Error::AeadDecryptFailed
    );
    let _ = a;
}

#[test]
fn reordered_response_chunks_fail() {
    let server = ServerKeyPair::generate(0, Kem::XWing);
    let (enc, sealer) = RequestSealer::new(server.config()).unwrap();
    let opener = RequestOpener::new(&server, &enc).unwrap();
    let nonce = random_response_nonce().unwrap();
    let mut rs = opener.response_sealer(&nonce).unwrap();
    let _first = rs.seal_chunk(b"one").unwrap();
    let second = rs.seal_chunk(b"two").unwrap();
    let mut ro = sealer.response_opener(&nonce).unwrap();
    assert_eq!(
        ro.open_chunk(&frames(&second)[0]).unwrap_err(),
        V2Error::AeadDecryptFailed
    );
}

#[test]
fn response_swapped_between_requests_fails() {
    // Two requests to the same server: the answer to one cannot be opened by the other.
    let server = ServerKeyPair::generate(0, Kem::X25519);
    let (enc1, s1) = RequestSealer::new(server.config()).unwrap();
    let (_enc2, s2) = RequestSealer::new(server.config()).unwrap();
    let o1 = RequestOpener::new(&server, &enc1).unwrap();
    let nonce = random_response_nonce().unwrap();
    let answer1 = o1
        .response_sealer(&nonce)
        .unwrap()
        .seal_chunk(b"for 1")
        .unwrap();
    let mut wrong = s2.response_opener(&nonce).unwrap();
    assert_eq!(
        wrong.open_chunk(&frames(&answer1)[0]).unwrap_err(),
        V2Error::AeadDecryptFailed
    );
    let mut right = s1.response_opener(&nonce).unwrap();
    assert_eq!(
        right
            .open_chunk(&frames(&answer1)[0])
            .unwrap()
            .expose_secret(),
        b"for 1"
    );
}

#[test]
fn wrong_server_key_fails_opaquely() {
    let server = ServerKeyPair::generate(0, Kem::XWing);
    let other = ServerKeyPair::generate(0, Kem::XWing);
    let (enc, mut sealer) = RequestSealer::new(server.config()).unwrap();
    let wire = sealer.seal_chunk(b"secret").unwrap();
    // X-Wing decapsulation never fails (implicit rejection): the first chunk does.
    let mut o = RequestOpener::new(&other, &enc).unwrap();
    assert_eq!(
        o.open_chunk(&frames(&wire)[0]).unwrap_err(),
        V2Error::AeadDecryptFailed
    );
}

#[test]
fn enc_of_wrong_length_refused() {
    let server = ServerKeyPair::generate(0, Kem::X25519);
    assert!(matches!(
        RequestOpener::new(&server, &[0u8; 31]),
        Err(V2Error::InvalidEncapsulatedKey(_))
    ));
    let pq = ServerKeyPair::generate(1, Kem::XWing);
    assert!(matches!(
        RequestOpener::new(&pq, &[0u8; 32]),
        Err(V2Error::InvalidEncapsulatedKey(_))
    ));
}
