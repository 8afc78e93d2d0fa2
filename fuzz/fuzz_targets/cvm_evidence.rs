//! The confidential-VM evidence a client verifies (nomyo_core::cvm): an
//! SEV-SNP report with its VCEK and chain, a TDX quote with its collateral,
//! and the parsers written for them (the VCEK's TCB extensions, the SEV-SNP
//! certificate table, the collateral's dates). Never panic; every step's
//! detail is one short line; a report that is its own VCEK and chain never
//! passes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_core::cvm::{
    self, verify_sev_snp, verify_tdx, SevSnpExpectations, TdxCollateral, TdxExpectations,
};

const VCEK: &[u8] =
    include_bytes!("../../crates/nomyo-core/tests/vectors/cvm/sev-snp/vcek_milan.der");
const CHAIN: &[u8] =
    include_bytes!("../../crates/nomyo-core/tests/vectors/cvm/sev-snp/cert_chain_milan");
const COLLATERAL: &[u8] =
    include_bytes!("../../crates/nomyo-core/tests/vectors/cvm/tdx/tdx_quote_collateral.json");

fn one_line(steps: &[cvm::Step]) {
    for s in steps {
        assert!(
            s.detail.len() < 600 && !s.detail.contains('\n'),
            "{}: {}",
            s.name,
            s.detail
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // The input as a report (padded or cut to a report's length, and as is),
    // against the real Milan VCEK and chain.
    let mut report = data.to_vec();
    report.resize(cvm::SEV_SNP_REPORT_LEN, 0);
    for r in [&report[..], data] {
        let v = verify_sev_snp(r, VCEK, Some(CHAIN), &SevSnpExpectations::default());
        one_line(&v.steps);
    }
    // The input as a report checked with a chain verified before (each
    // answer's check), and as the certificates of such a chain.
    if let Ok(e) = cvm::SevSnpEndorsement::verify(VCEK, Some(CHAIN)) {
        let v = e.verify_report(&report, &SevSnpExpectations::default());
        one_line(&v.steps);
    }
    assert!(cvm::SevSnpEndorsement::verify(data, Some(data)).is_err());
    // The input as the VCEK and as the chain.
    let v = verify_sev_snp(&report, data, Some(data), &SevSnpExpectations::default());
    assert!(!v.passed());
    one_line(&v.steps);
    let _ = cvm::sev_snp::fuzz_vcek_extensions(data);
    // The input as a certificate table (configfs-tsm's auxblob).
    if let Ok(table) = cvm::SnpCertTable::parse(data) {
        if let (Some(vek), Some(chain)) = (table.endorsement_key(), table.chain_pem()) {
            let v = verify_sev_snp(&report, vek, Some(&chain), &SevSnpExpectations::default());
            one_line(&v.steps);
        }
    }

    // The input as a TDX quote, with the real collateral at a time inside it.
    if let Ok(collateral) = TdxCollateral::from_json(COLLATERAL) {
        if let Ok((from, _)) = collateral.validity() {
            let v = verify_tdx(data, &collateral, from, &TdxExpectations::default());
            one_line(&v.steps);
        }
    }
    // Without collateral (a live check that has none): never a pass.
    let v = cvm::verify_tdx_quote(data, None, 0, &TdxExpectations::default());
    assert!(!v.passed());
    one_line(&v.steps);
    // The input as collateral, and as a date.
    if let Some(Ok((from, until))) = cvm::tdx::fuzz_collateral(data) {
        let _ = (from, until);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cvm::tdx::fuzz_rfc3339(s);
    }
});
