//! `hpketool`: seal a protocol v2 (EHBP) request body to an HPKE public key
//! from the command line with this crate's [`RequestSealer`], so that other
//! HPKE implementations (Python `cryptography` in `tests/python/`) can open
//! what Rust sealed.
//!
//! ```text
//! hpketool seal --config HEX [--chunk-size N] < plaintext > sealed.json
//! hpketool seal --kem x25519|x-wing --public-key HEX [--key-id N] [--chunk-size N] < plaintext
//! ```
//!
//! `--config` is a wire `key_config` (RFC 9458 §3, as `/.well-known/hpke-keys`
//! serves it; the first one of a list is used); `--kem`/`--public-key` build
//! one with the only suite we speak (HKDF-SHA256, AES-256-GCM). The plaintext
//! is sealed as one chunk, or as chunks of `--chunk-size` bytes, exactly as
//! the client seals a request body. Printed (one JSON object, hex strings):
//!
//! - `kem`, `kem_id`, `key_id`: the config sealed to;
//! - `info`: the HPKE `info` of the request context (`"ehbp request"`), `aad`:
//!   the AAD of every chunk (empty);
//! - `enc`: the encapsulated key (the `Ehbp-Encapsulated-Key` header);
//! - `body`: the framed body (a 4-byte big-endian length before each HPKE
//!   ciphertext, EHBP §4.3); `chunks`: how many frames it holds.
//!
//! Errors go to stderr as `hpketool: <message>` with exit code 1 (2 for usage).

use std::io::{Read, Write};
use std::process::ExitCode;

use nomyo_core::v2::keys::{Kem, KeyConfig, AEAD_AES_256_GCM, KDF_HKDF_SHA256};
use nomyo_core::v2::request::RequestSealer;
use nomyo_core::v2::REQUEST_INFO;

fn usage() -> ExitCode {
    eprintln!(
        "usage: hpketool seal --config HEX [--chunk-size N] < plaintext\n       \
         hpketool seal --kem x25519|x-wing --public-key HEX [--key-id N] [--chunk-size N] < plaintext"
    );
    ExitCode::from(2)
}

#[derive(Default)]
struct Opts {
    config: Option<String>,
    kem: Option<Kem>,
    public_key: Option<String>,
    key_id: u8,
    chunk_size: Option<usize>,
}

fn parse(args: &[String]) -> Option<Opts> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--config" => o.config = Some(value.clone()),
            "--kem" => {
                o.kem = Some(match value.as_str() {
                    "x25519" => Kem::X25519,
                    "x-wing" => Kem::XWing,
                    _ => return None,
                })
            }
            "--public-key" => o.public_key = Some(value.clone()),
            "--key-id" => o.key_id = value.parse().ok()?,
            "--chunk-size" => o.chunk_size = Some(value.parse().ok().filter(|n| *n > 0)?),
            _ => return None,
        }
    }
    Some(o)
}

fn key_config(o: &Opts) -> Result<KeyConfig, String> {
    let hex_arg = |name: &str, v: &str| hex::decode(v).map_err(|_| format!("{name} is not hex"));
    match (&o.config, o.kem, &o.public_key) {
        (Some(c), None, None) => {
            let list =
                KeyConfig::parse_list(&hex_arg("--config", c)?).map_err(|e| e.to_string())?;
            Ok(list
                .into_iter()
                .next()
                .expect("parse_list returns at least one"))
        }
        (None, Some(kem), Some(pk)) => {
            let public_key = hex_arg("--public-key", pk)?;
            let config = KeyConfig {
                key_id: o.key_id,
                kem,
                public_key,
                suites: vec![(KDF_HKDF_SHA256, AEAD_AES_256_GCM)],
            };
            // Round trip through the wire form: checks the key's length and encoding.
            let mut list = KeyConfig::parse_list(&config.encode()).map_err(|e| e.to_string())?;
            Ok(list.remove(0))
        }
        _ => Err("seal needs --config HEX, or --kem and --public-key".into()),
    }
}

fn seal(o: &Opts, plaintext: &[u8]) -> Result<String, String> {
    let config = key_config(o)?;
    let (enc, mut sealer) = RequestSealer::new(&config).map_err(|e| e.to_string())?;
    let chunks: Vec<&[u8]> = match o.chunk_size {
        Some(n) if !plaintext.is_empty() => plaintext.chunks(n).collect(),
        _ => vec![plaintext],
    };
    let mut body = Vec::new();
    for chunk in &chunks {
        body.extend(sealer.seal_chunk(chunk).map_err(|e| e.to_string())?);
    }
    let out = serde_json::json!({
        "kem": config.kem.name(),
        "kem_id": config.kem.id(),
        "key_id": config.key_id,
        "info": hex::encode(REQUEST_INFO),
        "aad": "",
        "enc": hex::encode(enc),
        "body": hex::encode(body),
        "chunks": chunks.len(),
    });
    Ok(format!("{out}\n"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return usage();
    };
    let (true, Some(opts)) = (cmd == "seal", parse(rest)) else {
        return usage();
    };
    let mut plaintext = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut plaintext) {
        eprintln!("hpketool: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    match seal(&opts, &plaintext) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("hpketool: {msg}");
            ExitCode::FAILURE
        }
    }
}
