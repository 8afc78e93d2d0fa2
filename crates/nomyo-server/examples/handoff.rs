//! What a trip to the blocking pool costs next to running the same work on
//! the async worker, for v1's answer seal (an RSA-4096 public-key
//! operation, ~0.08 ms): 64 tasks on a multi-thread runtime (one worker per
//! core, as `nomyo serve`), each sealing `-n` answers in turn, either
//! through a 2-permit semaphore + `spawn_blocking` (what
//! `AppState::blocking` does) or inline. Prints the process's CPU time
//! (user + system, `/proc/self/stat`) per seal for both, alternating `--reps`
//! times. Run it pinned like the server (`taskset -c 0`) to see the
//! hand-off on one core.
//!
//! ```sh
//! cargo build --release -p nomyo-server --example handoff
//! taskset -c 0 target/release/examples/handoff -n 3000 --reps 5
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1;
use tokio::sync::Semaphore;

const TASKS: usize = 64;

fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
}

const ANSWER: &[u8] = br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1764300000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;

async fn run(key: Arc<nomyo_core::PublicKey>, n: usize, pool: bool) -> (f64, f64) {
    let permits = Arc::new(Semaphore::new(2));
    let per_task = n / TASKS;
    let c0 = process_cpu_seconds();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (key, permits) = (Arc::clone(&key), Arc::clone(&permits));
        set.spawn(async move {
            for _ in 0..per_task {
                if pool {
                    let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
                    let key = Arc::clone(&key);
                    let p = tokio::task::spawn_blocking(move || {
                        let _slot = permit;
                        v1::seal(ANSWER, &key).unwrap().to_json()
                    })
                    .await
                    .unwrap();
                    std::hint::black_box(p);
                } else {
                    std::hint::black_box(v1::seal(ANSWER, &key).unwrap().to_json());
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let ops = (per_task * TASKS) as f64;
    (
        (process_cpu_seconds() - c0) * 1e6 / ops,
        t0.elapsed().as_secs_f64() * 1e6 / ops,
    )
}

fn main() {
    let (mut n, mut reps) = (3000usize, 3usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => n = args.next().unwrap().parse().unwrap(),
            "--reps" => reps = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = Arc::new(
        PrivateKey::generate(RsaBits::B4096)
            .unwrap()
            .public_key()
            .clone(),
    );
    rt.block_on(async {
        run(Arc::clone(&key), TASKS * 10, true).await;
        run(Arc::clone(&key), TASKS * 10, false).await;
        for _ in 0..reps {
            let (pc, pw) = run(Arc::clone(&key), n, true).await;
            let (ic, iw) = run(Arc::clone(&key), n, false).await;
            println!(
                "{{\"pool_cpu_us\":{pc:.1},\"inline_cpu_us\":{ic:.1},\"pool_wall_us\":{pw:.1},\"inline_wall_us\":{iw:.1}}}"
            );
        }
    });
}
