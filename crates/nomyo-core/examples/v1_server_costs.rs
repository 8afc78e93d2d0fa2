//! What a v1 server spends per request besides its RSA-4096 private-key
//! operation, step by step, with nomyo-core's public API (no HTTP), in CPU
//! time of the measuring thread (`/proc/thread-self/stat`, so other load on
//! the machine does not count):
//!
//! - `open`: `Package::from_json` + `v1::open` (the private-key operation);
//! - `client_key_parse`: `v1::decode_public_key_header` of an `X-Public-Key`
//!   value (percent-decoding, PEM, SPKI DER, aws-lc key object);
//! - `seal_cached_key`: `v1::seal` of a small answer + `to_json` to a key
//!   parsed once and used before (what a cache of parsed client keys gives);
//! - `seal_fresh_key`: the same to a key parsed just before (what the server
//!   did per request): the parse, plus the first public-key operation on a
//!   new aws-lc key object (its Montgomery set-up).
//!
//! ```sh
//! cargo run --release -p nomyo-core --example v1_server_costs -- [-n N]
//! ```
//!
//! Prints one JSON line of µs per operation.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1::{self, Package};

fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// CPU µs per call of `f`, over `n` calls.
fn per_op(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n.div_ceil(10) {
        f();
    }
    let t0 = thread_cpu_seconds();
    for _ in 0..n {
        f();
    }
    (thread_cpu_seconds() - t0) * 1e6 / n as f64
}

fn main() {
    let mut n = 2000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => n = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let server = PrivateKey::generate(RsaBits::B4096).unwrap();
    let client = PrivateKey::generate(RsaBits::B4096).unwrap();
    let header = v1::encode_public_key_header(&client.public_key().to_pem());
    let answer = br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1764300000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7},"_metadata":{"payload_id":"0d3c1b0e-8f43-4b8e-9a4f-1f0c9d2b7a11","processed_at":1764300000,"is_encrypted":true,"response_status":"success","security_tier":"standard","memory_protection":{"platform":"linux","memory_locking":true,"secure_zeroing":true,"core_dump_prevention":true},"cuda_device":{"available":false,"device_hash":""}}}"#;
    let request = v1::seal(&[b'x'; 300], server.public_key())
        .unwrap()
        .to_json();

    let open = per_op((n / 10).max(20), || {
        let p = Package::from_json(black_box(&request)).unwrap();
        black_box(v1::open(&p, &server).unwrap());
    });
    let parse = per_op(n, || {
        black_box(v1::decode_public_key_header(black_box(&header)).unwrap());
    });
    let cached = v1::decode_public_key_header(&header).unwrap();
    let seal_cached = per_op(n, || {
        black_box(v1::seal(answer, &cached).unwrap().to_json());
    });
    let seal_fresh = per_op(n, || {
        let k = v1::decode_public_key_header(black_box(&header)).unwrap();
        black_box(v1::seal(answer, &k).unwrap().to_json());
    });
    println!(
        "{{\"n\":{n},\"open_us\":{open:.1},\"client_key_parse_us\":{parse:.1},\"seal_cached_key_us\":{seal_cached:.1},\"seal_fresh_key_us\":{seal_fresh:.1}}}"
    );
}
