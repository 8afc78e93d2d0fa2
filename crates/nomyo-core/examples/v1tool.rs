//! `v1tool`: seal and open NOMYO v1 packages from the command line, so that
//! other implementations (the Python tests in `tests/python/`) can exchange
//! packages with this crate.
//!
//! ```text
//! v1tool seal --to PUBLIC.pem [--payload-id ID] [--processed-at SECS] < plaintext > package.json
//! v1tool open --key PRIVATE.pem [--password-file F] < package.json > plaintext
//! v1tool quote < public.pem          # the X-Public-Key header value
//! v1tool unquote < header            # decode it; prints the key's fingerprint
//! ```
//!
//! Errors go to stderr as `v1tool: <the core's message>`, with exit code 1
//! (2 for usage errors).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use nomyo_core::keys::{load_private_key_file, load_public_key_file, LoadOptions};
use nomyo_core::v1::{self, Package};
use nomyo_core::SecretString;

fn usage() -> ExitCode {
    eprintln!(
        "usage: v1tool seal --to PUBLIC.pem [--payload-id ID] [--processed-at SECS]\n       \
         v1tool open --key PRIVATE.pem [--password-file F]\n       \
         v1tool quote | v1tool unquote   (stdin to stdout)"
    );
    ExitCode::from(2)
}

fn stdin_bytes() -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf)?;
    Ok(buf)
}

#[derive(Default)]
struct Opts {
    to: Option<PathBuf>,
    key: Option<PathBuf>,
    password_file: Option<PathBuf>,
    payload_id: Option<String>,
    processed_at: Option<i64>,
}

fn parse(args: &[String]) -> Option<Opts> {
    let mut o = Opts::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next()?;
        match flag.as_str() {
            "--to" => o.to = Some(value.into()),
            "--key" => o.key = Some(value.into()),
            "--password-file" => o.password_file = Some(value.into()),
            "--payload-id" => o.payload_id = Some(value.clone()),
            "--processed-at" => o.processed_at = Some(value.parse().ok()?),
            _ => return None,
        }
    }
    Some(o)
}

fn run(cmd: &str, o: Opts) -> Result<Vec<u8>, String> {
    let input = stdin_bytes().map_err(|e| format!("reading stdin: {e}"))?;
    match cmd {
        "seal" => {
            let to = o.to.ok_or("seal needs --to PUBLIC.pem")?;
            let public = load_public_key_file(&to).map_err(|e| e.to_string())?;
            let mut package = v1::seal(&input, &public).map_err(|e| e.to_string())?;
            package.payload_id = o.payload_id;
            package.processed_at = o.processed_at;
            Ok(package.to_json())
        }
        "open" => {
            let key_path = o.key.ok_or("open needs --key PRIVATE.pem")?;
            let password = match o.password_file {
                None => None,
                Some(f) => {
                    let text =
                        std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                    Some(SecretString::from(
                        text.lines().next().unwrap_or("").to_owned(),
                    ))
                }
            };
            let key = load_private_key_file(&key_path, password.as_ref(), LoadOptions::default())
                .map_err(|e| e.to_string())?;
            let package = Package::from_json(&input).map_err(|e| e.to_string())?;
            let plain = v1::open(&package, &key).map_err(|e| e.to_string())?;
            Ok(plain.expose_secret().to_vec())
        }
        "quote" => {
            let pem = String::from_utf8(input).map_err(|_| "stdin is not UTF-8")?;
            Ok(v1::encode_public_key_header(&pem).into_bytes())
        }
        "unquote" => {
            let header = String::from_utf8(input).map_err(|_| "stdin is not UTF-8")?;
            let key = v1::decode_public_key_header(header.trim_end_matches(['\r', '\n']))
                .map_err(|e| e.to_string())?;
            Ok(format!("{}\n", key.fingerprint()).into_bytes())
        }
        _ => Err(format!("unknown command {cmd}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        return usage();
    };
    let Some(opts) = parse(rest) else {
        return usage();
    };
    match run(cmd, opts) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("v1tool: {msg}");
            ExitCode::FAILURE
        }
    }
}
