//! The independent Python peers: a python3 that has `cryptography`, and the
//! v1 server written in Python from docs/PROTOCOL.md.

use std::process::{Command, Stdio};

/// The repository's root.
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A python3 with `cryptography` (NOMYO_PYTHON, the repository's .venv, or
/// python3); `None` skips the test, except under CI (`CI` set), where it
/// fails.
pub fn with_cryptography() -> Option<String> {
    let found = [
        std::env::var("NOMYO_PYTHON").ok(),
        Some(format!("{REPO}/.venv/bin/python")),
        Some("python3".to_owned()),
    ]
    .into_iter()
    .flatten()
    .find(|p| {
        Command::new(p)
            .args(["-c", "import cryptography"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: a python3 with `cryptography` is required (set NOMYO_PYTHON)"
        );
        eprintln!("skipped: no python3 with `cryptography` (set NOMYO_PYTHON)");
    }
    found
}

/// The independent v1 server in Python
/// (`crates/nomyo-client/tests/python/v1_server.py`).
pub fn v1_server_script() -> String {
    format!("{REPO}/crates/nomyo-client/tests/python/v1_server.py")
}
