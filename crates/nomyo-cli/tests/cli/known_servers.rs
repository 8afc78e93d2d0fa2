//! The known-servers file under concurrent `nomyo chat` processes: first
//! contacts at the same moment record the server once (the file is locked
//! while it is read, checked and rewritten; before, each process appended
//! its own line), and a file of the earlier format is read and rewritten in
//! the v2 format.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{assert_exit, nomyo, serve_cmd_open, started, upstream, EPHEMERAL_KEY};

fn chat(url: &str, known: &Path, protocol: &str) -> Command {
    let mut c = nomyo();
    c.args([
        "chat",
        "--protocol",
        protocol,
        "--base-url",
        url,
        "--allow-http",
    ])
    .args(["-m", "tiny", "--known-servers"])
    .arg(known)
    .arg("hello")
    .env_remove("RUST_LOG")
    .env_remove("NOMYO_API_KEY")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

fn records(known: &Path) -> Vec<String> {
    std::fs::read_to_string(known)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn concurrent_first_contacts_record_the_server_once() {
    let up = upstream();
    let s = started(serve_cmd_open(&up.url, &EPHEMERAL_KEY));
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let known = dir.path().join("known_servers");
        let children: Vec<_> = (0..6)
            .map(|i| {
                chat(&s.url, &known, if i % 2 == 0 { "v1" } else { "v2" })
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            assert_exit(&c.wait_with_output().unwrap(), 0);
        }
        let lines = records(&known);
        assert_eq!(lines.len(), 1, "round {round}: {lines:?}");
        assert_eq!(
            lines[0].matches(" v1=").count(),
            1,
            "round {round}: {lines:?}"
        );
        assert!(lines[0].starts_with(&s.url), "{lines:?}");
    }
}

/// A file written by an earlier nomyo (`ORIGIN sha256:FP`) is honoured
/// (the same key is known, silently) and rewritten in the v2 format, with
/// its comments, at the next change.
#[test]
fn a_known_servers_file_of_the_earlier_format_is_read_and_upgraded() {
    let up = upstream();
    let s = started(serve_cmd_open(&up.url, &EPHEMERAL_KEY));
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh");
    assert_exit(&chat(&s.url, &fresh, "v1").output().unwrap(), 0);
    let fp = records(&fresh)[0]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("v1="))
        .unwrap()
        .to_owned();
    let known = dir.path().join("known_servers");
    std::fs::write(
        &known,
        format!("# my servers\nhttps://other.example {fp}\n{} {fp}\n", s.url),
    )
    .unwrap();
    let o = chat(&s.url, &known, "v1").output().unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "",
        "known: no first contact"
    );
    // v2 records that the server signs its lists: the file is rewritten.
    assert_exit(&chat(&s.url, &known, "v2").output().unwrap(), 0);
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(text.starts_with("# nomyo known-servers v2\n"), "{text}");
    assert!(text.contains("# my servers\n"), "{text}");
    assert_eq!(
        records(&known),
        [
            format!("https://other.example v1={fp}"),
            format!("{} v1={fp} v2=signed", s.url)
        ]
    );
    // A key other than the recorded one is refused with the line to delete.
    std::fs::write(&known, format!("{} sha256:{}\n", s.url, "ab".repeat(32))).unwrap();
    let o = chat(&s.url, &known, "v1").output().unwrap();
    assert_exit(&o, 4);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("delete line 1 of"), "{err}");
}
