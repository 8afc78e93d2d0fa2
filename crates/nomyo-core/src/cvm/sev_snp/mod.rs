//! AMD SEV-SNP attestation reports: [`verify_sev_snp`].
//!
//! The report (1184 bytes, as the guest's `SNP_GET_REPORT` returns it) is
//! signed with ECDSA P-384 over SHA-384 of its first 0x2A0 bytes by the
//! chip's VCEK (or a VLEK loaded by the cloud provider). The VCEK is
//! certified by AMD's ASK (the VLEK by the ASVK), which is certified by
//! AMD's root key, the ARK, one per product line.
//!
//! Parsing is the `sev` crate's ([`sev::firmware::guest::AttestationReport`]);
//! certificate signatures (RSA-PSS SHA-384) are its `crypto_nossl` code. The
//! report signature is checked here over the report's bytes as received (not
//! over a re-encoding of the parsed fields), so every signed byte counts,
//! reserved ones included. The VCEK's TCB and chip-id extensions are read
//! here, with bounded DER parsing that returns errors, never panics.

use serde::{Deserialize, Serialize};
use sev::certs::snp::{builtin, Certificate};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use sha2::{Digest, Sha256};

use super::{hex, Step, StepStatus};
use crate::attest;

mod certs;
mod chain;

pub use certs::SnpCertTable;
use certs::VcekInfo;
use chain::verify_chain;

/// The length of an SEV-SNP attestation report.
pub const SEV_SNP_REPORT_LEN: usize = 0x4A0;
/// The length of the signed part of a report (the signature follows it).
pub const SEV_SNP_SIGNED_LEN: usize = 0x2A0;

/// The report versions this verifier reads (SEV-SNP ABI 1.51 to 1.58:
/// version 2 on Milan and Genoa, 3 and 5 with the CPUID fields and the
/// mitigation vectors).
const REPORT_VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;

/// An AMD EPYC generation with SEV-SNP: one ARK (root key) each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnpProductLine {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005.
    Turin,
}

impl SnpProductLine {
    /// Every product line whose ARK is built in.
    pub const ALL: [SnpProductLine; 3] = [Self::Milan, Self::Genoa, Self::Turin];

    /// `Milan`, `Genoa` or `Turin`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        }
    }

    pub(crate) fn ark_name(self) -> &'static str {
        match self {
            Self::Milan => "AMD ARK (Milan)",
            Self::Genoa => "AMD ARK (Genoa)",
            Self::Turin => "AMD ARK (Turin)",
        }
    }

    /// AMD's ARK and ASK for this line, PEM, as built into the `sev` crate.
    fn builtin_pem(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Self::Milan => (builtin::milan::ARK, builtin::milan::ASK),
            Self::Genoa => (builtin::genoa::ARK, builtin::genoa::ASK),
            Self::Turin => (builtin::turin::ARK, builtin::turin::ASK),
        }
    }

    fn builtin(self) -> Option<(Certificate, Certificate)> {
        let (ark, ask) = self.builtin_pem();
        Some((
            Certificate::from_pem(ark).ok()?,
            Certificate::from_pem(ask).ok()?,
        ))
    }

    /// SHA-256 of the built-in ARK's DER encoding, lowercase hex.
    pub fn ark_sha256(self) -> String {
        self.builtin()
            .and_then(|(ark, _)| ark.to_der().ok())
            .map(|der| hex(&Sha256::digest(der)))
            .unwrap_or_default()
    }
}

/// The security version numbers of the firmware components in a TCB
/// version (a report's `reported_tcb`, a VCEK's TCB extensions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpTcb {
    /// The PSP bootloader's SVN.
    pub bootloader: u8,
    /// The PSP OS's SVN.
    pub tee: u8,
    /// The SNP firmware's SVN.
    pub snp: u8,
    /// The lowest microcode patch level of all cores.
    pub microcode: u8,
    /// The FMC firmware's SVN (Turin and later; `None` before).
    pub fmc: Option<u8>,
}

impl SnpTcb {
    fn from_sev(t: &sev::firmware::host::TcbVersion) -> Self {
        Self {
            bootloader: t.bootloader,
            tee: t.tee,
            snp: t.snp,
            microcode: t.microcode,
            fmc: t.fmc,
        }
    }

    /// The components of `self` below `min`'s, as `name have < want`. The
    /// FMC counts only where both have one (`min.fmc` is ignored before
    /// Turin).
    fn below(&self, min: &SnpTcb) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, have: u8, want: u8| {
            if have < want {
                out.push(format!("{name} {have} < {want}"));
            }
        };
        check("bootloader", self.bootloader, min.bootloader);
        check("tee", self.tee, min.tee);
        check("snp", self.snp, min.snp);
        check("microcode", self.microcode, min.microcode);
        if let (Some(have), Some(want)) = (self.fmc, min.fmc) {
            check("fmc", have, want);
        }
        out
    }
}

impl std::fmt::Display for SnpTcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bootloader {}, tee {}, snp {}, microcode {}",
            self.bootloader, self.tee, self.snp, self.microcode
        )?;
        if let Some(fmc) = self.fmc {
            write!(f, ", fmc {fmc}")?;
        }
        Ok(())
    }
}

/// What the caller expects of the guest. Each `None` is a step
/// `not requested`; `Default` asks for nothing beyond authenticity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SevSnpExpectations {
    /// The 64 bytes the guest put in the report (`REPORT_DATA`): the binding
    /// to the session (for nomyo, a hash over the client's nonce and the
    /// server's keys).
    pub report_data: Option<[u8; 64]>,
    /// The launch measurements accepted (`MEASUREMENT`, 48 bytes each). An
    /// empty list accepts none.
    pub measurements: Option<Vec<[u8; 48]>>,
    /// The lowest accepted `reported_tcb`, component by component.
    pub min_tcb: Option<SnpTcb>,
    /// The VMPL the report must come from (0 for the guest kernel itself).
    pub vmpl: Option<u32>,
}

/// The fields of a report, as read (lowercase hex for byte strings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SevSnpReport {
    /// The report format version.
    pub version: u32,
    /// The guest's SVN.
    pub guest_svn: u32,
    /// The guest policy (bit 19: debugging allowed).
    pub policy: u64,
    /// The VMPL the report was requested from.
    pub vmpl: u32,
    /// `vcek` or `vlek`: which key signed the report.
    pub signing_key: String,
    /// The launch measurement (48 bytes).
    pub measurement: String,
    /// The guest's 64 bytes of report data.
    pub report_data: String,
    /// The host's 32 bytes of data given at launch.
    pub host_data: String,
    /// The ID key's digest (48 bytes; zero without an ID block).
    pub id_key_digest: String,
    /// The author key's digest (48 bytes).
    pub author_key_digest: String,
    /// The chip's identifier (64 bytes; zero when masked).
    pub chip_id: String,
    /// The TCB the VCEK was derived from.
    pub reported_tcb: SnpTcb,
    /// The TCB the platform runs.
    pub current_tcb: SnpTcb,
    /// The TCB the platform has committed to (anti-rollback).
    pub committed_tcb: SnpTcb,
    /// The TCB at the guest's launch.
    pub launch_tcb: SnpTcb,
}

/// The verification document of one SEV-SNP report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SevSnpVerification {
    /// The checks, in order: `report_format`, `ark`, `ask`, `vcek`,
    /// `report_signature`, `report_version`, `debug`, `vmpl`, `vcek_tcb`,
    /// `chip_id`, `min_tcb`, `measurement`, `report_data`.
    pub steps: Vec<Step>,
    /// The product line whose ARK the chain ends in, when one does.
    pub product_line: Option<SnpProductLine>,
    /// The report's fields, when it parses (authentic only if
    /// [`passed`](Self::passed)).
    pub report: Option<SevSnpReport>,
}

impl SevSnpVerification {
    /// Whether every step passed or was not requested.
    pub fn passed(&self) -> bool {
        attest::passed(&self.steps)
    }

    /// The step named `name`, if there is one.
    pub fn step(&self, name: &str) -> Option<&Step> {
        attest::find_step(&self.steps, name)
    }
}

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

/// The steps after the signature. `authentic`: chain and signature passed;
/// when not, every judgement here is `unverified`.
fn content_steps(
    r: &AttestationReport,
    _raw: &[u8],
    vcek_der: &[u8],
    authentic: bool,
    expect: &SevSnpExpectations,
    steps: &mut Vec<Step>,
) {
    let mut push = |name: &str, status: StepStatus, detail: String| {
        steps.push(Step::judged(name, status, detail, authentic));
    };

    if REPORT_VERSIONS.contains(&r.version) {
        push(
            "report_version",
            StepStatus::Pass,
            format!("version {}", r.version),
        );
    } else {
        push(
            "report_version",
            StepStatus::Fail,
            format!("version {} is not one of 2 to 5", r.version),
        );
    }

    if r.policy.debug_allowed() {
        push(
            "debug",
            StepStatus::Fail,
            "the guest policy allows debugging (bit 19): the hypervisor can read the guest's memory".into(),
        );
    } else {
        push(
            "debug",
            StepStatus::Pass,
            "the guest policy forbids debugging".into(),
        );
    }

    match expect.vmpl {
        None => push("vmpl", StepStatus::NotRequested, format!("vmpl {}", r.vmpl)),
        Some(want) if want == r.vmpl => push("vmpl", StepStatus::Pass, format!("vmpl {}", r.vmpl)),
        Some(want) => push(
            "vmpl",
            StepStatus::Fail,
            format!("vmpl {}, expected {want}", r.vmpl),
        ),
    }

    let reported = SnpTcb::from_sev(&r.reported_tcb);
    let info = VcekInfo::parse(vcek_der);
    match &info {
        Err(e) => push(
            "vcek_tcb",
            StepStatus::Fail,
            format!("the VCEK's extensions do not parse: {e}"),
        ),
        Ok(info) => match info.tcb() {
            None => push(
                "vcek_tcb",
                StepStatus::Fail,
                "the VCEK lacks a TCB extension (bootloader, tee, snp, microcode)".into(),
            ),
            Some(tcb) if tcb == reported => push(
                "vcek_tcb",
                StepStatus::Pass,
                format!("the VCEK's TCB equals the report's reported TCB ({reported})"),
            ),
            Some(tcb) => push(
                "vcek_tcb",
                StepStatus::Fail,
                format!(
                    "the VCEK's TCB ({tcb}) differs from the report's reported TCB ({reported})"
                ),
            ),
        },
    }

    match &info {
        Ok(info) if info.is_vlek() => push(
            "chip_id",
            StepStatus::NotRequested,
            "a VLEK certifies no chip".into(),
        ),
        Ok(VcekInfo {
            hw_id: Some(id), ..
        }) => {
            if r.chip_id == [0u8; 64] {
                push(
                    "chip_id",
                    StepStatus::Fail,
                    "the report's chip id is masked, the VCEK names a chip".into(),
                );
            } else if id[..] == r.chip_id[..] {
                push(
                    "chip_id",
                    StepStatus::Pass,
                    "the VCEK's hwID equals the report's chip id".into(),
                );
            } else {
                push(
                    "chip_id",
                    StepStatus::Fail,
                    "the VCEK's hwID differs from the report's chip id".into(),
                );
            }
        }
        _ => push(
            "chip_id",
            StepStatus::Fail,
            "the VCEK has no hwID extension".into(),
        ),
    }

    match &expect.min_tcb {
        None => push(
            "min_tcb",
            StepStatus::NotRequested,
            format!("reported TCB {reported}"),
        ),
        Some(min) => {
            let below = reported.below(min);
            if below.is_empty() {
                push(
                    "min_tcb",
                    StepStatus::Pass,
                    format!("reported TCB {reported} is at least {min}"),
                );
            } else {
                push(
                    "min_tcb",
                    StepStatus::Fail,
                    format!("reported TCB below the minimum: {}", below.join(", ")),
                );
            }
        }
    }

    let m = hex(&r.measurement);
    match &expect.measurements {
        None => push(
            "measurement",
            StepStatus::NotRequested,
            format!("measurement {m}"),
        ),
        Some(list) if list.iter().any(|a| a[..] == r.measurement[..]) => push(
            "measurement",
            StepStatus::Pass,
            format!("measurement {m} is in the allowlist"),
        ),
        Some(list) => push(
            "measurement",
            StepStatus::Fail,
            format!(
                "measurement {m} is not in the allowlist ({} entries)",
                list.len()
            ),
        ),
    }

    match &expect.report_data {
        None => push(
            "report_data",
            StepStatus::NotRequested,
            format!("report data {}", hex(&r.report_data)),
        ),
        Some(want) if want[..] == r.report_data[..] => push(
            "report_data",
            StepStatus::Pass,
            "the report data equals the expected binding".into(),
        ),
        Some(want) => push(
            "report_data",
            StepStatus::Fail,
            format!(
                "the report data {} differs from the expected binding {}",
                hex(&r.report_data),
                hex(want)
            ),
        ),
    }
}

fn report_fields(r: &AttestationReport) -> SevSnpReport {
    SevSnpReport {
        version: r.version,
        guest_svn: r.guest_svn,
        policy: u64::from(r.policy),
        vmpl: r.vmpl,
        signing_key: match r.key_info.signing_key() {
            0 => "vcek".into(),
            1 => "vlek".into(),
            n => format!("unknown ({n})"),
        },
        measurement: hex(&r.measurement),
        report_data: hex(&r.report_data),
        host_data: hex(&r.host_data),
        id_key_digest: hex(&r.id_key_digest),
        author_key_digest: hex(&r.author_key_digest),
        chip_id: hex(&r.chip_id),
        reported_tcb: SnpTcb::from_sev(&r.reported_tcb),
        current_tcb: SnpTcb::from_sev(&r.current_tcb),
        committed_tcb: SnpTcb::from_sev(&r.committed_tcb),
        launch_tcb: SnpTcb::from_sev(&r.launch_tcb),
    }
}

/// The first line of an error message, at most 200 characters.
pub(crate) fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

/// Reads the VCEK extensions of `der`; for the fuzz targets (bounded, never
/// panics). Returns the TCB and whether a 64-byte hwID is present.
#[doc(hidden)]
pub fn fuzz_vcek_extensions(der: &[u8]) -> Result<(Option<SnpTcb>, bool), String> {
    VcekInfo::parse(der).map(|i| (i.tcb(), i.hw_id.is_some()))
}
