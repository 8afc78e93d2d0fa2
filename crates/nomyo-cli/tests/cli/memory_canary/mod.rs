//! The server's live memory after a request: a real `nomyo serve` process
//! gets encrypted requests (v1, v2, a v2 stream) whose prompt holds a
//! unique canary, answered by an upstream double whose answer holds a
//! second one, and by the embedded model (whose answer text, as the client
//! received it, is the second canary). Once every request and connection
//! has finished (the client dropped, no request in flight, no client or
//! upstream connection left), every readable mapping of the server
//! (`/proc/PID/maps`, then `/proc/PID/mem`) is read, and neither the prompt
//! nor the answer may be found anywhere in it: freed memory is wiped
//! (`nomyo_core::wipe_alloc`, SECURITY.md "Memory"), and the report
//! `_metadata.memory_protection.secure_zeroing` says so.
//!
//! A copy that is found is reported with its address, its mapping and what
//! that mapping is (the heap, the stack of which thread, an anonymous
//! mapping such as a malloc arena) and the bytes around it.
//!
//! Reading another process's memory needs the right to ptrace it, and the
//! server makes itself undumpable (`PR_SET_DUMPABLE` 0), so this needs root
//! (CAP_SYS_PTRACE); without it the test says SKIPPED (CI runs as root).

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![cfg(target_os = "linux")]
// `memmem(3)` from the C library: a fast search over a few hundred MiB of a
// debug-built test.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scan;

use crate::support;

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nomyo_client::{ChatMessage, ChatRequest, Client, KnownServers, SecretString};
use nomyo_testkit::procfs::{descriptors, tcp_sockets, TCP_LISTEN};
use support::{
    api_key_file, http_double, http_get, metric, printed_fingerprint, runtime, serve_cmd_open,
    start, Serve, API_KEY, JSON, MODELS,
};
#[cfg(feature = "engine")]
use support::{model, serve_embedded_cmd};

use scan::{assert_not_in_memory, needles_of};

/// `TAG-` and 32 random hex digits.
fn canary(tag: &str) -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{tag}-{hex}")
}

/// An OpenAI-compatible upstream whose answers (plain, and the first delta
/// of a stream) say `answer`, and which closes every connection after its
/// answer (`Connection: close`): the server keeps no idle upstream
/// connection, whose read buffer would still hold the last answer it read
/// (a live buffer, not freed memory: SECURITY.md).
fn closing_upstream(answer: &str) -> String {
    let answer = answer.to_owned();
    http_double(move |request, out| {
        use std::io::Write;
        let (content_type, body) = if request.line.starts_with("GET /v1/models") {
            (JSON, MODELS.to_owned())
        } else if request.body.contains(r#""stream":true"#) {
            let event = |delta: &str, finish: &str| {
                format!(
                    "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1764300000,\"model\":\"tiny\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
                )
            };
            let first = format!(r#"{{"role":"assistant","content":"{answer}"}}"#);
            (
                "text/event-stream",
                event(&first, "null") + &event("{}", r#""stop""#) + "data: [DONE]\n\n",
            )
        } else {
            (
                JSON,
                format!(
                    r#"{{"id":"c1","object":"chat.completion","created":1764300000,"model":"tiny","choices":[{{"index":0,"finish_reason":"stop","message":{{"role":"assistant","content":"{answer}"}}}}],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}}"#
                ),
            )
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        out.flush()?;
        Ok(false)
    })
}

fn client(srv: &Serve, protocol: nomyo_client::Protocol, home: &Path) -> Client {
    Client::builder()
        .base_url(&srv.url)
        .allow_http(true)
        .api_key(SecretString::from(API_KEY.to_owned()))
        .max_retries(0)
        .timeout(Duration::from_secs(300))
        .pin(printed_fingerprint(srv))
        .known_servers(KnownServers::File(home.join("known_servers")))
        .protocol(protocol)
        .build()
        .unwrap()
}

/// Polls `get` until `ok` holds; panics with the last value after `within`.
fn settle<T: std::fmt::Debug>(
    what: &str,
    within: Duration,
    mut get: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let v = get();
        if ok(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {v:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// TCP sockets of process `pid`: `(local port, remote port)` of each
/// connection it holds open (listeners left out).
fn tcp_connections(pid: u32) -> Vec<(u16, u16)> {
    let tcp = tcp_sockets(pid);
    descriptors(pid)
        .into_iter()
        .flatten()
        .filter_map(|inode| tcp.get(&inode))
        .filter(|s| s.state != TCP_LISTEN)
        .map(|s| (s.local_port, s.remote_port))
        .collect()
}

/// Waits until the server has no request in flight and no TCP connection
/// open (clients and upstreams alike), then makes one more connection
/// (`GET /health`) and waits for it to close too: the tasks of the earlier
/// connections finished their drops before that one was served.
fn wait_idle(srv: &Serve) {
    settle(
        "requests in flight",
        Duration::from_secs(30),
        || metric(srv.addr(), "nomyo_requests_in_flight"),
        |v| *v == 0.0,
    );
    let clients = || tcp_connections(srv.pid());
    for _ in 0..2 {
        settle(
            "open TCP connections of the server",
            Duration::from_secs(30),
            clients,
            |c| c.is_empty(),
        );
        assert_eq!(http_get(srv.addr(), "/health").0, 200);
    }
    settle(
        "open TCP connections of the server",
        Duration::from_secs(30),
        clients,
        |c| c.is_empty(),
    );
}

/// The report the server gives about its memory, from an answer.
fn secure_zeroing(answer: &nomyo_client::ChatCompletion) -> bool {
    answer
        .metadata
        .memory_protection
        .as_ref()
        .expect("memory_protection")
        .secure_zeroing
}

#[test]
fn prompt_and_answer_are_not_left_in_the_memory_of_nomyo_serve_with_an_upstream() {
    let prompt = canary("PROMPT-CANARY");
    let answer = canary("ANSWER-CANARY");
    let up = closing_upstream(&answer);
    let dir = tempfile::tempdir().unwrap();
    // No periodic health probe: it would open upstream connections while the
    // memory is read (harmless, but the wait for no connection is exact).
    let mut cmd = serve_cmd_open(
        &up,
        &[
            "--ephemeral-key",
            "--key-bits",
            "2048",
            "--upstream-health-interval",
            "0",
        ],
    );
    cmd.arg("--api-key-file").arg(api_key_file(dir.path()));
    let srv = start(cmd).unwrap_or_else(|e| panic!("{e:?}"));
    let rt = runtime();
    let request = ChatRequest::new("tiny").message(ChatMessage::user(format!("About {prompt}")));
    let v1 = client(&srv, nomyo_client::Protocol::V1, dir.path());
    let v2 = client(&srv, nomyo_client::Protocol::V2, dir.path());
    rt.block_on(async {
        for c in [&v1, &v2] {
            let a = c.create(&request).await.unwrap();
            assert_eq!(a.text(), Some(answer.as_str()));
            assert!(
                secure_zeroing(&a),
                "the server reports secure_zeroing false"
            );
        }
        let mut stream = v2
            .create_stream(
                &request
                    .clone()
                    .with("stream", serde_json::Value::Bool(true)),
            )
            .await
            .unwrap();
        let mut text = String::new();
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            text.push_str(chunk.unwrap().text().unwrap_or_default());
        }
        assert!(text.starts_with(&answer), "{text}");
    });
    drop((v1, v2, request));
    drop(rt);
    wait_idle(&srv);

    let mut needles = needles_of("the prompt canary", &prompt);
    needles.extend(needles_of("the answer canary", &answer));
    assert_not_in_memory(&srv, &needles);
}

// The embedded model: not in the client-only build.
#[cfg(feature = "engine")]
#[test]
fn prompt_and_answer_are_not_left_in_the_memory_of_nomyo_serve_with_the_embedded_model() {
    let Some(model) = model() else { return };
    let prompt = canary("PROMPT-CANARY");
    let dir = tempfile::tempdir().unwrap();
    let cmd = serve_embedded_cmd(dir.path(), &model, &[]);
    let srv = start(cmd).unwrap_or_else(|e| panic!("{e:?}"));
    settle(
        "GET /health while the model loads",
        Duration::from_secs(120),
        || http_get(srv.addr(), "/health").0,
        |s| *s == 200,
    );
    let (status, models) = http_get(srv.addr(), "/v1/models");
    assert_eq!(status, 200, "{models}");
    let models: serde_json::Value = serde_json::from_str(&models).unwrap();
    let name = models["data"][0]["id"].as_str().unwrap().to_owned();

    let rt = runtime();
    let request = ChatRequest::new(name)
        .message(ChatMessage::user(format!(
            "Write two sentences about the sea, then repeat this code: {prompt}"
        )))
        .temperature(0.0)
        .seed(7)
        .max_tokens(64);
    let v1 = client(&srv, nomyo_client::Protocol::V1, dir.path());
    let v2 = client(&srv, nomyo_client::Protocol::V2, dir.path());
    let mut answers = Vec::new();
    rt.block_on(async {
        for c in [&v1, &v2] {
            let a = c.create(&request).await.unwrap();
            assert!(
                secure_zeroing(&a),
                "the server reports secure_zeroing false"
            );
            answers.push(a.text().unwrap_or_default().trim().to_owned());
        }
    });
    drop((v1, v2, request));
    drop(rt);
    wait_idle(&srv);

    let mut needles = needles_of("the prompt canary", &prompt);
    for (i, a) in answers.iter().enumerate() {
        // A long enough piece of the answer that it cannot be anywhere by
        // chance (the model's vocabulary holds words, not sentences).
        assert!(a.len() >= 24, "answer {i} too short to be a canary: {a:?}");
        needles.extend(needles_of(&format!("the model's answer {i}"), a));
    }
    assert_not_in_memory(&srv, &needles);
}
