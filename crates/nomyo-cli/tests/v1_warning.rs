//! `nomyo chat --protocol v1` on a terminal says once per server that v1
//! answers are only as safe as the TLS path (a middleman who terminates TLS
//! can swap `X-Public-Key` and read the answer), and records that it did
//! (`warned=v1` in the known-servers file). Not on a pipe, not twice, and
//! again for another server. The terminal is a pseudo-terminal from
//! util-linux `script`.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::{assert_exit, serve_cmd_open, started, stderr, upstream, EPHEMERAL_KEY};

const WARNING: &str = "only as safe as the TLS path";

fn chat_args(url: &str, known: &Path) -> Vec<String> {
    [
        env!("CARGO_BIN_EXE_nomyo"),
        "chat",
        "--protocol",
        "v1",
        "--base-url",
        url,
        "--allow-http",
        "-m",
        "tiny",
        "--known-servers",
        known.to_str().unwrap(),
        "hello",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `nomyo chat` with its standard streams on a pseudo-terminal;
/// returns everything the terminal showed.
fn on_terminal(url: &str, known: &Path) -> (Output, String) {
    let line = chat_args(url, known)
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let o = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_API_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux script");
    let shown = String::from_utf8_lossy(&o.stdout).into_owned();
    (o, shown)
}

#[test]
fn v1_warning_once_per_server_on_a_terminal() {
    let up = upstream();
    let a = started(serve_cmd_open(&up.url, &EPHEMERAL_KEY));
    let b = started(serve_cmd_open(&up.url, &EPHEMERAL_KEY));
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_servers");

    // On a pipe: no warning, nothing marked.
    let args = chat_args(&a.url, &known);
    let piped = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&piped, 0);
    assert!(!stderr(&piped).contains(WARNING), "{}", stderr(&piped));
    let text = std::fs::read_to_string(&known).unwrap();
    let line = text.lines().find(|l| l.starts_with(&a.url)).unwrap();
    assert!(!line.contains("warned=v1"), "{text}");

    // On a terminal: once, with the reason, then never again for that server.
    let (o, shown) = on_terminal(&a.url, &known);
    assert_exit(&o, 0);
    assert!(shown.contains(WARNING), "{shown}");
    assert!(shown.contains("X-Public-Key"), "{shown}");
    assert!(shown.contains(&a.url), "{shown}");
    let text = std::fs::read_to_string(&known).unwrap();
    let line = text.lines().find(|l| l.starts_with(&a.url)).unwrap();
    assert!(line.contains("warned=v1"), "{text}");
    let (o, shown) = on_terminal(&a.url, &known);
    assert_exit(&o, 0);
    assert!(!shown.contains(WARNING), "{shown}");

    // Another server: warned once too.
    let (o, shown) = on_terminal(&b.url, &known);
    assert_exit(&o, 0);
    assert!(shown.contains(WARNING), "{shown}");
}
