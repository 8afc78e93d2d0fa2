//! `nomyo.minimal.toml` runs as copied: `nomyo serve --config` with the file
//! unchanged, in an empty directory, starts, answers `/health` and serves the
//! embedded default model (when `models/` of the repository holds it; the
//! port is 0 so that tests can run side by side). The server key is
//! generated into the directory, as on a first start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The embedded model: not in the client-only build.
#![cfg(feature = "engine")]

use crate::support;

use std::path::Path;

use support::{http_get_bytes, nomyo, started};

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn minimal_example_starts_as_copied() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join("models").join(FILE);
    if !model.is_file() {
        eprintln!(
            "{} not present (nomyo models pull --dir models): skipped",
            model.display()
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("nomyo.minimal.toml"),
        work.path().join("nomyo.toml"),
    )
    .unwrap();
    let mut cmd = nomyo();
    cmd.args(["serve", "--config", "nomyo.toml", "--listen", "127.0.0.1:0"])
        .current_dir(work.path())
        .env("NOMYO_MODEL_FILE", &model)
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_LOG");
    let srv = started(cmd);
    let addr = srv.url.trim_start_matches("http://").to_owned();
    assert!(work.path().join("server_keys/public_key.pem").is_file());
    // Ready once the model has loaded (503 until then), then it is served.
    let (mut health, mut listed) = (0, String::new());
    for _ in 0..600 {
        health = http_get_bytes(&addr, "/health").0;
        let (status, body) = http_get_bytes(&addr, "/v1/models");
        listed = String::from_utf8_lossy(&body).into_owned();
        if health == 200 && status == 200 && listed.contains("SmolLM2") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(health, 200, "{}", srv.stderr.lock().unwrap());
    assert!(
        listed.contains("SmolLM2-135M-Instruct"),
        "{listed}\n{}",
        srv.stderr.lock().unwrap()
    );
}
