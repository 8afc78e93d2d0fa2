//! Verifying an SEV-SNP report: [`verify_sev_snp`], and
//! [`SevSnpEndorsement`], a signing key's chain verified once for many
//! reports; the report's format and signature steps around the chain's.

use sev::certs::snp::Certificate;
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

use super::super::{Step, StepStatus};
use super::chain::verify_chain;
use super::content::{content_steps, report_fields};
use super::{
    one_line, SevSnpExpectations, SevSnpVerification, SnpProductLine, SEV_SNP_REPORT_LEN,
    SEV_SNP_SIGNED_LEN,
};

/// Verifies an SEV-SNP attestation report.
///
/// - `report`: the raw report, [`SEV_SNP_REPORT_LEN`] bytes.
/// - `vcek_der`: the certificate of the key that signed it (a VCEK from
///   AMD's key distribution service, or a VLEK), DER.
/// - `chain_pem`: AMD's intermediate and root, PEM, ASK (or ASVK) first,
///   then ARK (the `cert_chain` AMD serves). The ARK must be one of the
///   built-in ones ([`SnpProductLine`]). Without it, the built-in ASKs are
///   tried (a VLEK needs its ASVK given).
/// - `expect`: what the guest must match.
///
/// Never panics and returns no error: what is wrong is a failed step.
pub fn verify_sev_snp(
    report: &[u8],
    vcek_der: &[u8],
    chain_pem: Option<&[u8]>,
    expect: &SevSnpExpectations,
) -> SevSnpVerification {
    // ARK -> ASK -> VCEK.
    let mut chain_steps = Vec::new();
    let (chain_ok, product_line, vcek) = verify_chain(vcek_der, chain_pem, &mut chain_steps);
    let chain = Chain {
        steps: chain_steps,
        ok: chain_ok,
        product_line,
        vcek: vcek.as_ref(),
    };
    verify_report_with(report, vcek_der, chain, expect)
}

/// The outcome of the chain's steps, for [`verify_report_with`].
struct Chain<'a> {
    steps: Vec<Step>,
    ok: bool,
    product_line: Option<SnpProductLine>,
    vcek: Option<&'a Certificate>,
}

/// AMD's certificate chain of one signing key (ARK -> ASK -> VCEK, or ASVK
/// -> VLEK), verified once to check many reports that key signs: a client
/// that requires attestation checks every answer's report with the chain of
/// the evidence it verified, instead of verifying the chain again.
#[derive(Clone, Debug)]
pub struct SevSnpEndorsement {
    vcek_der: Vec<u8>,
    vcek: Certificate,
    product_line: Option<SnpProductLine>,
    steps: Vec<Step>,
}

impl SevSnpEndorsement {
    /// Runs the steps `ark`, `ask` and `vcek` of [`verify_sev_snp`] on the
    /// signing key's certificate (DER) and the chain (PEM, optional as
    /// there). `Err` holds the steps when one did not pass.
    pub fn verify(vcek_der: &[u8], chain_pem: Option<&[u8]>) -> Result<Self, Vec<Step>> {
        let mut steps = Vec::new();
        match verify_chain(vcek_der, chain_pem, &mut steps) {
            (true, product_line, Some(vcek)) => Ok(Self {
                vcek_der: vcek_der.to_vec(),
                vcek,
                product_line,
                steps,
            }),
            _ => Err(steps),
        }
    }

    /// The product line whose ARK the chain ends in.
    pub fn product_line(&self) -> Option<SnpProductLine> {
        self.product_line
    }

    /// [`verify_sev_snp`] of `report` with this chain: the same document,
    /// its chain steps the ones verified when this was made.
    pub fn verify_report(&self, report: &[u8], expect: &SevSnpExpectations) -> SevSnpVerification {
        let chain = Chain {
            steps: self.steps.clone(),
            ok: true,
            product_line: self.product_line,
            vcek: Some(&self.vcek),
        };
        verify_report_with(report, &self.vcek_der, chain, expect)
    }
}

/// The report's steps, around the chain's (verified by the caller).
fn verify_report_with(
    report: &[u8],
    vcek_der: &[u8],
    chain: Chain<'_>,
    expect: &SevSnpExpectations,
) -> SevSnpVerification {
    let mut steps = Vec::new();

    // The report's layout.
    let parsed = if report.len() != SEV_SNP_REPORT_LEN {
        steps.push(Step::new(
            "report_format",
            StepStatus::Fail,
            format!(
                "{} bytes, an SEV-SNP report has {SEV_SNP_REPORT_LEN}",
                report.len()
            ),
        ));
        None
    } else {
        match AttestationReport::from_bytes(report) {
            Ok(r) => {
                steps.push(Step::new(
                    "report_format",
                    StepStatus::Pass,
                    format!("SEV-SNP report version {}", r.version),
                ));
                Some(r)
            }
            Err(e) => {
                steps.push(Step::new(
                    "report_format",
                    StepStatus::Fail,
                    format!("does not parse: {}", one_line(&e.to_string())),
                ));
                None
            }
        }
    };

    // ARK -> ASK -> VCEK, as the caller verified them.
    steps.extend(chain.steps);
    let product_line = chain.product_line;

    // The report's signature, over its bytes as received.
    let signed = match (&parsed, chain.vcek) {
        (Some(r), Some(vcek)) if chain.ok => match verify_report_signature(report, r, vcek) {
            Ok(()) => {
                steps.push(Step::new(
                    "report_signature",
                    StepStatus::Pass,
                    "ECDSA P-384 SHA-384 over the report's first 0x2a0 bytes, by the VCEK",
                ));
                true
            }
            Err(detail) => {
                steps.push(Step::new("report_signature", StepStatus::Fail, detail));
                false
            }
        },
        (None, _) => {
            steps.push(Step::new(
                "report_signature",
                StepStatus::Unverified,
                "the report does not parse",
            ));
            false
        }
        _ => {
            steps.push(Step::new(
                "report_signature",
                StepStatus::Unverified,
                "no verified VCEK",
            ));
            false
        }
    };

    let fields = parsed.as_ref().map(report_fields);
    if let Some(r) = &parsed {
        content_steps(r, report, vcek_der, signed, expect, &mut steps);
    } else {
        for name in [
            "report_version",
            "debug",
            "vmpl",
            "vcek_tcb",
            "chip_id",
            "min_tcb",
            "measurement",
            "report_data",
        ] {
            steps.push(Step::new(
                name,
                StepStatus::Unverified,
                "the report does not parse",
            ));
        }
    }

    SevSnpVerification {
        steps,
        product_line,
        report: fields,
    }
}

fn verify_report_signature(
    raw: &[u8],
    report: &AttestationReport,
    vcek: &Certificate,
) -> Result<(), String> {
    use p384::ecdsa::signature::Verifier;
    if report.sig_algo != 1 {
        return Err(format!(
            "signature algorithm {} (only 1, ECDSA P-384 SHA-384, is defined)",
            report.sig_algo
        ));
    }
    let signed = raw
        .get(..SEV_SNP_SIGNED_LEN)
        .ok_or_else(|| "the report is shorter than its signed part".to_owned())?;
    // The signature field (0x2a0..0x4a0): r and s, 72 bytes each, little
    // endian, of which P-384 uses 48; the rest is zero. Refusing non-zero
    // padding leaves one encoding per signature, so no byte of the report
    // can change unnoticed.
    let field = raw
        .get(SEV_SNP_SIGNED_LEN..SEV_SNP_REPORT_LEN)
        .ok_or_else(|| "the report is shorter than its signature".to_owned())?;
    let padding_zero = field
        .iter()
        .enumerate()
        .all(|(i, b)| (i < 48 || (72..120).contains(&i)) || *b == 0);
    if !padding_zero {
        return Err(
            "the signature field's padding (beyond 48 bytes of r and of s) is not zero".into(),
        );
    }
    let sig = p384::ecdsa::Signature::try_from(&report.signature)
        .map_err(|_| "the signature is not a valid P-384 (r, s)".to_owned())?;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(vcek.public_key_sec1())
        .map_err(|_| "the VCEK's key is not a P-384 public key".to_owned())?;
    key.verify(signed, &sig)
        .map_err(|_| "the VCEK's signature over the report does not verify".to_owned())
}
