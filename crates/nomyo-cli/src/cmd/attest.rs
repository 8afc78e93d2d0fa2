//! `nomyo attest`: verify a server's TPM evidence and print the verification
//! document (docs/CLI.md, docs/PROTOCOL.md §14.7).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args as ClapArgs;
use nomyo_client::attest::{failed_steps, AttestOptions, Policy, Verification};

use super::chat::client_error;
use super::connect::ConnectArgs;
use crate::exit::{CliError, CliResult, Code};

const AFTER_HELP: &str = "\
Checks, in order, and prints each as pass, fail, unverified (a trust input is
missing) or not requested:
  ek_chain               the EK certificate chains to a --tpm-ca root
  credential_activation  the server's TPM releases a credential made for its AK
  quote_signature        the AK signed the quote; the PCR values match it
  nonce                  the quote is for this run's fresh nonce
  key_binding            the quote binds the server keys this client trusts
  pcr_policy             the PCR values are allowed by --policy
The server's keys are trusted as for `nomyo chat` (--pin, or the known-servers
file).

Examples:
  nomyo attest --server https://api.example.org --tpm-ca ek-roots.pem
  nomyo attest --server https://api.example.org --tpm-ca ek-roots.pem --policy pcrs.toml --json

Exit codes: 0 every step passed (or was not requested); 4 a step failed or is
unverified; 2 usage (an unreadable --tpm-ca or --policy); 3 refused by the
server (401/403); 5 server or network failure after retries.";

/// Verify the server's TPM attestation (EK chain, credential activation, quote, key binding, PCR policy).
#[derive(ClapArgs, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The server and how its keys are trusted.
    #[command(flatten)]
    connect: ConnectArgs,
    /// PEM file of EK root (or issuing CA) certificates the server's EK
    /// certificate must chain to; repeatable. None: ek_chain is unverified.
    #[arg(long = "tpm-ca", value_name = "PEM")]
    tpm_ca: Vec<PathBuf>,
    /// TOML policy file: its `[tpm]` section lists the allowed PCR values.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print the verification document as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The usage error of `--require-attestation --protocol v1`.
pub const NEEDS_V2: &str = "--require-attestation needs protocol v2 (a quote cannot authenticate a v1 answer): use --protocol v2 or auto";

/// `--require-attestation` with its trust inputs, for the commands that
/// send prompts (`chat`, `proxy`).
#[derive(ClapArgs, Clone, Debug)]
pub struct RequireArgs {
    /// Send nothing unless the server's TPM attestation passes every check
    /// of `nomyo attest` (needs protocol v2; exit 4 otherwise).
    #[arg(long)]
    require_attestation: bool,
    /// With --require-attestation: PEM file of EK root certificates; repeatable.
    #[arg(long = "tpm-ca", value_name = "PEM", requires = "require_attestation")]
    tpm_ca: Vec<PathBuf>,
    /// With --require-attestation: TOML policy of allowed PCR values.
    #[arg(long, value_name = "FILE", requires = "require_attestation")]
    policy: Option<PathBuf>,
}

impl RequireArgs {
    /// The options to require, when --require-attestation is given.
    pub fn options(&self) -> CliResult<Option<AttestOptions>> {
        self.require_attestation
            .then(|| load_options(&self.tpm_ca, self.policy.as_deref()))
            .transpose()
    }
}

/// Reads the trust inputs: an unreadable file is a usage error.
fn load_options(tpm_ca: &[PathBuf], policy: Option<&std::path::Path>) -> CliResult<AttestOptions> {
    let mut options = AttestOptions::default();
    for path in tpm_ca {
        options = options
            .ek_roots_pem_file(path)
            .map_err(|e| CliError::usage(e.to_string()))?;
    }
    if let Some(path) = policy {
        options = options.policy(Policy::load(path).map_err(CliError::usage)?);
    }
    Ok(options)
}

pub fn run(args: Args) -> CliResult {
    let options = load_options(&args.tpm_ca, args.policy.as_deref())?;
    let conn = args.connect.clone().resolve()?;
    let client = conn
        .client_builder()
        .max_retries(1)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(client_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Code::Other, format!("cannot start the runtime: {e}")))?;
    let verification = runtime
        .block_on(client.attest(&options))
        .map_err(client_error)?;
    if args.json {
        let json = serde_json::json!({
            "origin": verification.origin,
            "ak_fingerprint": verification.ak_fingerprint,
            "verdict": if verification.passed() { "pass" } else { "fail" },
            "steps": verification.steps,
        });
        println!("{json}");
    } else {
        print_text(&verification);
    }
    if verification.passed() {
        Ok(())
    } else {
        Err(CliError::new(
            Code::Security,
            format!(
                "{} is not attested: {}",
                verification.origin,
                failed_steps(&verification)
            ),
        ))
    }
}

fn print_text(v: &Verification) {
    println!("server: {}", v.origin);
    println!("ak: {}", v.ak_fingerprint.as_deref().unwrap_or("-"));
    for s in &v.steps {
        println!("{:<22} {:<13} {}", s.name, s.status.to_string(), s.detail);
    }
    println!("verdict: {}", if v.passed() { "pass" } else { "fail" });
}
