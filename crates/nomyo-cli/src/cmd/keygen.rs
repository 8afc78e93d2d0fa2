//! `nomyo keygen`: a client RSA-4096 key pair on disk.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args as ClapArgs;
use nomyo_core::keys::{save_key_pair, PrivateKey, RsaBits};
use nomyo_core::SecretString;
use zeroize::Zeroizing;

use crate::exit::{CliError, CliResult};
use crate::input::optional_secret;
use crate::spinner::Spinner;

/// The command's line in `nomyo --help`.
#[cfg(feature = "serve")]
pub const ABOUT: &str =
    "Generate an RSA key pair (client keys, or server keys with --server; --bits)";
/// The command's line in `nomyo --help` (a build without `nomyo serve`).
#[cfg(not(feature = "serve"))]
pub const ABOUT: &str = "Generate an RSA key pair for the client (--bits)";

/// The end of `--help`, the same in every build.
macro_rules! after_help_tail {
    () => {
        "
On a terminal, without --password-file, --password-env or --no-password, the
password is asked for twice (not shown); an empty answer is refused (pass
--no-password for an unencrypted key). Off a terminal one of the three is required.

Exit codes: 0 ok; 2 usage (no password source off a terminal, an empty or
mistyped password at the prompt, a --bits other than 4096, 3072 or 2048, an
empty password file or unset variable); 1 anything else (existing key files
without --force, a directory that cannot be written)."
    };
}

#[cfg(feature = "serve")]
const AFTER_HELP: &str = concat!(
    "\
Writes DIR/private_key.pem (PKCS#8, 0600) and DIR/public_key.pem (0644) and
prints the key's fingerprint as the last line. A client key directory for
`nomyo chat --key-dir`, or with --server one for `nomyo serve --key-dir`.

Examples:
  nomyo keygen --password-env KEY_PASSWORD            # client_keys/, encrypted
  nomyo keygen --out ~/.nomyo/keys --password-file pw.txt
  nomyo keygen --server --no-password --out server_keys   # shared by replicas
  nomyo keygen --no-password --bits 2048 --out /tmp/k     # tests only
",
    after_help_tail!()
);

/// Without `nomyo serve` (feature `serve`) there is no --server.
#[cfg(not(feature = "serve"))]
const AFTER_HELP: &str = concat!(
    "\
Writes DIR/private_key.pem (PKCS#8, 0600) and DIR/public_key.pem (0644) and
prints the key's fingerprint as the last line: a client key directory for
`nomyo chat --key-dir`.

Examples:
  nomyo keygen --password-env KEY_PASSWORD            # client_keys/, encrypted
  nomyo keygen --out ~/.nomyo/keys --password-file pw.txt
  nomyo keygen --no-password --bits 2048 --out /tmp/k     # tests only
",
    after_help_tail!()
);

/// Generate an RSA key pair (client keys, or server keys with --server):
/// DIR/private_key.pem (PKCS#8, 0600) and DIR/public_key.pem (0644).
#[derive(ClapArgs, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Directory for the key files.
    #[arg(long, value_name = "DIR", default_value = "client_keys")]
    out: PathBuf,
    /// Encrypt the private key with the password in this file (first line).
    #[arg(long, value_name = "F", group = "pw")]
    password_file: Option<PathBuf>,
    /// Encrypt the private key with the password in this environment variable.
    #[arg(long, value_name = "VAR", group = "pw")]
    password_env: Option<String>,
    /// Save the private key unencrypted (not recommended outside development).
    #[arg(long, group = "pw")]
    no_password: bool,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
    /// Key size in bits (4096, the NOMYO default; 2048 and 3072 for tests).
    #[arg(long, value_name = "BITS", default_value_t = 4096)]
    bits: u32,
    /// A server key directory for `nomyo serve` replicas: also write the
    /// protocol v2 HPKE keys (DIR/hpke_keys.key, 0600), so that every replica
    /// given this directory (shared volume or secret) publishes the same keys.
    /// Replicas keep the HPKE keys beside the server key, so this needs
    /// --no-password.
    #[cfg(feature = "serve")]
    #[arg(long, requires = "no_password")]
    server: bool,
}

pub fn run(args: Args) -> CliResult {
    let password = optional_secret(
        args.password_file.as_deref(),
        args.password_env.as_deref(),
        "password",
    )?;
    if password.is_none() && !args.no_password && !on_terminal() {
        return Err(CliError::usage(
            "give a password for the private key (--password-file F or --password-env VAR), or --no-password to save it unencrypted",
        ));
    }
    let bits = match args.bits {
        2048 => RsaBits::B2048,
        3072 => RsaBits::B3072,
        4096 => RsaBits::B4096,
        other => {
            return Err(CliError::usage(format!(
                "--bits must be 2048, 3072 or 4096, not {other}"
            )))
        }
    };
    if !args.force {
        #[cfg(feature = "serve")]
        let hpke = args.server.then_some(nomyo_server::hpke_keys::KEY_FILE);
        #[cfg(not(feature = "serve"))]
        let hpke = None;
        for f in [
            nomyo_core::keys::PRIVATE_KEY_FILE,
            nomyo_core::keys::PUBLIC_KEY_FILE,
        ]
        .into_iter()
        .chain(hpke)
        {
            let p = args.out.join(f);
            if p.exists() {
                return Err(nomyo_core::Error::AlreadyExists(p.display().to_string()).into());
            }
        }
    }
    let password = match password {
        None if !args.no_password => Some(prompt_new_password("the private key", "--no-password")?),
        p => p,
    };
    let spinner = Spinner::start("generating RSA key", std::io::stderr().is_terminal());
    let key = PrivateKey::generate(bits);
    spinner.stop();
    let key = key?;
    let saved = save_key_pair(&args.out, &key, password.as_ref(), args.force)?;
    tracing::debug!(bits = key.bits(), dir = %args.out.display(), "key pair saved");
    println!(
        "private key: {} (mode 0600{})",
        saved.private_key.display(),
        if password.is_some() {
            ", password-protected"
        } else {
            ", UNENCRYPTED"
        }
    );
    println!("public key:  {}", saved.public_key.display());
    #[cfg(feature = "serve")]
    if args.server {
        let path = args.out.join(nomyo_server::hpke_keys::KEY_FILE);
        // New key ids (none of the replaced set's), the old file shredded.
        let set = nomyo_server::hpke_keys::HpkeKeySet::replace_in(&args.out)
            .map_err(|m| CliError::new(crate::exit::Code::Other, m))?;
        println!(
            "HPKE keys:   {} (mode 0600, X25519 and X-Wing, key ids {:?})",
            path.display(),
            set.key_ids()
        );
    }
    println!("{}", key.public_key().fingerprint());
    Ok(())
}

/// Whether a password can be asked for: stdin and stderr are terminals.
pub(crate) fn on_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks on the terminal, twice and without echo, for the password of a new
/// private key (`what`). An empty answer is refused with a pointer to
/// `no_password_flag`; two different answers are refused. Usage errors
/// (exit 2), and nothing is written.
pub(crate) fn prompt_new_password(what: &str, no_password_flag: &str) -> CliResult<SecretString> {
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| {
                CliError::new(
                    crate::exit::Code::Other,
                    format!("cannot read the password from the terminal: {e}"),
                )
            })
    };
    let first = ask(format!("Password for {what} (not shown): "))?;
    if first.is_empty() {
        return Err(CliError::usage(format!(
            "an empty password was given; to save {what} unencrypted, pass {no_password_flag}"
        )));
    }
    let second = ask("The same password again: ".to_owned())?;
    if *first != *second {
        return Err(CliError::usage(
            "the two passwords differ; nothing was written",
        ));
    }
    tracing::debug!("new key password read from the terminal");
    Ok(SecretString::from(first.as_str().to_owned()))
}
