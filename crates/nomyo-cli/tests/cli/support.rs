//! Shared by the CLI's integration tests: an OpenAI-compatible upstream
//! double (instant, or slow/holding on request, streamed answers sent chunk
//! by chunk) and the HTTP plumbing to write other doubles, a real `nomyo
//! serve` process, `nomyo bench` commands, checks of a finished command's
//! output, and readers for a server's metrics and `/proc` figures.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The API key the servers started here accept.
pub const API_KEY: &str = "soak-faults-key-7e21";

/// In a prompt: the upstream sends one streamed chunk, then holds the
/// stream open (for [`HOLD_FOR`]) without finishing it.
pub const HOLD_STREAM: &str = "HOLD-STREAM";
/// In a prompt: the upstream waits [`HOLD_FOR`] before answering.
pub const SLOW: &str = "SLOW-ANSWER";
/// How long a held or slow answer is held.
pub const HOLD_FOR: Duration = Duration::from_secs(30);
/// Content chunks of a normal streamed answer (sent 1 ms apart).
pub const STREAM_CHUNKS: usize = 4;

/// An OpenAI-compatible upstream on 127.0.0.1 (a thread per connection,
/// keep-alive): `GET /v1/models` lists `tiny`; `POST /v1/chat/completions`
/// answers at once (or as the prompt markers above say) and is counted.
pub struct Upstream {
    /// `http://127.0.0.1:PORT/v1`.
    pub url: String,
    /// Chat requests received.
    pub posts: Arc<AtomicU64>,
}

/// Starts an [`Upstream`] whose answers say "hi".
pub fn upstream() -> Upstream {
    upstream_answering("hi")
}

/// Starts an [`Upstream`] whose answers (plain, and the first chunk of a
/// stream) say `answer` (plain ASCII, no JSON escaping needed).
pub fn upstream_answering(answer: &str) -> Upstream {
    let answer = answer.to_owned();
    let posts = Arc::new(AtomicU64::new(0));
    let counter = posts.clone();
    let url = http_double(move |request, out| answer_chat(request, out, &counter, &answer));
    Upstream { url, posts }
}

/// One HTTP/1.1 request as the doubles here read it.
pub struct Request {
    /// The request line, trimmed: `POST /v1/chat/completions HTTP/1.1`.
    pub line: String,
    /// The body (as long as its Content-Length), as text.
    pub body: String,
}

/// `Content-Type` of JSON answers.
pub const JSON: &str = "application/json";

/// The `GET /v1/models` answer of the upstream doubles: one model, `tiny`.
pub const MODELS: &str = r#"{"object":"list","data":[{"id":"tiny","object":"model"}]}"#;

/// Serves keep-alive HTTP/1.1 on 127.0.0.1:0, a thread per connection:
/// `answer` writes the reply to each request and says whether to keep the
/// connection open. Returns `http://127.0.0.1:PORT/v1`.
pub fn http_double<F>(answer: F) -> String
where
    F: Fn(&Request, &mut TcpStream) -> std::io::Result<bool> + Send + Sync + 'static,
{
    let answer = Arc::new(answer);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || {
                let _ = connection(stream, &*answer);
            });
        }
    });
    url
}

fn connection<F>(stream: TcpStream, answer: &F) -> std::io::Result<()>
where
    F: Fn(&Request, &mut TcpStream) -> std::io::Result<bool>,
{
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    while let Some(request) = read_request(&mut reader)? {
        if !answer(&request, &mut out)? {
            break;
        }
    }
    Ok(())
}

/// The next request on a connection; `None` once the peer closed it.
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
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
    Ok(Some(Request {
        line: line.trim().to_owned(),
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// Writes one whole response (with a Content-Length).
pub fn write_response(
    out: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = if status == 200 { "OK" } else { "Error" };
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

fn chunk_event(text: Option<&str>) -> String {
    let (delta, finish) = match text {
        Some(t) => (
            format!(r#"{{"role":"assistant","content":"{t}"}}"#),
            "null".to_owned(),
        ),
        None => ("{}".to_owned(), r#""stop""#.to_owned()),
    };
    format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1764300000,\"model\":\"tiny\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
    )
}

fn write_chunk(out: &mut TcpStream, data: &str) -> std::io::Result<()> {
    write!(out, "{:x}\r\n{data}\r\n", data.len())?;
    out.flush()
}

/// The [`Upstream`]'s answer to one request; false: close the connection.
fn answer_chat(
    request: &Request,
    out: &mut TcpStream,
    posts: &AtomicU64,
    answer: &str,
) -> std::io::Result<bool> {
    let body = &request.body;
    if request.line.starts_with("GET /v1/models") {
        write_response(out, 200, JSON, MODELS)?;
        return Ok(true);
    }
    posts.fetch_add(1, Ordering::SeqCst);
    if body.contains(SLOW) {
        std::thread::sleep(HOLD_FOR);
    }
    if body.contains(r#""stream":true"#) {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )?;
        out.flush()?;
        if body.contains(HOLD_STREAM) {
            write_chunk(out, &chunk_event(Some("partial")))?;
            std::thread::sleep(HOLD_FOR);
            return Ok(false);
        }
        write_chunk(out, &chunk_event(Some(answer)))?;
        for i in 1..STREAM_CHUNKS {
            write_chunk(out, &chunk_event(Some(&format!(" w{i}"))))?;
            std::thread::sleep(Duration::from_millis(1));
        }
        write_chunk(out, &chunk_event(None))?;
        write_chunk(out, "data: [DONE]\n\n")?;
        write!(out, "0\r\n\r\n")?;
        out.flush()?;
    } else {
        let reply = format!(
            r#"{{"id":"c1","object":"chat.completion","created":1764300000,"model":"tiny","choices":[{{"index":0,"finish_reason":"stop","message":{{"role":"assistant","content":"{answer}"}}}}],"usage":{{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}}}"#
        );
        write_response(out, 200, JSON, &reply)?;
    }
    Ok(true)
}

/// The `nomyo` binary under test.
pub fn nomyo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nomyo"))
}

/// `nomyo` with `home` as its HOME, none of the caller's configuration,
/// log or connection variables, and no input.
pub fn nomyo_at_home(home: &Path) -> Command {
    let mut cmd = nomyo();
    cmd.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_API_KEY")
        .env_remove("NOMYO_BASE_URL")
        .env_remove("NOMYO_MODEL")
        .stdin(Stdio::null());
    cmd
}

/// The arguments (the program first) of `nomyo chat` with model `tiny`
/// against `url` over plain HTTP, the known-servers file `known`, then
/// `extra`.
pub fn chat_args(url: &str, known: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        env!("CARGO_BIN_EXE_nomyo"),
        "chat",
        "--base-url",
        url,
        "--allow-http",
        "-m",
        "tiny",
        "--known-servers",
        known.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// A tokio runtime for a test that drives the Rust client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A running `nomyo serve`, killed on drop; its stderr is collected.
pub struct Serve {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Everything it wrote on stderr so far.
    pub stderr: Arc<Mutex<String>>,
    /// The thread collecting stderr (done once the process is gone).
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Serve {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Waits until stderr contains `needle`; false after `within`.
    pub fn wait_stderr(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.stderr.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Serve {
    /// Stops the process and returns everything it wrote on stderr, up to
    /// its last line (the reader thread is joined, not raced).
    pub fn stop_and_collect(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let text = self.stderr.lock().unwrap().clone();
        text
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory with an API key file holding [`API_KEY`].
pub fn api_key_file(dir: &Path) -> PathBuf {
    let keys = dir.join("api_keys");
    std::fs::write(&keys, format!("{API_KEY}\n")).unwrap();
    keys
}

/// Starts `cmd` (a `nomyo serve ...` command, possibly wrapped in `sh -c`)
/// and waits for `listening on URL`. `None` if it exits first; its stderr
/// is then in the second value.
pub fn start(mut cmd: Command) -> Result<Serve, (Option<i32>, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nomyo serve");
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("listening on ") {
                    std::thread::spawn(move || for _ in lines {});
                    return Ok(Serve {
                        child,
                        url: url.trim().to_owned(),
                        stderr,
                        reader: Some(reader),
                    });
                }
            }
            _ => {
                let status = child.wait().unwrap();
                let _ = reader.join();
                let text = stderr.lock().unwrap().clone();
                return Err((status.code(), text));
            }
        }
    }
}

/// The flags of a throwaway server key: in memory, 2048 bits (fast).
pub const EPHEMERAL_KEY: [&str; 3] = ["--ephemeral-key", "--key-bits", "2048"];

/// `nomyo serve` on 127.0.0.1:0 in front of `upstream`, with the API key
/// file in `dir`, plus `extra` flags (`--ephemeral-key` or `--key-dir`, ...).
pub fn serve_cmd(upstream: &Upstream, dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = serve_cmd_open(&upstream.url, extra);
    cmd.arg("--api-key-file").arg(api_key_file(dir));
    cmd
}

/// `nomyo serve` on 127.0.0.1:0 (unless `extra` has `--listen`) in front of
/// the upstream at `upstream_url`, no API key required, plus `extra` flags.
pub fn serve_cmd_open(upstream_url: &str, extra: &[&str]) -> Command {
    let mut cmd = nomyo();
    cmd.arg("serve");
    if !extra.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    cmd.args(["--upstream", upstream_url])
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_LOG");
    cmd
}

/// `nomyo serve` of the embedded `model` on 127.0.0.1:0 with a throwaway
/// 2048-bit key, run in `dir`, without RUST_LOG or NOMYO_MODEL_FILE, plus
/// `extra` flags.
pub fn serve_embedded_cmd(dir: &Path, model: &Path, extra: &[&str]) -> Command {
    let mut cmd = nomyo();
    cmd.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_MODEL_FILE")
        .arg("serve")
        .args(EPHEMERAL_KEY)
        .args(["--listen", "127.0.0.1:0", "--model"])
        .arg(model)
        .args(extra);
    cmd
}

/// [`start`], panicking with the exit code and stderr if it exits first.
pub fn started(cmd: Command) -> Serve {
    start(cmd).unwrap_or_else(|(code, err)| panic!("nomyo serve exited ({code:?}): {err}"))
}

/// `nomyo bench --base-url URL --allow-http --model tiny` in a clean
/// environment (HOME = `home`, no RUST_LOG or NOMYO_*), the API key `key`
/// in $BENCH_KEY, known servers in `known_servers`, stdin closed.
pub fn bench_cmd(url: &str, home: &Path, known_servers: &Path, key: &str) -> Command {
    let mut cmd = nomyo_at_home(home);
    cmd.args([
        "bench",
        "--base-url",
        url,
        "--allow-http",
        "--api-key-env",
        "BENCH_KEY",
        "--model",
        "tiny",
        "--known-servers",
    ])
    .arg(known_servers)
    .env("BENCH_KEY", key);
    cmd
}

/// A finished command's stdout (UTF-8).
pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// A finished command's stderr (UTF-8).
pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Asserts the exit code, showing stdout and stderr otherwise.
#[track_caller]
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status; stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

/// One `GET path` over a fresh HTTP/1.1 connection: (status, body).
pub fn http_get_bytes(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked answer to GET {path}"
    );
    (status, raw[split..].to_vec())
}

/// [`http_get_bytes`] with a text body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (status, body) = http_get_bytes(addr, path);
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A metric's value from `GET /metrics` (the first sample of that name).
pub fn metric(addr: &str, name: &str) -> f64 {
    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    body.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name || k.starts_with(&format!("{name}{{"))).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
}

/// Open file descriptors of process `pid` (Linux `/proc`).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Resident set of process `pid`, KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The embedded model's file (`scripts/fetch-model.sh` puts it there), or
/// `None` with a SKIPPED line when it is missing; with
/// `NOMYO_REQUIRE_MODEL=1` (as CI sets) a missing model fails the test.
pub fn model() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var("NOMYO_REQUIRE_MODEL").as_deref() != Ok("1"),
        "model {} missing (NOMYO_REQUIRE_MODEL=1)",
        p.display()
    );
    eprintln!(
        "SKIPPED: {} missing: run scripts/fetch-model.sh",
        p.display()
    );
    None
}

/// The fingerprint `nomyo serve` printed on stderr ("server key sha256:...").
pub fn printed_fingerprint(srv: &Serve) -> nomyo_client::Fingerprint {
    assert!(
        srv.wait_stderr("server key sha256:", Duration::from_secs(10)),
        "{}",
        srv.stderr.lock().unwrap()
    );
    let text = srv.stderr.lock().unwrap().clone();
    let at = text.find("server key sha256:").unwrap() + "server key ".len();
    text[at..at + 71].parse().unwrap()
}
