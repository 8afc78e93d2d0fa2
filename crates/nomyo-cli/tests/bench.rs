//! `nomyo bench` against a real `nomyo serve` (ephemeral 2048-bit key, port
//! 0, an API key required) in front of an instant OpenAI-compatible upstream
//! double: the `--json` fields for v1, v2 (X25519, streamed) and plain, that every
//! counted request reached the upstream, and that a bad API key makes it
//! exit non-zero (at warm-up, and counted by kind when measured).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const API_KEY: &str = "bench-test-key-5d1c";

/// A keep-alive HTTP/1.1 upstream: `GET /v1/models` lists `tiny`, `POST
/// /v1/chat/completions` answers at once and is counted.
struct Upstream {
    url: String,
    posts: Arc<AtomicU64>,
}

fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let posts = Arc::new(AtomicU64::new(0));
    let counter = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &counter);
            });
        }
    });
    Upstream { url, posts }
}

fn handle(stream: TcpStream, posts: &AtomicU64) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let streamed = String::from_utf8_lossy(&body).contains(r#""stream":true"#);
        let (ctype, reply) = if line.starts_with("GET /v1/models") {
            (
                "application/json",
                r#"{"object":"list","data":[{"id":"tiny","object":"model"}]}"#,
            )
        } else if streamed {
            posts.fetch_add(1, Ordering::SeqCst);
            (
                "text/event-stream",
                concat!(
                    r#"data: {"id":"c1","object":"chat.completion.chunk","created":1764300000,"model":"tiny","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}"#,
                    "\n\n",
                    r#"data: {"id":"c1","object":"chat.completion.chunk","created":1764300000,"model":"tiny","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
                    "\n\ndata: [DONE]\n\n"
                ),
            )
        } else {
            posts.fetch_add(1, Ordering::SeqCst);
            (
                "application/json",
                r#"{"id":"c1","object":"chat.completion","created":1764300000,"model":"tiny","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            )
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )?;
        out.flush()?;
    }
}

/// A running `nomyo serve`, killed on drop.
struct Serve {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(upstream: &Upstream) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("api_keys");
    std::fs::write(&keys, format!("{API_KEY}\n")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_nomyo"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ephemeral-key",
            "--key-bits",
            "2048",
            "--upstream",
            &upstream.url,
            "--api-key-file",
        ])
        .arg(&keys)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nomyo serve");
    let mut serve = Serve {
        child,
        url: String::new(),
        _dir: dir,
    };
    let mut lines = BufReader::new(serve.child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "nomyo serve did not start");
        let line = lines.next().expect("nomyo serve exited").unwrap();
        if let Some(url) = line.strip_prefix("listening on ") {
            serve.url = url.trim().to_owned();
            std::thread::spawn(move || for _ in lines {});
            return serve;
        }
    }
}

/// Runs `nomyo bench` with a clean environment and the API key in $BENCH_KEY.
fn bench(url: &str, key: &str, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_nomyo"))
        .args([
            "bench",
            "--base-url",
            url,
            "--allow-http",
            "--api-key-env",
            "BENCH_KEY",
        ])
        .args(["--model", "tiny", "--known-servers"])
        .arg(home.path().join("known_servers"))
        .args(args)
        .env("HOME", home.path())
        .env("BENCH_KEY", key)
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_API_KEY")
        .env_remove("NOMYO_BASE_URL")
        .env_remove("NOMYO_MODEL")
        .stdin(Stdio::null())
        .output()
        .expect("run nomyo bench")
}

fn json_of(o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", String::from_utf8_lossy(&o.stderr)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The fields INTERFACES.md promises, for a run where all `n` succeeded.
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
    let srv = serve(&up);

    // v1: 6 measured requests after 2 warm-ups, 2 at a time.
    let before = up.posts.load(Ordering::SeqCst);
    let o = bench(
        &srv.url,
        API_KEY,
        &[
            "--protocol",
            "v1",
            "-c",
            "2",
            "-n",
            "6",
            "--warmup",
            "2",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    check_ok(&v, 6);
    assert_eq!(v["protocol"], "v1");
    assert_eq!(v["concurrency"], 2);
    assert_eq!(
        up.posts.load(Ordering::SeqCst) - before,
        8,
        "warm-up + measured"
    );
    assert!(v["client_hwm_kib"].as_u64().unwrap() > 0);

    // v2 with the X25519 config and a 4 KiB body.
    let o = bench(
        &srv.url,
        API_KEY,
        &[
            "--protocol",
            "v2",
            "--kem",
            "x25519",
            "-n",
            "5",
            "--body-bytes",
            "4096",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    check_ok(&v, 5);
    assert_eq!(v["kem"], "x25519");
    assert_eq!(v["body_bytes"], 4096);

    // v2 streamed: time to first token is reported.
    let o = bench(
        &srv.url,
        API_KEY,
        &["--protocol", "v2", "--stream", "-n", "3", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    check_ok(&v, 3);
    let ttft = v["ttft_p50_ms"].as_f64().unwrap();
    assert!(ttft > 0.0 && ttft <= v["max_ms"].as_f64().unwrap(), "{v}");

    // Plain, straight at the upstream: its counter moves, no server involved.
    let before = up.posts.load(Ordering::SeqCst);
    let o = bench(
        &up.url,
        API_KEY,
        &["--protocol", "plain", "-n", "4", "--warmup", "1", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_ok(&json_of(&o), 4);
    assert_eq!(up.posts.load(Ordering::SeqCst) - before, 5);

    // A bad API key: refused at warm-up (exit 3, as `nomyo chat`)...
    let o = bench(&srv.url, "wrong-key", &["-n", "3", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("warm-up"));
    // ...and without warm-up every measured request fails as http_401 (exit 5).
    let o = bench(
        &srv.url,
        "wrong-key",
        &["-n", "3", "--warmup", "0", "--json"],
    );
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let v = json_of(&o);
    assert_eq!(v["requests"], 3);
    assert_eq!(v["ok"], 0);
    assert_eq!(v["errors"]["http_401"], 3, "{v}");
    assert!(!String::from_utf8_lossy(&o.stderr).contains("wrong-key"));

    // --duration bounds the run by time.
    let start = Instant::now();
    let o = bench(
        &srv.url,
        API_KEY,
        &["--protocol", "v2", "-c", "2", "--duration", "0.5", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = json_of(&o);
    assert!(v["ok"].as_u64().unwrap() >= 1);
    assert!(v["elapsed_s"].as_f64().unwrap() >= 0.5);
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn bench_usage_errors() {
    let o = Command::new(env!("CARGO_BIN_EXE_nomyo"))
        .args([
            "bench",
            "--base-url",
            "http://127.0.0.1:9",
            "--allow-http",
            "--stream",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "--stream needs v2");
    let o = Command::new(env!("CARGO_BIN_EXE_nomyo"))
        .args([
            "bench",
            "--base-url",
            "http://127.0.0.1:9",
            "--allow-http",
            "-n",
            "3",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "--requests conflicts with --duration"
    );
}
