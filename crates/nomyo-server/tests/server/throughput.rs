//! A throughput probe (not a timed test; `#[ignore]`d): the server on a real
//! socket with an instant in-process backend and an RSA-4096 server key, at
//! concurrency 1, 8 and 64, beside the RSA-4096 private-key operations per
//! second aws-lc-rs does on this machine (the v1 ceiling: one per request).
//!
//! Run: `cargo test --release -p nomyo-server --test server throughput:: -- --ignored --nocapture`
//! (set NOMYO_PROBE_REQUESTS to change the request count per level).

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1;
use nomyo_server::keystore::KeyStore;
use nomyo_server::limits::Limits;
use nomyo_server::AppState;

/// RSA-4096 OAEP decryptions per second on `threads` threads.
fn rsa_ceiling(key: &PrivateKey, threads: usize, dur: Duration) -> f64 {
    let pkg = v1::seal(b"{}", key.public_key()).unwrap();
    let start = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    while start.elapsed() < dur {
                        v1::open(&pkg, key).unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark probe, run by hand"]
async fn throughput_probe() {
    let n: usize = std::env::var("NOMYO_PROBE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let server = PrivateKey::generate(RsaBits::B4096).unwrap();
    let server_pub = server.public_key().clone();
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let ceiling_1 = rsa_ceiling(&server, 1, Duration::from_secs(2));
    let ceiling_all = rsa_ceiling(&server, cores, Duration::from_secs(2));

    let limits = Limits {
        max_concurrency: 128,
        max_queue: 1024,
        ..Limits::default()
    };
    let st = AppState::builder(KeyStore::ephemeral(server))
        .backend("echo", echo_backend(&["m"]))
        .limits(limits)
        .build()
        .unwrap();
    let (addr, _stop, _task) = serve_real(st, None).await;
    let base = format!("http://{addr}/v1/chat/secure_completion");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let plain = serde_json::to_vec(&chat("m", "Say hello.")).unwrap();

    println!("cores: {cores}; RSA-4096 private-key ops/s: {ceiling_1:.0} (1 thread), {ceiling_all:.0} ({cores} threads)");
    println!("| concurrency | requests | req/s | % of {cores}-thread ceiling |");
    for conc in [1usize, 8, 64] {
        // Seal every request beforehand so that the load generator's own RSA
        // work does not compete with the server for the CPU.
        let reqs: Vec<Sealed> = (0..n).map(|_| seal_to(&plain, &server_pub)).collect();
        let reqs = Arc::new(std::sync::Mutex::new(reqs));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..conc {
            let reqs = Arc::clone(&reqs);
            let client = client.clone();
            let base = base.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0usize;
                loop {
                    let Some(s) = reqs.lock().unwrap().pop() else {
                        break;
                    };
                    let r = client
                        .post(&base)
                        .header("x-payload-id", &s.id)
                        .header("x-public-key", &s.public_key_header)
                        .body(s.body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    ok += 1;
                }
                ok
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap();
        }
        let rps = ok as f64 / start.elapsed().as_secs_f64();
        println!(
            "| {conc} | {ok} | {rps:.0} | {:.0}% |",
            100.0 * rps / ceiling_all
        );
        assert_eq!(ok, n);
    }
}
