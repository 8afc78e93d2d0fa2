//! `nomyo serve --parallel 4` with the embedded model: four `nomyo chat
//! --stream` sessions at once all stream at once (every first token arrives
//! before any stream ends), and `/metrics` has the engine's time to first
//! token and inter-token histograms.

// The embedded model behind a real `nomyo serve`.
#![cfg(feature = "engine")]
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support;

use support::{metric, model, nomyo, serve_embedded_cmd, started};

#[test]
fn four_chat_streams_against_parallel_4_stream_at_once() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cmd = serve_embedded_cmd(
        dir.path(),
        &model,
        &["--parallel", "4", "--context", "1024"],
    );
    let serve = started(cmd);
    assert!(
        serve.wait_stderr("serving the embedded model", Duration::from_secs(120)),
        "{}",
        serve.stderr.lock().unwrap()
    );
    assert!(
        serve.stderr.lock().unwrap().contains("parallel=4"),
        "the start line names the parallelism: {}",
        serve.stderr.lock().unwrap()
    );

    // Events in the order they happened: (session, "first" | "end").
    let events = Arc::new(Mutex::new(Vec::<(usize, &'static str)>::new()));
    let questions = [
        "Write a poem about the sea.",
        "List some prime numbers.",
        "Why is the sky blue?",
        "Describe a cat.",
    ];
    let mut sessions = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        let home = dir.path().join(format!("home{i}"));
        std::fs::create_dir_all(&home).unwrap();
        let mut child = nomyo()
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("RUST_LOG")
            .env_remove("NOMYO_API_KEY")
            .env_remove("NOMYO_BASE_URL")
            .env_remove("NOMYO_MODEL")
            .args(["chat", "--base-url", &serve.url, "--allow-http"])
            .args(["--protocol", "v2", "--stream", "--max-tokens", "48"])
            .args(["--temperature", "0", "-m", "SmolLM2-135M-Instruct.Q4_1"])
            .arg("--known-servers")
            .arg(home.join("known_servers"))
            .arg(q)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let ev = Arc::clone(&events);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut text = Vec::new();
            let mut first = true;
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        text.extend_from_slice(&buf[..n]);
                        if first && text.iter().any(|b| !b.is_ascii_whitespace()) {
                            first = false;
                            ev.lock().unwrap().push((i, "first"));
                        }
                    }
                }
            }
            ev.lock().unwrap().push((i, "end"));
            text
        });
        sessions.push((child, reader));
    }
    for (mut child, reader) in sessions {
        let text = reader.join().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "nomyo chat failed: {err}");
        assert!(!text.is_empty());
    }
    let events = events.lock().unwrap().clone();
    assert_eq!(
        events.iter().filter(|(_, k)| *k == "first").count(),
        4,
        "{events:?}"
    );
    let first_end = events.iter().position(|(_, k)| *k == "end").unwrap();
    let last_first = events.iter().rposition(|(_, k)| *k == "first").unwrap();
    assert!(
        last_first < first_end,
        "a session ended before another's first token: {events:?}"
    );

    // The engine's timings reached /metrics: 4 first tokens, and gaps.
    let ttft = metric(
        serve.addr(),
        "nomyo_backend_time_to_first_token_seconds_count{backend=\"embedded\"}",
    );
    assert_eq!(ttft, 4.0);
    let gaps = metric(
        serve.addr(),
        "nomyo_backend_inter_token_seconds_count{backend=\"embedded\"}",
    );
    assert!(gaps >= 4.0, "{gaps}");
}
