//! `nomyo chat` as a conversation and with a whole conversation:
//!
//! - with no prompt on a terminal (a pseudo-terminal from util-linux
//!   `script`), each line is sent with the conversation so far, each answer
//!   streams in several chunks before the next `>>> ` marker, `/clear`
//!   forgets the history, `/system` sets the system message, `/exit` and the
//!   end of input end it with exit 0; Ctrl-C stops an answer and, at the
//!   marker, ends the conversation; over v1 each answer is printed whole;
//! - `--messages FILE` sends every message of the file; a malformed file is
//!   a usage error (exit 2) that names the problem, never the file's text;
//! - an answer cut off by `max_tokens` (`finish_reason: "length"`) is said
//!   on stderr in text mode.
//!
//! The upstream double answers with facts about the conversation it was
//! sent (the number of user messages, the first user message and the system
//! message, upper-cased so that they cannot be mistaken for the terminal's
//! echo of the input), in chunks 150 ms apart, behind a real `nomyo serve`.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nomyo_testkit::pty::Terminal;
use serde_json::{json, Value};
use support::{
    assert_exit, chat_args, http_double, serve_cmd_open, started, stderr, stdout, write_response,
    Serve, EPHEMERAL_KEY, JSON, MODELS,
};

const MARKER: &str = ">>> ";
/// In the last user message: the double ends its answer with
/// `finish_reason: "length"`.
const CUTOFF: &str = "CUTOFF";
/// Between two streamed chunks of the double.
const CHUNK_GAP: Duration = Duration::from_millis(150);

/// The double's answer to a conversation, as chunks.
fn answer_to(messages: &[Value]) -> Vec<String> {
    let of = |role: &str| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m["role"] == role)
            .map(|m| m["content"].as_str().unwrap_or("").to_uppercase())
            .collect()
    };
    let users = of("user");
    let system = of("system");
    vec![
        "ANS".to_owned(),
        format!(" USERS={}", users.len()),
        format!(" FIRST={}", users.first().map_or("-", String::as_str)),
        format!(" SYSTEM={}", system.first().map_or("-", String::as_str)),
        " END".to_owned(),
    ]
}

/// The upstream double; returns its URL and the messages of the last chat
/// request it received.
fn conversation_double() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let last = seen.clone();
    let url = http_double(move |request, out| {
        if request.line.starts_with("GET") {
            write_response(out, 200, JSON, MODELS)?;
            return Ok(true);
        }
        let body: Value = serde_json::from_str(&request.body).unwrap();
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let cut = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .is_some_and(|m| m["content"].as_str().unwrap_or("").contains(CUTOFF));
        let finish = if cut { "length" } else { "stop" };
        let chunks = answer_to(&messages);
        *last.lock().unwrap() = messages;
        if body["stream"] == true {
            write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )?;
            out.flush()?;
            let event = |delta: Value, finish: Value| {
                let chunk = json!({"id": "c1", "object": "chat.completion.chunk",
                    "created": 1764300000, "model": "tiny",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
                format!("data: {chunk}\n\n")
            };
            let send = |out: &mut std::net::TcpStream, data: &str| -> std::io::Result<()> {
                write!(out, "{:x}\r\n{data}\r\n", data.len())?;
                out.flush()
            };
            for (i, c) in chunks.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(CHUNK_GAP);
                }
                send(
                    out,
                    &event(json!({"role": "assistant", "content": c}), Value::Null),
                )?;
            }
            send(out, &event(json!({}), json!(finish)))?;
            send(out, "data: [DONE]\n\n")?;
            write!(out, "0\r\n\r\n")?;
            out.flush()?;
        } else {
            let reply = json!({"id": "c1", "object": "chat.completion", "created": 1764300000,
                "model": "tiny", "choices": [{"index": 0, "finish_reason": finish,
                "message": {"role": "assistant", "content": chunks.concat()}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
            write_response(out, 200, JSON, &reply.to_string())?;
        }
        Ok(true)
    });
    (url, seen)
}

/// Types `line`, waits for the whole answer and the next marker; checks
/// that the answer arrived in several reads spread over time, all before
/// that marker. Returns the answer and the offset after the marker.
fn turn(term: &mut Terminal, line: &str, from: usize) -> (String, usize) {
    term.type_line(line);
    let start = term.wait_for("ANS", from);
    let end = term.wait_for(" END", start);
    let marker = term.wait_for(MARKER, end);
    let (t0, read0) = term.arrival(start);
    let (t1, read1) = term.arrival(end + 1);
    assert!(
        read1 > read0 && t1.duration_since(t0) >= CHUNK_GAP * 2,
        "the answer to {line:?} did not arrive in chunks ({:?} apart, reads {read0}..{read1})",
        t1.duration_since(t0)
    );
    let answer = term.text()[start..end + 4].to_owned();
    (answer, marker + MARKER.len())
}

/// `nomyo serve` in front of the conversation double, and a directory for
/// the known-servers file and the conversation files.
struct Fixture {
    serve: Serve,
    seen: Arc<Mutex<Vec<Value>>>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Fixture {
        let (up, seen) = conversation_double();
        Fixture {
            serve: started(serve_cmd_open(&up, &EPHEMERAL_KEY)),
            seen,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// `nomyo chat`'s arguments against this server, then `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        chat_args(
            &self.serve.url,
            &self.dir.path().join("known_servers"),
            extra,
        )
    }

    /// `nomyo chat` with `extra` on a terminal, and where its first marker ends.
    fn terminal(&self, extra: &[&str]) -> (Terminal, usize) {
        let term = Terminal::start(&self.args(extra));
        let at = term.wait_for(MARKER, 0) + MARKER.len();
        (term, at)
    }
}

/// `args` run with no input; its output.
fn run(args: &[String]) -> std::process::Output {
    Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The program on the terminal ended with exit 0.
fn assert_ended_well((status, shown): (std::process::ExitStatus, String)) {
    assert_eq!(status.code(), Some(0), "{shown}");
}

#[test]
fn a_conversation_on_a_terminal_streams_and_keeps_context() {
    let fx = Fixture::start();
    let (mut term, at) = fx.terminal(&[]);
    let (a1, at) = turn(&mut term, "remember the apple", at);
    assert_eq!(a1, "ANS USERS=1 FIRST=REMEMBER THE APPLE SYSTEM=- END");
    let (a2, at) = turn(&mut term, "and the pear", at);
    assert_eq!(a2, "ANS USERS=2 FIRST=REMEMBER THE APPLE SYSTEM=- END");
    // The third answer depends on the first turn.
    let (a3, at) = turn(&mut term, "which fruit came first?", at);
    assert_eq!(a3, "ANS USERS=3 FIRST=REMEMBER THE APPLE SYSTEM=- END");

    term.type_line("/clear");
    let at = term.wait_for(MARKER, term.wait_for("cleared", at)) + MARKER.len();
    let (a4, at) = turn(&mut term, "a fresh start", at);
    assert_eq!(a4, "ANS USERS=1 FIRST=A FRESH START SYSTEM=- END");

    term.type_line("/system be terse");
    let at = term.wait_for(MARKER, term.wait_for("system message set", at)) + MARKER.len();
    let (a5, _) = turn(&mut term, "hello", at);
    assert_eq!(a5, "ANS USERS=2 FIRST=A FRESH START SYSTEM=BE TERSE END");

    term.type_line("/exit");
    assert_ended_well(term.exited());
}

#[test]
fn a_conversation_ends_at_the_end_of_input_and_says_when_an_answer_was_cut_off() {
    let fx = Fixture::start();
    let (mut term, at) = fx.terminal(&["--max-tokens", "7"]);
    let (a1, at) = turn(&mut term, "CUTOFF soon", at);
    assert_eq!(a1, "ANS USERS=1 FIRST=CUTOFF SOON SYSTEM=- END");
    // After the answer, before the next marker.
    let notice = term.wait_for("[answer cut off at --max-tokens 7; raise it for more]", 0);
    assert!(notice > term.text().find(&a1).unwrap() && notice < at);
    // Ctrl-D: the end of input.
    assert_ended_well(term.finish());
}

#[test]
fn ctrl_c_stops_an_answer_and_at_the_marker_ends_the_conversation() {
    let fx = Fixture::start();
    let (mut term, at) = fx.terminal(&[]);
    term.type_line("stop me");
    let start = term.wait_for("ANS", at);
    // Ctrl-C, as the terminal sends it.
    term.send(b"\x03");
    let stopped = term.wait_for("(answer stopped", start);
    let at = term.wait_for(MARKER, stopped) + MARKER.len();
    assert!(
        !term.text()[start..stopped].contains(" END"),
        "{}",
        term.text()
    );
    // The stopped message is not part of the conversation.
    let (a, at) = turn(&mut term, "a new first message", at);
    assert_eq!(a, "ANS USERS=1 FIRST=A NEW FIRST MESSAGE SYSTEM=- END");
    assert!(term.text().len() >= at);
    term.send(b"\x03");
    assert_ended_well(term.exited());
}

#[test]
fn a_conversation_over_v1_prints_each_answer_whole() {
    let fx = Fixture::start();
    let (mut term, mut at) = fx.terminal(&["--protocol", "v1"]);
    for (line, answer) in [
        ("one", "ANS USERS=1 FIRST=ONE SYSTEM=- END"),
        ("two", "ANS USERS=2 FIRST=ONE SYSTEM=- END"),
    ] {
        term.type_line(line);
        let start = term.wait_for(answer, at);
        at = term.wait_for(MARKER, start) + MARKER.len();
    }
    term.type_line("/bye");
    let (status, shown) = term.exited();
    assert_eq!(status.code(), Some(0), "{shown}");
    assert!(shown.contains("protocol v1"), "{shown}");
}

#[test]
fn messages_file_sends_every_message() {
    let fx = Fixture::start();
    let file = fx.dir.path().join("conversation.json");
    let conversation = json!([
        {"role": "system", "content": "you count fruit"},
        {"role": "user", "content": "an apple"},
        {"role": "assistant", "content": "one apple"},
        {"role": "user", "content": "and a pear?"},
    ]);
    std::fs::write(&file, conversation.to_string()).unwrap();
    for extra in [&[][..], &["--stream"][..]] {
        let mut args = fx.args(&["--messages", file.to_str().unwrap()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let o = run(&args);
        assert_exit(&o, 0);
        assert_eq!(
            stdout(&o).trim(),
            "ANS USERS=2 FIRST=AN APPLE SYSTEM=YOU COUNT FRUIT END"
        );
        let sent: Vec<Value> = fx
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|m| json!({"role": m["role"], "content": m["content"]}))
            .collect();
        assert_eq!(Value::Array(sent), conversation);
    }
}

#[test]
fn a_malformed_messages_file_is_a_usage_error_that_does_not_echo_it() {
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_servers");
    let file = dir.path().join("bad.json");
    // No server is needed: the file is read before anything is sent.
    let url = "http://127.0.0.1:9";
    for (text, problem) in [
        (
            r#"[{"role": "user", "content": "secret-one""#,
            "not valid JSON",
        ),
        (
            r#"{"role": "user", "content": "secret-two"}"#,
            "not an array",
        ),
        (r#"[]"#, "holds no messages"),
        (r#"["secret-three"]"#, "message 1 is not an object"),
        (
            r#"[{"role": "user", "content": "x"}, {"role": "wizard-secret", "content": "secret-four"}]"#,
            "message 2 has a role other than system, user or assistant",
        ),
        (
            r#"[{"role": "user", "content": 12345}]"#,
            "message 1 has no \"content\" string",
        ),
        (
            r#"[{"content": "secret-five"}]"#,
            "message 1 has no \"role\" string",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let args = chat_args(url, &known, &["--messages", file.to_str().unwrap()]);
        let o = run(&args);
        assert_exit(&o, 2);
        let err = stderr(&o);
        assert!(
            err.contains("--messages file") || err.contains("bad.json"),
            "{err}"
        );
        assert!(err.contains(problem), "{text}: {err}");
        for secret in ["secret", "12345"] {
            assert!(!err.contains(secret), "{text}: {err}");
        }
    }
    let missing = dir.path().join("missing.json");
    let args = chat_args(url, &known, &["--messages", missing.to_str().unwrap()]);
    let o = Command::new(&args[0]).args(&args[1..]).output().unwrap();
    assert_exit(&o, 2);
}

#[test]
fn text_mode_says_when_max_tokens_cut_the_answer_off() {
    let fx = Fixture::start();
    for extra in [&[][..], &["--stream"][..], &["--protocol", "v1"][..]] {
        let mut args = fx.args(&["--max-tokens", "5"]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(format!("{CUTOFF} here"));
        let o = run(&args);
        assert_exit(&o, 0);
        assert!(stdout(&o).contains("FIRST=CUTOFF HERE"), "{}", stdout(&o));
        assert!(
            stderr(&o).contains("[answer cut off at --max-tokens 5; raise it for more]"),
            "{extra:?}: {}",
            stderr(&o)
        );
        // A whole answer: no notice; with --json, none either (the JSON says it).
        args.pop();
        args.push("a whole answer".to_owned());
        let o = run(&args);
        assert_exit(&o, 0);
        assert!(!stderr(&o).contains("cut off"), "{}", stderr(&o));
    }
}
