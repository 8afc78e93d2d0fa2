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
use sev::certs::snp::{builtin, Certificate, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use sha2::{Digest, Sha256};
use x509_cert::der::asn1::{Ia5String, OctetString};
use x509_cert::der::Decode;

use super::{all_passed, hex, Step, StepStatus};

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
        all_passed(&self.steps)
    }

    /// The step named `name`, if there is one.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
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

    // ARK -> ASK -> VCEK.
    let (chain_ok, product_line, vcek) = verify_chain(vcek_der, chain_pem, &mut steps);

    // The report's signature, over its bytes as received.
    let signed = match (&parsed, &vcek) {
        (Some(r), Some(vcek)) if chain_ok => match verify_report_signature(report, r, vcek) {
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

/// The steps `ark`, `ask`, `vcek`. Returns whether all three passed, the
/// product line of the ARK, and the parsed VCEK.
fn verify_chain(
    vcek_der: &[u8],
    chain_pem: Option<&[u8]>,
    steps: &mut Vec<Step>,
) -> (bool, Option<SnpProductLine>, Option<Certificate>) {
    let vcek = Certificate::from_der(vcek_der).ok();
    let vcek_kind = VcekInfo::parse(vcek_der)
        .map(|i| i.kind())
        .unwrap_or("VCEK");

    match chain_pem {
        Some(pem) => {
            let (ask, ark) = match split_chain(pem) {
                Ok(pair) => pair,
                Err(detail) => {
                    steps.push(Step::new("ark", StepStatus::Fail, detail));
                    steps.push(Step::new("ask", StepStatus::Unverified, "no ARK"));
                    steps.push(Step::new("vcek", StepStatus::Unverified, "no ASK"));
                    return (false, None, vcek);
                }
            };
            let ark_der = ark.to_der().unwrap_or_default();
            let line = SnpProductLine::ALL.into_iter().find(|line| {
                line.builtin()
                    .and_then(|(b, _)| b.to_der().ok())
                    .is_some_and(|b| b == ark_der)
            });
            let ark_ok = match line {
                Some(line) if (&ark, &ark).verify().is_ok() => {
                    steps.push(Step::new(
                        "ark",
                        StepStatus::Pass,
                        format!("the chain's ARK is AMD's built-in {} ARK", line.name()),
                    ));
                    true
                }
                Some(line) => {
                    steps.push(Step::new(
                        "ark",
                        StepStatus::Fail,
                        format!("the {} ARK's self-signature does not verify", line.name()),
                    ));
                    false
                }
                None => {
                    steps.push(Step::new(
                        "ark",
                        StepStatus::Fail,
                        format!(
                            "the chain's ARK (sha256 {}) is none of the built-in ARKs (Milan, Genoa, Turin)",
                            hex(&Sha256::digest(&ark_der))
                        ),
                    ));
                    false
                }
            };
            let ask_ok = if !ark_ok {
                steps.push(Step::new("ask", StepStatus::Unverified, "no trusted ARK"));
                false
            } else {
                match (&ark, &ask).verify() {
                    Ok(()) => {
                        steps.push(Step::new(
                            "ask",
                            StepStatus::Pass,
                            "the chain's ASK/ASVK is signed by the ARK (RSA-PSS SHA-384)",
                        ));
                        true
                    }
                    Err(e) => {
                        steps.push(Step::new(
                            "ask",
                            StepStatus::Fail,
                            format!(
                                "the ARK does not sign the chain's ASK/ASVK: {}",
                                one_line(&e.to_string())
                            ),
                        ));
                        false
                    }
                }
            };
            let vcek_ok = match (&vcek, ask_ok) {
                (None, _) => {
                    steps.push(Step::new(
                        "vcek",
                        StepStatus::Fail,
                        "the VCEK certificate is not DER X.509",
                    ));
                    false
                }
                (Some(_), false) => {
                    steps.push(Step::new("vcek", StepStatus::Unverified, "no trusted ASK"));
                    false
                }
                (Some(v), true) => match (&ask, v).verify() {
                    Ok(()) => {
                        steps.push(Step::new(
                            "vcek",
                            StepStatus::Pass,
                            format!("the {vcek_kind} is signed by the chain's ASK/ASVK"),
                        ));
                        true
                    }
                    Err(_) => {
                        steps.push(Step::new(
                            "vcek",
                            StepStatus::Fail,
                            format!("the chain's ASK/ASVK does not sign the {vcek_kind}"),
                        ));
                        false
                    }
                },
            };
            (ark_ok && ask_ok && vcek_ok, line.filter(|_| ark_ok), vcek)
        }
        None => {
            steps.push(Step::new(
                "ark",
                StepStatus::Pass,
                "no chain given: AMD's built-in ARKs (Milan, Genoa, Turin)",
            ));
            let found = SnpProductLine::ALL.into_iter().find_map(|line| {
                let (ark, ask) = line.builtin()?;
                let v = vcek.as_ref()?;
                ((&ark, &ark).verify().is_ok()
                    && (&ark, &ask).verify().is_ok()
                    && (&ask, v).verify().is_ok())
                .then_some(line)
            });
            match (found, &vcek) {
                (Some(line), _) => {
                    steps.push(Step::new(
                        "ask",
                        StepStatus::Pass,
                        format!("AMD's built-in {} ASK, signed by its ARK", line.name()),
                    ));
                    steps.push(Step::new(
                        "vcek",
                        StepStatus::Pass,
                        format!("the {vcek_kind} is signed by the {} ASK", line.name()),
                    ));
                    (true, Some(line), vcek)
                }
                (None, None) => {
                    steps.push(Step::new("ask", StepStatus::Pass, "AMD's built-in ASKs"));
                    steps.push(Step::new(
                        "vcek",
                        StepStatus::Fail,
                        "the VCEK certificate is not DER X.509",
                    ));
                    (false, None, vcek)
                }
                (None, Some(_)) => {
                    steps.push(Step::new("ask", StepStatus::Pass, "AMD's built-in ASKs"));
                    steps.push(Step::new(
                        "vcek",
                        StepStatus::Fail,
                        format!(
                            "none of the built-in ASKs (Milan, Genoa, Turin) signs the {vcek_kind} (a VLEK needs its ASVK in the chain)"
                        ),
                    ));
                    (false, None, vcek)
                }
            }
        }
    }
}

/// The ASK (or ASVK) and the ARK of a PEM chain, in that order.
fn split_chain(pem: &[u8]) -> Result<(Certificate, Certificate), String> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, BEGIN) {
        let after = &rest[start..];
        let Some(end) = find(after, END) else {
            return Err("the chain has a certificate without an END line".into());
        };
        let block = &after[..end + END.len()];
        if certs.len() == 2 {
            return Err("the chain has more than two certificates (ASK, ARK)".into());
        }
        certs.push(
            Certificate::from_pem(block)
                .map_err(|e| format!("a chain certificate: {}", one_line(&e.to_string())))?,
        );
        rest = &after[end + END.len()..];
    }
    let mut it = certs.into_iter();
    match (it.next(), it.next()) {
        (Some(ask), Some(ark)) => Ok((ask, ark)),
        _ => Err("the chain must hold two PEM certificates, ASK then ARK".into()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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

/// What a VCEK/VLEK certificate says beyond its key: AMD's extensions
/// (OID arc 1.3.6.1.4.1.3704.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VcekInfo {
    pub(crate) product_name: Option<String>,
    pub(crate) bootloader: Option<u8>,
    pub(crate) tee: Option<u8>,
    pub(crate) snp: Option<u8>,
    pub(crate) microcode: Option<u8>,
    pub(crate) fmc: Option<u8>,
    pub(crate) hw_id: Option<Vec<u8>>,
    pub(crate) subject_vlek: bool,
}

impl VcekInfo {
    /// Reads the extensions of a DER certificate. Errors for a certificate
    /// that does not parse or an AMD extension of the wrong shape.
    pub(crate) fn parse(der: &[u8]) -> Result<Self, String> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| format!("not DER X.509: {}", one_line(&e.to_string())))?;
        let mut info = VcekInfo {
            subject_vlek: cert
                .tbs_certificate
                .subject
                .to_string()
                .contains("SEV-VLEK"),
            ..VcekInfo::default()
        };
        let int = |v: &[u8], what: &str| -> Result<Option<u8>, String> {
            u8::from_der(v)
                .map(Some)
                .map_err(|_| format!("the {what} extension is not an INTEGER 0..255"))
        };
        for ext in cert.tbs_certificate.extensions.iter().flatten() {
            let v = ext.extn_value.as_bytes();
            match ext.extn_id.to_string().as_str() {
                "1.3.6.1.4.1.3704.1.2" => {
                    info.product_name = Ia5String::from_der(v)
                        .map(|s| s.to_string())
                        .ok()
                        .or_else(|| std::str::from_utf8(v).ok().map(str::to_owned));
                }
                "1.3.6.1.4.1.3704.1.3.1" => info.bootloader = int(v, "blSPL")?,
                "1.3.6.1.4.1.3704.1.3.2" => info.tee = int(v, "teeSPL")?,
                "1.3.6.1.4.1.3704.1.3.3" => info.snp = int(v, "snpSPL")?,
                "1.3.6.1.4.1.3704.1.3.8" => info.microcode = int(v, "ucodeSPL")?,
                "1.3.6.1.4.1.3704.1.3.9" => info.fmc = int(v, "fmcSPL")?,
                "1.3.6.1.4.1.3704.1.4" => {
                    // The 64-byte chip id, raw (AMD's VCEKs) or wrapped in
                    // an OCTET STRING.
                    info.hw_id = if v.len() == 64 {
                        Some(v.to_vec())
                    } else {
                        match OctetString::from_der(v) {
                            Ok(o) if o.as_bytes().len() == 64 => Some(o.as_bytes().to_vec()),
                            _ => return Err("the hwID extension is not 64 bytes".into()),
                        }
                    };
                }
                _ => {}
            }
        }
        Ok(info)
    }

    fn tcb(&self) -> Option<SnpTcb> {
        Some(SnpTcb {
            bootloader: self.bootloader?,
            tee: self.tee?,
            snp: self.snp?,
            microcode: self.microcode?,
            fmc: self.fmc,
        })
    }

    fn is_vlek(&self) -> bool {
        self.subject_vlek && self.hw_id.is_none()
    }

    fn kind(&self) -> &'static str {
        if self.is_vlek() {
            "VLEK"
        } else {
            "VCEK"
        }
    }
}

/// The certificates of an SEV-SNP certificate table: the layout of the GHCB
/// extended guest request, which Linux's configfs-tsm returns as `auxblob`
/// for the `sev_guest` provider (PROTOCOL.md §15.1).
///
/// The table is a list of 24-byte entries (a GUID naming the certificate,
/// its offset from the table's start and its length, both `u32` little
/// endian) ended by an all-zero entry; the certificates (DER) follow. GUIDs
/// are accepted in RFC 4122 byte order and in the mixed-endian (UEFI)
/// order. Entries of other kinds (the CRL, unknown GUIDs) are skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnpCertTable {
    /// The ARK (DER).
    pub ark: Option<Vec<u8>>,
    /// The ASK, or for a VLEK the ASVK (DER).
    pub ask: Option<Vec<u8>>,
    /// The VCEK (DER).
    pub vcek: Option<Vec<u8>>,
    /// The VLEK (DER).
    pub vlek: Option<Vec<u8>>,
}

/// The most entries a table may have before its terminator.
const CERT_TABLE_MAX_ENTRIES: usize = 64;

impl SnpCertTable {
    /// Reads a certificate table. Errors (one line) for a table without its
    /// terminating entry, an entry pointing outside the table, or a kind of
    /// certificate given twice; never panics.
    pub fn parse(table: &[u8]) -> Result<Self, String> {
        const ARK: &str = "c0b406a4a803495297433fb6014cd0ae";
        const ASK: &str = "4ab7b379bbac4fe4a02f05aef327c782";
        const VCEK: &str = "63da758de6644564adc5f4b93be8accd";
        const VLEK: &str = "a8074bc2a25a483eaae639c045a0b8a1";
        let mut out = Self::default();
        for index in 0..=CERT_TABLE_MAX_ENTRIES {
            let entry = table.get(index * 24..index * 24 + 24).ok_or_else(|| {
                "the certificate table ends before its terminating entry".to_owned()
            })?;
            if entry.iter().all(|&b| b == 0) {
                return Ok(out);
            }
            if index == CERT_TABLE_MAX_ENTRIES {
                break;
            }
            let guid = &entry[..16];
            let word = |at: usize| {
                u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]])
            };
            let (offset, length) = (word(16) as usize, word(20) as usize);
            let data = offset
                .checked_add(length)
                .and_then(|end| table.get(offset..end))
                .ok_or_else(|| {
                    format!("certificate table entry {index} points outside the table")
                })?;
            let slot = if guid_is(guid, ARK) {
                &mut out.ark
            } else if guid_is(guid, ASK) {
                &mut out.ask
            } else if guid_is(guid, VCEK) {
                &mut out.vcek
            } else if guid_is(guid, VLEK) {
                &mut out.vlek
            } else {
                continue;
            };
            if slot.is_some() {
                return Err(format!(
                    "certificate table entry {index} repeats a kind of certificate"
                ));
            }
            *slot = Some(data.to_vec());
        }
        Err(format!(
            "the certificate table has more than {CERT_TABLE_MAX_ENTRIES} entries"
        ))
    }

    /// The key that signs reports: the VLEK when there is one, else the
    /// VCEK. The `vcek_der` of [`verify_sev_snp`].
    pub fn endorsement_key(&self) -> Option<&[u8]> {
        self.vlek.as_deref().or(self.vcek.as_deref())
    }

    /// The ASK (ASVK) then the ARK, PEM: the `chain_pem` of
    /// [`verify_sev_snp`]. `None` unless the table holds both.
    pub fn chain_pem(&self) -> Option<Vec<u8>> {
        let (ask, ark) = (self.ask.as_deref()?, self.ark.as_deref()?);
        let mut pem = String::new();
        for der in [ask, ark] {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        Some(pem.into_bytes())
    }
}

/// Whether `guid` (16 bytes) is `hex32` in RFC 4122 byte order or in the
/// mixed-endian order (first three fields little endian).
fn guid_is(guid: &[u8], hex32: &str) -> bool {
    let Ok(rfc) = ::hex::decode(hex32) else {
        return false;
    };
    if guid == rfc.as_slice() {
        return true;
    }
    let mut mixed = rfc.clone();
    mixed[0..4].reverse();
    mixed[4..6].reverse();
    mixed[6..8].reverse();
    guid == mixed.as_slice()
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
