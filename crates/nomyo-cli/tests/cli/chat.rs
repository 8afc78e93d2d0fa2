//! `nomyo chat` and `nomyo fingerprint --server` as a user sees them, against
//! a real `nomyo serve` (ephemeral 2048-bit key, port 0) in front of a fake
//! OpenAI-compatible upstream: answers, `--json` with `_metadata`, prompts
//! from stdin, environment variables, key directories with passwords, pins,
//! known servers, and the exit codes of docs/CLI.md §2.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Without `nomyo serve` (feature `serve`) only the tests that need no server
// run; the helpers of the others are unused then.
#![cfg_attr(not(feature = "serve"), allow(dead_code, unused_imports))]

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

#[cfg(feature = "serve")]
#[test]
fn answers_json_stdin_env_and_first_use_trust() {
    let (_up, s, env) = setup();
    let dir = key_dir(&env, None);

    // The text answer; the model is the server's only one; first contact is recorded.
    let prompt = format!("what did you see? {MARKER}");
    let o = env.chat(&s, &dir, &[&prompt]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "upstream saw the prompt: yes\n");
    let err = stderr(&o);
    assert!(
        err.contains("first contact with") && err.contains("trusting its key sha256:"),
        "{err}"
    );
    let known = std::fs::read_to_string(env.known_servers()).unwrap();
    let origin = s.url.trim_end_matches('/');
    let record = known
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap_or_default();
    assert!(
        record.starts_with(&format!("{origin} v1=sha256:")),
        "{known}"
    );

    // `fingerprint --server` shows the same key, and records nothing.
    let o = env.run(&["fingerprint", "--server", &s.url, "--allow-http"]);
    assert_exit(&o, 0);
    let fp = record
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_start_matches("v1=");
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(format!("v1 {fp}").as_str()));
    assert!(lines.all(|l| l.starts_with("v2 ")), "{out}");
    // A loopback server needs no --allow-http (nothing leaves the host);
    // any other plain-HTTP server does.
    let o = env.run(&["fingerprint", "--server", &s.url]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), out);
    let o = env.run(&["fingerprint", "--server", "http://192.0.2.1:9"]);
    assert_exit(&o, 2);
    assert!(human_error(&o).contains("--allow-http"));

    // Second contact: silent, key known.
    let o = env.chat(
        &s,
        &dir,
        &[
            "-m",
            "tiny",
            "--seed",
            "3",
            "--max-tokens",
            "9",
            "--temperature",
            "0.1",
            &prompt,
        ],
    );
    assert_exit(&o, 0);
    assert_eq!(stderr(&o), "");

    // --json: the whole response with _metadata.
    let o = env.chat(&s, &dir, &["--json", "--tier", "high", &prompt]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    for needle in [
        "\"_metadata\"",
        "\"payload_id\"",
        "\"security_tier\": \"high\"",
        "\"is_encrypted\": true",
        "\"encryption_algorithm\": \"hybrid-aes256-rsa4096\"",
        "\"memory_protection\"",
        "\"total_tokens\": 8",
        "upstream saw the prompt: yes",
    ] {
        assert!(out.contains(needle), "{needle} missing in {out}");
    }

    // The prompt from stdin, with `-` and with no argument.
    for args in [chat_args(&s, &dir, &["-"]), chat_args(&s, &dir, &[])] {
        let o = env.run_stdin(&args, &format!("piped {MARKER}\n"));
        assert_exit(&o, 0);
        assert_eq!(stdout(&o), "upstream saw the prompt: yes\n");
    }
    let o = env.run_stdin(&chat_args(&s, &dir, &["-"]), "  \n");
    assert_exit(&o, 2);
    assert!(human_error(&o).contains("empty"));

    // NOMYO_BASE_URL and NOMYO_MODEL instead of flags.
    let o = env.run_env(
        &[
            "chat",
            "--allow-http",
            "--key-dir",
            dir.to_str().unwrap(),
            &prompt,
        ],
        &[("NOMYO_BASE_URL", &s.url), ("NOMYO_MODEL", "tiny")],
    );
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "upstream saw the prompt: yes\n");
}

#[cfg(feature = "serve")]
#[test]
fn ephemeral_client_key_by_default() {
    let (_up, s, env) = setup();
    let o = env.run(&["chat", "--base-url", &s.url, "--allow-http", MARKER]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "upstream saw the prompt: yes\n");
    // Nothing written but the known-servers record: the key lived in memory.
    let entries: Vec<_> = std::fs::read_dir(env.home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, [".config"]);
    let config: Vec<_> = std::fs::read_dir(env.home.path().join(".config/nomyo"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(config, ["known_servers"]);
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    for (args, needle) in [
        (
            vec!["chat", "--base-url", "http://192.0.2.1:9", "hi"],
            "--allow-http",
        ),
        (
            vec!["chat", "--allow-http", "--protocol", "v1", "--stream", "hi"],
            "v1 cannot stream",
        ),
        (vec!["chat", "--base-url", "ftp://x", "hi"], "scheme"),
        (vec!["chat", "--tier", "extreme", "hi"], "tier"),
        (vec!["chat", "--pin", "sha256:12", "hi"], "fingerprint"),
        (
            vec!["chat", "--allow-http", "--key-dir", "/nonexistent/k", "hi"],
            "nomyo keygen",
        ),
    ] {
        let o = env.run(&args);
        assert_exit(&o, 2);
        let e = human_error(&o);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
}

#[cfg(feature = "serve")]
#[test]
fn refused_callers_exit_3() {
    let up = upstream();
    let env = Env::new();
    let keys = env.home.path().join("api_keys");
    std::fs::write(&keys, "sk-right\n").unwrap();
    let s = serve(&up, &["--api-key-file", keys.to_str().unwrap()]);
    let dir = key_dir(&env, None);

    let o = env.chat(&s, &dir, &["-m", "tiny", "hi"]);
    assert_exit(&o, 3);
    assert!(human_error(&o).contains("authentication failed"));

    let wrong = env.home.path().join("wrong");
    std::fs::write(&wrong, "sk-wrong\n").unwrap();
    let o = env.chat(
        &s,
        &dir,
        &[
            "-m",
            "tiny",
            "--api-key-file",
            wrong.to_str().unwrap(),
            "hi",
        ],
    );
    assert_exit(&o, 3);
    assert!(!stderr(&o).contains("sk-wrong"));

    // NOMYO_API_KEY when no flag is given; --api-key-env names another variable.
    let o = env.chat_env(
        &s,
        &dir,
        &["-m", "tiny", MARKER],
        &[("NOMYO_API_KEY", "sk-right")],
    );
    assert_exit(&o, 0);
    let o = env.chat_env(
        &s,
        &dir,
        &["-m", "tiny", "--api-key-env", "MY_KEY", MARKER],
        &[("MY_KEY", "sk-right"), ("NOMYO_API_KEY", "sk-wrong")],
    );
    assert_exit(&o, 0);
}

#[cfg(feature = "serve")]
#[test]
fn security_failures_exit_4() {
    let (_up, s, env) = setup();
    let dir = key_dir(&env, None);

    // A pin that does not match.
    let pin = format!("sha256:{}", "ab".repeat(32));
    let o = env.chat(&s, &dir, &["--pin", &pin, "hi"]);
    assert_exit(&o, 4);
    assert!(human_error(&o).contains("pin mismatch"));
    assert!(
        !env.known_servers().exists(),
        "pins bypass the known-servers file"
    );

    // A known-servers record that does not match: the key "changed".
    let origin = s.url.trim_end_matches('/');
    std::fs::create_dir_all(env.known_servers().parent().unwrap()).unwrap();
    std::fs::write(env.known_servers(), format!("{origin} {pin}\n")).unwrap();
    let o = env.chat(&s, &dir, &["hi"]);
    assert_exit(&o, 4);
    let e = human_error(&o);
    assert!(e.contains("HAS CHANGED") && e.contains("line 1"), "{e}");
    assert!(e.contains("nomyo fingerprint --server"), "{e}");
    assert_eq!(
        std::fs::read_to_string(env.known_servers()).unwrap(),
        format!("{origin} {pin}\n")
    );

    // The right pin wins over the file.
    let o = env.run(&["fingerprint", "--server", &s.url, "--allow-http"]);
    let fp = stdout(&o)
        .lines()
        .next()
        .unwrap()
        .strip_prefix("v1 ")
        .unwrap()
        .to_owned();
    let o = env.chat(&s, &dir, &["--pin", &fp, MARKER]);
    assert_exit(&o, 0);
}

#[cfg(feature = "serve")]
#[test]
fn password_protected_key_directories() {
    let (_up, s, env) = setup();
    let dir = key_dir(&env, Some("open sesame"));
    let before = std::fs::read(dir.join("private_key.pem")).unwrap();
    let pw = env.home.path().join("pw");

    let o = env.chat(&s, &dir, &["--password-file", pw.to_str().unwrap(), MARKER]);
    assert_exit(&o, 0);
    let o = env.chat_env(
        &s,
        &dir,
        &["--password-env", "KEYPW", MARKER],
        &[("KEYPW", "open sesame")],
    );
    assert_exit(&o, 0);

    let o = env.chat_env(
        &s,
        &dir,
        &["--password-env", "KEYPW", "hi"],
        &[("KEYPW", "nope")],
    );
    assert_exit(&o, 4);
    assert!(human_error(&o).contains("wrong password"));
    let o = env.chat(&s, &dir, &["hi"]);
    assert_exit(&o, 4);
    assert!(human_error(&o).contains("password-protected"));
    assert_eq!(
        std::fs::read(dir.join("private_key.pem")).unwrap(),
        before,
        "never overwritten"
    );

    // An empty directory with a password: chat creates an encrypted key.
    let fresh = env.home.path().join("fresh");
    let o = env.chat(
        &s,
        &fresh,
        &["--password-file", pw.to_str().unwrap(), MARKER],
    );
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("created a new client key pair"));
    let pem = std::fs::read_to_string(fresh.join("private_key.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
}

#[cfg(feature = "serve")]
#[test]
fn server_and_network_failures_exit_5_and_others_1() {
    let (up, s, env) = setup();
    let dir = key_dir(&env, None);

    *up.fail_status.lock().unwrap() = Some(500);
    let o = env.chat(&s, &dir, &["-m", "tiny", "--max-retries", "0", "hi"]);
    assert_exit(&o, 5);
    assert!(human_error(&o).contains("server error (HTTP 502)"));
    *up.fail_status.lock().unwrap() = None;

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let o = env.run(&[
        "chat",
        "--base-url",
        &url,
        "--allow-http",
        "--max-retries",
        "0",
        "hi",
    ]);
    assert_exit(&o, 5);
    assert!(human_error(&o).contains("cannot reach"));

    // Unknown model: 404, exit 1.
    let o = env.chat(&s, &dir, &["-m", "no-such-model", "hi"]);
    assert_exit(&o, 1);
    assert!(human_error(&o).contains("not found"));
}

/// `nomyo chat` against an independent v1 server written in Python from
/// docs/PROTOCOL.md (crates/nomyo-client/tests/python/v1_server.py).
#[test]
fn chat_with_an_independent_python_v1_server() {
    let Some(py) = nomyo_testkit::python::with_cryptography() else {
        return;
    };
    let script = nomyo_testkit::python::v1_server_script();
    let mut cmd = Command::new(py);
    cmd.args([script.as_str(), "--bits", "2048"]);
    let server = started(cmd);

    let env = Env::new();
    let base = [
        "chat",
        "--protocol",
        "v1",
        "--base-url",
        &server.url,
        "--allow-http",
        "-m",
        "any",
    ];
    let chat = |rest: &[&str]| env.run(&[&base[..], rest].concat());
    let o = chat(&["--tier", "high", "--json", "hello from the CLI"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("\"content\": \"python saw: hello from the CLI\""),
        "{out}"
    );
    assert!(out.contains("\"security_tier\": \"high\""), "{out}");
    assert!(
        out.contains("\"encryption_algorithm\": \"hybrid-aes256-rsa4096\""),
        "{out}"
    );
    // The key it presented is now on record; a pin of it works too.
    let known = std::fs::read_to_string(env.known_servers()).unwrap();
    let fp = known
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(str::split_whitespace)
        .find_map(|f| f.strip_prefix("v1=sha256:"))
        .map(|hex| format!("sha256:{hex}"))
        .unwrap();
    let o = chat(&["--pin", &fp, "again"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "python saw: again\n");
}
