//! Verifying a TDX quote: the steps of [`verify_tdx`] in order, and the
//! TD report's fields as read.

use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::verify::QuoteVerifier;

use super::super::sev_snp::one_line;
use super::super::{hex, report_data_step, Step, StepStatus};
use super::{TdReport, TdxCollateral, TdxExpectations, TdxTcbStatus, TdxVerification};

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

            let (status, detail) = report_data_step(expect.report_data.as_ref(), &td.report_data);
            push("report_data", status, detail);
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
