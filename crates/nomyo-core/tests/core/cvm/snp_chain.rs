//! The SEV-SNP certificate side: the certificate table of an extended
//! report and an endorsement chain verified once for many reports.

use super::*;

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
