//! The cost of one key-reload tick of a replica (`--key-reload-every`) when
//! nothing changed: `AppState::reload_keys` (hashes `private_key.pem`, skips
//! the parse of unchanged bytes) beside `KeyStore::reload` alone (reads and
//! parses the RSA key file every time: what every tick did before). Process
//! CPU time (user + system) per tick, `-n` ticks each, RSA-4096 key in a
//! temporary directory.
//!
//! ```sh
//! cargo run --release -p nomyo-server --example reload_tick -- [-n N]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use nomyo_core::keys::RsaBits;
use nomyo_server::backend::{Backend, BackendError, ChatRequest};
use nomyo_server::keystore::{KeySource, KeyStore};
use nomyo_server::state::AppState;
use serde_json::Value;

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

/// Never called: a reload routes no request.
struct NoBackend;

#[async_trait::async_trait]
impl Backend for NoBackend {
    fn name(&self) -> &str {
        "none"
    }
    fn models(&self) -> Vec<String> {
        vec!["m".into()]
    }
    async fn chat(&self, _request: ChatRequest) -> Result<Value, BackendError> {
        Err(BackendError::ModelNotFound)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut n = 200usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => n = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let source = || KeySource {
        dir: dir.path().to_owned(),
        password: None,
        bits: RsaBits::B4096,
    };
    let (keys, _) = KeyStore::load_or_generate(source()).unwrap();
    let st = AppState::builder(keys)
        .backend("none", Arc::new(NoBackend))
        .build()
        .unwrap();
    let (plain, _) = KeyStore::load_or_generate(source()).unwrap();

    st.reload_keys().await.unwrap();
    let c0 = process_cpu_seconds();
    for _ in 0..n {
        assert!(plain.reload().unwrap().is_none());
    }
    let parse_every_tick = (process_cpu_seconds() - c0) * 1e6 / n as f64;
    let c0 = process_cpu_seconds();
    for _ in 0..n {
        assert!(!st.reload_keys().await.unwrap());
    }
    let tick = (process_cpu_seconds() - c0) * 1e6 / n as f64;
    println!("{{\"n\":{n},\"keystore_reload_us\":{parse_every_tick:.1},\"reload_keys_unchanged_us\":{tick:.1}}}");
}
