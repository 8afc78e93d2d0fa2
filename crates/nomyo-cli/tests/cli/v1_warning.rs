//! `nomyo chat --protocol v1` on a terminal says once per server that v1
//! answers are only as safe as the TLS path (a middleman who terminates TLS
//! can swap `X-Public-Key` and read the answer), and records that it did
//! (`warned=v1` in the known-servers file). Not on a pipe, not twice, and
//! again for another server. The terminal is a pseudo-terminal from
//! util-linux `script`.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use nomyo_testkit::pty::Terminal;
use support::{assert_exit, chat_args, serve_cmd_open, started, stderr, upstream, EPHEMERAL_KEY};

const WARNING: &str = "only as safe as the TLS path";

/// Runs `nomyo chat` with its standard streams on a pseudo-terminal, its
/// input at its end; returns its exit status and everything the terminal
/// showed.
fn on_terminal(url: &str, known: &Path) -> (ExitStatus, String) {
    Terminal::start(&chat_args(url, known, &["--protocol", "v1", "hello"])).finish()
}

#[test]
fn v1_warning_once_per_server_on_a_terminal() {
    let up = upstream();
    let a = started(serve_cmd_open(&up.url, &EPHEMERAL_KEY));
    let b = started(serve_cmd_open(&up.url, &EPHEMERAL_KEY));
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_servers");

    // On a pipe: no warning, nothing marked.
    let args = chat_args(&a.url, &known, &["--protocol", "v1", "hello"]);
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
    let (status, shown) = on_terminal(&a.url, &known);
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(shown.contains(WARNING), "{shown}");
    assert!(shown.contains("X-Public-Key"), "{shown}");
    assert!(shown.contains(&a.url), "{shown}");
    let text = std::fs::read_to_string(&known).unwrap();
    let line = text.lines().find(|l| l.starts_with(&a.url)).unwrap();
    assert!(line.contains("warned=v1"), "{text}");
    let (status, shown) = on_terminal(&a.url, &known);
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(!shown.contains(WARNING), "{shown}");

    // Another server: warned once too.
    let (status, shown) = on_terminal(&b.url, &known);
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(shown.contains(WARNING), "{shown}");
}
