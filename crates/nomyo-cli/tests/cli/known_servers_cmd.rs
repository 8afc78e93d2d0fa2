//! `nomyo known-servers` against a live server, as a person meets it: a
//! server's key changes, `chat` refuses it (exit 4) and names the file;
//! `known-servers remove ORIGIN` forgets the server; the next `chat` trusts
//! the new key on first use, and `list` shows it.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::path::Path;
use std::process::Output;

use support::{assert_exit, nomyo_at_home, serve_cmd_open, started, stderr, stdout, upstream};

fn run(home: &Path, args: &[&str]) -> Output {
    nomyo_at_home(home).args(args).output().unwrap()
}

fn chat(home: &Path, url: &str) -> Output {
    run(
        home,
        &[
            "chat",
            "--base-url",
            url,
            "--allow-http",
            "-m",
            "tiny",
            "hello",
        ],
    )
}

/// The `v1 sha256:…` fingerprint a server presents now.
fn v1_fingerprint(home: &Path, url: &str) -> String {
    let o = run(home, &["fingerprint", "--server", url, "--allow-http"]);
    assert_exit(&o, 0);
    stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("v1 "))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_changed_key_is_refused_until_the_server_is_removed() {
    let home = tempfile::tempdir().unwrap();
    let up = upstream();
    let key = ["--ephemeral-key", "--key-bits", "2048"];
    let first = started(serve_cmd_open(&up.url, &key));
    let url = first.url.clone();
    let addr = first.addr().to_owned();
    let first_fp = v1_fingerprint(home.path(), &url);

    // The default file under $HOME: first use records the server.
    assert_exit(&chat(home.path(), &url), 0);
    let listed = run(home.path(), &["known-servers", "list"]);
    assert_exit(&listed, 0);
    let line = format!("{url} v1={first_fp}");
    assert!(stdout(&listed).contains(&line), "{}", stdout(&listed));

    // The same origin with a new key: refused, and the message says how to
    // see the key.
    drop(first);
    let mut with_listen = key.to_vec();
    with_listen.extend(["--listen", &addr]);
    let second = started(serve_cmd_open(&up.url, &with_listen));
    assert_eq!(second.url, url);
    let second_fp = v1_fingerprint(home.path(), &url);
    assert_ne!(first_fp, second_fp);
    let refused = chat(home.path(), &url);
    assert_exit(&refused, 4);

    // Forget it (a URL with a path is reduced to its origin), then the next
    // contact is a first use of the new key.
    let removed = run(
        home.path(),
        &["known-servers", "remove", &format!("{url}/v1/")],
    );
    assert_exit(&removed, 0);
    assert!(
        stdout(&removed).contains(&format!("removed {url}")),
        "{}",
        stdout(&removed)
    );
    let again = run(home.path(), &["known-servers", "remove", &url]);
    assert_exit(&again, 1);
    assert!(
        stderr(&again).contains("not on record"),
        "{}",
        stderr(&again)
    );

    let answered = chat(home.path(), &url);
    assert_exit(&answered, 0);
    let listed = stdout(&run(home.path(), &["known-servers", "list"]));
    assert!(
        listed.contains(&format!("{url} v1={second_fp}")),
        "{listed}"
    );
    assert!(!listed.contains(&first_fp), "{listed}");
}
