//! Intel TDX quotes: [`verify_tdx`].
//!
//! A TDX quote (DCAP quote v4 or v5, TEE type 0x81) carries the TD's report
//! (MRTD, RTMR0-3, report data, TD attributes, ...) signed by the TD
//! Quoting Enclave's attestation key; the QE's own report, signed by the
//! platform's PCK, vouches for that key; the PCK certificate chain (in the
//! quote) leads to Intel's SGX Root CA. The collateral, fetched separately
//! from Intel's PCS or a PCCS, says which platform TCB levels are current
//! (TCB info), which QE is genuine (QE identity) and which certificates are
//! revoked (CRLs); it is signed by Intel too and expires.
//!
//! The cryptographic checks and the TCB evaluation are `dcap-qvl`'s
//! (RustCrypto backend, Intel's production root built in); this module
//! names the outcome, checks the collateral's dates itself, and applies the
//! caller's expectations.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Step;
use crate::attest;

mod collateral;
mod rfc3339;
mod verify;

pub use collateral::{fuzz_collateral, TdxCollateral};
pub use rfc3339::{fuzz_rfc3339, parse_rfc3339};
pub use verify::{verify_tdx, verify_tdx_quote};

/// SHA-256 of the DER of Intel's SGX Root CA (`CN=Intel SGX Root CA`,
/// valid 2018-05-21 to 2049-12-31), the root every TDX and SGX quote is
/// verified to: the certificate `dcap-qvl` builds in.
pub const INTEL_SGX_ROOT_CA_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

/// A TCB status, as Intel's TCB info names it. The platform's and the QE's
/// statuses converge into one (Intel QVL's rules).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TdxTcbStatus {
    /// Patched and configured as Intel recommends.
    UpToDate,
    /// Patched; software mitigations are needed (see the advisories).
    SWHardeningNeeded,
    /// Patched; the platform's configuration needs changes.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// Missing security patches.
    OutOfDate,
    /// Missing patches and configuration changes.
    OutOfDateConfigurationNeeded,
    /// TDX 1.5: launched out of date, current since a TD-preserving update.
    TDRelaunchAdvised,
    /// The same, with configuration needed.
    TDRelaunchAdvisedConfigurationNeeded,
    /// The platform's keys are compromised (always refused).
    Revoked,
    /// The platform's TCB is below every level Intel's TCB info lists (older
    /// than the oldest `OutOfDate` level): authentic, but at least as stale
    /// as `OutOfDate`. Named after Intel QVL's `STATUS_TCB_NOT_SUPPORTED`.
    TcbNotSupported,
}

impl TdxTcbStatus {
    /// Every status, in the order above.
    pub const ALL: [TdxTcbStatus; 10] = [
        Self::UpToDate,
        Self::SWHardeningNeeded,
        Self::ConfigurationNeeded,
        Self::ConfigurationAndSWHardeningNeeded,
        Self::OutOfDate,
        Self::OutOfDateConfigurationNeeded,
        Self::TDRelaunchAdvised,
        Self::TDRelaunchAdvisedConfigurationNeeded,
        Self::Revoked,
        Self::TcbNotSupported,
    ];

    /// The name Intel's TCB info uses (`UpToDate`, `OutOfDate`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::UpToDate => "UpToDate",
            Self::SWHardeningNeeded => "SWHardeningNeeded",
            Self::ConfigurationNeeded => "ConfigurationNeeded",
            Self::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            Self::OutOfDate => "OutOfDate",
            Self::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            Self::TDRelaunchAdvised => "TDRelaunchAdvised",
            Self::TDRelaunchAdvisedConfigurationNeeded => "TDRelaunchAdvisedConfigurationNeeded",
            Self::Revoked => "Revoked",
            Self::TcbNotSupported => "TcbNotSupported",
        }
    }
}

impl FromStr for TdxTcbStatus {
    type Err = String;

    /// Reads a name as [`name`](Self::name) writes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| format!("unknown TCB status {s:?}"))
    }
}

impl std::fmt::Display for TdxTcbStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One accepted set of TD measurements: MRTD and, where given, RTMRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxMeasurement {
    /// The TD's build-time measurement (firmware and initial memory).
    pub mrtd: [u8; 48],
    /// RTMR0 to RTMR3 (firmware configuration, boot loader and kernel,
    /// kernel command line and initrd, the guest's own); `None` accepts any
    /// value.
    pub rtmr: [Option<[u8; 48]>; 4],
}

impl TdxMeasurement {
    fn matches(&self, td: &dcap_qvl::quote::TDReport10) -> bool {
        let rtmrs = [&td.rt_mr0, &td.rt_mr1, &td.rt_mr2, &td.rt_mr3];
        self.mrtd == td.mr_td
            && self
                .rtmr
                .iter()
                .zip(rtmrs)
                .all(|(want, have)| want.as_ref().is_none_or(|w| w == have))
    }
}

/// What the caller expects of the TD. Each `None` is a step
/// `not requested`; `Default` asks for nothing beyond authenticity and an
/// `UpToDate` platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdxExpectations {
    /// The 64 bytes the TD put in its report (`REPORTDATA`): the binding.
    pub report_data: Option<[u8; 64]>,
    /// The accepted measurement sets; the TD passes if it matches one. An
    /// empty list accepts none.
    pub measurements: Option<Vec<TdxMeasurement>>,
    /// The TCB statuses accepted (`Revoked` never is). Default: `UpToDate`.
    pub accepted_tcb_statuses: Vec<TdxTcbStatus>,
}

impl Default for TdxExpectations {
    fn default() -> Self {
        Self {
            report_data: None,
            measurements: None,
            accepted_tcb_statuses: vec![TdxTcbStatus::UpToDate],
        }
    }
}

/// The TD report's fields, as read (lowercase hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdReport {
    /// The quote format version (4 or 5).
    pub quote_version: u16,
    /// The TDX module's TCB SVN.
    pub tee_tcb_svn: String,
    /// The TDX module's measurement.
    pub mr_seam: String,
    /// The TD's attributes (8 bytes; the first byte is TUD, debug).
    pub td_attributes: String,
    /// The TD's extended features.
    pub xfam: String,
    /// The TD's build-time measurement.
    pub mrtd: String,
    /// The host's configuration id.
    pub mr_config_id: String,
    /// The TD owner's id.
    pub mr_owner: String,
    /// The owner's configuration.
    pub mr_owner_config: String,
    /// RTMR0 to RTMR3.
    pub rtmr: [String; 4],
    /// The TD's 64 bytes of report data.
    pub report_data: String,
}

/// The verification document of one TDX quote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxVerification {
    /// The checks, in order: `quote_format`, `collateral_validity`,
    /// `quote_signature`, `tcb_status`, `debug`, `measurement`,
    /// `report_data`.
    pub steps: Vec<Step>,
    /// The converged TCB status, when the quote verified.
    pub tcb_status: Option<TdxTcbStatus>,
    /// Intel's security advisories that apply to the platform.
    pub advisory_ids: Vec<String>,
    /// The TD report, when the quote parses (authentic only if
    /// [`passed`](Self::passed)).
    pub td: Option<TdReport>,
}

impl TdxVerification {
    /// Whether every step passed or was not requested.
    pub fn passed(&self) -> bool {
        attest::passed(&self.steps)
    }

    /// The step named `name`, if there is one.
    pub fn step(&self, name: &str) -> Option<&Step> {
        attest::find_step(&self.steps, name)
    }
}
