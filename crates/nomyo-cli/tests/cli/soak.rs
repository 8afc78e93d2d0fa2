//! The load soak, shortened for CI: a bounded soak of a real `nomyo serve`
//! (ephemeral 2048-bit key, API key required) in front of an instant
//! upstream double, driven by four `nomyo bench` processes at once: v1, v2
//! X25519, v2 X-Wing, and v2 streams of which a quarter are dropped by the
//! client after their first chunk (`--cancel-streams 0.25`). Equal rounds
//! (two by default); after each: zero errors, every request answered or counted as
//! cancelled, the in-flight and queue gauges back to 0, no client connection
//! left open and no other descriptor leaked; after each later round the
//! server's RSS within 10% of after the first (the first is the warm-up).
//!
//! Size by environment: `NOMYO_SOAK_REQUESTS` (total over all rounds,
//! default 2400), `NOMYO_SOAK_CONCURRENCY` (total over the four bench
//! processes, default 16) and `NOMYO_SOAK_ROUNDS` (default 2; every round
//! after the first is held to the 10%). The documented full-size run
//! (SECURITY.md):
//!
//! ```sh
//! NOMYO_SOAK_REQUESTS=20000 NOMYO_SOAK_CONCURRENCY=64 \
//!   cargo test -p nomyo-cli --test cli soak:: -- --nocapture
//! ```

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
// Linux: /proc, setrlimit through sh, signals.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::process::{Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nomyo_testkit::procfs::{descriptors, tcp_sockets, TCP_LISTEN};
use support::{bench_cmd, metric, open_fds, rss_kib, serve_cmd, start, upstream, Serve, API_KEY};

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// One `nomyo bench` process of the mix.
struct Load {
    name: &'static str,
    args: &'static [&'static str],
    /// Fraction of its streams it cancels.
    cancel: f64,
}

const MIX: [Load; 4] = [
    Load {
        name: "v1",
        args: &["--protocol", "v1"],
        cancel: 0.0,
    },
    Load {
        name: "v2-x25519",
        args: &["--protocol", "v2", "--kem", "x25519"],
        cancel: 0.0,
    },
    Load {
        name: "v2-xwing",
        args: &["--protocol", "v2", "--kem", "xwing"],
        cancel: 0.0,
    },
    Load {
        name: "v2-stream-cancel",
        args: &[
            "--protocol",
            "v2",
            "--kem",
            "x25519",
            "--stream",
            "--cancel-streams",
            "0.25",
        ],
        cancel: 0.25,
    },
];

fn spawn_bench(
    url: &str,
    home: &std::path::Path,
    load: &Load,
    n: u64,
    c: u64,
) -> std::process::Child {
    let known_servers = home.join(format!("known_servers-{}", load.name));
    bench_cmd(url, home, &known_servers, API_KEY)
        .arg("--json")
        .args(["-n", &n.to_string(), "-c", &c.to_string()])
        .args(load.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nomyo bench")
}

fn json_of(name: &str, o: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().last().unwrap_or_else(|| {
        panic!(
            "{name}: no output; stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {text}"))
}

/// The server's descriptors by kind, from `/proc/PID/fd` and `/proc/PID/net/tcp*`.
#[derive(Debug, Default, Clone, Copy)]
struct Fds {
    total: usize,
    /// Accepted client connections (local port = the server's).
    inbound: usize,
    /// Connections to the upstream (its keep-alive pool).
    upstream: usize,
    /// Everything else (listener, epoll, pipes, files, other sockets).
    other: usize,
}

fn fds(srv: &Serve, upstream_port: u16) -> Fds {
    let pid = srv.pid();
    let server_port: u16 = srv.addr().rsplit_once(':').unwrap().1.parse().unwrap();
    let tcp = tcp_sockets(pid);
    let mut out = Fds::default();
    for inode in descriptors(pid) {
        out.total += 1;
        match inode.and_then(|i| tcp.get(&i)) {
            Some(s) if s.local_port == server_port && s.state != TCP_LISTEN => out.inbound += 1,
            Some(s) if s.remote_port == upstream_port => out.upstream += 1,
            _ => out.other += 1,
        }
    }
    out
}

/// Polls until `ok` holds or `within` passes; returns the last value.
fn settle<T: Copy>(within: Duration, mut get: impl FnMut() -> T, ok: impl Fn(T) -> bool) -> T {
    let deadline = Instant::now() + within;
    loop {
        let v = get();
        if ok(v) || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn soak_mixed_protocols_and_cancelled_streams_leak_nothing() {
    let total = env_number("NOMYO_SOAK_REQUESTS", 2400);
    let concurrency = env_number("NOMYO_SOAK_CONCURRENCY", 16);
    let rounds = env_number("NOMYO_SOAK_ROUNDS", 2).max(2);
    let per_process = (total / rounds / MIX.len() as u64).max(1);
    let c = (concurrency / MIX.len() as u64).max(1);

    let up = upstream();
    let upstream_port: u16 = up
        .url
        .trim_end_matches("/v1")
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A 2-second replay window: the window holds every request id for its
    // duration by design (about 300 bytes a request, up to 500,000 ids with
    // the default 15 minutes), which would read as growth here. With 2 s,
    // what one round put there has expired by the end of the next.
    let cmd = serve_cmd(
        &up,
        dir.path(),
        &[
            "--ephemeral-key",
            "--key-bits",
            "2048",
            "--replay-window",
            "2",
        ],
    );
    let srv = start(cmd).unwrap_or_else(|(code, err)| panic!("serve exited {code:?}: {err}"));
    let pid = srv.pid();
    let before = fds(&srv, upstream_port);
    let rss_start = rss_kib(pid);
    eprintln!(
        "soak: {total} requests in {rounds} rounds, {per_process} per bench process per round, \
         c={c} each ({} in all); server fds at start {before:?}, RSS {rss_start} KiB",
        c * MIX.len() as u64
    );

    let mut rss_after = Vec::new();
    for round in 1..=rounds {
        let posts_before = up.posts.load(Ordering::SeqCst);
        let t = Instant::now();
        let children: Vec<_> = MIX
            .iter()
            .map(|l| spawn_bench(&srv.url, dir.path(), l, per_process, c))
            .collect();
        let mut answered = 0;
        for (load, child) in MIX.iter().zip(children) {
            let o = child.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round} {}: {}\n{}",
                load.name,
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            );
            let v = json_of(load.name, &o);
            assert_eq!(v["errors"], serde_json::json!({}), "{}: {v}", load.name);
            assert_eq!(v["requests"], per_process, "{}: {v}", load.name);
            assert_eq!(v["warmup"], c, "{}: {v}", load.name);
            let cancelled = v["cancelled"].as_u64().unwrap();
            let expect_cancelled = (per_process as f64 * load.cancel).floor() as u64;
            assert_eq!(cancelled, expect_cancelled, "{}: {v}", load.name);
            assert_eq!(
                v["ok"].as_u64().unwrap() + cancelled,
                per_process,
                "{}: {v}",
                load.name
            );
            answered += per_process;
            eprintln!(
                "soak round {round} {}: {} ok, {cancelled} cancelled, {:.0} req/s, p99 {:.1} ms",
                load.name,
                v["ok"],
                v["requests_per_s"].as_f64().unwrap_or(0.0),
                v["p99_ms"].as_f64().unwrap_or(0.0)
            );
        }
        // Every request (cancelled ones included) reached the upstream once,
        // after one warm-up request per task (the default --warmup).
        let warmups = c * MIX.len() as u64;
        assert_eq!(
            up.posts.load(Ordering::SeqCst) - posts_before,
            answered + warmups
        );

        // No request still held, none queued.
        let in_flight = settle(
            Duration::from_secs(10),
            || metric(srv.addr(), "nomyo_requests_in_flight"),
            |v| v == 0.0,
        );
        assert_eq!(in_flight, 0.0, "round {round}: requests still in flight");
        assert_eq!(metric(srv.addr(), "nomyo_queue_depth"), 0.0);
        // Every client connection closed (the bench processes have exited),
        // the upstream pool bounded, nothing else leaked.
        let now = settle(
            Duration::from_secs(10),
            || fds(&srv, upstream_port),
            |f: Fds| f.inbound == 0 && f.other <= before.other + 3,
        );
        assert_eq!(
            now.inbound, 0,
            "round {round}: client connections left open: {now:?}"
        );
        assert!(
            now.other <= before.other + 3,
            "round {round}: descriptors leaked: before {before:?}, after {now:?}"
        );
        assert!(
            now.upstream as u64 <= concurrency.max(64) + 4,
            "round {round}: upstream pool unbounded: {now:?}"
        );
        let rss = rss_kib(pid);
        eprintln!(
            "soak round {round}: {answered} requests in {:.1} s; server fds {now:?} \
             (total {}), RSS {rss} KiB, replay window entries {}",
            t.elapsed().as_secs_f64(),
            open_fds(pid),
            metric(srv.addr(), "nomyo_replay_window_entries")
        );
        rss_after.push(rss);
    }
    // After the warm-up round, memory stays flat: every later round within
    // 10% of the first.
    let first = rss_after[0] as f64;
    for (i, &later) in rss_after.iter().enumerate().skip(1) {
        assert!(
            later as f64 <= first * 1.10,
            "server RSS grew more than 10% from round 1 to round {}: {rss_after:?} KiB",
            i + 1
        );
    }
    assert!(srv.stderr.lock().unwrap().find("panicked").is_none());
}
