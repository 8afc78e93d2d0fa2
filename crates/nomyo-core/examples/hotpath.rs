//! A fixed number of complete request/response round trips through the
//! core's hot path, in one process, for instruction counts with callgrind
//! (BENCHMARKS.md, "Optimisations (before/after)"): repeatable whatever else
//! the machine is doing, unlike wall-clock time.
//!
//! Each round trip does what the client and the server do per request with
//! nomyo-core, in the same order and with the same buffers (no HTTP):
//!
//! - **v1**: the client serialises the chat request into a `SecretBuf` and
//!   seals it (`v1::seal` + `to_json`); the server parses the package, opens
//!   it (RSA-4096 private-key operation), parses the chat JSON, builds the
//!   answer with `_metadata` into a `SecretBuf` and seals it to the client's
//!   key; the client parses, opens (its RSA private-key operation) and parses
//!   the answer.
//! - **v2** (X25519 or X-Wing): the client sets up HPKE and seals one frame;
//!   the server decodes the frame, decapsulates, opens it, copies it into the
//!   request plaintext (as `nomyo-server` does), parses it, derives the
//!   response key and seals the answer; the client derives the same key,
//!   decodes and opens the answer and parses it.
//!
//! ```sh
//! cargo build --release -p nomyo-core --example hotpath
//! target/release/examples/hotpath --keys /tmp/hotpath-keys   # once: writes the RSA keys
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='hotpath::counted' \
//!     target/release/examples/hotpath --keys /tmp/hotpath-keys --protocol x25519 -n 200
//! ```
//!
//! Only `counted` (the N measured round trips) is counted
//! (`--toggle-collect`): key generation and loading, the one-time seeding of
//! aws-lc's random generator (its jitter-entropy start-up alone is ~420 M
//! instructions under valgrind) and one warm-up round trip per protocol are
//! not. Prints one JSON line: requests per protocol, wall time and the
//! thread's user and system CPU time per request (system time is where
//! `mlock` and friends show).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_core::v1::{self, Package};
use nomyo_core::v2::framing::FrameDecoder;
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_core::v2::request::{RequestOpener, RequestSealer};
use nomyo_core::v2::response::random_response_nonce;
use nomyo_core::SecretBuf;
use serde_json::{json, Map, Value};

/// The upstream's answer (the same as `nomyo-client/examples/instant_upstream.rs`).
const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1764300000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;

fn request_json() -> Value {
    json!({
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Say hello in one word, please. ".repeat(4)}],
        "temperature": 0.0,
    })
}

/// User and system CPU time of the calling thread so far, seconds (Linux;
/// `USER_HZ` = 100).
fn thread_cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user as f64 / 100.0, system as f64 / 100.0))
}

/// The server's side of the chat request check (`chat_request` in nomyo-server).
fn parse_chat(plaintext: &SecretBuf) -> Map<String, Value> {
    let body: Map<String, Value> = serde_json::from_slice(plaintext.expose_secret()).unwrap();
    assert!(body.get("model").and_then(Value::as_str).is_some());
    body
}

/// The server's answer: the upstream's completion plus `_metadata`, serialised
/// into secure memory.
fn answer(id: &str, memory_locked: bool) -> SecretBuf {
    let mut completion: Value = serde_json::from_str(ANSWER).unwrap();
    let protection = nomyo_core::secure_memory::memory_protection();
    completion.as_object_mut().unwrap().insert(
        "_metadata".to_owned(),
        json!({
            "payload_id": id,
            "processed_at": 1764300000,
            "is_encrypted": true,
            "response_status": "success",
            "security_tier": "standard",
            "memory_protection": {
                "platform": protection.platform,
                "memory_locking": memory_locked,
                "secure_zeroing": protection.secure_zeroing,
                "core_dump_prevention": protection.core_dump_prevention,
            },
            "cuda_device": {"available": false, "device_hash": ""},
        }),
    );
    let mut out = SecretBuf::new();
    serde_json::to_writer(&mut out, &completion).unwrap();
    out
}

/// The measured part (the callgrind toggle).
#[inline(never)]
fn counted(f: &mut dyn FnMut() -> usize) -> usize {
    f()
}

fn run_v1(n: usize, server: &PrivateKey, client: &PrivateKey, request: &Value) -> usize {
    let mut total = 0;
    for _ in 0..n {
        // Client: serialise and seal.
        let mut plaintext = SecretBuf::with_capacity(4096);
        serde_json::to_writer(&mut plaintext, request).unwrap();
        let wire = v1::seal(plaintext.expose_secret(), server.public_key())
            .unwrap()
            .to_json();
        drop(plaintext);
        // Server: parse, open, check, answer, seal.
        let package = Package::from_json(&wire).unwrap();
        let opened = v1::open(&package, server).unwrap();
        let body = parse_chat(&opened);
        let locked = opened.is_locked();
        drop(opened);
        black_box(&body);
        drop(body);
        let out = answer("bench-id", locked);
        let mut reply = v1::seal(out.expose_secret(), client.public_key()).unwrap();
        drop(out);
        reply.payload_id = Some("bench-id".to_owned());
        reply.processed_at = Some(1764300000);
        let reply = reply.to_json();
        // Client: parse, open, parse.
        let package = Package::from_json(&reply).unwrap();
        let opened = v1::open(&package, client).unwrap();
        let completion: Value = serde_json::from_slice(opened.expose_secret()).unwrap();
        total += completion.to_string().len();
    }
    total
}

fn run_v2(n: usize, key: &ServerKeyPair, request: &Value) -> usize {
    let mut total = 0;
    for _ in 0..n {
        // Client: serialise, HPKE setup, seal one frame.
        let mut plaintext = SecretBuf::with_capacity(4096);
        serde_json::to_writer(&mut plaintext, request).unwrap();
        let (enc, mut sealer) = RequestSealer::new(key.config()).unwrap();
        let body = sealer.seal_chunk(plaintext.expose_secret()).unwrap();
        drop(plaintext);
        // Server: frames, decapsulate, open, copy into the request plaintext.
        let mut frames = FrameDecoder::new(1 << 20);
        frames.push(&body);
        let first = frames.next_frame().unwrap().unwrap();
        let mut opener = RequestOpener::new(key, &enc).unwrap();
        let chunk = opener.open_chunk(&first).unwrap();
        let mut request_plain = SecretBuf::new();
        request_plain.extend_from_slice(chunk.expose_secret());
        drop(chunk);
        while let Some(f) = frames.next_frame().unwrap() {
            let c = opener.open_chunk(&f).unwrap();
            request_plain.extend_from_slice(c.expose_secret());
        }
        frames.finish().unwrap();
        let parsed = parse_chat(&request_plain);
        let locked = request_plain.is_locked();
        drop(request_plain);
        black_box(&parsed);
        drop(parsed);
        let nonce = random_response_nonce().unwrap();
        let mut rsealer = opener.response_sealer(&nonce).unwrap();
        drop(opener);
        let out = answer("bench-id", locked);
        let mut sealed = Vec::with_capacity(out.len() + 64);
        for part in out.expose_secret().chunks(16 * 1024) {
            rsealer.seal_chunk_into(part, &mut sealed).unwrap();
        }
        drop(out);
        // Client: response key, frames, open, parse.
        let mut ropener = sealer.response_opener(&nonce).unwrap();
        let mut frames = FrameDecoder::new(1 << 20);
        frames.push(&sealed);
        let mut answer_plain = SecretBuf::with_capacity(sealed.len());
        while let Some(f) = frames.next_frame().unwrap() {
            let p = ropener.open_chunk(&f).unwrap();
            answer_plain.extend_from_slice(p.expose_secret());
        }
        let completion: Value = serde_json::from_slice(answer_plain.expose_secret()).unwrap();
        total += completion.to_string().len();
    }
    total
}

/// Loads the two RSA-4096 keys from `dir`, generating and saving them first
/// if absent (so that a run under valgrind need not generate them).
fn rsa_keys(dir: Option<&Path>) -> (PrivateKey, PrivateKey) {
    let load = |name: &str| -> PrivateKey {
        if let Some(d) = dir {
            let path = d.join(name);
            if let Ok(pem) = std::fs::read_to_string(&path) {
                return PrivateKey::from_pem(&pem, None, name).unwrap();
            }
            let k = PrivateKey::generate(RsaBits::B4096).unwrap();
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(&path, k.to_pkcs8_pem(None).unwrap().as_bytes()).unwrap();
            return k;
        }
        PrivateKey::generate(RsaBits::B4096).unwrap()
    };
    (load("server.pem"), load("client.pem"))
}

fn main() {
    let mut n = 100usize;
    let mut protocol = "all".to_owned();
    let mut keys: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" | "--requests" => n = args.next().expect("-n N").parse().expect("a number"),
            "--protocol" => protocol = args.next().expect("--protocol v1|x25519|xwing|all"),
            "--keys" => keys = Some(PathBuf::from(args.next().expect("--keys DIR"))),
            other => panic!("unknown argument {other}; see the file's documentation"),
        }
    }
    let request = request_json();
    // Seed aws-lc's generator now, not inside the first measured request.
    random_response_nonce().unwrap();
    let mut out = Map::new();
    let mut timed = |name: &str, f: &mut dyn FnMut() -> usize| {
        let cpu0 = thread_cpu_seconds();
        let t = Instant::now();
        black_box(counted(f));
        let wall = t.elapsed().as_secs_f64();
        let per_req = |s: f64| s * 1e3 / n as f64;
        let (user, system) = match (cpu0, thread_cpu_seconds()) {
            (Some(a), Some(b)) => (Some(per_req(b.0 - a.0)), Some(per_req(b.1 - a.1))),
            _ => (None, None),
        };
        out.insert(
            name.to_owned(),
            json!({"requests": n, "wall_ms_per_req": per_req(wall),
                   "user_ms_per_req": user, "sys_ms_per_req": system}),
        );
    };
    if protocol == "v1" || protocol == "all" {
        let (server, client) = rsa_keys(keys.as_deref());
        // One untimed round trip: lazy statics, first allocations.
        run_v1(1, &server, &client, &request);
        timed("v1", &mut || run_v1(n, &server, &client, &request));
    }
    for (name, kem) in [("x25519", Kem::X25519), ("xwing", Kem::XWing)] {
        if protocol == name || protocol == "all" {
            let key = ServerKeyPair::generate(1, kem);
            run_v2(1, &key, &request);
            timed(name, &mut || run_v2(n, &key, &request));
        }
    }
    println!("{}", Value::Object(out));
}
