//! A new key is never written unencrypted by default: `nomyo keygen` and
//! `nomyo serve` (when its key directory holds no key) ask for a password on
//! a terminal, twice and without echo, and off a terminal need a password
//! source or an explicit `--no-password`. `nomyo serve` writes nothing to
//! its key directory before start-up can succeed. The terminal is a
//! pseudo-terminal from util-linux `script`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Without `nomyo serve` (feature `serve`) only the tests that need no server
// run; the helpers of the others are unused then.
#![cfg_attr(not(feature = "serve"), allow(dead_code, unused_imports))]

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use nomyo_testkit::pty::Terminal;
use support::{assert_exit, nomyo, serve_cmd_open, started, stderr, upstream};

const PRIVATE: &str = nomyo_core::keys::PRIVATE_KEY_FILE;
const PASSWORD: &str = "correct horse battery";

/// `nomyo fingerprint KEY` with the password in $KEY_PW (or none).
fn opens_with(key: &Path, password: Option<&str>) -> bool {
    let mut cmd = nomyo();
    cmd.arg("fingerprint").arg(key);
    if let Some(p) = password {
        cmd.args(["--password-env", "KEY_PW"]).env("KEY_PW", p);
    }
    cmd.stdin(Stdio::null()).output().unwrap().status.success()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A `nomyo` command on a pseudo-terminal (stdin, stdout and stderr), its
/// screen collected as it comes.
fn terminal(args: &[&str]) -> Terminal {
    let args: Vec<&str> = std::iter::once(env!("CARGO_BIN_EXE_nomyo"))
        .chain(args.iter().copied())
        .collect();
    Terminal::start(&args)
}

/// Waits for the command to end; its exit code and what the terminal showed.
fn finish(t: Terminal) -> (i32, String) {
    let (status, screen) = t.exited();
    (status.code().unwrap_or(-1), screen)
}

#[cfg(feature = "serve")]
#[test]
fn serve_off_a_terminal_without_a_password_source_refuses_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let o = serve_cmd_open(
        "http://127.0.0.1:9/v1",
        &["--key-dir", keys.to_str().unwrap(), "--key-bits", "2048"],
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    assert_exit(&o, 2);
    let err = stderr(&o);
    for option in ["--no-password", "--key-password-file", "--key-password-env"] {
        assert!(err.contains(option), "names {option}: {err}");
    }
    assert!(!keys.exists(), "nothing written");
}

#[cfg(feature = "serve")]
#[test]
fn serve_with_no_password_saves_an_unencrypted_0600_key_that_then_loads_without_a_flag() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let k = keys.to_str().unwrap();
    let srv = started(serve_cmd_open(
        &up.url,
        &["--key-dir", k, "--key-bits", "2048", "--no-password"],
    ));
    let err = srv.stop_and_collect();
    assert!(err.contains("generated and saved"), "{err}");
    let private = keys.join(PRIVATE);
    assert_eq!(mode(&private), 0o600);
    assert!(opens_with(&private, None), "unencrypted");
    // Loading the existing unencrypted key needs no flag.
    let srv = started(serve_cmd_open(&up.url, &["--key-dir", k]));
    assert!(srv.stop_and_collect().contains("(loaded)"));
}

#[cfg(feature = "serve")]
#[test]
fn serve_with_a_password_variable_saves_an_encrypted_key() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut cmd = serve_cmd_open(
        &up.url,
        &[
            "--key-dir",
            keys.to_str().unwrap(),
            "--key-bits",
            "2048",
            "--key-password-env",
            "SERVE_KEY_PW",
        ],
    );
    cmd.env("SERVE_KEY_PW", PASSWORD);
    let err = started(cmd).stop_and_collect();
    assert!(err.contains("generated and saved"), "{err}");
    let private = keys.join(PRIVATE);
    assert_eq!(mode(&private), 0o600);
    assert!(!opens_with(&private, None), "encrypted");
    assert!(opens_with(&private, Some(PASSWORD)));
}

// The embedded model: not in the client-only build.
#[cfg(feature = "engine")]
#[test]
fn serve_with_a_missing_model_writes_nothing_to_the_key_directory() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let model = dir.path().join("absent.gguf");
    for extra in [
        vec!["--no-password"],
        vec!["--key-password-env", "SERVE_KEY_PW"],
    ] {
        let o = nomyo()
            .args(["serve", "--listen", "127.0.0.1:0", "--key-bits", "2048"])
            .arg("--key-dir")
            .arg(&keys)
            .arg("--model")
            .arg(&model)
            .args(&extra)
            .env("SERVE_KEY_PW", PASSWORD)
            .env_remove("RUST_LOG")
            .env_remove("NOMYO_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_exit(&o, 1);
        assert!(stderr(&o).contains("absent.gguf"), "{}", stderr(&o));
        assert!(!keys.exists(), "nothing written ({extra:?})");
    }
}

#[test]
fn keygen_asks_twice_on_a_terminal_and_the_key_opens_with_the_typed_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k");
    let o = out.to_str().unwrap();
    let mut t = terminal(&["keygen", "--out", o, "--bits", "2048"]);
    t.answer("Password for the private key", PASSWORD);
    t.answer("same password again", PASSWORD);
    let (code, screen) = finish(t);
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("password-protected"), "{screen}");
    assert!(!screen.contains(PASSWORD), "no echo: {screen}");
    let private = out.join(PRIVATE);
    assert!(!opens_with(&private, None));
    assert!(opens_with(&private, Some(PASSWORD)));
}

#[test]
fn keygen_on_a_terminal_refuses_an_empty_or_mistyped_password_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("k");
    let o = out.to_str().unwrap();
    let mut t = terminal(&["keygen", "--out", o, "--bits", "2048"]);
    t.answer("Password for the private key", "");
    let (code, screen) = finish(t);
    assert_eq!(code, 2, "{screen}");
    assert!(screen.contains("--no-password"), "{screen}");
    let mut t = terminal(&["keygen", "--out", o, "--bits", "2048"]);
    t.answer("Password for the private key", PASSWORD);
    t.answer("same password again", "something else");
    let (code, screen) = finish(t);
    assert_eq!(code, 2, "{screen}");
    assert!(screen.contains("differ"), "{screen}");
    assert!(!out.exists(), "nothing written");
}

#[cfg(feature = "serve")]
#[test]
fn serve_asks_twice_on_a_terminal_and_saves_the_key_encrypted() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut t = terminal(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &up.url,
        "--key-dir",
        keys.to_str().unwrap(),
        "--key-bits",
        "2048",
    ]);
    t.answer("Password for the new server key", PASSWORD);
    t.answer("same password again", PASSWORD);
    t.wait_for("listening on", 0);
    t.terminate();
    let (code, screen) = finish(t);
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("generated and saved"), "{screen}");
    assert!(!screen.contains(PASSWORD), "no echo: {screen}");
    let private = keys.join(PRIVATE);
    assert_eq!(mode(&private), 0o600);
    assert!(!opens_with(&private, None), "encrypted");
    assert!(opens_with(&private, Some(PASSWORD)));
}
