//! Intel TDX quotes against their collateral: the vector verifies as of a
//! time inside it, an outdated platform, a time outside, unmet expectations,
//! changed bytes and an SGX quote fail by name.

use super::*;

fn tdx(quote: &str, collateral: &str) -> (Vec<u8>, TdxCollateral, u64) {
    let quote = read(TDX, quote);
    let collateral = TdxCollateral::from_json(&read(TDX, collateral)).unwrap();
    let (from, until) = collateral.validity().unwrap();
    assert!(from < until);
    (quote, collateral, from + (until - from) / 2)
}

#[test]
fn tdx_quote_verifies_as_of_a_time_inside_its_collateral() {
    let (quote, collateral, at) = tdx("tdx_quote", "tdx_quote_collateral.json");
    let v = verify_tdx(&quote, &collateral, at, &TdxExpectations::default());
    assert!(v.passed(), "{}", show_tdx(&v));
    assert_eq!(v.tcb_status, Some(TdxTcbStatus::UpToDate));
    for name in [
        "quote_format",
        "collateral_validity",
        "quote_signature",
        "tcb_status",
        "debug",
    ] {
        assert_eq!(status(&v.steps, name), StepStatus::Pass, "{name}");
    }
    for name in ["measurement", "report_data"] {
        assert_eq!(status(&v.steps, name), StepStatus::NotRequested, "{name}");
    }
    let td = v.td.as_ref().unwrap();
    // Header 48 bytes, then the TD report: MRTD at 136, RTMR0 at 328, report data at 520.
    assert_eq!(td.mrtd, hex::encode(&quote[48 + 136..48 + 184]));
    assert_eq!(td.rtmr[0], hex::encode(&quote[48 + 328..48 + 376]));
    assert_eq!(td.report_data, hex::encode(&quote[48 + 520..48 + 584]));
    assert_eq!(td.quote_version, 4);
}

#[test]
fn tdx_outdated_platform_fails_unless_its_status_is_accepted() {
    let (quote, collateral, at) = tdx("tdx_quote_outdated", "tdx_quote_outdated_collateral.json");
    let v = verify_tdx(&quote, &collateral, at, &TdxExpectations::default());
    assert!(!v.passed());
    let status_found = v.tcb_status.unwrap_or_else(|| panic!("{}", show_tdx(&v)));
    // The platform is older than every level of the collateral's TCB info.
    assert_eq!(
        status_found,
        TdxTcbStatus::TcbNotSupported,
        "{}",
        show_tdx(&v)
    );
    let step = v.step("tcb_status").unwrap();
    assert_eq!(step.status, StepStatus::Fail);
    assert!(step.detail.contains(status_found.name()), "{}", step.detail);
    assert_eq!(status(&v.steps, "quote_signature"), StepStatus::Pass);

    let accept = TdxExpectations {
        accepted_tcb_statuses: vec![TdxTcbStatus::UpToDate, status_found],
        ..TdxExpectations::default()
    };
    let v = verify_tdx(&quote, &collateral, at, &accept);
    assert!(v.passed(), "{}", show_tdx(&v));
}

#[test]
fn tdx_a_time_outside_the_collateral_validity_fails() {
    let (quote, collateral, _) = tdx("tdx_quote", "tdx_quote_collateral.json");
    let (from, until) = collateral.validity().unwrap();
    for at in [from - 1, until + 1, 0, u64::MAX / 2] {
        let v = verify_tdx(&quote, &collateral, at, &TdxExpectations::default());
        assert!(!v.passed(), "at {at}");
        assert_eq!(
            status(&v.steps, "collateral_validity"),
            StepStatus::Fail,
            "at {at}"
        );
    }
    for at in [from, until] {
        let v = verify_tdx(&quote, &collateral, at, &TdxExpectations::default());
        assert_eq!(
            status(&v.steps, "collateral_validity"),
            StepStatus::Pass,
            "at {at}"
        );
    }
}

#[test]
fn tdx_expectations_pass_when_met_and_fail_their_step_when_not() {
    let (quote, collateral, at) = tdx("tdx_quote", "tdx_quote_collateral.json");
    let td = &quote[48..48 + 584];
    let mrtd: [u8; 48] = td[136..184].try_into().unwrap();
    let rtmr = |i: usize| -> [u8; 48] { td[328 + 48 * i..376 + 48 * i].try_into().unwrap() };
    let report_data: [u8; 64] = td[520..584].try_into().unwrap();
    let exact = TdxMeasurement {
        mrtd,
        rtmr: [Some(rtmr(0)), Some(rtmr(1)), Some(rtmr(2)), Some(rtmr(3))],
    };
    let good = TdxExpectations {
        report_data: Some(report_data),
        measurements: Some(vec![
            TdxMeasurement {
                mrtd: [0; 48],
                rtmr: [None; 4],
            },
            exact.clone(),
        ]),
        ..TdxExpectations::default()
    };
    let v = verify_tdx(&quote, &collateral, at, &good);
    assert!(v.passed(), "{}", show_tdx(&v));
    assert_eq!(status(&v.steps, "measurement"), StepStatus::Pass);
    assert_eq!(status(&v.steps, "report_data"), StepStatus::Pass);
    // MRTD alone (RTMRs open) matches too.
    let mrtd_only = TdxExpectations {
        measurements: Some(vec![TdxMeasurement {
            mrtd,
            rtmr: [None; 4],
        }]),
        ..good.clone()
    };
    assert!(verify_tdx(&quote, &collateral, at, &mrtd_only).passed());

    let mut wrong_binding = report_data;
    wrong_binding[0] ^= 0x80;
    let mut wrong_rtmr3 = exact.clone();
    wrong_rtmr3.rtmr[3] = Some([0xAA; 48]);
    let cases: Vec<(&str, TdxExpectations)> = vec![
        (
            "report_data",
            TdxExpectations {
                report_data: Some(wrong_binding),
                ..good.clone()
            },
        ),
        (
            "measurement",
            TdxExpectations {
                measurements: Some(vec![wrong_rtmr3]),
                ..good.clone()
            },
        ),
        (
            "measurement",
            TdxExpectations {
                measurements: Some(vec![TdxMeasurement {
                    mrtd: [1; 48],
                    rtmr: [None; 4],
                }]),
                ..good.clone()
            },
        ),
        (
            "measurement",
            TdxExpectations {
                measurements: Some(vec![]),
                ..good.clone()
            },
        ),
        (
            "tcb_status",
            TdxExpectations {
                accepted_tcb_statuses: vec![],
                ..good.clone()
            },
        ),
    ];
    for (name, expect) in cases {
        let v = verify_tdx(&quote, &collateral, at, &expect);
        assert!(!v.passed(), "{name}");
        assert_eq!(not_passed(&v.steps), [name], "{}", show_tdx(&v));
    }
}

#[test]
fn tdx_changed_bytes_of_the_signed_quote_are_refused() {
    let (quote, collateral, at) = tdx("tdx_quote", "tdx_quote_collateral.json");
    // The signed part: the 48-byte header and the 584-byte TD report. Every
    // 4th byte (each check takes tens of milliseconds in a debug build) and
    // the first and last of each field.
    let signed_len = 48 + 584;
    let edges = [
        0, 47, 48, 63, 64, 111, 112, 159, 160, 167, 168, 175, 176, 183, 184, 231, 232, 279, 280,
        327, 328, 375, 376, 423, 424, 471, 472, 519, 520, 567, 568, 631,
    ];
    let mut offsets: Vec<usize> = (0..signed_len).step_by(4).chain(edges).collect();
    // The unsigned part that vouches for the signed one: the quote's
    // signature and attestation key (after the 4-byte auth data length,
    // which may grow into the zero padding without changing anything), the
    // QE report and its signature by the PCK (after a 2-byte type and a
    // 4-byte size), and the zero padding at the end.
    offsets.extend((636..764).step_by(2));
    offsets.extend((770..1218).step_by(7));
    offsets.push(quote.len() - 1);
    offsets.sort_unstable();
    offsets.dedup();
    for offset in offsets {
        let mut bad = quote.clone();
        bad[offset] ^= 0x01;
        let v = verify_tdx(&bad, &collateral, at, &TdxExpectations::default());
        assert!(
            !v.passed(),
            "byte {offset} changed and the quote still verifies"
        );
        if offset < signed_len {
            let sig = status(&v.steps, "quote_signature");
            let fmt = status(&v.steps, "quote_format");
            assert!(
                sig == StepStatus::Fail || fmt == StepStatus::Fail,
                "byte {offset}: {}",
                show_tdx(&v)
            );
        }
    }
}

#[test]
fn tdx_refuses_an_sgx_quote_and_bad_input() {
    let quote = read(TDX, "sgx_quote");
    let collateral = TdxCollateral::from_json(&read(TDX, "sgx_quote_collateral.json")).unwrap();
    let (from, until) = collateral.validity().unwrap();
    let v = verify_tdx(
        &quote,
        &collateral,
        from + (until - from) / 2,
        &TdxExpectations::default(),
    );
    assert!(!v.passed());
    assert_eq!(
        status(&v.steps, "quote_format"),
        StepStatus::Fail,
        "{}",
        show_tdx(&v)
    );
    assert!(v.td.is_none());

    let (quote, collateral, at) = tdx("tdx_quote", "tdx_quote_collateral.json");
    // The quote is 4936 bytes (632 signed, 4 + 4300 auth data) and 70 bytes
    // of zero padding: any of the padding may go, nothing more.
    let end = 632 + 4 + 4300;
    assert!(verify_tdx(&quote[..end], &collateral, at, &TdxExpectations::default()).passed());
    for bad in [&quote[..0], &quote[..47], &quote[..700], &quote[..end - 1]] {
        let v = verify_tdx(bad, &collateral, at, &TdxExpectations::default());
        assert!(!v.passed(), "{} bytes", bad.len());
        assert_eq!(
            status(&v.steps, "quote_format"),
            StepStatus::Fail,
            "{} bytes",
            bad.len()
        );
    }
    // The collateral of another quote (the SGX one) does not verify this one.
    let sgx = TdxCollateral::from_json(&read(TDX, "sgx_quote_collateral.json")).unwrap();
    let (from, until) = sgx.validity().unwrap();
    let v = verify_tdx(
        &quote,
        &sgx,
        from + (until - from) / 2,
        &TdxExpectations::default(),
    );
    assert!(!v.passed());
    assert_eq!(status(&v.steps, "quote_signature"), StepStatus::Fail);

    assert!(TdxCollateral::from_json(b"{}").is_err());
    assert!(TdxCollateral::from_json(b"not json").is_err());
}

#[test]
fn tdx_tcb_status_names_round_trip() {
    for s in TdxTcbStatus::ALL {
        assert_eq!(s.name().parse::<TdxTcbStatus>().unwrap(), s);
        assert_eq!(s.to_string(), s.name());
    }
    assert!("uptodate".parse::<TdxTcbStatus>().is_err());
}
