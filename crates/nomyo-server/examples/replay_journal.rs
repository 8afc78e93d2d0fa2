//! What the on-disk replay window costs a request, next to the RSA open it
//! sits beside: claims appended to `replay_window.log` with group commit
//! (one write and one `fdatasync` per batch of waiting claims), at 1 and at
//! 64 concurrent requests, against one RSA-4096 OAEP + AES-GCM open of a
//! small v1 package.
//!
//! ```sh
//! cargo run --release -p nomyo-server --example replay_journal [DIR]
//! ```
//!
//! DIR (default: a temporary directory under the current one) should be on
//! the file system the key directory will live on: `fdatasync` is the cost.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1;
use nomyo_server::replay_journal::ReplayJournal;

fn key(i: u64, salt: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k[8..16].copy_from_slice(&salt.to_be_bytes());
    k
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let base = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().unwrap());
    let dir = tempfile::tempdir_in(base).unwrap();
    let path = dir.path().join("replay_window.log");
    let (journal, _) = ReplayJournal::open(&path).unwrap();
    let journal = Arc::new(journal);
    let window = Duration::from_secs(900);

    // Sequential: every claim waits for its own fdatasync.
    let n = 2000u64;
    let t = Instant::now();
    for i in 0..n {
        journal
            .claim(&[key(i, 0), key(i, 1)], window)
            .await
            .unwrap();
    }
    let seq = t.elapsed() / n as u32;

    // 64 requests at once: claims waiting together share one write and sync.
    let tasks = 64u64;
    let per_task = 500u64;
    let t = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let j = Arc::clone(&journal);
        handles.push(tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            for i in 0..per_task {
                let t = Instant::now();
                j.claim(&[key(i, 100 + 2 * task), key(i, 101 + 2 * task)], window)
                    .await
                    .unwrap();
                worst = worst.max(t.elapsed());
            }
            worst
        }));
    }
    let mut worst = Duration::ZERO;
    for h in handles {
        worst = worst.max(h.await.unwrap());
    }
    let total = t.elapsed();
    let claims = tasks * per_task;
    let amortised = total / claims as u32;

    // One RSA-4096 open of a small package (what every v1 request costs).
    let server = PrivateKey::generate(RsaBits::B4096).unwrap();
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;
    let pkg = v1::seal(body, server.public_key()).unwrap();
    let opens = 200u32;
    let t = Instant::now();
    for _ in 0..opens {
        std::hint::black_box(v1::open(&pkg, &server).unwrap());
    }
    let open = t.elapsed() / opens;

    let file_len = std::fs::metadata(&path).unwrap().len();
    println!("replay journal at {}", path.display());
    println!("sequential claim (own fdatasync each):  {seq:?} per request ({n} requests)");
    println!(
        "64 concurrent requests:                 {amortised:?} per request amortised, {total:?} for {claims}; slowest claim {worst:?}"
    );
    println!("RSA-4096 OAEP + AES-GCM open (1 core):  {open:?} per request");
    println!("journal file: {file_len} bytes (40 per key, 2 keys per request)");
}
