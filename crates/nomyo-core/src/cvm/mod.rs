//! Confidential-VM attestation: AMD SEV-SNP reports and Intel TDX quotes,
//! verified offline in pure Rust (no OpenSSL, no network, no hardware).
//!
//! - [`verify_sev_snp`] checks an SEV-SNP attestation report against its
//!   VCEK (or VLEK) certificate and AMD's certificate chain, rooted in the
//!   ARKs built into this crate (Milan, Genoa, Turin).
//! - [`verify_tdx`] checks a TDX quote (v4 or v5) with its collateral (TCB
//!   info, QE identity, CRLs and their issuer chains) as of a given time,
//!   rooted in Intel's SGX Root CA built into this crate.
//!
//! Both return a verification document: an ordered list of named
//! [`Step`]s, each [`StepStatus::Pass`], [`StepStatus::Fail`],
//! [`StepStatus::Unverified`] (an earlier step failed, so this one could
//! not be judged) or [`StepStatus::NotRequested`] (no expectation was
//! given), plus the fields read from the evidence in lowercase hex.
//! Neither function returns an error or panics on bad input: evidence that
//! does not parse is a failed step. The evidence's fields are reported as
//! read; they are trustworthy only when `passed()` is true.
//!
//! Authenticity (certificate chain, signatures, collateral, TCB status,
//! debug off) is always checked. What the caller expects of the guest (a
//! measurement allowlist, the report data binding, a minimum TCB) is given
//! as [`SevSnpExpectations`] / [`TdxExpectations`]; each expectation left
//! out is a step `not requested`.
//!
//! ```no_run
//! use nomyo_core::cvm::{verify_sev_snp, SevSnpExpectations};
//! # let (report, vcek_der, report_data) = (vec![0u8; 1184], vec![], [0u8; 64]);
//! let expect = SevSnpExpectations {
//!     report_data: Some(report_data),
//!     ..SevSnpExpectations::default()
//! };
//! let v = verify_sev_snp(&report, &vcek_der, None, &expect);
//! for step in &v.steps {
//!     println!("{}: {} ({})", step.name, step.status, step.detail);
//! }
//! assert!(v.passed());
//! ```

use serde::Serialize;

pub mod sev_snp;
pub mod tdx;

pub use sev_snp::{
    verify_sev_snp, SevSnpEndorsement, SevSnpExpectations, SevSnpReport, SevSnpVerification,
    SnpCertTable, SnpProductLine, SnpTcb, SEV_SNP_REPORT_LEN, SEV_SNP_SIGNED_LEN,
};
pub use tdx::{
    verify_tdx, verify_tdx_quote, TdReport, TdxCollateral, TdxExpectations, TdxMeasurement,
    TdxTcbStatus, TdxVerification, INTEL_SGX_ROOT_CA_SHA256,
};

pub use crate::attest::{Step, StepStatus};

/// Input that cannot be used at all (collateral that does not parse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CvmError {
    /// The TDX collateral is not the JSON layout [`TdxCollateral::from_json`]
    /// reads.
    #[error("TDX collateral: {0}")]
    Collateral(String),
}

/// A certificate this crate trusts as the root of an attestation chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrustRoot {
    /// What it is: `AMD ARK (Milan)`, `Intel SGX Root CA`, ...
    pub name: &'static str,
    /// SHA-256 of its DER encoding, lowercase hex.
    pub sha256: String,
}

/// The roots built into this crate: AMD's ARKs for Milan, Genoa and Turin
/// (from the `sev` crate's built-in certificates) and Intel's SGX Root CA
/// (which `dcap-qvl` verifies TDX quotes to).
pub fn trust_roots() -> Vec<TrustRoot> {
    let mut roots: Vec<TrustRoot> = SnpProductLine::ALL
        .iter()
        .map(|line| TrustRoot {
            name: line.ark_name(),
            sha256: line.ark_sha256(),
        })
        .collect();
    roots.push(TrustRoot {
        name: "Intel SGX Root CA",
        sha256: INTEL_SGX_ROOT_CA_SHA256.to_owned(),
    });
    roots
}

/// Lowercase hex, the form every digest and identifier is reported in.
/// The `report_data` step of either kind: the report's data against the
/// binding the caller expects, when it gives one.
pub(crate) fn report_data_step(
    expected: Option<&[u8; 64]>,
    actual: &[u8; 64],
) -> (StepStatus, String) {
    match expected {
        None => (
            StepStatus::NotRequested,
            format!("report data {}", hex(actual)),
        ),
        Some(want) if want == actual => (
            StepStatus::Pass,
            "the report data equals the expected binding".into(),
        ),
        Some(want) => (
            StepStatus::Fail,
            format!(
                "the report data {} differs from the expected binding {}",
                hex(actual),
                hex(want)
            ),
        ),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    ::hex::encode(bytes)
}
