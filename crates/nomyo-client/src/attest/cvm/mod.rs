//! Confidential-VM evidence from the attestation route (docs/PROTOCOL.md
//! §15.3) and in answers (§15.2), verified with `nomyo_core::cvm` (§16)
//! against the binding this client expects.

use base64::Engine as _;
use nomyo_core::attest::{failed_steps, passed, Step, StepStatus, REPORT_DATA_LEN};
use nomyo_core::chat::CvmAttestation;
use nomyo_core::cvm::{
    verify_sev_snp, verify_tdx_quote, SevSnpEndorsement, SevSnpReport, SnpCertTable, TdReport,
    TdxCollateral,
};
use serde::{Deserialize, Serialize};

use super::{parse_fingerprint, AttestOptions, Policy, Verification};

/// `sev-snp` or `tdx`, as the wire names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    SevSnp,
    Tdx,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "sev-snp" => Some(Self::SevSnp),
            "tdx" => Some(Self::Tdx),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::SevSnp => "sev-snp",
            Self::Tdx => "tdx",
        }
    }
}

/// Whether the route's answer is confidential-VM evidence (it names a
/// `kind`; TPM evidence has none).
pub(crate) fn is_cvm(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        kind: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.kind.is_some())
}

/// The kind a confidential-VM answer that does not parse claims, as the
/// wire names it: `sev-snp` or `tdx`, or `unknown` when its kind cannot be
/// read (not a string, or a kind this client does not know).
fn claimed_kind(body: &[u8]) -> &'static str {
    #[derive(Deserialize)]
    struct Probe {
        kind: String,
    }
    serde_json::from_slice::<Probe>(body)
        .ok()
        .and_then(|p| Kind::parse(&p.kind))
        .map_or("unknown", Kind::name)
}

#[derive(Deserialize)]
struct Wire {
    version: u32,
    kind: String,
    #[serde(default)]
    provider: String,
    v1_key_fingerprint: String,
    #[serde(default)]
    v2_keys_b64: Option<String>,
    report_b64: String,
    #[serde(default)]
    auxblob_b64: Option<String>,
}

/// The route's confidential-VM evidence, decoded.
#[derive(Debug, Clone)]
pub(crate) struct CvmEvidence {
    pub(crate) kind: Kind,
    pub(crate) provider: String,
    pub(crate) v1_key_fingerprint: String,
    pub(crate) v2_keys: Option<Vec<u8>>,
    pub(crate) report: Vec<u8>,
    pub(crate) auxblob: Option<Vec<u8>>,
}

impl CvmEvidence {
    /// Parses the route's body; the message names the wrong field and
    /// never quotes the body.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        let wire: Wire = super::evidence::decode_answer(body, |w: &Wire| w.version)?;
        let kind = Kind::parse(&wire.kind).ok_or_else(|| {
            "the attestation answer names an unknown kind of evidence (this client knows sev-snp and tdx)"
                .to_owned()
        })?;
        let b64 = super::evidence::b64;
        Ok(Self {
            kind,
            provider: wire.provider,
            v1_key_fingerprint: wire.v1_key_fingerprint,
            v2_keys: wire
                .v2_keys_b64
                .as_deref()
                .map(|v| b64("v2_keys_b64", v))
                .transpose()?,
            report: b64("report_b64", &wire.report_b64)?,
            auxblob: wire
                .auxblob_b64
                .as_deref()
                .map(|v| b64("auxblob_b64", v))
                .transpose()?,
        })
    }
}

/// What the evidence showed, for the verification document (lowercase
/// hex; authentic only when the document passes).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind")]
#[non_exhaustive]
pub enum CvmFound {
    /// An AMD SEV-SNP report.
    #[serde(rename = "sev-snp")]
    SevSnp {
        /// The configfs-tsm provider the server named.
        provider: String,
        /// The product line whose ARK the chain ends in.
        product_line: Option<String>,
        /// The report's fields, when it parses.
        report: Option<SevSnpReport>,
    },
    /// An Intel TDX quote.
    #[serde(rename = "tdx")]
    Tdx {
        /// The configfs-tsm provider the server named.
        provider: String,
        /// The platform's TCB status, when the quote verified.
        tcb_status: Option<String>,
        /// Intel's advisories that apply.
        advisory_ids: Vec<String>,
        /// The TD report's fields, when the quote parses.
        td: Option<TdReport>,
    },
}

/// What a verified route's evidence leaves for checking each answer's
/// report: SEV-SNP, the signing key's certificate and chain as verified;
/// TDX, the collateral.
#[derive(Clone, Debug)]
pub(crate) enum Endorsement {
    SevSnp(Box<SevSnpEndorsement>),
    Tdx { collateral: Box<TdxCollateral> },
}

impl Endorsement {
    fn kind(&self) -> Kind {
        match self {
            Self::SevSnp(_) => Kind::SevSnp,
            Self::Tdx { .. } => Kind::Tdx,
        }
    }
}

/// The current time in unix seconds (0 if the clock is before 1970).
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies the route's evidence against `report_data` (the route's
/// binding) and the options' policy and trust inputs. Returns the steps,
/// what was found, and, when the evidence is authentic, what answers are
/// checked with.
pub(crate) fn verify_route(
    evidence: &CvmEvidence,
    options: &AttestOptions,
    report_data: [u8; REPORT_DATA_LEN],
) -> (Vec<Step>, CvmFound, Option<Endorsement>) {
    let policy = options.policy.clone().unwrap_or_default();
    match evidence.kind {
        Kind::SevSnp => {
            let table = evidence
                .auxblob
                .as_deref()
                .map(SnpCertTable::parse)
                .transpose();
            let (table, table_error) = match table {
                Ok(t) => (t, None),
                Err(e) => (None, Some(e)),
            };
            let vcek = options
                .sev_snp_vcek
                .clone()
                .or_else(|| table.as_ref()?.endorsement_key().map(<[u8]>::to_vec));
            let chain = options
                .sev_snp_chain_pem
                .clone()
                .or_else(|| table.as_ref()?.chain_pem());
            let expect = policy.sev_snp_expectations(Some(report_data));
            // The chain once; an endorsement that verifies also checks each
            // answer's report later without verifying the chain again.
            let (v, verified) = match vcek
                .as_deref()
                .map(|der| SevSnpEndorsement::verify(der, chain.as_deref()))
            {
                Some(Ok(e)) => (e.verify_report(&evidence.report, &expect), Some(e)),
                _ => (
                    verify_sev_snp(
                        &evidence.report,
                        vcek.as_deref().unwrap_or_default(),
                        chain.as_deref(),
                        &expect,
                    ),
                    None,
                ),
            };
            let mut steps = v.steps.clone();
            if vcek.is_none() {
                let why = match table_error {
                    Some(e) => format!("the server's certificate table (auxblob) is unusable: {e}"),
                    None => "no VCEK certificate: the server's auxblob holds none and none was given (--sev-snp-vcek)".to_owned(),
                };
                for s in steps.iter_mut().filter(|s| s.name == "vcek") {
                    *s = Step::new("vcek", StepStatus::Unverified, why.clone());
                }
            }
            let endorsement = authentic(&v.steps)
                .then_some(verified)
                .flatten()
                .map(|e| Endorsement::SevSnp(Box::new(e)));
            let found = CvmFound::SevSnp {
                provider: evidence.provider.clone(),
                product_line: v.product_line.map(|l| l.name().to_owned()),
                report: v.report,
            };
            (steps, found, endorsement)
        }
        Kind::Tdx => {
            let v = verify_tdx_quote(
                &evidence.report,
                options.tdx_collateral.as_ref(),
                now_unix(),
                &policy.tdx_expectations(Some(report_data)),
            );
            let mut steps = v.steps.clone();
            if options.tdx_collateral.is_none() {
                for s in steps.iter_mut().filter(|s| s.name == "collateral_validity") {
                    s.detail = "no TDX collateral given (--tdx-collateral): TCB info, QE identity and CRLs from Intel's PCS or a PCCS".into();
                }
            }
            let endorsement = authentic(&v.steps)
                .then(|| options.tdx_collateral.clone())
                .flatten()
                .map(|collateral| Endorsement::Tdx {
                    collateral: Box::new(collateral),
                });
            let found = CvmFound::Tdx {
                provider: evidence.provider.clone(),
                tcb_status: v.tcb_status.map(|s| s.name().to_owned()),
                advisory_ids: v.advisory_ids,
                td: v.td,
            };
            (steps, found, endorsement)
        }
    }
}

/// Whether the evidence's signature verified (its fields can be judged).
fn authentic(steps: &[Step]) -> bool {
    steps.iter().any(|s| {
        matches!(s.name.as_str(), "report_signature" | "quote_signature")
            && s.status == StepStatus::Pass
    })
}

/// The steps that tie a report to one chip: its signing key's certificate,
/// the signature, and the chip id the certificate names. A report failing
/// only these may be signed by another chip (another replica).
const CHIP_STEPS: [&str; 3] = ["vcek", "report_signature", "chip_id"];

/// Why an answer's report was refused.
#[derive(Debug)]
pub(crate) struct ReportRefusal {
    /// What failed (never the report's content).
    pub(crate) why: String,
    /// Under every endorsement of its kind the report failed only
    /// [`CHIP_STEPS`]: it may come from a chip not verified yet, which a
    /// fresh check of the attestation route can endorse.
    pub(crate) other_chip: bool,
}

impl ReportRefusal {
    fn bad(why: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            other_chip: false,
        }
    }
}

/// Whether some step failed and every failed one is in [`CHIP_STEPS`]
/// (steps judged on fields whose signature did not verify are
/// `unverified`, not failed).
fn only_chip_steps_failed(steps: &[Step]) -> bool {
    let failed: Vec<&str> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Fail)
        .map(|s| s.name.as_str())
        .collect();
    !failed.is_empty() && failed.iter().all(|name| CHIP_STEPS.contains(name))
}

/// Checks one answer's report (`_metadata.attestation`) with the
/// endorsements of evidence verified before: it must be of the same kind,
/// verify in full under one of them, carry the answer's report data, and
/// fit the policy.
pub(crate) fn check_answer(
    endorsements: &[Endorsement],
    policy: Option<&Policy>,
    payload_id: &str,
    block: Option<&CvmAttestation>,
) -> Result<(), ReportRefusal> {
    let block =
        block.ok_or_else(|| ReportRefusal::bad("the answer carries no confidential-VM report"))?;
    let report = base64::engine::general_purpose::STANDARD
        .decode(&block.report_b64)
        .map_err(|_| ReportRefusal::bad("the answer's report_b64 is not base64"))?;
    let report_data = nomyo_core::attest::answer_report_data(payload_id);
    let policy = policy.cloned().unwrap_or_default();
    let mut last = None;
    // Whether an endorsement of the report's kind was tried, and each
    // refused it only on the chip's steps.
    let mut tried = false;
    let mut other_chip = true;
    for e in endorsements {
        if Kind::parse(&block.kind) != Some(e.kind()) {
            last = Some(format!(
                "the answer's report is of kind {:?}; the server attested with {}",
                block.kind,
                e.kind().name()
            ));
            continue;
        }
        let steps = match e {
            Endorsement::SevSnp(e) => {
                e.verify_report(&report, &policy.sev_snp_expectations(Some(report_data)))
                    .steps
            }
            Endorsement::Tdx { collateral } => {
                verify_tdx_quote(
                    &report,
                    Some(collateral),
                    now_unix(),
                    &policy.tdx_expectations(Some(report_data)),
                )
                .steps
            }
        };
        if passed(&steps) {
            return Ok(());
        }
        tried = true;
        other_chip &= only_chip_steps_failed(&steps);
        last = Some(format!("the answer's report: {}", failed_steps(&steps)));
    }
    Err(ReportRefusal {
        why: last
            .unwrap_or_else(|| "no confidential-VM evidence was verified for this server".into()),
        other_chip: tried && other_chip,
    })
}

/// Verifies the route's confidential-VM evidence (docs/PROTOCOL.md
/// §16.4): the vendor's steps with the route's binding as the expected
/// report data, then the binding of the keys this client trusts.
pub(super) fn attest_cvm(
    origin: &str,
    body: &[u8],
    nonce: &[u8],
    v1: &crate::server_keys::ServerKey,
    v2: Option<&crate::server_keys::HpkeKeys>,
    options: &AttestOptions,
) -> Verification {
    let origin = origin.to_owned();
    let evidence = match CvmEvidence::parse(body) {
        Ok(e) => e,
        Err(why) => {
            return Verification {
                origin,
                kind: claimed_kind(body),
                ak_fingerprint: None,
                steps: vec![Step::new("evidence", StepStatus::Fail, why)],
                cvm: None,
                endorsement: None,
            }
        }
    };
    let claimed_v1 = parse_fingerprint(&evidence.v1_key_fingerprint);
    let v2_body = evidence.v2_keys.as_deref().unwrap_or_default();
    let binding = claimed_v1
        .map(|fp| nomyo_core::tpm::attestation_extra_data(nonce, &fp, v2_body))
        .unwrap_or_default();
    let (mut steps, found, endorsement) = verify_route(
        &evidence,
        options,
        nomyo_core::attest::route_report_data(&binding),
    );
    let report_data_ok = steps
        .iter()
        .any(|s| s.name == "report_data" && s.status == StepStatus::Pass);
    let (status, detail) = super::tpm::key_claims(
        "report",
        claimed_v1,
        v1.fingerprint(),
        evidence.v2_keys.as_deref(),
        v2,
    );
    steps.push(Step::judged("key_binding", status, detail, report_data_ok));
    tracing::debug!(
        origin = %origin,
        kind = evidence.kind.name(),
        report_bytes = evidence.report.len(),
        auxblob_bytes = evidence.auxblob.as_ref().map_or(0, Vec::len),
        "confidential-VM evidence fetched"
    );
    Verification {
        origin,
        kind: evidence.kind.name(),
        ak_fingerprint: None,
        steps,
        cvm: Some(found),
        endorsement,
    }
}

#[cfg(test)]
mod tests;
