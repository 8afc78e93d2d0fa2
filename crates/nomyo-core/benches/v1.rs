//! Criterion benchmarks of the v1 hot paths (BENCHMARKS.md has the numbers
//! and the Python `cryptography` figures measured beside them):
//!
//! - `keygen/rsa4096`: RSA-4096 key generation (few samples: 0.2-2.5 s each);
//! - `seal/{1KiB,1MiB}`: AES-256-GCM + RSA-OAEP-SHA256 wrap to a 4096-bit key, and JSON;
//! - `open/{1KiB,1MiB}`: JSON parse + OAEP unwrap + AES-GCM open;
//! - `rsa4096/oaep_decrypt`: the RSA-4096 private-key operation alone, the
//!   per-request ceiling of a v1 server; `rsa4096/oaep_encrypt` for comparison.
//!
//! `cargo bench -p nomyo-core --bench v1`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::rsa::{
    OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
    OAEP_SHA256_MGF1SHA256,
};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use der::Decode as _;
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1::{self, Package};

const SIZES: [(&str, usize); 2] = [("1KiB", 1024), ("1MiB", 1024 * 1024)];

fn keygen(c: &mut Criterion) {
    let mut g = c.benchmark_group("keygen");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    g.bench_function("rsa4096", |b| {
        b.iter(|| PrivateKey::generate(RsaBits::B4096).unwrap())
    });
    g.finish();
}

fn seal_open(c: &mut Criterion) {
    let key = PrivateKey::generate(RsaBits::B4096).unwrap();
    let mut seal = c.benchmark_group("seal");
    for (name, size) in SIZES {
        let plaintext = vec![b'a'; size];
        seal.throughput(Throughput::Bytes(size as u64));
        seal.bench_with_input(BenchmarkId::from_parameter(name), &plaintext, |b, p| {
            b.iter(|| v1::seal(black_box(p), key.public_key()).unwrap().to_json())
        });
    }
    seal.finish();

    let mut open = c.benchmark_group("open");
    for (name, size) in SIZES {
        let wire = v1::seal(&vec![b'a'; size], key.public_key())
            .unwrap()
            .to_json();
        open.throughput(Throughput::Bytes(size as u64));
        open.bench_with_input(BenchmarkId::from_parameter(name), &wire, |b, w| {
            b.iter(|| {
                let p = Package::from_json(black_box(w)).unwrap();
                v1::open(&p, &key).unwrap()
            })
        });
    }
    open.finish();
}

fn rsa_ops(c: &mut Criterion) {
    // The private-key operation alone, with aws-lc-rs directly (the core
    // exposes only whole packages): one per v1 request on each side.
    let key = PrivateKey::generate(RsaBits::B4096).unwrap();
    let pem = key.to_pkcs8_pem(None).unwrap();
    let (_, doc) = der::SecretDocument::from_pem(&pem).unwrap();
    let _ = pkcs8::PrivateKeyInfo::from_der(doc.as_bytes()).unwrap();
    let private = PrivateDecryptingKey::from_pkcs8(doc.as_bytes()).unwrap();
    let decrypting = OaepPrivateDecryptingKey::new(private).unwrap();
    let public = PublicEncryptingKey::from_der(key.public_key().spki_der()).unwrap();
    let encrypting = OaepPublicEncryptingKey::new(public).unwrap();
    let mut wrapped = vec![0u8; encrypting.ciphertext_size()];
    let n = encrypting
        .encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut wrapped, None)
        .unwrap()
        .len();
    wrapped.truncate(n);

    let mut g = c.benchmark_group("rsa4096");
    g.bench_function("oaep_decrypt", |b| {
        let mut out = vec![0u8; decrypting.min_output_size()];
        b.iter(|| {
            decrypting
                .decrypt(&OAEP_SHA256_MGF1SHA256, black_box(&wrapped), &mut out, None)
                .unwrap()
                .len()
        })
    });
    g.bench_function("oaep_encrypt", |b| {
        let mut out = vec![0u8; encrypting.ciphertext_size()];
        b.iter(|| {
            encrypting
                .encrypt(
                    &OAEP_SHA256_MGF1SHA256,
                    black_box(&[7u8; 32]),
                    &mut out,
                    None,
                )
                .unwrap()
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, keygen, seal_open, rsa_ops);
criterion_main!(benches);
