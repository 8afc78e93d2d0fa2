//! `nomyo bench` against a real `nomyo serve` (ephemeral 2048-bit key, port
//! 0, an API key required) in front of an instant OpenAI-compatible upstream
//! double: the `--json` fields for v1, v2 (X25519, streamed) and plain, that every
//! counted request reached the upstream, and that a bad API key makes it
//! exit non-zero (at warm-up, and counted by kind when measured).

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::process::Output;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{
    bench_cmd, nomyo, serve_cmd, started, upstream, Serve, Upstream, API_KEY, EPHEMERAL_KEY,
};

/// `nomyo serve` (ephemeral key, API key required) in front of `upstream`;
/// the directory holds its API key file.
fn serve(upstream: &Upstream) -> (Serve, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let srv = started(serve_cmd(upstream, dir.path(), &EPHEMERAL_KEY));
    (srv, dir)
}

/// Runs `nomyo bench` with a clean environment, the API key in $BENCH_KEY,
/// and `args` (separated by spaces).
fn bench(url: &str, key: &str, args: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    bench_cmd(url, home.path(), &home.path().join("known_servers"), key)
        .args(args.split_whitespace())
        .output()
        .expect("run nomyo bench")
}

/// [`bench`] that must succeed: its `--json` line.
#[track_caller]
fn bench_ok(url: &str, args: &str) -> serde_json::Value {
    let o = bench(url, API_KEY, args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    json_of(&o)
}

fn json_of(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", String::from_utf8_lossy(&o.stderr)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The fields docs/CLI.md §10.2 promises, for a run where all `n` succeeded.
fn check_ok(v: &serde_json::Value, n: u64) {
    assert_eq!(v["requests"], n, "{v}");
    assert_eq!(v["ok"], n, "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    assert!(v["requests_per_s"].as_f64().unwrap() > 0.0, "{v}");
    let p50 = v["p50_ms"].as_f64().unwrap();
    let p95 = v["p95_ms"].as_f64().unwrap();
    let p99 = v["p99_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p95 && p95 <= p99, "{v}");
    assert!(p99 <= v["max_ms"].as_f64().unwrap(), "{v}");
}

#[test]
fn bench_json_v1_v2_plain_and_bad_key() {
    let up = upstream();
    let (srv, _dir) = serve(&up);

    // v1: 6 measured requests after 2 warm-ups, 2 at a time.
    let before = up.posts.load(Ordering::SeqCst);
    let v = bench_ok(&srv.url, "--protocol v1 -c 2 -n 6 --warmup 2 --json");
    check_ok(&v, 6);
    assert_eq!(v["protocol"], "v1");
    // Every answer opened reports its generated tokens (the upstream's usage: 1).
    assert_eq!(v["answers_with_tokens"], 6, "{v}");
    assert_eq!(v["generated_tokens"], 6, "{v}");
    assert!(v["generated_tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["concurrency"], 2);
    assert_eq!(
        up.posts.load(Ordering::SeqCst) - before,
        8,
        "warm-up + measured"
    );
    assert!(v["client_hwm_kib"].as_u64().unwrap() > 0);

    // v1 opening one answer in 3 (through the library's unopened answers):
    // requests 0, 3 and 6 are opened and report their tokens; all 7 count.
    let before = up.posts.load(Ordering::SeqCst);
    let v = bench_ok(
        &srv.url,
        "--protocol v1 -n 7 --warmup 0 --open-every 3 --json",
    );
    check_ok(&v, 7);
    assert_eq!(v["open_every"], 3, "{v}");
    assert_eq!(v["answers_opened"], 3, "{v}");
    assert_eq!(v["answers_with_tokens"], 3, "{v}");
    assert_eq!(v["generated_tokens"], 3, "{v}");
    assert_eq!(up.posts.load(Ordering::SeqCst) - before, 7);

    // v2 with the X25519 config and a 4 KiB body.
    let v = bench_ok(
        &srv.url,
        "--protocol v2 --kem x25519 -n 5 --body-bytes 4096 --json",
    );
    check_ok(&v, 5);
    assert_eq!(v["kem"], "x25519");
    assert_eq!(v["body_bytes"], 4096);

    // v2 streamed: time to first token is reported.
    let v = bench_ok(&srv.url, "--protocol v2 --stream -n 3 --json");
    check_ok(&v, 3);
    let ttft = v["ttft_p50_ms"].as_f64().unwrap();
    assert!(ttft > 0.0 && ttft <= v["max_ms"].as_f64().unwrap(), "{v}");
    let mean = v["ttft_mean_ms"].as_f64().unwrap();
    assert!(mean > 0.0 && mean <= v["max_ms"].as_f64().unwrap(), "{v}");
    // The upstream's streams carry no usage: their content chunks are counted.
    assert_eq!(v["answers_with_tokens"], 3, "{v}");
    assert_eq!(
        v["generated_tokens"].as_u64().unwrap(),
        3 * support::STREAM_CHUNKS as u64,
        "{v}"
    );
    assert!(v["generated_tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["decode_tokens_per_s_mean"].as_f64().unwrap() > 0.0, "{v}");

    // The text output says the same.
    let o = bench(&srv.url, API_KEY, "--protocol v2 --stream -n 2");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("generated tokens: "), "{text}");
    assert!(text.contains(" tokens/s"), "{text}");
    assert!(text.contains("time to first token ms: p50 "), "{text}");

    // Plain, straight at the upstream: its counter moves, no server involved.
    let before = up.posts.load(Ordering::SeqCst);
    let v = bench_ok(&up.url, "--protocol plain -n 4 --warmup 1 --json");
    check_ok(&v, 4);
    assert_eq!(up.posts.load(Ordering::SeqCst) - before, 5);
    assert_eq!(v["generated_tokens"], 4, "{v}");

    // A bad API key: refused at warm-up (exit 3, as `nomyo chat`)...
    let o = bench(&srv.url, "wrong-key", "-n 3 --json");
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("warm-up"));
    // ...and without warm-up every measured request fails as http_401 (exit 5).
    let o = bench(&srv.url, "wrong-key", "-n 3 --warmup 0 --json");
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let v = json_of(&o);
    assert_eq!(v["requests"], 3);
    assert_eq!(v["ok"], 0);
    assert_eq!(v["errors"]["http_401"], 3, "{v}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("wrong-key"));

    // --duration bounds the run by time.
    let start = Instant::now();
    let v = bench_ok(&srv.url, "--protocol v2 -c 2 --duration 0.5 --json");
    assert!(v["ok"].as_u64().unwrap() >= 1);
    assert!(v["elapsed_s"].as_f64().unwrap() >= 0.5);
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn bench_usage_errors() {
    let bench = ["bench", "--base-url", "http://127.0.0.1:9", "--allow-http"];
    let o = nomyo().args(bench).arg("--stream").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "--stream needs v2");
    let o = nomyo()
        .args(bench)
        .args(["-n", "3", "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "--requests conflicts with --duration"
    );
}
