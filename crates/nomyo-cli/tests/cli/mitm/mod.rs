//! A real man in the middle between `nomyo chat` and `nomyo serve`.
//!
//! The middleman is a separate process (this test binary started again as
//! `mitm_process`): a small HTTP/1.1 proxy on 127.0.0.1, in the position of
//! a TLS-terminating load balancer, that forwards to a real `nomyo serve`
//! and attacks the v2 key discovery with its own X-Wing/X25519 keys. Each
//! variant first lets an honest session through (so the known-servers file
//! knows the server), then switches the middleman to its attack and runs
//! `nomyo chat --protocol v2` and `--protocol auto` with a secret prompt.
//! Every variant must end with exit 4 **before any prompt is sealed to the
//! middleman's keys**: the middleman tries to open every POST with its own
//! keys and counts the ones it could open.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use support::{
    assert_exit, nomyo_at_home, serve_cmd_open, started, stderr, stdout, upstream, Serve,
};

/// Environment variable naming the middleman's mode (set only in the child).
const MODE_ENV: &str = "NOMYO_TEST_MITM_UPSTREAM";
/// The real server's private key file (for re-signing a genuine list).
const SERVER_KEY_ENV: &str = "NOMYO_TEST_MITM_SERVER_KEY";
const CANARY: &str = "my secret is CANARY-5d1e9";

/// The middleman process, killed on drop.
struct Mitm {
    child: Child,
    url: String,
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mitm {
    fn start(upstream: &str, server_key: &Path) -> Mitm {
        let mut child = Command::new(std::env::current_exe().unwrap())
            // This test binary again, running only `mitm_process` (its
            // name in the binary: module path, then function).
            .args(["mitm::mitm_process", "--exact", "--ignored", "--nocapture"])
            .env(MODE_ENV, upstream)
            .env(SERVER_KEY_ENV, server_key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("the middleman exited").unwrap();
            if let Some(url) = line.strip_prefix("MITM listening on ") {
                break url.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Mitm { child, url }
    }

    fn control(&self, what: &str) -> String {
        let (status, body) = support::http_get(
            self.url.trim_start_matches("http://"),
            &format!("/__mitm/{what}"),
        );
        assert_eq!(status, 200, "{what}: {body}");
        body
    }

    fn set_mode(&self, mode: &str) {
        self.control(&format!("mode/{mode}"));
    }

    /// POSTs the middleman could open with its own keys.
    fn opened(&self) -> usize {
        self.report().0
    }

    /// (POSTs opened with the middleman's keys, POSTs seen at all).
    fn report(&self) -> (usize, usize) {
        let r = self.control("report");
        let mut n = r.split_whitespace().map(|n| n.parse().unwrap());
        (n.next().unwrap(), n.next().unwrap())
    }
}

fn chat(home: &Path, url: &str, protocol: &str, prompt: &str) -> Output {
    chat_with(home, url, &["--protocol", protocol], prompt)
}

fn chat_with(home: &Path, url: &str, extra: &[&str], prompt: &str) -> Output {
    nomyo_at_home(home)
        .args(["chat", "--base-url", url, "--allow-http", "-m", "tiny"])
        .args(extra)
        .args(["--max-retries", "0", "--timeout", "30"])
        .arg("--known-servers")
        .arg(home.join("known_servers"))
        .arg(prompt)
        .output()
        .unwrap()
}

/// `nomyo serve` with a saved 2048-bit key (the middleman re-signs a genuine
/// list with it in the "expired" variant) in front of an upstream double.
fn server(dir: &Path) -> (Serve, std::path::PathBuf) {
    let up = upstream();
    let keys = dir.join("server-keys");
    let key_dir = keys.to_str().unwrap();
    let s = started(serve_cmd_open(
        &up.url,
        &["--key-dir", key_dir, "--key-bits", "2048", "--no-password"],
    ));
    std::mem::forget(up);
    (s, keys.join(nomyo_core::keys::PRIVATE_KEY_FILE))
}

/// Every attack, with the protocol the honest first session used (which
/// is what the known-servers file then knows about the server).
const VARIANTS: &[(&str, &str)] = &[
    // The known-servers file holds the v1 key; the first GET of the keys
    // gets the middleman's unsigned X-Wing list.
    ("unsigned-first-get", "v1"),
    // A POST answered with the 422 key-config problem, then the unsigned list.
    ("422-then-unsigned", "v1"),
    // A plain 400, then the unsigned list.
    ("400-then-unsigned", "v1"),
    // The middleman's own list signed by its own RSA key, which it also
    // serves at /pki/public_key.
    ("own-rsa", "v1"),
    // The server's genuine list, signed by the server's key for a window that
    // ended yesterday (a list captured before a rotation).
    ("expired", "v2"),
    // /.well-known/hpke-keys answers 404 for a server known to speak v2.
    ("no-v2", "v2"),
];

#[test]
fn every_key_discovery_attack_by_a_real_middleman_is_refused_before_anything_is_sealed_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, server_key) = server(dir.path());
    let mut failures = Vec::new();
    for (mode, first) in VARIANTS {
        for protocol in ["v2", "auto"] {
            let home = tempfile::tempdir().unwrap();
            let mitm = Mitm::start(&serve.url, &server_key);
            // The honest session: the server's keys reach the client intact.
            let honest = chat(home.path(), &mitm.url, first, "hello");
            assert_exit(&honest, 0);
            let known = std::fs::read_to_string(home.path().join("known_servers")).unwrap();
            mitm.set_mode(mode);
            let attacked = chat(home.path(), &mitm.url, protocol, CANARY);
            let opened = mitm.opened();
            let err = stderr(&attacked);
            eprintln!(
                "{mode} --protocol {protocol}: exit {:?}, opened {opened}, stderr: {}",
                attacked.status.code(),
                err.trim()
            );
            if attacked.status.code() != Some(4) || opened != 0 || !stdout(&attacked).is_empty() {
                failures.push(format!(
                    "{mode} --protocol {protocol}: exit {:?}, {opened} POSTs sealed to the middleman, stdout {:?}, stderr {err:?}",
                    attacked.status.code(),
                    stdout(&attacked)
                ));
            }
            assert!(!err.contains("CANARY"), "{err}");
            // The record is never replaced by the middleman's keys.
            let after = std::fs::read_to_string(home.path().join("known_servers")).unwrap();
            let v1_lines = |t: &str| -> Vec<String> {
                t.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| {
                        l.split_whitespace()
                            .filter(|f| f.starts_with("v1=") || f.starts_with("v2-key="))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect()
            };
            assert_eq!(v1_lines(&after), v1_lines(&known), "{mode}: {after}");
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
}

/// A middleman hides the v2 keys of a server the client has never seen:
/// `nomyo chat --tier maximum` with the default protocol (auto) refuses to
/// send it over v1 (exit 4, no POST at all); the standard tier goes over v1;
/// `--protocol v1` chosen explicitly sends the maximum-tier request.
#[test]
fn auto_never_sends_maximum_over_v1_when_a_middleman_hides_v2() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, server_key) = server(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mitm = Mitm::start(&serve.url, &server_key);
    mitm.set_mode("no-v2");
    let o = chat_with(home.path(), &mitm.url, &["--tier", "maximum"], CANARY);
    assert_exit(&o, 4);
    let err = stderr(&o);
    assert!(
        err.contains("over protocol v1") && err.contains("--protocol v1"),
        "{err}"
    );
    assert_eq!(mitm.report(), (0, 0), "nothing was sent");
    let o = chat_with(home.path(), &mitm.url, &[], "hello");
    assert_exit(&o, 0);
    assert_eq!(mitm.report().1, 1);
    let o = chat_with(
        home.path(),
        &mitm.url,
        &["--protocol", "v1", "--tier", "maximum"],
        "hello",
    );
    assert_ne!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(mitm.report().1, 2, "sent when v1 was chosen explicitly");
}

/// The middleman process (run by the tests above as a child; does nothing
/// when started without its environment).
#[test]
#[ignore = "the middleman process, started by the test above"]
fn mitm_process() {
    let Ok(upstream) = std::env::var(MODE_ENV) else {
        return;
    };
    let server_key = std::env::var(SERVER_KEY_ENV).unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(middleman::run(upstream, server_key.into()));
}

mod middleman;
