//! Confidential-VM evidence (`nomyo_core::cvm`) against real AMD SEV-SNP and
//! Intel TDX evidence (tests/vectors/cvm/, see its README.md): each vector
//! verifies, any change to the signed bytes is refused, the wrong chain,
//! an out-of-date platform, a time outside the collateral's validity, the
//! wrong binding and a measurement outside the allowlist each fail their
//! step by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use nomyo_core::cvm::{
    trust_roots, verify_sev_snp, verify_tdx, SevSnpExpectations, SevSnpVerification, SnpCertTable,
    SnpProductLine, SnpTcb, StepStatus, TdxCollateral, TdxExpectations, TdxMeasurement,
    TdxTcbStatus, TdxVerification, INTEL_SGX_ROOT_CA_SHA256, SEV_SNP_REPORT_LEN,
    SEV_SNP_SIGNED_LEN,
};
use sha2::{Digest, Sha256};

const SNP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/cvm/sev-snp/");
const TDX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/cvm/tdx/");

fn read(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!("{dir}{name}")).unwrap()
}

fn milan_report() -> Vec<u8> {
    let text = String::from_utf8(read(SNP, "report_milan.hex")).unwrap();
    let report = hex::decode(text.trim()).unwrap();
    assert_eq!(report.len(), SEV_SNP_REPORT_LEN);
    report
}

fn status(steps: &[nomyo_core::cvm::Step], name: &str) -> StepStatus {
    steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}"))
        .status
}

fn show_snp(v: &SevSnpVerification) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

fn show_tdx(v: &TdxVerification) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// The PEM certificates of a file, DER.
fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    nomyo_testkit::tsm::pem_certificates(std::str::from_utf8(pem).unwrap())
}

// ---------------------------------------------------------------- SEV-SNP

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
        let failed: Vec<&str> = v
            .steps
            .iter()
            .filter(|s| s.status != StepStatus::Pass && s.status != StepStatus::NotRequested)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(failed, [name], "{}", show_snp(&v));
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

/// A certificate table as a host lays it out (GHCB extended report):
/// entries of GUID, offset, length, an all-zero entry, then the data.
fn cert_table(entries: &[(&str, &[u8])], mixed_endian: bool) -> Vec<u8> {
    let header = 24 * (entries.len() + 1);
    let mut table = Vec::new();
    let mut data = Vec::new();
    for (guid, der) in entries {
        let mut g = hex::decode(guid.replace('-', "")).unwrap();
        if mixed_endian {
            g[0..4].reverse();
            g[4..6].reverse();
            g[6..8].reverse();
        }
        table.extend_from_slice(&g);
        table.extend_from_slice(&u32::try_from(header + data.len()).unwrap().to_le_bytes());
        table.extend_from_slice(&u32::try_from(der.len()).unwrap().to_le_bytes());
        data.extend_from_slice(der);
    }
    table.extend_from_slice(&[0; 24]);
    table.extend_from_slice(&data);
    table
}

const GUID_ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";
const GUID_ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
const GUID_VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
const GUID_CRL: &str = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea";

#[test]
fn snp_certificate_table_gives_the_vcek_and_chain_to_verify_with() {
    let report = milan_report();
    let vcek = read(SNP, "vcek_milan.der");
    let chain = pem_certs(&read(SNP, "cert_chain_milan"));
    for mixed in [false, true] {
        let table = cert_table(
            &[
                (GUID_ARK, &chain[1]),
                (GUID_CRL, b"a CRL"),
                (GUID_ASK, &chain[0]),
                (GUID_VCEK, &vcek),
            ],
            mixed,
        );
        let certs = SnpCertTable::parse(&table).unwrap();
        assert_eq!(certs.vcek.as_deref(), Some(&vcek[..]));
        assert_eq!(certs.endorsement_key(), Some(&vcek[..]));
        assert!(certs.vlek.is_none());
        let pem = certs.chain_pem().unwrap();
        assert_eq!(pem_certs(&pem), chain);
        let v = verify_sev_snp(
            &report,
            certs.endorsement_key().unwrap(),
            Some(&pem),
            &SevSnpExpectations::default(),
        );
        assert!(v.passed(), "{}", show_snp(&v));
    }

    // Malformed tables are errors, not panics.
    let good = cert_table(&[(GUID_VCEK, &vcek)], false);
    let mut outside = good.clone();
    outside[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let twice = cert_table(&[(GUID_VCEK, &vcek), (GUID_VCEK, &vcek)], false);
    // 70 entries of an unknown kind, none the terminator.
    let endless: Vec<u8> = (0..70)
        .flat_map(|_| [[2u8; 16].as_slice(), &[0; 8]].concat())
        .collect();
    for bad in [
        &good[..30],
        &good[..0],
        &outside[..],
        &twice[..],
        &endless[..],
    ] {
        assert!(SnpCertTable::parse(bad).is_err(), "{} bytes", bad.len());
    }
    // Only a VCEK: no chain to give.
    assert!(SnpCertTable::parse(&good).unwrap().chain_pem().is_none());
}

#[test]
fn trust_roots_are_the_vendors_certificates() {
    let roots = trust_roots();
    assert_eq!(roots.len(), 4);
    // The ARKs in the vectors' chains (AMD's key distribution service) are
    // the built-in ones.
    for (line, file) in [
        (SnpProductLine::Milan, "cert_chain_milan"),
        (SnpProductLine::Turin, "cert_chain_turin"),
    ] {
        let certs = pem_certs(&read(SNP, file));
        assert_eq!(certs.len(), 2);
        assert_eq!(line.ark_sha256(), hex::encode(Sha256::digest(&certs[1])));
    }
    assert_eq!(
        SnpProductLine::Milan.ark_sha256(),
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
    );
    assert_eq!(
        SnpProductLine::Genoa.ark_sha256(),
        "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"
    );
    assert_eq!(
        SnpProductLine::Turin.ark_sha256(),
        "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"
    );
    // Intel's root closes the collateral's issuer chains.
    let collateral: serde_json::Value =
        serde_json::from_slice(&read(TDX, "tdx_quote_collateral.json")).unwrap();
    let chain = pem_certs(
        collateral["tcb_info_issuer_chain"]
            .as_str()
            .unwrap()
            .as_bytes(),
    );
    assert_eq!(
        hex::encode(Sha256::digest(chain.last().unwrap())),
        INTEL_SGX_ROOT_CA_SHA256
    );
    assert!(roots.iter().all(|r| r.sha256.len() == 64));
}

// -------------------------------------------------------------------- TDX

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
        let failed: Vec<&str> = v
            .steps
            .iter()
            .filter(|s| s.status != StepStatus::Pass && s.status != StepStatus::NotRequested)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(failed, [name], "{}", show_tdx(&v));
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

#[test]
fn a_chain_verified_once_checks_reports_as_a_full_verification_does() {
    use nomyo_core::cvm::SevSnpEndorsement;
    let (vcek, milan, turin) = (
        read(SNP, "vcek_milan.der"),
        read(SNP, "cert_chain_milan"),
        read(SNP, "cert_chain_turin"),
    );
    let e = SevSnpEndorsement::verify(&vcek, Some(&milan)).unwrap();
    assert_eq!(e.product_line(), Some(SnpProductLine::Milan));
    let report = milan_report();
    let carried: [u8; 64] = report[0x50..0x90].try_into().unwrap();
    let mut other = carried;
    other[0] ^= 1;
    let mut flipped = report.clone();
    flipped[0x90] ^= 1;
    // The same document, step for step, as verify_sev_snp: for the report,
    // a changed byte, a report that does not parse, and other report data.
    for (r, data) in [
        (&report[..], carried),
        (&flipped[..], carried),
        (&report[..100], carried),
        (&report[..], other),
    ] {
        let expect = SevSnpExpectations {
            report_data: Some(data),
            ..SevSnpExpectations::default()
        };
        let full = verify_sev_snp(r, &vcek, Some(&milan), &expect);
        let once = e.verify_report(r, &expect);
        assert_eq!(once, full, "{}", show_snp(&once));
    }
    assert!(e
        .verify_report(
            &report,
            &SevSnpExpectations {
                report_data: Some(carried),
                ..SevSnpExpectations::default()
            }
        )
        .passed());
    // A chain that does not verify gives no endorsement, and says why.
    let steps = SevSnpEndorsement::verify(&vcek, Some(&turin)).unwrap_err();
    assert_eq!(status(&steps, "vcek"), StepStatus::Fail);
    assert!(SevSnpEndorsement::verify(b"not a certificate", None).is_err());
}
