//! Criterion benchmarks of the v2 (EHBP / HPKE) per-request operations, and
//! of one secure-memory buffer's life:
//!
//! - `v2_seal/{x25519,xwing}`: the client's side of a 1 KiB request: HPKE
//!   setup to the server's key (ephemeral key, encapsulation, key schedule)
//!   plus sealing one frame;
//! - `v2_open/{x25519,xwing}`: the server's side: decapsulation, key schedule
//!   and opening that frame into secure memory (one per v2 request);
//! - `v2_response/seal_open`: sealing a 1 KiB answer and opening it (response
//!   key derivation on both sides, AES-256-GCM);
//! - `secret_buf/1KiB`: a `SecretBuf` filled with 1 KiB and dropped (locked
//!   memory, zeroed on drop; the pool of locked regions makes this cheap).
//!
//! `cargo bench -p nomyo-core --bench v2`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_core::v2::request::{RequestOpener, RequestSealer};
use nomyo_core::v2::response::random_response_nonce;
use nomyo_core::SecretBuf;

const BODY: usize = 1024;

fn first_frame(body: &[u8]) -> Vec<u8> {
    let mut d = FrameDecoder::new(1 << 20);
    d.push(body);
    d.next_frame().unwrap().unwrap()
}

fn request(c: &mut Criterion) {
    let plaintext = vec![b'a'; BODY];
    let keys = [
        ("x25519", ServerKeyPair::generate(1, Kem::X25519)),
        ("xwing", ServerKeyPair::generate(2, Kem::XWing)),
    ];
    let mut g = c.benchmark_group("v2_seal");
    for (name, key) in &keys {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let (enc, mut s) = RequestSealer::new(key.config()).unwrap();
                (enc, s.seal_chunk(black_box(&plaintext)).unwrap())
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("v2_open");
    for (name, key) in &keys {
        let (enc, mut s) = RequestSealer::new(key.config()).unwrap();
        let frame = first_frame(&s.seal_chunk(&plaintext).unwrap());
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut o = RequestOpener::new(key, black_box(&enc)).unwrap();
                o.open_chunk(black_box(&frame)).unwrap()
            })
        });
    }
    g.finish();
}

fn response(c: &mut Criterion) {
    let key = ServerKeyPair::generate(1, Kem::X25519);
    let (enc, sealer) = RequestSealer::new(key.config()).unwrap();
    let opener = RequestOpener::new(&key, &enc).unwrap();
    let answer = vec![b'b'; BODY];
    let mut g = c.benchmark_group("v2_response");
    g.bench_function("seal_open", |b| {
        b.iter(|| {
            let nonce = random_response_nonce().unwrap();
            let sealed = opener
                .response_sealer(&nonce)
                .unwrap()
                .seal_chunk(black_box(&answer))
                .unwrap();
            let mut o = sealer.response_opener(&nonce).unwrap();
            o.open_chunk(&first_frame(&sealed)).unwrap()
        })
    });
    g.finish();
}

fn secret_buf(c: &mut Criterion) {
    let bytes = vec![7u8; BODY];
    let mut g = c.benchmark_group("secret_buf");
    g.bench_function("1KiB", |b| {
        b.iter(|| SecretBuf::from_slice(black_box(&bytes)).len())
    });
    g.finish();
}

criterion_group!(benches, request, response, secret_buf);
criterion_main!(benches);
