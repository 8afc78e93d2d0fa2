//! The middleman process: an HTTP/1.1 proxy to the real server that, by
//! mode, answers the v2 key discovery with its own keys or lists and counts
//! the POSTs it can open.

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
        ("422-then-unsigned" | "400-then-unsigned", "GET", "/.well-known/hpke-keys") if struck => {
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
