//! SEV-SNP attestation reports: the Milan and Turin vectors verify, the
//! expectations fail their step when not met, changed bytes, a foreign
//! chain and bad input are refused.

use super::*;

#[test]
fn snp_milan_report_verifies_with_its_chain_and_with_the_builtin_one() {
    let report = milan_report();
    let vcek = read(SNP, "vcek_milan.der");
    let chain = read(SNP, "cert_chain_milan");
    for chain in [Some(&chain[..]), None] {
        let v = verify_sev_snp(&report, &vcek, chain, &SevSnpExpectations::default());
        assert!(v.passed(), "{}", show_snp(&v));
        assert_eq!(v.product_line, Some(SnpProductLine::Milan));
        for name in [
            "ark",
            "ask",
            "vcek",
            "report_signature",
            "report_version",
            "debug",
            "vcek_tcb",
            "chip_id",
        ] {
            assert_eq!(
                status(&v.steps, name),
                StepStatus::Pass,
                "{name}: {}",
                show_snp(&v)
            );
        }
        for name in ["vmpl", "min_tcb", "measurement", "report_data"] {
            assert_eq!(status(&v.steps, name), StepStatus::NotRequested, "{name}");
        }
        // The fields are the report's bytes, lowercase hex.
        let r = v.report.as_ref().unwrap();
        assert_eq!(r.measurement, hex::encode(&report[0x90..0xC0]));
        assert_eq!(r.report_data, hex::encode(&report[0x50..0x90]));
        assert_eq!(r.chip_id, hex::encode(&report[0x1A0..0x1E0]));
        assert_eq!(r.version, 2);
        assert_eq!(r.signing_key, "vcek");
        assert!(r
            .measurement
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }
}

#[test]
fn snp_expectations_pass_when_met_and_fail_their_step_when_not() {
    let report = milan_report();
    let vcek = read(SNP, "vcek_milan.der");
    let measurement: [u8; 48] = report[0x90..0xC0].try_into().unwrap();
    let report_data: [u8; 64] = report[0x50..0x90].try_into().unwrap();
    let vmpl = u32::from_le_bytes(report[0x30..0x34].try_into().unwrap());
    let reported = verify_sev_snp(&report, &vcek, None, &SevSnpExpectations::default())
        .report
        .unwrap()
        .reported_tcb;

    let good = SevSnpExpectations {
        report_data: Some(report_data),
        measurements: Some(vec![[7; 48], measurement]),
        min_tcb: Some(reported),
        vmpl: Some(vmpl),
    };
    let v = verify_sev_snp(&report, &vcek, None, &good);
    assert!(v.passed(), "{}", show_snp(&v));
    for name in ["vmpl", "min_tcb", "measurement", "report_data"] {
        assert_eq!(status(&v.steps, name), StepStatus::Pass, "{name}");
    }

    let mut wrong_binding = report_data;
    wrong_binding[63] ^= 1;
    let cases: Vec<(&str, SevSnpExpectations)> = vec![
        (
            "report_data",
            SevSnpExpectations {
                report_data: Some(wrong_binding),
                ..good.clone()
            },
        ),
        (
            "measurement",
            SevSnpExpectations {
                measurements: Some(vec![[7; 48]]),
                ..good.clone()
            },
        ),
        (
            "measurement",
            SevSnpExpectations {
                measurements: Some(vec![]),
                ..good.clone()
            },
        ),
        (
            "vmpl",
            SevSnpExpectations {
                vmpl: Some(vmpl + 1),
                ..good.clone()
            },
        ),
        (
            "min_tcb",
            SevSnpExpectations {
                min_tcb: Some(SnpTcb {
                    snp: reported.snp + 1,
                    ..reported
                }),
                ..good.clone()
            },
        ),
        (
            "min_tcb",
            SevSnpExpectations {
                min_tcb: Some(SnpTcb {
                    microcode: reported.microcode + 1,
                    ..reported
                }),
                ..good.clone()
            },
        ),
    ];
    for (name, expect) in cases {
        let v = verify_sev_snp(&report, &vcek, None, &expect);
        assert!(!v.passed(), "{name}");
        assert_eq!(not_passed(&v.steps), [name], "{}", show_snp(&v));
        assert_eq!(status(&v.steps, name), StepStatus::Fail);
    }
}

#[test]
fn snp_any_changed_byte_of_the_signed_report_is_refused() {
    let report = milan_report();
    let vcek = read(SNP, "vcek_milan.der");
    // Every 5th byte of the signed part, the signature and its zero padding
    // (each check takes ~60 ms in a debug build; all 1184 bytes pass too,
    // in over a minute), and the first and last byte of each field up to
    // the chip id and of r and s.
    let edges = [
        0, 3, 4, 7, 8, 15, 0x10, 0x1f, 0x20, 0x2f, 0x30, 0x33, 0x34, 0x37, 0x38, 0x3f, 0x40, 0x47,
        0x48, 0x4b, 0x50, 0x8f, 0x90, 0xbf, 0xc0, 0xdf, 0xe0, 0x10f, 0x110, 0x13f, 0x140, 0x15f,
        0x160, 0x17f, 0x180, 0x187, 0x1a0, 0x1df, 0x29f, 0x2a0, 0x2cf, 0x2d0, 0x2e7, 0x2e8, 0x317,
        0x318, 0x32f, 0x330, 0x49f,
    ];
    let mut offsets: Vec<usize> = (0..SEV_SNP_REPORT_LEN).step_by(5).chain(edges).collect();
    offsets.sort_unstable();
    offsets.dedup();
    for offset in offsets {
        let mut bad = report.clone();
        bad[offset] ^= 0x01;
        let v = verify_sev_snp(&bad, &vcek, None, &SevSnpExpectations::default());
        assert!(
            !v.passed(),
            "byte {offset:#x} changed and the report still verifies"
        );
        let st = status(&v.steps, "report_signature");
        let fmt = status(&v.steps, "report_format");
        assert!(
            st == StepStatus::Fail || fmt == StepStatus::Fail,
            "byte {offset:#x}: {}",
            show_snp(&v)
        );
        if offset >= SEV_SNP_SIGNED_LEN {
            assert_eq!(st, StepStatus::Fail, "byte {offset:#x}");
        }
    }
}

#[test]
fn snp_a_debug_policy_is_reported_even_when_the_report_is_forged() {
    let mut report = milan_report();
    report[0x0A] |= 0x08; // policy bit 19: DEBUG
    let v = verify_sev_snp(
        &report,
        &read(SNP, "vcek_milan.der"),
        None,
        &SevSnpExpectations::default(),
    );
    assert!(!v.passed());
    assert_eq!(status(&v.steps, "report_signature"), StepStatus::Fail);
    let debug = v.step("debug").unwrap();
    assert_eq!(debug.status, StepStatus::Unverified);
    assert!(
        debug.detail.contains("allows debugging"),
        "{}",
        debug.detail
    );
}

#[test]
fn snp_the_turin_chain_refuses_the_milan_vcek_and_certifies_the_turin_one() {
    let report = milan_report();
    let turin_chain = read(SNP, "cert_chain_turin");

    let v = verify_sev_snp(
        &report,
        &read(SNP, "vcek_milan.der"),
        Some(&turin_chain),
        &SevSnpExpectations::default(),
    );
    assert!(!v.passed());
    assert_eq!(
        status(&v.steps, "ark"),
        StepStatus::Pass,
        "{}",
        show_snp(&v)
    );
    assert_eq!(status(&v.steps, "ask"), StepStatus::Pass);
    assert_eq!(status(&v.steps, "vcek"), StepStatus::Fail);
    assert_eq!(status(&v.steps, "report_signature"), StepStatus::Unverified);
    assert_eq!(v.product_line, Some(SnpProductLine::Turin));

    // The Turin VCEK chains to the Turin ARK (given or built in), but did
    // not sign the Milan report.
    let turin_vcek = read(SNP, "vcek_turin.der");
    for chain in [Some(&turin_chain[..]), None] {
        let v = verify_sev_snp(&report, &turin_vcek, chain, &SevSnpExpectations::default());
        assert_eq!(
            status(&v.steps, "vcek"),
            StepStatus::Pass,
            "{}",
            show_snp(&v)
        );
        assert_eq!(v.product_line, Some(SnpProductLine::Turin));
        assert_eq!(status(&v.steps, "report_signature"), StepStatus::Fail);
        assert!(!v.passed());
    }

    // And the Milan chain refuses the Turin VCEK.
    let v = verify_sev_snp(
        &report,
        &turin_vcek,
        Some(&read(SNP, "cert_chain_milan")),
        &SevSnpExpectations::default(),
    );
    assert_eq!(status(&v.steps, "vcek"), StepStatus::Fail);
}

#[test]
fn snp_a_chain_not_ending_in_a_builtin_ark_is_refused() {
    let report = milan_report();
    let vcek = read(SNP, "vcek_milan.der");
    let chain = String::from_utf8(read(SNP, "cert_chain_milan")).unwrap();
    let ask_only: String = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap()
        .to_owned();
    let cases = [
        format!("{ask_only}{ask_only}"), // the ASK posing as the ARK
        ask_only.clone(),                // one certificate
        String::new(),
        format!("{chain}{ask_only}"), // three
        chain.replace("MII", "MIJ"),  // broken base64/DER
    ];
    for bad in cases {
        let v = verify_sev_snp(
            &report,
            &vcek,
            Some(bad.as_bytes()),
            &SevSnpExpectations::default(),
        );
        assert!(!v.passed());
        assert_eq!(
            status(&v.steps, "ark"),
            StepStatus::Fail,
            "{}",
            show_snp(&v)
        );
        assert_eq!(v.product_line, None);
    }
}

#[test]
fn snp_bad_input_fails_without_panicking() {
    let report = milan_report();
    let vcek = read(SNP, "vcek_milan.der");
    let v = verify_sev_snp(&report[..100], &vcek, None, &SevSnpExpectations::default());
    assert_eq!(status(&v.steps, "report_format"), StepStatus::Fail);
    assert!(!v.passed());
    let v = verify_sev_snp(
        &report,
        b"not a certificate",
        None,
        &SevSnpExpectations::default(),
    );
    assert_eq!(status(&v.steps, "vcek"), StepStatus::Fail);
    assert!(!v.passed());
    let mut v0 = report.clone();
    v0[0..4].copy_from_slice(&0u32.to_le_bytes());
    let v = verify_sev_snp(&v0, &vcek, None, &SevSnpExpectations::default());
    assert!(!v.passed());
    let v = verify_sev_snp(&[], &[], Some(b""), &SevSnpExpectations::default());
    assert!(!v.passed());
}
