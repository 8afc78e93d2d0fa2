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
use sha2::{Digest, Sha256};

use super::{hex, Step};
use crate::attest;

mod certs;
mod chain;
mod content;
mod verify;

pub use certs::SnpCertTable;
use certs::VcekInfo;
pub use verify::{verify_sev_snp, SevSnpEndorsement};

/// The length of an SEV-SNP attestation report.
pub const SEV_SNP_REPORT_LEN: usize = 0x4A0;
/// The length of the signed part of a report (the signature follows it).
pub const SEV_SNP_SIGNED_LEN: usize = 0x2A0;

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
