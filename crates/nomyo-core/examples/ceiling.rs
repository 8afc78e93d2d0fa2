//! The per-request cryptographic ceilings of a server, measured with
//! nomyo-core's public API, printed as one JSON object (for `bench/run.sh`):
//!
//! - `rsa4096_open`: `v1::open` of a small package to an RSA-4096 key: one
//!   RSA-OAEP-SHA256 private-key operation (which is almost all of its cost)
//!   plus a 256-byte AES-256-GCM open. A v1 server does one per request.
//! - `hpke_open_x25519` / `hpke_open_xwing`: `RequestOpener::new` (HPKE
//!   decapsulation and key schedule) plus opening one 256-byte frame. A v2
//!   server does one per request.
//!
//! `ops_per_s_*` count wall time (what the machine did, other load
//! included); `ops_per_cpu_s_*` divide by the measuring threads' own CPU time
//! (what one fully available core would do, whatever else runs).
//!
//! Each is run on one thread and on all cores at once (one thread per core,
//! each on its own inputs), for `--seconds` each (default 2), after a short
//! warm-up. Inputs are sealed ahead of time and reused round-robin, so only
//! the opening side is timed.
//!
//! `cargo run --release -p nomyo-core --example ceiling -- [--seconds S]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1::{self, Package};
use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_core::v2::request::{RequestOpener, RequestSealer};

/// Distinct sealed inputs per thread (cycled).
const INPUTS: usize = 16;
/// Plaintext size of every sealed input.
const PLAINTEXT: usize = 256;

/// CPU time (user + system) of the calling thread so far, from
/// `/proc/thread-self/stat` (Linux; `USER_HZ` = 100), or `None` elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Ops per second of wall time, summed over threads, and ops per CPU-second
/// (load-independent: what one fully available core would do).
struct Rate {
    wall: f64,
    cpu: Option<f64>,
}

/// Runs `op` in a loop on `threads` threads for `secs`.
fn measure<S: Sync>(state: &S, threads: usize, secs: f64, op: impl Fn(&S, usize) + Sync) -> Rate {
    let warm = Duration::from_secs_f64((secs / 5.0).min(0.5));
    let run = Duration::from_secs_f64(secs);
    let counts: Vec<(u64, Duration, Option<f64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let op = &op;
                scope.spawn(move || {
                    let start = Instant::now();
                    let mut i = t * 7;
                    while start.elapsed() < warm {
                        op(state, i);
                        i += 1;
                    }
                    let cpu0 = thread_cpu_seconds();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < run {
                        op(state, i);
                        i += 1;
                        n += 1;
                    }
                    let cpu = match (cpu0, thread_cpu_seconds()) {
                        (Some(a), Some(b)) if b > a => Some(b - a),
                        _ => None,
                    };
                    (n, start.elapsed(), cpu)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = counts
        .iter()
        .map(|(n, d, _)| *n as f64 / d.as_secs_f64())
        .sum();
    let ops: u64 = counts.iter().map(|(n, _, _)| n).sum();
    let cpu: Option<f64> = counts.iter().map(|(_, _, c)| *c).sum();
    Rate {
        wall,
        cpu: cpu.map(|c| ops as f64 / c),
    }
}

/// A sealed v2 request: (enc, its first frame's ciphertext).
type Sealed = (Vec<u8>, Vec<u8>);

/// Sealed v2 requests to `key`.
fn sealed_v2(key: &ServerKeyPair) -> Vec<Sealed> {
    (0..INPUTS)
        .map(|_| {
            let (enc, mut sealer) = RequestSealer::new(key.config()).unwrap();
            let framed = sealer.seal_chunk(&[b'a'; PLAINTEXT]).unwrap();
            let mut dec = FrameDecoder::new(1 << 20);
            dec.push(&framed);
            (enc, dec.next_frame().unwrap().unwrap())
        })
        .collect()
}

fn main() {
    let mut secs = 2.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                secs = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|s: &f64| *s > 0.0)
                    .expect("--seconds needs a positive number")
            }
            _ => {
                eprintln!("usage: ceiling [--seconds S]");
                std::process::exit(2);
            }
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let rsa = PrivateKey::generate(RsaBits::B4096).unwrap();
    let packages: Vec<Package> = (0..INPUTS)
        .map(|_| {
            let json = v1::seal(&[b'a'; PLAINTEXT], rsa.public_key())
                .unwrap()
                .to_json();
            Package::from_json(&json).unwrap()
        })
        .collect();
    let rsa_open = |(k, p): &(PrivateKey, Vec<Package>), i: usize| {
        let plain = v1::open(&p[i % p.len()], k).unwrap();
        assert_eq!(plain.len(), PLAINTEXT);
        black_box(plain);
    };
    let rsa_state = (rsa, packages);

    let hpke_open = |(k, s): &(ServerKeyPair, Vec<Sealed>), i: usize| {
        let (enc, ct) = &s[i % s.len()];
        let mut opener = RequestOpener::new(k, enc).unwrap();
        let plain = opener.open_chunk(ct).unwrap();
        assert_eq!(plain.len(), PLAINTEXT);
        black_box(plain);
    };
    let x25519 = ServerKeyPair::generate(1, Kem::X25519);
    let x25519 = {
        let s = sealed_v2(&x25519);
        (x25519, s)
    };
    let xwing = ServerKeyPair::generate(2, Kem::XWing);
    let xwing = {
        let s = sealed_v2(&xwing);
        (xwing, s)
    };

    let row = |one: Rate, all: Rate| {
        serde_json::json!({
            "ops_per_s_1": one.wall,
            "ops_per_s_all": all.wall,
            "ops_per_cpu_s_1": one.cpu,
            "ops_per_cpu_s_all": all.cpu,
        })
    };
    let rsa_1 = measure(&rsa_state, 1, secs, rsa_open);
    let rsa_all = measure(&rsa_state, cores, secs, rsa_open);
    let x_1 = measure(&x25519, 1, secs, hpke_open);
    let x_all = measure(&x25519, cores, secs, hpke_open);
    let w_1 = measure(&xwing, 1, secs, hpke_open);
    let w_all = measure(&xwing, cores, secs, hpke_open);
    let out = serde_json::json!({
        "cores": cores,
        "seconds_per_measurement": secs,
        "plaintext_bytes": PLAINTEXT,
        "rsa4096_open": row(rsa_1, rsa_all),
        "hpke_open_x25519": row(x_1, x_all),
        "hpke_open_xwing": row(w_1, w_all),
    });
    println!("{out}");
}
