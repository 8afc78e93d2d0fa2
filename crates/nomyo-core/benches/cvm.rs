//! Criterion benchmarks of confidential-VM evidence verification, on the
//! real evidence of the tests (crates/nomyo-core/tests/vectors/cvm):
//!
//! - `cvm/sev_snp_report`: one SEV-SNP report verified in full (AMD's chain
//!   ARK -> ASK -> VCEK, two RSA-4096 PSS signatures; the report's ECDSA
//!   P-384 signature; the VCEK's extensions; the report's fields), as the
//!   client checks the attestation route's evidence;
//! - `cvm/sev_snp_report_with_endorsement`: the same report checked with a
//!   chain verified once (`SevSnpEndorsement`), as the client checks each
//!   answer's report;
//! - `cvm/sev_snp_chain_only`: the chain's part of that (a report that
//!   does not parse);
//! - `cvm/tdx_quote`: one TDX quote with its collateral (dcap-qvl: the
//!   quote's and QE report's signatures, the PCK chain to Intel's root, the
//!   CRLs, the signed TCB info and QE identity; the TCB status);
//! - `cvm/snp_cert_table`: parsing a configfs-tsm certificate table.
//!
//! `cargo bench -p nomyo-core --bench cvm`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use nomyo_core::cvm::{
    verify_sev_snp, verify_tdx, SevSnpEndorsement, SevSnpExpectations, SnpCertTable, TdxCollateral,
    TdxExpectations,
};

const REPORT_HEX: &str = include_str!("../tests/vectors/cvm/sev-snp/report_milan.hex");
const VCEK: &[u8] = include_bytes!("../tests/vectors/cvm/sev-snp/vcek_milan.der");
const CHAIN: &[u8] = include_bytes!("../tests/vectors/cvm/sev-snp/cert_chain_milan");
const QUOTE: &[u8] = include_bytes!("../tests/vectors/cvm/tdx/tdx_quote");
const COLLATERAL: &[u8] = include_bytes!("../tests/vectors/cvm/tdx/tdx_quote_collateral.json");

fn cvm(c: &mut Criterion) {
    let report = hex::decode(REPORT_HEX.trim()).unwrap();
    let carried: [u8; 64] = report[0x50..0x90].try_into().unwrap();
    let expect = SevSnpExpectations {
        report_data: Some(carried),
        ..SevSnpExpectations::default()
    };
    assert!(verify_sev_snp(&report, VCEK, Some(CHAIN), &expect).passed());
    c.bench_function("cvm/sev_snp_report", |b| {
        b.iter(|| verify_sev_snp(black_box(&report), VCEK, Some(CHAIN), &expect))
    });

    // The per-answer path: the chain verified once, the report each time.
    let endorsement = SevSnpEndorsement::verify(VCEK, Some(CHAIN)).unwrap();
    assert!(endorsement.verify_report(&report, &expect).passed());
    c.bench_function("cvm/sev_snp_report_with_endorsement", |b| {
        b.iter(|| endorsement.verify_report(black_box(&report), &expect))
    });

    // The chain alone (a report that does not parse: the chain's steps still
    // run, the report's are skipped).
    c.bench_function("cvm/sev_snp_chain_only", |b| {
        b.iter(|| verify_sev_snp(black_box(&[0u8; 16]), VCEK, Some(CHAIN), &expect))
    });

    let collateral = TdxCollateral::from_json(COLLATERAL).unwrap();
    let (from, _) = collateral.validity().unwrap();
    let at = from + 3600;
    let expect = TdxExpectations::default();
    assert!(verify_tdx(QUOTE, &collateral, at, &expect).passed());
    c.bench_function("cvm/tdx_quote", |b| {
        b.iter(|| verify_tdx(black_box(QUOTE), &collateral, at, &expect))
    });

    // A table as a host fills it (the Milan VCEK, ASK and ARK): 24-byte
    // entries, then the certificates.
    let table = nomyo_testkit::tsm::milan_cert_table();
    assert!(SnpCertTable::parse(&table).unwrap().chain_pem().is_some());
    c.bench_function("cvm/snp_cert_table", |b| {
        b.iter(|| SnpCertTable::parse(black_box(&table)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = cvm
}
criterion_main!(benches);
