//! The verification document's vocabulary, shared by every kind of
//! evidence (TPM quotes, AMD SEV-SNP reports, Intel TDX quotes): an ordered
//! list of named [`Step`]s, each with a [`StepStatus`] and a one-line
//! detail. The evidence passes when no step failed or is unverified
//! ([`passed`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// How one check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    /// It passed.
    #[serde(rename = "pass")]
    Pass,
    /// It failed: the evidence is wrong or does not fit the expectation.
    #[serde(rename = "fail")]
    Fail,
    /// It could not be judged: a trust input is missing, or a step it
    /// depends on failed (the evidence's fields mean nothing when its
    /// signature does not verify).
    #[serde(rename = "unverified")]
    Unverified,
    /// No expectation was given for it.
    #[serde(rename = "not requested")]
    NotRequested,
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Unverified => "unverified",
            Self::NotRequested => "not requested",
        })
    }
}

/// One check and what it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The check's name (`report_signature`, `tcb_status`, `nonce`, ...:
    /// each verification documents its list).
    pub name: String,
    /// How it ended.
    pub status: StepStatus,
    /// For a step `unverified` because the evidence is not authentic: how
    /// it would have ended on the fields as read (`pass` or `fail`). An
    /// operator sees whether the binding or an allowlist would hold; it
    /// never makes the step pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_read: Option<StepStatus>,
    /// Why, for a person: one line, no secrets (evidence is public).
    pub detail: String,
}

impl Step {
    /// A step.
    pub fn new(name: &str, status: StepStatus, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status,
            as_read: None,
            detail: detail.into(),
        }
    }

    /// A check made on fields that are authentic only when `authentic`:
    /// otherwise a `pass` or `fail` becomes `unverified`, keeping what it
    /// was in [`as_read`](Self::as_read).
    pub fn judged(name: &str, status: StepStatus, detail: String, authentic: bool) -> Self {
        match status {
            StepStatus::Pass | StepStatus::Fail if !authentic => Self {
                name: name.to_owned(),
                status: StepStatus::Unverified,
                as_read: Some(status),
                detail: format!("the evidence is not authentic; as read: {detail}"),
            },
            _ => Self::new(name, status, detail),
        }
    }
}

/// Whether there are steps and none failed or is unverified (pass and not
/// requested only).
pub fn passed(steps: &[Step]) -> bool {
    !steps.is_empty()
        && steps
            .iter()
            .all(|s| matches!(s.status, StepStatus::Pass | StepStatus::NotRequested))
}

/// The first step named `name`, if there is one.
pub fn find_step<'a>(steps: &'a [Step], name: &str) -> Option<&'a Step> {
    steps.iter().find(|s| s.name == name)
}

/// The steps that failed or are unverified, as `name status, ...`.
pub fn failed_steps(steps: &[Step]) -> String {
    steps
        .iter()
        .filter(|s| matches!(s.status, StepStatus::Fail | StepStatus::Unverified))
        .map(|s| format!("{} {}", s.name, s.status))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The size of a confidential VM's report data (SEV-SNP `REPORT_DATA`,
/// TDX `REPORTDATA`).
pub const REPORT_DATA_LEN: usize = 64;

/// The report data of the attestation route's evidence (docs/PROTOCOL.md
/// §15.3): the route's binding ([`crate::tpm::attestation_extra_data`] of the
/// nonce and the server's keys), then 32 zero bytes.
pub fn route_report_data(binding: &[u8; 32]) -> [u8; REPORT_DATA_LEN] {
    pad(binding)
}

/// The report data of an answer's report (docs/PROTOCOL.md §15.2):
/// [`crate::tpm::extra_data_for`] of its payload id (16 bytes), then zeros.
pub fn answer_report_data(payload_id: &str) -> [u8; REPORT_DATA_LEN] {
    pad(&crate::tpm::extra_data_for(payload_id))
}

fn pad(bytes: &[u8]) -> [u8; REPORT_DATA_LEN] {
    let mut out = [0u8; REPORT_DATA_LEN];
    let n = bytes.len().min(REPORT_DATA_LEN);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pass_and_not_requested_make_a_pass() {
        let v = |statuses: &[StepStatus]| -> Vec<Step> {
            statuses.iter().map(|s| Step::new("x", *s, "")).collect()
        };
        use StepStatus::*;
        assert!(passed(&v(&[Pass, NotRequested])));
        assert!(!passed(&v(&[Pass, Unverified])));
        assert!(!passed(&v(&[Pass, Fail])));
        assert!(!passed(&[]));
        assert_eq!(
            failed_steps(&v(&[Pass, Fail, Unverified])),
            "x fail, x unverified"
        );
        let json = serde_json::to_value(Step::new("x", NotRequested, "")).unwrap();
        assert_eq!(json["status"], "not requested");
        assert!(json.get("as_read").is_none());
    }

    #[test]
    fn find_step_returns_the_first_step_of_that_name() {
        let steps = [
            Step::new("ark", StepStatus::Pass, "first"),
            Step::new("debug", StepStatus::Fail, "on"),
            Step::new("ark", StepStatus::Fail, "second"),
        ];
        assert_eq!(
            find_step(&steps, "debug").map(|s| s.status),
            Some(StepStatus::Fail)
        );
        assert_eq!(
            find_step(&steps, "ark").map(|s| s.detail.as_str()),
            Some("first")
        );
        assert!(find_step(&steps, "vcek").is_none());
        assert!(find_step(&steps, "").is_none());
        assert!(find_step(&[], "ark").is_none());
    }

    #[test]
    fn a_judgement_on_unauthentic_fields_is_unverified_and_keeps_what_it_was() {
        let s = Step::judged("report_data", StepStatus::Pass, "equal".into(), false);
        assert_eq!(s.status, StepStatus::Unverified);
        assert_eq!(s.as_read, Some(StepStatus::Pass));
        assert!(!passed(std::slice::from_ref(&s)));
        let s = Step::judged("report_data", StepStatus::Fail, "differs".into(), true);
        assert_eq!((s.status, s.as_read), (StepStatus::Fail, None));
        let s = Step::judged("m", StepStatus::NotRequested, "-".into(), false);
        assert_eq!((s.status, s.as_read), (StepStatus::NotRequested, None));
        let json =
            serde_json::to_value(Step::judged("r", StepStatus::Fail, "d".into(), false)).unwrap();
        assert_eq!(json["as_read"], "fail");
    }

    #[test]
    fn report_data_is_the_binding_then_zeros() {
        let r = route_report_data(&[7; 32]);
        assert_eq!((&r[..32], &r[32..]), (&[7u8; 32][..], &[0u8; 32][..]));
        let a = answer_report_data("p");
        assert_eq!(&a[..16], &crate::tpm::extra_data_for("p")[..]);
        assert_eq!(&a[16..], &[0u8; 48][..]);
        assert_ne!(answer_report_data("q"), a);
    }
}
