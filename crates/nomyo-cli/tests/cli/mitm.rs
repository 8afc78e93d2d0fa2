//! A real man in the middle between `nomyo chat` and `nomyo serve`.
//!
//! The middleman is a separate process (this test binary started again as
//! `mitm_process`): a small HTTP/1.1 proxy on 127.0.0.1, in the position of
//! a TLS-terminating load balancer, that forwards to a real `nomyo serve`
//! and attacks the v2 key discovery with its own X-Wing/X25519 keys. Each
//! variant first lets an honest session through (so the known-servers file
//! knows the server), then switches the middleman to its attack and runs
//! `nomyo chat --protocol v2` and `--protocol auto` with a secret prompt.
//! Every variant must end with exit 4 **before any prompt is sealed to the
//! middleman's keys**: the middleman tries to open every POST with its own
//! keys and counts the ones it could open.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use support::{
    assert_exit, nomyo_at_home, serve_cmd_open, started, stderr, stdout, upstream, Serve,
};

/// Environment variable naming the middleman's mode (set only in the child).
const MODE_ENV: &str = "NOMYO_TEST_MITM_UPSTREAM";
/// The real server's private key file (for re-signing a genuine list).
const SERVER_KEY_ENV: &str = "NOMYO_TEST_MITM_SERVER_KEY";
const CANARY: &str = "my secret is CANARY-5d1e9";

/// The middleman process, killed on drop.
struct Mitm {
    child: Child,
    url: String,
}

impl Drop for Mitm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mitm {
    fn start(upstream: &str, server_key: &Path) -> Mitm {
        let mut child = Command::new(std::env::current_exe().unwrap())
            // This test binary again, running only `mitm_process` (its
            // name in the binary: module path, then function).
            .args(["mitm::mitm_process", "--exact", "--ignored", "--nocapture"])
            .env(MODE_ENV, upstream)
            .env(SERVER_KEY_ENV, server_key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("the middleman exited").unwrap();
            if let Some(url) = line.strip_prefix("MITM listening on ") {
                break url.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Mitm { child, url }
    }

    fn control(&self, what: &str) -> String {
        let (status, body) = support::http_get(
            self.url.trim_start_matches("http://"),
            &format!("/__mitm/{what}"),
        );
        assert_eq!(status, 200, "{what}: {body}");
        body
    }

    fn set_mode(&self, mode: &str) {
        self.control(&format!("mode/{mode}"));
    }

    /// POSTs the middleman could open with its own keys.
    fn opened(&self) -> usize {
        self.report().0
    }

    /// (POSTs opened with the middleman's keys, POSTs seen at all).
    fn report(&self) -> (usize, usize) {
        let r = self.control("report");
        let mut n = r.split_whitespace().map(|n| n.parse().unwrap());
        (n.next().unwrap(), n.next().unwrap())
    }
}

fn chat(home: &Path, url: &str, protocol: &str, prompt: &str) -> Output {
    chat_with(home, url, &["--protocol", protocol], prompt)
}

fn chat_with(home: &Path, url: &str, extra: &[&str], prompt: &str) -> Output {
    nomyo_at_home(home)
        .args(["chat", "--base-url", url, "--allow-http", "-m", "tiny"])
        .args(extra)
        .args(["--max-retries", "0", "--timeout", "30"])
        .arg("--known-servers")
        .arg(home.join("known_servers"))
        .arg(prompt)
        .output()
        .unwrap()
}

/// `nomyo serve` with a saved 2048-bit key (the middleman re-signs a genuine
/// list with it in the "expired" variant) in front of an upstream double.
fn server(dir: &Path) -> (Serve, std::path::PathBuf) {
    let up = upstream();
    let keys = dir.join("server-keys");
    let key_dir = keys.to_str().unwrap();
    let s = started(serve_cmd_open(
        &up.url,
        &["--key-dir", key_dir, "--key-bits", "2048", "--no-password"],
    ));
    std::mem::forget(up);
    (s, keys.join(nomyo_core::keys::PRIVATE_KEY_FILE))
}

/// Every attack, with the protocol the honest first session used (which
/// is what the known-servers file then knows about the server).
const VARIANTS: &[(&str, &str)] = &[
    // The known-servers file holds the v1 key; the first GET of the keys
    // gets the middleman's unsigned X-Wing list.
    ("unsigned-first-get", "v1"),
    // A POST answered with the 422 key-config problem, then the unsigned list.
    ("422-then-unsigned", "v1"),
    // A plain 400, then the unsigned list.
    ("400-then-unsigned", "v1"),
    // The middleman's own list signed by its own RSA key, which it also
    // serves at /pki/public_key.
    ("own-rsa", "v1"),
    // The server's genuine list, signed by the server's key for a window that
    // ended yesterday (a list captured before a rotation).
    ("expired", "v2"),
    // /.well-known/hpke-keys answers 404 for a server known to speak v2.
    ("no-v2", "v2"),
];

#[test]
fn every_key_discovery_attack_by_a_real_middleman_is_refused_before_anything_is_sealed_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, server_key) = server(dir.path());
    let mut failures = Vec::new();
    for (mode, first) in VARIANTS {
        for protocol in ["v2", "auto"] {
            let home = tempfile::tempdir().unwrap();
            let mitm = Mitm::start(&serve.url, &server_key);
            // The honest session: the server's keys reach the client intact.
            let honest = chat(home.path(), &mitm.url, first, "hello");
            assert_exit(&honest, 0);
            let known = std::fs::read_to_string(home.path().join("known_servers")).unwrap();
            mitm.set_mode(mode);
            let attacked = chat(home.path(), &mitm.url, protocol, CANARY);
            let opened = mitm.opened();
            let err = stderr(&attacked);
            eprintln!(
                "{mode} --protocol {protocol}: exit {:?}, opened {opened}, stderr: {}",
                attacked.status.code(),
                err.trim()
            );
            if attacked.status.code() != Some(4) || opened != 0 || !stdout(&attacked).is_empty() {
                failures.push(format!(
                    "{mode} --protocol {protocol}: exit {:?}, {opened} POSTs sealed to the middleman, stdout {:?}, stderr {err:?}",
                    attacked.status.code(),
                    stdout(&attacked)
                ));
            }
            assert!(!err.contains("CANARY"), "{err}");
            // The record is never replaced by the middleman's keys.
            let after = std::fs::read_to_string(home.path().join("known_servers")).unwrap();
            let v1_lines = |t: &str| -> Vec<String> {
                t.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| {
                        l.split_whitespace()
                            .filter(|f| f.starts_with("v1=") || f.starts_with("v2-key="))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect()
            };
            assert_eq!(v1_lines(&after), v1_lines(&known), "{mode}: {after}");
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
}

/// A middleman hides the v2 keys of a server the client has never seen:
/// `nomyo chat --tier maximum` with the default protocol (auto) refuses to
/// send it over v1 (exit 4, no POST at all); the standard tier goes over v1;
/// `--protocol v1` chosen explicitly sends the maximum-tier request.
#[test]
fn auto_never_sends_maximum_over_v1_when_a_middleman_hides_v2() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, server_key) = server(dir.path());
    let home = tempfile::tempdir().unwrap();
    let mitm = Mitm::start(&serve.url, &server_key);
    mitm.set_mode("no-v2");
    let o = chat_with(home.path(), &mitm.url, &["--tier", "maximum"], CANARY);
    assert_exit(&o, 4);
    let err = stderr(&o);
    assert!(
        err.contains("over protocol v1") && err.contains("--protocol v1"),
        "{err}"
    );
    assert_eq!(mitm.report(), (0, 0), "nothing was sent");
    let o = chat_with(home.path(), &mitm.url, &[], "hello");
    assert_exit(&o, 0);
    assert_eq!(mitm.report().1, 1);
    let o = chat_with(
        home.path(),
        &mitm.url,
        &["--protocol", "v1", "--tier", "maximum"],
        "hello",
    );
    assert_ne!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(mitm.report().1, 2, "sent when v1 was chosen explicitly");
}

/// The middleman process (run by the tests above as a child; does nothing
/// when started without its environment).
#[test]
#[ignore = "the middleman process, started by the test above"]
fn mitm_process() {
    let Ok(upstream) = std::env::var(MODE_ENV) else {
        return;
    };
    let server_key = std::env::var(SERVER_KEY_ENV).unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(middleman::run(upstream, server_key.into()));
}

mod middleman {
    use super::*;
    use nomyo_core::keys::{PrivateKey, RsaBits};
    use nomyo_core::keys_signature::{KeysSignature, Validity};
    use nomyo_core::v2::framing::FrameDecoder;
    use nomyo_core::v2::keys::{Kem, ServerKeyPair};
    use nomyo_core::v2::request::{parse_encapsulated_key, RequestOpener};
    use nomyo_server::hpke_keys::HpkeKeySet;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
    use tokio::net::{TcpListener, TcpStream};

    struct State {
        mode: String,
        /// A POST was answered with the 422 or 400 of the mode: from now on
        /// the keys are the middleman's.
        struck: bool,
        opened: usize,
        posts: usize,
    }

    struct Ctx {
        upstream: String,
        http: reqwest::Client,
        state: Mutex<State>,
        own: HpkeKeySet,
        rsa: PrivateKey,
        server_key: PrivateKey,
    }

    pub async fn run(upstream: String, server_key: std::path::PathBuf) {
        let pem = std::fs::read_to_string(server_key).unwrap();
        let ctx = Arc::new(Ctx {
            upstream,
            http: reqwest::Client::new(),
            state: Mutex::new(State {
                mode: "pass".into(),
                struck: false,
                opened: 0,
                posts: 0,
            }),
            own: HpkeKeySet::from_pairs(vec![
                ServerKeyPair::generate(90, Kem::X25519),
                ServerKeyPair::generate(91, Kem::XWing),
            ]),
            rsa: PrivateKey::generate(RsaBits::B2048).unwrap(),
            server_key: PrivateKey::from_pem(&pem, None, "server key").unwrap(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "MITM listening on http://{}",
            listener.local_addr().unwrap()
        );
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _ = connection(stream, ctx).await;
            });
        }
    }

    struct Req {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Req {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    fn resp(status: u16, content_type: &str, body: Vec<u8>) -> Resp {
        Resp {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body,
        }
    }

    async fn connection(stream: TcpStream, ctx: Arc<Ctx>) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut reader = TokioBufReader::new(read);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let path = parts.next().unwrap_or_default().to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).await?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            let mut req = Req {
                method,
                path,
                headers,
                body: Vec::new(),
            };
            let length: usize = req
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            req.body = vec![0; length];
            reader.read_exact(&mut req.body).await?;
            let close = req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            let r = handle(&ctx, req).await;
            let mut head = format!("HTTP/1.1 {} X\r\n", r.status);
            for (k, v) in &r.headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str(&format!("content-length: {}\r\n\r\n", r.body.len()));
            write.write_all(head.as_bytes()).await?;
            write.write_all(&r.body).await?;
            write.flush().await?;
            if close {
                return Ok(());
            }
        }
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn keys_answer(body: Vec<u8>, signature: Option<String>) -> Resp {
        let mut r = resp(200, "application/ohttp-keys", body);
        if let Some(s) = signature {
            r.headers.push(("nomyo-keys-signature".into(), s));
        }
        r
    }

    async fn handle(ctx: &Ctx, req: Req) -> Resp {
        if let Some(rest) = req.path.strip_prefix("/__mitm/") {
            let mut st = ctx.state.lock().unwrap();
            if let Some(mode) = rest.strip_prefix("mode/") {
                st.mode = mode.to_owned();
                st.struck = false;
                return resp(200, "text/plain", b"ok".to_vec());
            }
            return resp(
                200,
                "text/plain",
                format!("{} {}", st.opened, st.posts).into_bytes(),
            );
        }
        if req.method == "POST" {
            ctx.state.lock().unwrap().posts += 1;
        }
        // Whatever the mode: a POST sealed to the middleman's keys is opened
        // if it can be (the proof that the attack worked).
        if req.method == "POST" && try_open(ctx, &req) {
            ctx.state.lock().unwrap().opened += 1;
            return resp(502, "application/json", br#"{"detail":"x"}"#.to_vec());
        }
        let (mode, struck) = {
            let st = ctx.state.lock().unwrap();
            (st.mode.clone(), st.struck)
        };
        let own_list = || ctx.own.encoded().to_vec();
        match (mode.as_str(), req.method.as_str(), req.path.as_str()) {
            ("unsigned-first-get", "GET", "/.well-known/hpke-keys") => {
                return keys_answer(own_list(), None)
            }
            ("422-then-unsigned" | "400-then-unsigned", "GET", "/.well-known/hpke-keys")
                if struck =>
            {
                return keys_answer(own_list(), None)
            }
            ("422-then-unsigned", "POST", "/v1/chat/completions") if !struck => {
                ctx.state.lock().unwrap().struck = true;
                let body = format!(
                    r#"{{"type":"{}","title":"unknown or retired key id"}}"#,
                    nomyo_core::v2::KEY_CONFIG_PROBLEM_TYPE
                );
                return resp(422, "application/problem+json", body.into_bytes());
            }
            ("400-then-unsigned", "POST", "/v1/chat/completions") if !struck => {
                ctx.state.lock().unwrap().struck = true;
                return resp(
                    400,
                    "application/json",
                    br#"{"detail":"decryption failed"}"#.to_vec(),
                );
            }
            ("own-rsa", "GET", "/.well-known/hpke-keys") => {
                let body = own_list();
                let window = Validity::new(now() - 60, now() + 3600).unwrap();
                let sig = KeysSignature::sign(&ctx.rsa, &body, window).unwrap();
                return keys_answer(body, Some(sig.to_header_value()));
            }
            ("own-rsa", "GET", "/pki/public_key") => {
                return resp(
                    200,
                    "text/plain",
                    ctx.rsa.public_key().to_pem().into_bytes(),
                )
            }
            ("expired", "GET", "/.well-known/hpke-keys") => {
                let genuine = forward(ctx, &req).await;
                let window = Validity::new(now() - 2 * 86_400, now() - 86_400).unwrap();
                let sig = KeysSignature::sign(&ctx.server_key, &genuine.body, window).unwrap();
                return keys_answer(genuine.body, Some(sig.to_header_value()));
            }
            ("no-v2", "GET", "/.well-known/hpke-keys") => {
                return resp(
                    404,
                    "application/json",
                    br#"{"detail":"Not Found"}"#.to_vec(),
                )
            }
            _ => {}
        }
        forward(ctx, &req).await
    }

    /// Whether `req` is sealed to one of the middleman's keys and opens.
    fn try_open(ctx: &Ctx, req: &Req) -> bool {
        let Some(id) = req
            .header("nomyo-key-id")
            .and_then(|v| v.parse::<u8>().ok())
        else {
            return false;
        };
        let Some(pair) = ctx.own.by_id(id) else {
            return false;
        };
        let Some(Ok(enc)) = req
            .header("ehbp-encapsulated-key")
            .map(parse_encapsulated_key)
        else {
            return false;
        };
        let Ok(mut opener) = RequestOpener::new(pair, &enc) else {
            return false;
        };
        let mut frames = FrameDecoder::new(1 << 20);
        frames.push(&req.body);
        let mut any = false;
        while let Ok(Some(frame)) = frames.next_frame() {
            if opener.open_chunk(&frame).is_err() {
                return false;
            }
            any = true;
        }
        any
    }

    async fn forward(ctx: &Ctx, req: &Req) -> Resp {
        let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
        let mut b = ctx
            .http
            .request(method, format!("{}{}", ctx.upstream, req.path));
        for (k, v) in &req.headers {
            let k = k.to_ascii_lowercase();
            if !matches!(k.as_str(), "host" | "content-length" | "connection") {
                b = b.header(k, v);
            }
        }
        let r = b.body(req.body.clone()).send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "content-length" | "transfer-encoding" | "connection"
                )
            })
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = r.bytes().await.unwrap().to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }
}
