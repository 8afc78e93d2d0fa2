//! The steps on a report's content once its signature is checked
//! (`report_version` to `report_data`), and its fields as read.

use sev::firmware::guest::AttestationReport;

use super::super::{hex, report_data_step, Step, StepStatus};
use super::certs::VcekInfo;
use super::{SevSnpExpectations, SevSnpReport, SnpTcb};

/// The report versions this verifier reads (SEV-SNP ABI 1.51 to 1.58:
/// version 2 on Milan and Genoa, 3 and 5 with the CPUID fields and the
/// mitigation vectors).
const REPORT_VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;

/// The steps after the signature. `authentic`: chain and signature passed;
/// when not, every judgement here is `unverified`.
pub(super) fn content_steps(
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

    let (status, detail) = report_data_step(expect.report_data.as_ref(), &r.report_data);
    push("report_data", status, detail);
}

pub(super) fn report_fields(r: &AttestationReport) -> SevSnpReport {
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
