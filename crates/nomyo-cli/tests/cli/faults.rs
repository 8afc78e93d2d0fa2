//! Faults injected into real `nomyo serve` processes, each test named
//! after its fault, each with a defined outcome:
//!
//! - upstream slow: the request timeout answers 504 (v1 and v2), no hang;
//! - the server killed mid-request: the Rust client gets an error (a stream
//!   cut after its first chunk ends in an error, never as a finished
//!   answer); restarted on the same key directory (and port), the same
//!   client, pinned to the key, works again;
//! - the disk full (a file size limit) while saving a key, at first start
//!   and at a SIGHUP rotation: a clear error naming the file, no key or
//!   temporary file left behind, the previous key files byte-identical;
//! - a key file with loose permissions (0644) at start: refused with a
//!   message naming the file, its mode and the `chmod 600` fix (like ssh);
//! - the embedded engine failing to load a bad or truncated GGUF: a clear
//!   error and a non-zero exit, no panic;
//! - two servers started at the same moment on one empty key directory:
//!   the same v1 key and the same HPKE keys (each saved with create-new
//!   semantics; the second server loads what the first one saved).
//!
//! Covered elsewhere (not repeated here): upstream down, failing or
//! returning garbage (`nomyo-server` tests `in_process::upstream_down_is_503`,
//! `in_process::upstream_backend_round_trip_and_failure_mapping`,
//! `upstream_stream::*`), a stream cut by the upstream
//! (`v2::backend_error_mid_stream_cuts_without_done`), the in-process
//! request timeout (`in_process::request_timeout_504`).

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
// Linux: /proc, setrlimit through sh, signals.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nomyo_client::{ChatMessage, ChatRequest, Client, Fingerprint, KnownServers, SecretString};
#[cfg(feature = "engine")]
use support::nomyo;
use support::{
    http_get, printed_fingerprint, runtime, serve_cmd, start, upstream, Serve, Upstream, API_KEY,
    HOLD_STREAM, SLOW,
};

fn client(url: &str, pin: Fingerprint, protocol: nomyo_client::Protocol, home: &Path) -> Client {
    Client::builder()
        .base_url(url)
        .allow_http(true)
        .api_key(SecretString::from(API_KEY.to_owned()))
        .max_retries(0)
        .timeout(Duration::from_secs(60))
        .pin(pin)
        .known_servers(KnownServers::File(home.join("known_servers")))
        .protocol(protocol)
        .build()
        .unwrap()
}

fn chat(prompt: &str) -> ChatRequest {
    ChatRequest::new("tiny").message(ChatMessage::user(prompt.to_owned()))
}

fn key_serve(up: &Upstream, dir: &Path, keys: &Path, extra: &[&str]) -> Command {
    let mut args = vec![
        "--key-dir",
        keys.to_str().unwrap(),
        "--key-bits",
        "2048",
        "--no-password",
    ];
    args.extend_from_slice(extra);
    serve_cmd(up, dir, &args)
}

/// The names in `dir` (sorted).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `cmd` run with a file size limit of 512 bytes (`ulimit -f 1`) and
/// SIGXFSZ ignored, so that a write past it fails with EFBIG (as on a full
/// disk) instead of killing the process.
fn with_file_size_limit(cmd: Command) -> Command {
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 1 && exec \"$0\" \"$@\"")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh
}

#[test]
fn upstream_slow_request_timeout_is_504_without_hang() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let srv = start(serve_cmd(
        &up,
        dir.path(),
        &[
            "--ephemeral-key",
            "--key-bits",
            "2048",
            "--request-timeout",
            "1",
        ],
    ))
    .unwrap();
    let pin = printed_fingerprint(&srv);
    let rt = runtime();
    for protocol in [nomyo_client::Protocol::V1, nomyo_client::Protocol::V2] {
        let c = client(&srv.url, pin, protocol, dir.path());
        // A normal request works...
        rt.block_on(c.create(&chat("quick"))).unwrap();
        // ...a slow upstream gets 504 after the request timeout, not after
        // the upstream's 30 s.
        let t = Instant::now();
        let e = rt.block_on(c.create(&chat(SLOW))).unwrap_err();
        assert_eq!(e.status(), Some(504), "{protocol:?}: {e}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
    // The server is still fine.
    assert_eq!(http_get(srv.addr(), "/health").0, 200);
}

#[test]
fn server_restarted_mid_request_is_an_error_never_a_partial_answer() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let first = start(key_serve(&up, dir.path(), &keys, &[])).unwrap();
    let pin = printed_fingerprint(&first);
    let addr = first.addr().to_owned();
    let rt = runtime();
    let v1 = client(&first.url, pin, nomyo_client::Protocol::V1, dir.path());
    let v2 = client(&first.url, pin, nomyo_client::Protocol::V2, dir.path());
    rt.block_on(v1.create(&chat("before"))).unwrap();
    rt.block_on(v2.create(&chat("before"))).unwrap();

    // In flight when the server dies: a v2 stream that has delivered its
    // first chunk, and a v1 request waiting for the upstream.
    let mut stream = rt
        .block_on(
            v2.create_stream(&chat(HOLD_STREAM).with("stream", serde_json::Value::Bool(true))),
        )
        .unwrap();
    let chunk = rt
        .block_on(futures::StreamExt::next(&mut stream))
        .unwrap()
        .unwrap();
    assert_eq!(chunk.text(), Some("partial"));
    let pending_v1 = rt.spawn({
        let v1 = v1.clone();
        async move { v1.create(&chat(SLOW)).await }
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(first); // SIGKILL

    // The stream ends in an error, not as a complete answer.
    let rest = rt.block_on(async {
        let mut items = Vec::new();
        while let Some(item) = futures::StreamExt::next(&mut stream).await {
            let failed = item.is_err();
            items.push(item);
            if failed {
                break;
            }
        }
        items
    });
    assert!(
        matches!(rest.last(), Some(Err(_))),
        "a stream cut by the server's death must end in an error: {:?}",
        rest.iter().map(|r| r.is_ok()).collect::<Vec<_>>()
    );
    let e = rt.block_on(pending_v1).unwrap().unwrap_err();
    assert!(!e.is_security(), "{e}");

    // Restarted on the same key directory and port: the same key, and the
    // same clients (pinned, with their cached keys) work again.
    let mut second = Err((None, String::new()));
    for _ in 0..50 {
        second = start(key_serve(&up, dir.path(), &keys, &["--listen", &addr]));
        if second.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = second.unwrap_or_else(|e| panic!("restart on the same port: {e:?}"));
    assert_eq!(printed_fingerprint(&second), pin);
    assert!(second.wait_stderr("(loaded)", Duration::from_secs(10)));
    let a = rt.block_on(v1.create(&chat("after"))).unwrap();
    assert_eq!(a.text(), Some("hi"));
    let a = rt.block_on(v2.create(&chat("after"))).unwrap();
    assert_eq!(a.text(), Some("hi"));
}

#[test]
fn disk_full_while_saving_a_key_at_first_start_leaves_no_key_file() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let cmd = with_file_size_limit(key_serve(&up, dir.path(), &keys, &[]));
    let (code, stderr) = match start(cmd) {
        Ok(_) => panic!("started although the key could not be saved"),
        Err(e) => e,
    };
    assert_ne!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("private_key.pem") && stderr.contains("File too large"),
        "the error names the file and the cause: {stderr}"
    );
    // Nothing half-written: no private key, no temporary file.
    let left = names(&keys);
    assert!(
        left.iter()
            .all(|n| !n.starts_with('.') && n != "private_key.pem" && n != "public_key.pem"),
        "{left:?}"
    );
    // Once there is room, the same directory works.
    let srv = start(key_serve(&up, dir.path(), &keys, &[])).unwrap();
    assert!(srv.wait_stderr("(generated and saved)", Duration::from_secs(10)));
}

#[test]
fn disk_full_while_saving_a_rotated_key_keeps_the_previous_files() {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let fp = {
        let srv = start(key_serve(&up, dir.path(), &keys, &[])).unwrap();
        printed_fingerprint(&srv)
    };
    let before: Vec<(String, Vec<u8>, u32)> = names(&keys)
        .into_iter()
        .map(|n| {
            let p = keys.join(&n);
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            (n, std::fs::read(&p).unwrap(), mode)
        })
        .collect();
    assert!(before.iter().any(|(n, _, _)| n == "private_key.pem"));

    // Loading needs no write; the SIGHUP rotation's save fails.
    let mut cmd = key_serve(&up, dir.path(), &keys, &[]);
    cmd.env("RUST_LOG", "info");
    let srv = start(with_file_size_limit(cmd)).unwrap();
    assert_eq!(printed_fingerprint(&srv), fp);
    let status = Command::new("kill")
        .args(["-HUP", &srv.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        srv.wait_stderr("rotation failed", Duration::from_secs(30)),
        "{}",
        srv.stderr.lock().unwrap()
    );
    // The HPKE keys (a 75-byte file, under the limit) rotate after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !["HPKE keys rotated", "HPKE key rotation failed"]
        .iter()
        .any(|m| srv.stderr.lock().unwrap().contains(m))
    {
        assert!(Instant::now() < deadline, "{}", srv.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = srv.stderr.lock().unwrap().clone();
    assert!(
        log.contains("private_key.pem") && log.contains("File too large"),
        "{log}"
    );
    // The server still serves the previous key...
    let (status, pem) = http_get(srv.addr(), "/pki/public_key");
    assert_eq!(status, 200);
    let published = nomyo_core::PublicKey::from_pem(&pem).unwrap();
    assert_eq!(published.fingerprint(), fp);
    // ...and the v1 key files are byte-identical, with their modes; no
    // temporary file is left.
    for (n, bytes, mode) in &before {
        if n.ends_with(".pem") {
            let p = keys.join(n);
            assert_eq!(&std::fs::read(&p).unwrap(), bytes, "{n} changed");
            let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, *mode, "{n}");
        }
    }
    let left = names(&keys);
    assert!(left.iter().all(|n| !n.starts_with('.')), "{left:?}");
}

/// A key directory whose `file` was made world-readable (0644) after a
/// first start, and what the next start said: it must be refused.
struct Loosened {
    up: Upstream,
    dir: tempfile::TempDir,
    keys: PathBuf,
    /// The loosened file, as the server should name it.
    path: String,
    /// The refused start's stderr.
    stderr: String,
}

/// [`Loosened`] for `name` in the key directory (`what`: what it is, for
/// the panic if the server starts anyway); the refused start exited non-zero.
fn loosened(name: &str, what: &str) -> Loosened {
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    drop(start(key_serve(&up, dir.path(), &keys, &[])).unwrap());
    let file = keys.join(name);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = match start(key_serve(&up, dir.path(), &keys, &[])) {
        Ok(_) => panic!("started with {what}"),
        Err(e) => e,
    };
    assert_ne!(code, Some(0), "{stderr}");
    Loosened {
        up,
        dir,
        keys,
        path: file.display().to_string(),
        stderr,
    }
}

#[test]
fn loose_key_permissions_at_start_refused_with_the_fix() {
    let l = loosened("private_key.pem", "a world-readable private key");
    let (p, stderr) = (&l.path, &l.stderr);
    assert!(
        stderr.contains(p.as_str())
            && stderr.contains("0644")
            && stderr.contains(&format!("chmod 600 {p}")),
        "names the file, the mode and the fix: {stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    // Fixed as told, it starts.
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(start(key_serve(&l.up, l.dir.path(), &l.keys, &[])).unwrap());
}

#[test]
fn loose_hpke_key_file_permissions_at_start_refused_with_the_fix() {
    let l = loosened("hpke_keys.key", "a world-readable HPKE key file");
    let (p, stderr) = (&l.path, &l.stderr);
    assert!(
        stderr.contains(p.as_str()) && stderr.contains("0644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

#[cfg(feature = "engine")]
#[test]
fn engine_fails_to_load_bad_or_truncated_gguf_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let not_gguf = dir.path().join("noise.gguf");
    std::fs::write(&not_gguf, b"\x7fELF this is not a model at all").unwrap();
    // A GGUF header (version 3) that promises tensors and metadata it lacks.
    let truncated = dir.path().join("truncated.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&291u64.to_le_bytes());
    bytes.extend_from_slice(&24u64.to_le_bytes());
    bytes.extend_from_slice(b"\x14\x00\x00\x00\x00\x00\x00\x00general.archite");
    std::fs::write(&truncated, &bytes).unwrap();
    for (model, expect) in [
        (&not_gguf, "is not a GGUF model file"),
        (&truncated, "could not be loaded"),
    ] {
        let t = Instant::now();
        let mut cmd = nomyo();
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ephemeral-key",
            "--key-bits",
            "2048",
            "--threads",
            "1",
            "--model",
        ])
        .arg(model)
        .env_remove("RUST_LOG");
        let (code, stderr) = match start(cmd) {
            // It may print "listening on" before the model has failed; it
            // must then exit on its own.
            Ok(mut srv) => {
                let deadline = Instant::now() + Duration::from_secs(30);
                let status = loop {
                    if let Some(s) = srv.child.try_wait().unwrap() {
                        break s;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{}: still running after the model failed to load: {}",
                        model.display(),
                        srv.stderr.lock().unwrap()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                };
                std::thread::sleep(Duration::from_millis(100));
                let text = srv.stderr.lock().unwrap().clone();
                (status.code(), text)
            }
            Err(e) => e,
        };
        assert!(code.is_some_and(|c| c != 0), "{code:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains(expect) && stderr.contains(&model.display().to_string()),
            "{}: {stderr}",
            model.display()
        );
        assert!(t.elapsed() < Duration::from_secs(40));
    }
}

/// Starts two `nomyo serve` on one empty key directory at the same moment.
fn two_first_starts(up: &Upstream, dir: &Path, keys: &Path) -> (Serve, Serve) {
    // One replay journal per server (two servers on one journal are refused
    // by design); the race under test is the one on the key files.
    let (ja, jb) = (dir.join("a-replay.log"), dir.join("b-replay.log"));
    let a = key_serve(up, dir, keys, &["--replay-journal", ja.to_str().unwrap()]);
    let b = key_serve(up, dir, keys, &["--replay-journal", jb.to_str().unwrap()]);
    let (ta, tb) = (
        std::thread::spawn(move || start(a)),
        std::thread::spawn(move || start(b)),
    );
    let a = ta.join().unwrap().unwrap_or_else(|e| panic!("{e:?}"));
    let b = tb.join().unwrap().unwrap_or_else(|e| panic!("{e:?}"));
    (a, b)
}

#[test]
fn concurrent_first_start_on_one_empty_key_dir_same_v1_key() {
    let up = upstream();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let (a, b) = two_first_starts(&up, dir.path(), &keys);
        let (fa, fb) = (printed_fingerprint(&a), printed_fingerprint(&b));
        assert_eq!(fa, fb, "two servers, two different keys");
        let (_, pem_a) = http_get(a.addr(), "/pki/public_key");
        let (_, pem_b) = http_get(b.addr(), "/pki/public_key");
        assert_eq!(pem_a, pem_b);
        let saved = nomyo_core::PublicKey::from_pem(
            &std::fs::read_to_string(keys.join("public_key.pem")).unwrap(),
        )
        .unwrap();
        assert_eq!(saved.fingerprint(), fa);
        let left = names(&keys);
        assert!(left.iter().all(|n| !n.starts_with('.')), "{left:?}");
    }
}

#[test]
fn concurrent_first_start_on_one_empty_key_dir_same_hpke_keys() {
    let up = upstream();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        // The v1 key is there already (loaded in milliseconds, where its
        // generation would take long enough to put one server well ahead of
        // the other): both reach the HPKE keys at nearly the same moment.
        drop(start(key_serve(&up, dir.path(), &keys, &[])).unwrap());
        std::fs::remove_file(keys.join("hpke_keys.key")).unwrap();
        let (a, b) = two_first_starts(&up, dir.path(), &keys);
        let get = |s: &Serve| {
            let (status, body) = support::http_get_bytes(s.addr(), "/.well-known/hpke-keys");
            assert_eq!(status, 200);
            body
        };
        assert_eq!(get(&a), get(&b), "two servers, two different HPKE key sets");
    }
}
