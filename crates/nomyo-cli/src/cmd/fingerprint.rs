//! `nomyo fingerprint`: the `sha256:` fingerprint of a key file or of a server's keys.

use std::path::PathBuf;

use clap::Args as ClapArgs;

use crate::exit::{CliError, CliResult};
use crate::input::optional_secret;

const AFTER_HELP: &str = "\
Examples:
  nomyo fingerprint client_keys/public_key.pem
  nomyo fingerprint server_keys/private_key.pem --password-env KEY_PASSWORD
  nomyo fingerprint --server https://api.example.org     # v1 and v2 keys, one per line
  nomyo fingerprint --server http://127.0.0.1:12434      # loopback: no --allow-http

With --server the keys are displayed, not trusted: nothing is recorded in the
known-servers file. Compare the v1 line with what the operator published
before pinning it (--pin) or accepting it.

Exit codes: 0 ok; 2 usage (neither FILE nor --server, a plain http:// URL
that is not loopback without --allow-http); 3 refused by the server (401/403); 4 security failure
(wrong or missing password, a refused key file, a TLS failure); 5 server or
network failure; 1 anything else (a file that cannot be read).";

/// Print the sha256: fingerprint of a key file (public or private PEM), or of each key a server publishes.
#[derive(ClapArgs, Debug)]
#[command(
    override_usage = "nomyo fingerprint [OPTIONS] FILE [--password-file F | --password-env VAR]\n       \
                      nomyo fingerprint [OPTIONS] --server URL [--allow-http]",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// A PEM public or private key file.
    #[arg(
        value_name = "FILE",
        required_unless_present = "server",
        conflicts_with = "server"
    )]
    file: Option<PathBuf>,
    /// Password of an encrypted private key, from this file.
    #[arg(long, value_name = "F", conflicts_with = "password_env")]
    password_file: Option<PathBuf>,
    /// Password of an encrypted private key, from this environment variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Print the fingerprints of the keys this server publishes, one per line, labelled by protocol.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Allow a plain http:// server URL that is not loopback (local development only).
    #[arg(long)]
    allow_http: bool,
}

pub fn run(args: Args) -> CliResult {
    if let Some(url) = args.server {
        return super::fingerprint_server::run(&url, args.allow_http);
    }
    let Some(file) = args.file else {
        return Err(CliError::usage("give a key FILE or --server URL"));
    };
    let password = optional_secret(
        args.password_file.as_deref(),
        args.password_env.as_deref(),
        "password",
    )?;
    let public = nomyo_core::keys::public_key_of_pem_file(&file, password.as_ref())?;
    println!("{}", public.fingerprint());
    Ok(())
}
