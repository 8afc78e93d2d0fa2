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

use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::QuoteCollateralV3;
use serde::{Deserialize, Serialize};
use x509_cert::der::Decode;

use super::sev_snp::one_line;
use super::{hex, CvmError, Step, StepStatus};
use crate::attest;

/// SHA-256 of the DER of Intel's SGX Root CA (`CN=Intel SGX Root CA`,
/// valid 2018-05-21 to 2049-12-31), the root every TDX and SGX quote is
/// verified to: the certificate `dcap-qvl` builds in.
pub const INTEL_SGX_ROOT_CA_SHA256: &str =
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

/// The TEE type of a TDX quote.
const TEE_TYPE_TDX: u32 = 0x81;

/// dcap-qvl's error when the platform's TCB (CPU SVN, PCE SVN, TDX module
/// SVN) is below every level of the TCB info.
const NO_MATCHING_TCB_LEVEL: &str = "No matching TCB level found";

/// Checks that what follows the quote's declared end (header, body, auth
/// data length, auth data) is zero padding: TD guests read quotes into
/// fixed-size buffers.
fn trailing(raw: &[u8], q: &Quote) -> Result<(), String> {
    let at = q.signed_length();
    let len = raw
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| "the quote ends inside its auth data length".to_owned())?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| (at + 4).checked_add(l))
        .filter(|&end| end <= raw.len())
        .ok_or_else(|| "the quote is shorter than its auth data length".to_owned())?;
    if raw[end..].iter().any(|&b| b != 0) {
        return Err(format!(
            "{} bytes after the quote's end ({end}) are not zero padding",
            raw.len() - end
        ));
    }
    Ok(())
}

/// The collateral of a quote: TCB info, QE identity, the PCK and root CRLs
/// and their issuer chains, as fetched from Intel's PCS or a PCCS.
#[derive(Clone, Debug)]
pub struct TdxCollateral {
    inner: QuoteCollateralV3,
}

impl TdxCollateral {
    /// Reads the JSON layout `dcap-qvl` uses (and its sample files): an
    /// object with `pck_crl_issuer_chain`, `root_ca_crl` (hex DER),
    /// `pck_crl` (hex DER), `tcb_info_issuer_chain` (PEM), `tcb_info` (the
    /// signed JSON text), `tcb_info_signature` (hex), `qe_identity_issuer_chain`,
    /// `qe_identity`, `qe_identity_signature`, and optionally
    /// `pck_certificate_chain`.
    pub fn from_json(json: &[u8]) -> Result<Self, CvmError> {
        serde_json::from_slice::<QuoteCollateralV3>(json)
            .map(|inner| Self { inner })
            .map_err(|e| CvmError::Collateral(one_line(&e.to_string())))
    }

    /// The span of time in which every dated part of the collateral is
    /// current, as unix seconds `(not_before, not_after)`: the latest
    /// `issueDate` / `thisUpdate` and the earliest `nextUpdate` of the TCB
    /// info, the QE identity and both CRLs. An error names the part whose
    /// date does not parse.
    pub fn validity(&self) -> Result<(u64, u64), String> {
        let c = &self.inner;
        let mut not_before = 0u64;
        let mut not_after = u64::MAX;
        for (what, json) in [("TCB info", &c.tcb_info), ("QE identity", &c.qe_identity)] {
            let (issue, next) = json_dates(json).map_err(|e| format!("{what}: {e}"))?;
            not_before = not_before.max(issue);
            not_after = not_after.min(next);
        }
        for (what, der) in [("root CA CRL", &c.root_ca_crl), ("PCK CRL", &c.pck_crl)] {
            let crl = x509_cert::crl::CertificateList::from_der(der)
                .map_err(|_| format!("{what}: not a DER CRL"))?;
            let this = crl.tbs_cert_list.this_update.to_unix_duration().as_secs();
            not_before = not_before.max(this);
            if let Some(next) = crl.tbs_cert_list.next_update {
                not_after = not_after.min(next.to_unix_duration().as_secs());
            }
        }
        Ok((not_before, not_after))
    }
}

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

/// Verifies a TDX quote with its collateral as of `at_unix` (seconds since
/// the epoch; the wall clock for a live check, a fixed time to re-check old
/// evidence).
///
/// Steps: `quote_format` (a DCAP v4/v5 quote of TEE type TDX),
/// `collateral_validity` (`at_unix` within [`TdxCollateral::validity`]),
/// `quote_signature` (dcap-qvl: the quote's signature by the QE's
/// attestation key, the QE report's by the PCK, the PCK chain to Intel's SGX
/// Root CA, the CRLs, the signatures on TCB info and QE identity, the QE's
/// identity, all as of `at_unix`), `tcb_status` (the platform's converged
/// status is one `expect` accepts), `debug` (TD_ATTRIBUTES' TUD byte is
/// zero: not under debug), `measurement`, `report_data`.
///
/// Never panics and returns no error: what is wrong is a failed step.
pub fn verify_tdx(
    quote: &[u8],
    collateral: &TdxCollateral,
    at_unix: u64,
    expect: &TdxExpectations,
) -> TdxVerification {
    verify_tdx_quote(quote, Some(collateral), at_unix, expect)
}

/// [`verify_tdx`] when the collateral may be missing (a live check whose
/// caller has none: this crate fetches nothing). Without collateral,
/// `collateral_validity` and `quote_signature` are `unverified`, and the
/// later steps are judged on the quote's fields as read (each `unverified`,
/// with [`Step::as_read`](crate::attest::Step::as_read)): the evidence never
/// passes, but an operator sees whether its binding and measurements fit.
pub fn verify_tdx_quote(
    quote: &[u8],
    collateral: Option<&TdxCollateral>,
    at_unix: u64,
    expect: &TdxExpectations,
) -> TdxVerification {
    let mut steps = Vec::new();

    let parsed = match Quote::parse(quote) {
        Ok(q) if q.header.tee_type != TEE_TYPE_TDX => {
            steps.push(Step::new(
                "quote_format",
                StepStatus::Fail,
                format!(
                    "TEE type {:#x} (quote version {}), not TDX",
                    q.header.tee_type, q.header.version
                ),
            ));
            None
        }
        Ok(q) => match (q.report.as_td10(), trailing(quote, &q)) {
            (Some(_), Err(detail)) => {
                steps.push(Step::new("quote_format", StepStatus::Fail, detail));
                None
            }
            (Some(_), Ok(())) => {
                steps.push(Step::new(
                    "quote_format",
                    StepStatus::Pass,
                    format!("TDX quote version {}", q.header.version),
                ));
                Some(q)
            }
            (None, _) => {
                steps.push(Step::new(
                    "quote_format",
                    StepStatus::Fail,
                    "the quote carries no TD report",
                ));
                None
            }
        },
        Err(e) => {
            steps.push(Step::new(
                "quote_format",
                StepStatus::Fail,
                format!("does not parse: {}", one_line(&e.to_string())),
            ));
            None
        }
    };

    let window_ok = match collateral.map(TdxCollateral::validity) {
        None => {
            steps.push(Step::new(
                "collateral_validity",
                StepStatus::Unverified,
                "no collateral given (TCB info, QE identity, CRLs from Intel's PCS or a PCCS)",
            ));
            false
        }
        Some(Ok((from, until))) if from <= at_unix && at_unix <= until => {
            steps.push(Step::new(
                "collateral_validity",
                StepStatus::Pass,
                format!("current from {from} to {until} (unix seconds), checked at {at_unix}"),
            ));
            true
        }
        Some(Ok((from, until))) => {
            steps.push(Step::new(
                "collateral_validity",
                StepStatus::Fail,
                format!("current only from {from} to {until} (unix seconds), checked at {at_unix}"),
            ));
            false
        }
        Some(Err(e)) => {
            steps.push(Step::new("collateral_validity", StepStatus::Fail, e));
            false
        }
    };

    let mut tcb_status = None;
    let mut advisory_ids = Vec::new();
    let authentic = match (&parsed, collateral) {
        (None, _) => {
            steps.push(Step::new(
                "quote_signature",
                StepStatus::Unverified,
                "the quote is not a TDX quote",
            ));
            false
        }
        (Some(_), None) => {
            steps.push(Step::new(
                "quote_signature",
                StepStatus::Unverified,
                "no collateral to verify the PCK chain and the QE against",
            ));
            false
        }
        (Some(_), Some(collateral)) => {
            // Debug is judged below as a step of its own.
            let verifier = QuoteVerifier::new_prod()
                .with_config::<dcap_qvl::configs::RustCryptoConfig>()
                .allow_debug(true);
            match verifier.verify(quote, &collateral.inner, at_unix) {
                Ok(report) => {
                    tcb_status = report.status.parse::<TdxTcbStatus>().ok();
                    advisory_ids = report.advisory_ids.clone();
                    steps.push(Step::new(
                        "quote_signature",
                        StepStatus::Pass,
                        "quote signed by the QE's key, QE report by the PCK, PCK chain to Intel's SGX Root CA, not revoked; TCB info and QE identity signed by Intel",
                    ));
                    true
                }
                // dcap-qvl matches the platform against the TCB levels
                // after every signature and certificate has verified; a
                // platform older than every level is that error alone.
                Err(e) if e.to_string() == NO_MATCHING_TCB_LEVEL => {
                    tcb_status = Some(TdxTcbStatus::TcbNotSupported);
                    steps.push(Step::new(
                        "quote_signature",
                        StepStatus::Pass,
                        "quote signed by the QE's key, QE report by the PCK, PCK chain to Intel's SGX Root CA, not revoked; TCB info and QE identity signed by Intel",
                    ));
                    true
                }
                Err(e) => {
                    steps.push(Step::new(
                        "quote_signature",
                        StepStatus::Fail,
                        one_line(&format!("{e:#}")),
                    ));
                    false
                }
            }
        }
    };
    let authentic = authentic && window_ok;

    match tcb_status {
        Some(status)
            if status != TdxTcbStatus::Revoked
                && expect.accepted_tcb_statuses.contains(&status) =>
        {
            steps.push(Step::new(
                "tcb_status",
                StepStatus::Pass,
                tcb_detail(status, &advisory_ids),
            ));
        }
        Some(status) => steps.push(Step::new(
            "tcb_status",
            StepStatus::Fail,
            format!(
                "{}; accepted: {}",
                tcb_detail(status, &advisory_ids),
                expect
                    .accepted_tcb_statuses
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        None => steps.push(Step::new(
            "tcb_status",
            StepStatus::Unverified,
            "the quote did not verify",
        )),
    }

    let td = parsed.as_ref().and_then(|q| q.report.as_td10());
    let mut push = |name: &str, status: StepStatus, detail: String| {
        steps.push(Step::judged(name, status, detail, authentic));
    };
    match td {
        None => {
            for name in ["debug", "measurement", "report_data"] {
                push(name, StepStatus::Unverified, "no TD report".into());
            }
        }
        Some(td) => {
            let tud = td.td_attributes[0];
            if tud == 0 {
                push(
                    "debug",
                    StepStatus::Pass,
                    "TD_ATTRIBUTES.TUD is 0: not under debug".into(),
                );
            } else {
                push(
                    "debug",
                    StepStatus::Fail,
                    format!("TD_ATTRIBUTES.TUD is {tud:#04x}: the TD is under debug, the host can read it"),
                );
            }

            let found = format!("MRTD {}", hex(&td.mr_td));
            match &expect.measurements {
                None => push("measurement", StepStatus::NotRequested, found),
                Some(list) if list.iter().any(|m| m.matches(td)) => push(
                    "measurement",
                    StepStatus::Pass,
                    format!("{found} with its RTMRs is in the allowlist"),
                ),
                Some(list) => push(
                    "measurement",
                    StepStatus::Fail,
                    format!(
                        "{found} with its RTMRs matches none of the allowlist's {} entries",
                        list.len()
                    ),
                ),
            }

            match &expect.report_data {
                None => push(
                    "report_data",
                    StepStatus::NotRequested,
                    format!("report data {}", hex(&td.report_data)),
                ),
                Some(want) if want[..] == td.report_data[..] => push(
                    "report_data",
                    StepStatus::Pass,
                    "the report data equals the expected binding".into(),
                ),
                Some(want) => push(
                    "report_data",
                    StepStatus::Fail,
                    format!(
                        "the report data {} differs from the expected binding {}",
                        hex(&td.report_data),
                        hex(want)
                    ),
                ),
            }
        }
    }

    TdxVerification {
        steps,
        tcb_status,
        advisory_ids,
        td: parsed.as_ref().and_then(td_fields),
    }
}

fn tcb_detail(status: TdxTcbStatus, advisories: &[String]) -> String {
    if advisories.is_empty() {
        format!("TCB status {status}")
    } else {
        format!("TCB status {status} (advisories {})", advisories.join(", "))
    }
}

fn td_fields(q: &Quote) -> Option<TdReport> {
    let td = match &q.report {
        Report::SgxEnclave(_) => return None,
        r => r.as_td10()?,
    };
    Some(TdReport {
        quote_version: q.header.version,
        tee_tcb_svn: hex(&td.tee_tcb_svn),
        mr_seam: hex(&td.mr_seam),
        td_attributes: hex(&td.td_attributes),
        xfam: hex(&td.xfam),
        mrtd: hex(&td.mr_td),
        mr_config_id: hex(&td.mr_config_id),
        mr_owner: hex(&td.mr_owner),
        mr_owner_config: hex(&td.mr_owner_config),
        rtmr: [
            hex(&td.rt_mr0),
            hex(&td.rt_mr1),
            hex(&td.rt_mr2),
            hex(&td.rt_mr3),
        ],
        report_data: hex(&td.report_data),
    })
}

/// `issueDate` and `nextUpdate` of a TCB info or QE identity document, unix
/// seconds.
fn json_dates(signed_json: &str) -> Result<(u64, u64), String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Dates {
        issue_date: String,
        next_update: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(alias = "tcbInfo", alias = "enclaveIdentity")]
        body: Option<Dates>,
    }
    // The signed text is the inner object ({"id":...}); some sources wrap
    // it ({"tcbInfo": {...}}).
    let dates = match serde_json::from_str::<Dates>(signed_json) {
        Ok(d) => d,
        Err(_) => serde_json::from_str::<Body>(signed_json)
            .ok()
            .and_then(|b| b.body)
            .ok_or_else(|| "no issueDate / nextUpdate".to_owned())?,
    };
    Ok((
        rfc3339_utc(&dates.issue_date)?,
        rfc3339_utc(&dates.next_update)?,
    ))
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` (optionally with fractional seconds) to
/// unix seconds. Bounded: every field is range-checked, no overflow.
pub(crate) fn rfc3339_utc(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "not a UTC RFC 3339 time: {:?}",
            s.chars().take(40).collect::<String>()
        )
    };
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<u64, String> {
        let part = s.get(r).ok_or_else(bad)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<u64>().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &b[19..];
    let rest = match rest.first() {
        Some(b'.') => {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(bad());
            }
            &rest[1 + digits..]
        }
        _ => rest,
    };
    if !matches!(rest, b"Z" | b"z" | b"+00:00") {
        return Err(bad());
    }
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d == 0 || d > month_days[(mo - 1) as usize] {
        return Err(bad());
    }
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil, for y >= 1970).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2 / 400;
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Parses a collateral JSON and, if it parses, its validity; for the fuzz
/// targets (bounded, never panics).
#[doc(hidden)]
pub fn fuzz_collateral(json: &[u8]) -> Option<Result<(u64, u64), String>> {
    TdxCollateral::from_json(json).ok().map(|c| c.validity())
}

/// Reads an RFC 3339 time in UTC (`2025-06-20T00:00:00Z`, fractional
/// seconds allowed) as unix seconds: the `at` of [`verify_tdx`] from a
/// person's input.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    rfc3339_utc(s)
}

/// [`rfc3339_utc`], for the fuzz targets.
#[doc(hidden)]
pub fn fuzz_rfc3339(s: &str) -> Result<u64, String> {
    rfc3339_utc(s)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_utc;

    #[test]
    fn rfc3339_reads_utc_times_and_refuses_the_rest() {
        assert_eq!(rfc3339_utc("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(rfc3339_utc("2025-06-19T10:16:03Z"), Ok(1_750_328_163));
        assert_eq!(rfc3339_utc("2024-02-29T23:59:59.123Z"), Ok(1_709_251_199));
        assert_eq!(rfc3339_utc("2000-03-01T00:00:00+00:00"), Ok(951_868_800));
        for bad in [
            "",
            "2025-06-19",
            "2025-06-19T10:16:03",
            "2025-06-19T10:16:03+01:00",
            "2023-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-00-01T00:00:00Z",
            "2025-06-19T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2025-06-19T10:16:03.Z",
            "+025-06-19T10:16:03Z",
            "2025-06-19T10:16:0\u{e9}Z",
        ] {
            assert!(rfc3339_utc(bad).is_err(), "{bad}");
        }
    }
}
