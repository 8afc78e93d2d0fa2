//! `nomyo attest verify`: SEV-SNP or TDX evidence from files, verified
//! offline against the vendors' roots built in, printed as `nomyo attest`
//! prints a server's.

use std::path::{Path, PathBuf};

use clap::Args as ClapArgs;
use nomyo_client::attest::Policy;

use super::{emit, print_fields, print_steps, sev_snp_fields, tdx_fields, verdict};
use crate::exit::{CliError, CliResult, Code};

const VERIFY_AFTER_HELP: &str = "\
SEV-SNP: --sev-snp REPORT (the 1184-byte report, raw, as configfs-tsm's
outblob returns it) --vcek DER [--chain PEM: ASK then ARK, AMD's cert_chain].
Without --chain the built-in ASKs are tried. Steps: report_format, ark, ask,
vcek, report_signature, report_version, debug, vmpl, vcek_tcb, chip_id,
min_tcb, measurement, report_data.

TDX: --tdx-quote QUOTE --collateral JSON [--at RFC3339: the time to judge the
collateral at; default now]. Steps: quote_format, collateral_validity,
quote_signature, tcb_status, debug, measurement, report_data.

Built-in roots: AMD ARK Milan, Genoa, Turin; Intel SGX Root CA.
The measurement, the report data and the TCB found are printed (lowercase
hex). --policy's [sev_snp] / [tdx] sections make them allowlists; without,
they are `not requested`.

Examples:
  nomyo attest verify --sev-snp report.bin --vcek vcek.der --chain cert_chain.pem
  nomyo attest verify --tdx-quote quote.dat --collateral collateral.json --at 2025-06-20T00:00:00Z --json

Exit codes: 0 every step passed (or was not requested); 4 a step failed or is
unverified; 2 usage (a file that cannot be read, a bad --at or
--report-data).";

#[derive(ClapArgs, Debug)]
#[command(
    after_help = VERIFY_AFTER_HELP,
    group(clap::ArgGroup::new("evidence").required(true).args(["sev_snp", "tdx_quote"]))
)]
pub(super) struct VerifyArgs {
    /// An AMD SEV-SNP attestation report, raw (1184 bytes).
    #[arg(long = "sev-snp", value_name = "REPORT", conflicts_with_all = ["tdx_quote", "collateral", "at"], requires = "vcek")]
    sev_snp: Option<PathBuf>,
    /// The VCEK (or VLEK) certificate that signed the report, DER.
    #[arg(long, value_name = "DER", requires = "sev_snp")]
    vcek: Option<PathBuf>,
    /// AMD's certificate chain, PEM: the ASK (or ASVK), then the ARK.
    #[arg(long, value_name = "PEM", requires = "sev_snp")]
    chain: Option<PathBuf>,
    /// An Intel TDX quote (DCAP v4 or v5), raw.
    #[arg(long = "tdx-quote", value_name = "FILE", requires = "collateral")]
    tdx_quote: Option<PathBuf>,
    /// The quote's collateral, JSON.
    #[arg(long, value_name = "JSON", requires = "tdx_quote")]
    collateral: Option<PathBuf>,
    /// Judge the collateral as of this time (RFC 3339, UTC: 2025-06-20T00:00:00Z). Default: now.
    #[arg(long, value_name = "RFC3339", requires = "tdx_quote")]
    at: Option<String>,
    /// The report data the evidence must carry (hex, up to 64 bytes; padded
    /// with zeros to 64). None: report_data is not requested.
    #[arg(long = "report-data", value_name = "HEX")]
    report_data: Option<String>,
    /// TOML policy: its `[sev_snp]` or `[tdx]` section.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print the verification document as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Reads an evidence file; an unreadable one is a usage error.
fn read(path: &Path, what: &str) -> CliResult<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| CliError::usage(format!("cannot read the {what} {}: {e}", path.display())))
}

/// `--report-data HEX`: up to 64 bytes, padded with zeros.
fn report_data(hex_text: &str) -> CliResult<[u8; 64]> {
    let bytes = hex::decode(hex_text.trim())
        .ok()
        .filter(|b| !b.is_empty() && b.len() <= 64)
        .ok_or_else(|| CliError::usage("--report-data: 1 to 64 bytes as hex digits"))?;
    let mut out = [0u8; 64];
    out[..bytes.len()].copy_from_slice(&bytes);
    Ok(out)
}

/// `nomyo attest verify`.
pub(super) fn verify(args: VerifyArgs) -> CliResult {
    let policy = match &args.policy {
        Some(path) => Policy::load(path).map_err(CliError::usage)?,
        None => Policy::default(),
    };
    let expected = args.report_data.as_deref().map(report_data).transpose()?;
    let mut out = String::new();
    let (kind, steps, json) = if let Some(report_path) = &args.sev_snp {
        let report = read(report_path, "SEV-SNP report")?;
        let vcek_path = args
            .vcek
            .as_ref()
            .ok_or_else(|| CliError::usage("--sev-snp needs --vcek"))?;
        let vcek = read(vcek_path, "VCEK certificate")?;
        let chain = args
            .chain
            .as_deref()
            .map(|p| read(p, "certificate chain"))
            .transpose()?;
        let v = nomyo_core::cvm::verify_sev_snp(
            &report,
            &vcek,
            chain.as_deref(),
            &policy.sev_snp_expectations(expected),
        );
        if !args.json {
            outln!(&mut out, "evidence: sev-snp ({})", report_path.display());
            print_steps(&mut out, &v.steps);
            print_fields(
                &mut out,
                &sev_snp_fields(v.product_line.map(|l| l.name()), v.report.as_ref()),
            );
        }
        let json = serde_json::json!({
            "kind": "sev-snp",
            "verdict": verdict(v.passed()),
            "steps": v.steps,
            "product_line": v.product_line.map(|l| l.name()),
            "report": v.report,
        });
        ("SEV-SNP report", v.steps, json)
    } else {
        let quote_path = args
            .tdx_quote
            .as_ref()
            .ok_or_else(|| CliError::usage("give --sev-snp REPORT or --tdx-quote FILE"))?;
        let quote = read(quote_path, "TDX quote")?;
        let collateral_path = args
            .collateral
            .as_ref()
            .ok_or_else(|| CliError::usage("--tdx-quote needs --collateral"))?;
        let collateral =
            nomyo_core::cvm::TdxCollateral::from_json(&read(collateral_path, "TDX collateral")?)
                .map_err(|e| CliError::usage(format!("{}: {e}", collateral_path.display())))?;
        let at = match &args.at {
            Some(t) => nomyo_core::cvm::tdx::parse_rfc3339(t)
                .map_err(|e| CliError::usage(format!("--at {t:?}: {e}")))?,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let v = nomyo_core::cvm::verify_tdx(
            &quote,
            &collateral,
            at,
            &policy.tdx_expectations(expected),
        );
        if !args.json {
            outln!(out, "evidence: tdx ({})", quote_path.display());
            outln!(out, "checked at: {at} (unix seconds)");
            print_steps(&mut out, &v.steps);
            print_fields(
                &mut out,
                &tdx_fields(v.tcb_status.map(|s| s.name()), v.td.as_ref()),
            );
            if !v.advisory_ids.is_empty() {
                outln!(out, "advisories: {}", v.advisory_ids.join(", "));
            }
        }
        let json = serde_json::json!({
            "kind": "tdx",
            "verdict": verdict(v.passed()),
            "checked_at": at,
            "steps": v.steps,
            "tcb_status": v.tcb_status.map(|s| s.name()),
            "advisory_ids": v.advisory_ids,
            "td": v.td,
        });
        ("TDX quote", v.steps, json)
    };
    let ok = nomyo_core::attest::passed(&steps);
    if args.json {
        outln!(out, "{json}");
    } else {
        outln!(out, "verdict: {}", verdict(ok));
    }
    emit(&out)?;
    if ok {
        Ok(())
    } else {
        Err(CliError::new(
            Code::Security,
            format!(
                "the {kind} does not verify: {}",
                nomyo_core::attest::failed_steps(&steps)
            ),
        ))
    }
}
