//! `nomyo attest`: verify a server's evidence (a TPM's, or a confidential
//! VM's) and print the verification document; `nomyo attest verify`:
//! verify SEV-SNP or TDX evidence from files, offline (docs/CLI.md,
//! docs/PROTOCOL.md §14.7, §16).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args as ClapArgs, Subcommand};
use nomyo_client::attest::{failed_steps, AttestOptions, CvmFound, Policy, Verification};
use nomyo_core::attest::Step;

use super::client_error;
use super::connect::ConnectArgs;
use crate::exit::{CliError, CliResult, Code};

const AFTER_HELP: &str = "\
Checks, in order, and prints each as pass, fail, unverified (a trust input is
missing) or not requested. For a TPM:
  ek_chain               the EK certificate chains to a --tpm-ca root
  credential_activation  the server's TPM releases a credential made for its AK
  quote_signature        the AK signed the quote; the PCR values match it
  nonce                  the quote is for this run's fresh nonce
  key_binding            the quote binds the server keys this client trusts
  pcr_policy             the PCR values are allowed by --policy
For a confidential VM (AMD SEV-SNP, Intel TDX): the vendor's chain and
signature, TCB, debug off, measurement (--policy), report_data (this run's
nonce and the server's keys), key_binding; docs/PROTOCOL.md §16 lists them.
The server's keys are trusted as for `nomyo chat` (--pin, or the known-servers
file).

Examples:
  nomyo attest --server https://api.example.org --tpm-ca ek-roots.pem
  nomyo attest --server https://api.example.org --tpm-ca ek-roots.pem --policy pcrs.toml --json
  nomyo attest --server https://api.example.org --tdx-collateral collateral.json
  nomyo attest verify --sev-snp report.bin --vcek vcek.der --chain cert_chain.pem

Exit codes: 0 every step passed (or was not requested); 4 a step failed or is
unverified; 2 usage (an unreadable --tpm-ca or --policy); 3 refused by the
server (401/403); 5 server or network failure after retries.";

/// Verify a server's attestation: a TPM's (EK chain, credential activation, quote) or a confidential VM's (SEV-SNP, TDX), bound to its keys.
#[derive(ClapArgs, Debug)]
#[command(
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Args {
    /// Offline verification of evidence in files.
    #[command(subcommand)]
    command: Option<AttestCommand>,
    /// The server and how its keys are trusted.
    #[command(flatten)]
    connect: ConnectArgs,
    /// PEM file of EK root (or issuing CA) certificates the server's EK
    /// certificate must chain to; repeatable. None: ek_chain is unverified.
    #[arg(long = "tpm-ca", value_name = "PEM")]
    tpm_ca: Vec<PathBuf>,
    /// TOML policy file: `[tpm]` allowed PCR values, `[sev_snp]` and `[tdx]`
    /// allowed measurements and TCB (docs/PROTOCOL.md §16.4).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    cvm: CvmInputs,
    /// Print the verification document as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The trust inputs a confidential VM's evidence may need beyond what the
/// server sends.
#[derive(ClapArgs, Clone, Debug, Default)]
pub struct CvmInputs {
    /// TDX collateral (TCB info, QE identity, CRLs; JSON, docs/PROTOCOL.md
    /// §16.2) to verify a TDX server's quotes with. None: unverified.
    #[arg(long = "tdx-collateral", value_name = "JSON")]
    tdx_collateral: Option<PathBuf>,
    /// SEV-SNP VCEK (or VLEK) certificate, DER, for a server whose
    /// certificate table (auxblob) holds none.
    #[arg(long = "sev-snp-vcek", value_name = "DER")]
    sev_snp_vcek: Option<PathBuf>,
    /// AMD's chain (ASK or ASVK, then ARK), PEM, instead of the server's.
    #[arg(long = "sev-snp-chain", value_name = "PEM")]
    sev_snp_chain: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum AttestCommand {
    /// Verify AMD SEV-SNP or Intel TDX evidence from files, offline, against the vendors' roots built in.
    Verify(VerifyArgs),
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
    /// With --require-attestation: TOML policy (allowed PCR values,
    /// confidential-VM measurements and TCB).
    #[arg(long, value_name = "FILE", requires = "require_attestation")]
    policy: Option<PathBuf>,
    /// With --require-attestation: TDX collateral, JSON.
    #[arg(
        long = "tdx-collateral",
        value_name = "JSON",
        requires = "require_attestation"
    )]
    tdx_collateral: Option<PathBuf>,
}

impl RequireArgs {
    /// The options to require, when --require-attestation is given.
    pub fn options(&self) -> CliResult<Option<AttestOptions>> {
        let cvm = CvmInputs {
            tdx_collateral: self.tdx_collateral.clone(),
            ..CvmInputs::default()
        };
        self.require_attestation
            .then(|| load_options(&self.tpm_ca, self.policy.as_deref(), &cvm))
            .transpose()
    }
}

/// Reads the trust inputs: an unreadable file is a usage error.
fn load_options(
    tpm_ca: &[PathBuf],
    policy: Option<&Path>,
    cvm: &CvmInputs,
) -> CliResult<AttestOptions> {
    let usage = |e: nomyo_client::Error| CliError::usage(e.to_string());
    let mut options = AttestOptions::default();
    for path in tpm_ca {
        options = options.ek_roots_pem_file(path).map_err(usage)?;
    }
    if let Some(path) = policy {
        options = options.policy(Policy::load(path).map_err(CliError::usage)?);
    }
    if let Some(path) = &cvm.tdx_collateral {
        options = options.tdx_collateral_file(path).map_err(usage)?;
    }
    if let Some(path) = &cvm.sev_snp_vcek {
        options = options.sev_snp_vcek_file(path).map_err(usage)?;
    }
    if let Some(path) = &cvm.sev_snp_chain {
        options = options.sev_snp_chain_file(path).map_err(usage)?;
    }
    Ok(options)
}

/// `writeln!` into a `String` (cannot fail).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

// After `outln!`, which it uses.
mod verify;

use verify::{verify, VerifyArgs};

/// A verification's verdict, as printed and in the JSON.
fn verdict(passed: bool) -> &'static str {
    if passed {
        "pass"
    } else {
        "fail"
    }
}

/// Writes the document to stdout at once; a reader that went away (`| head`)
/// is not an error.
fn emit(out: &str) -> CliResult {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(
            Code::Other,
            format!("cannot write to stdout: {e}"),
        )),
    }
}

pub fn run(args: Args) -> CliResult {
    if let Some(AttestCommand::Verify(v)) = args.command {
        return verify(v);
    }
    let options = load_options(&args.tpm_ca, args.policy.as_deref(), &args.cvm)?;
    let conn = args.connect.clone().resolve()?;
    let client = conn
        .client_builder()
        .max_retries(1)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(client_error)?;
    let runtime = crate::cmd::runtime(false)?;
    let verification = runtime
        .block_on(client.attest(&options))
        .map_err(client_error)?;
    let mut out = String::new();
    if args.json {
        let json = serde_json::json!({
            "origin": verification.origin,
            "kind": verification.kind,
            "ak_fingerprint": verification.ak_fingerprint,
            "verdict": verdict(verification.passed()),
            "steps": verification.steps,
            "evidence": verification.cvm,
        });
        outln!(out, "{json}");
    } else {
        print_text(&mut out, &verification);
    }
    emit(&out)?;
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

fn print_text(out: &mut String, v: &Verification) {
    outln!(out, "server: {}", v.origin);
    outln!(out, "evidence: {}", v.kind);
    if v.kind == "tpm" {
        outln!(out, "ak: {}", v.ak_fingerprint.as_deref().unwrap_or("-"));
    }
    print_steps(out, &v.steps);
    match &v.cvm {
        Some(CvmFound::SevSnp {
            product_line,
            report,
            ..
        }) => print_fields(
            out,
            &sev_snp_fields(product_line.as_deref(), report.as_ref()),
        ),
        Some(CvmFound::Tdx { tcb_status, td, .. }) => {
            print_fields(out, &tdx_fields(tcb_status.as_deref(), td.as_ref()))
        }
        _ => {}
    }
    outln!(out, "verdict: {}", verdict(v.passed()));
}

fn print_steps(out: &mut String, steps: &[Step]) {
    for s in steps {
        let status = match s.as_read {
            Some(r) => format!("{} (as read: {r})", s.status),
            None => s.status.to_string(),
        };
        outln!(out, "{:<22} {:<13} {}", s.name, status, s.detail);
    }
}

/// A confidential VM's fields as printed: a line each, its `label: value`
/// pairs two spaces apart.
type FieldLines = Vec<Vec<(String, String)>>;

/// One `label: value` pair of a [`FieldLines`] line.
fn field(label: impl Into<String>, value: impl std::fmt::Display) -> (String, String) {
    (label.into(), value.to_string())
}

/// Prints the fields of a confidential VM's evidence (SEV-SNP or TDX).
fn print_fields(out: &mut String, lines: &FieldLines) {
    for line in lines {
        let pairs: Vec<String> = line
            .iter()
            .map(|(label, value)| format!("{label}: {value}"))
            .collect();
        outln!(out, "{}", pairs.join("  "));
    }
}

/// What an SEV-SNP report shows: its product line and, once parsed, its
/// measurement, report data, TCB, policy, VMPL, signing key and chip id.
fn sev_snp_fields(
    product_line: Option<&str>,
    report: Option<&nomyo_core::cvm::SevSnpReport>,
) -> FieldLines {
    let mut lines = vec![vec![field("product line", product_line.unwrap_or("-"))]];
    if let Some(r) = report {
        lines.push(vec![field("measurement", &r.measurement)]);
        lines.push(vec![field("report data", &r.report_data)]);
        lines.push(vec![field("reported tcb", r.reported_tcb)]);
        lines.push(vec![
            field("policy", format!("{:#x}", r.policy)),
            field("vmpl", r.vmpl),
            field("signed by", &r.signing_key),
        ]);
        lines.push(vec![field("chip id", &r.chip_id)]);
    }
    lines
}

/// What a TDX quote shows: its TCB status and, once parsed, the TD's
/// measurements, report data, attributes and TEE TCB SVN.
fn tdx_fields(tcb_status: Option<&str>, td: Option<&nomyo_core::cvm::TdReport>) -> FieldLines {
    let mut lines = vec![vec![field("tcb status", tcb_status.unwrap_or("-"))]];
    if let Some(td) = td {
        lines.push(vec![field("mrtd", &td.mrtd)]);
        for (i, r) in td.rtmr.iter().enumerate() {
            lines.push(vec![field(format!("rtmr{i}"), r)]);
        }
        lines.push(vec![field("report data", &td.report_data)]);
        lines.push(vec![
            field("td attributes", &td.td_attributes),
            field("tee tcb svn", &td.tee_tcb_svn),
        ]);
    }
    lines
}
