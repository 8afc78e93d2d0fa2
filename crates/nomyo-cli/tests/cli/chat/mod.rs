//! `nomyo chat` and `nomyo fingerprint --server` as a user sees them, against
//! a real `nomyo serve` (ephemeral 2048-bit key, port 0) in front of a fake
//! OpenAI-compatible upstream: answers, `--json` with `_metadata`, prompts
//! from stdin, environment variables, key directories with passwords, pins,
//! known servers, and the exit codes of docs/CLI.md §2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Without `nomyo serve` (feature `serve`) only the tests that need no server
// run; the helpers of the others are unused then.
#![cfg_attr(not(feature = "serve"), allow(dead_code, unused_imports))]

mod answers;
mod exit_codes;
mod python_v1;

use crate::support;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use support::{
    assert_exit, http_double, nomyo_at_home, serve_cmd_open, started, stderr, stdout,
    write_response, Serve, EPHEMERAL_KEY, JSON, MODELS,
};

const MARKER: &str = "prompt-marker-7f3a";

/// A fake upstream: `GET /v1/models` lists `tiny`; `POST /v1/chat/completions`
/// answers whether the prompt marker arrived, or fails with `fail_status`.
struct Upstream {
    url: String,
    fail_status: Arc<Mutex<Option<u16>>>,
}

fn upstream() -> Upstream {
    let fail_status = Arc::new(Mutex::new(None));
    let fail = fail_status.clone();
    let url = http_double(move |request, out| {
        if request.line.starts_with("GET /v1/models") {
            write_response(out, 200, JSON, MODELS)?;
        } else if let Some(s) = *fail.lock().unwrap() {
            write_response(out, s, JSON, r#"{"error":{"message":"upstream down"}}"#)?;
        } else {
            let saw = if request.body.contains(MARKER) {
                "yes"
            } else {
                "no"
            };
            let reply = format!(
                r#"{{"id":"c1","object":"chat.completion","created":1764300000,"model":"tiny","choices":[{{"index":0,"finish_reason":"stop","message":{{"role":"assistant","content":"upstream saw the prompt: {saw}"}}}}],"usage":{{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}}}"#
            );
            write_response(out, 200, JSON, &reply)?;
        }
        Ok(true)
    });
    Upstream { url, fail_status }
}

/// `nomyo serve` (ephemeral key, no API key unless `extra` names one) in
/// front of `upstream`.
fn serve(upstream: &Upstream, extra: &[&str]) -> Serve {
    started(serve_cmd_open(
        &upstream.url,
        &[&EPHEMERAL_KEY[..], extra].concat(),
    ))
}

/// An upstream, a server in front of it and a clean environment.
fn setup() -> (Upstream, Serve, Env) {
    let up = upstream();
    let s = serve(&up, &[]);
    (up, s, Env::new())
}

/// A clean environment: HOME in a temporary directory (for the default
/// known-servers file), no NOMYO_* variables.
struct Env {
    home: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn known_servers(&self) -> PathBuf {
        self.home.path().join(".config/nomyo/known_servers")
    }

    fn cmd(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = nomyo_at_home(self.home.path());
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.cmd(args, env).output().expect("run nomyo")
    }

    /// `nomyo chat` against `s` with the client keys in `dir`, then `rest`.
    fn chat(&self, s: &Serve, dir: &Path, rest: &[&str]) -> Output {
        self.run(&chat_args(s, dir, rest))
    }

    /// [`Env::chat`] with extra environment variables.
    fn chat_env(&self, s: &Serve, dir: &Path, rest: &[&str], env: &[(&str, &str)]) -> Output {
        self.run_env(&chat_args(s, dir, rest), env)
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(args, &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

/// `nomyo: ...`, one or two lines, no Debug dump.
#[track_caller]
fn human_error(o: &Output) -> String {
    let e = stderr(o);
    assert!(
        e.starts_with("nomyo: ") || e.starts_with("error: "),
        "stderr: {e}"
    );
    assert!(
        e.lines().count() <= 2 || e.starts_with("error: "),
        "more than two lines: {e}"
    );
    assert!(!e.contains(" { "), "Debug output: {e}");
    e
}

/// A 2048-bit client key directory (fast), optionally password-protected.
fn key_dir(env: &Env, password: Option<&str>) -> PathBuf {
    let dir = env.home.path().join(format!("keys-{}", password.is_some()));
    let mut args = vec!["keygen", "--bits", "2048", "--out", dir.to_str().unwrap()];
    let pw_file = env.home.path().join("pw");
    match password {
        Some(p) => {
            std::fs::write(&pw_file, format!("{p}\n")).unwrap();
            args.extend(["--password-file", pw_file.to_str().unwrap()]);
        }
        None => args.push("--no-password"),
    }
    assert_exit(&env.run(&args), 0);
    dir
}

/// `nomyo chat` with a client key directory: protocol v1 (the protocol that
/// uses one), chosen explicitly since auto is the default.
fn chat_args<'a>(s: &'a Serve, dir: &'a Path, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "chat",
        "--protocol",
        "v1",
        "--base-url",
        &s.url,
        "--allow-http",
        "--key-dir",
        dir.to_str().unwrap(),
    ];
    v.extend(rest);
    v
}
