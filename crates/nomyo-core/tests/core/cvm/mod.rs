//! Confidential-VM evidence (`nomyo_core::cvm`) against real AMD SEV-SNP and
//! Intel TDX evidence (tests/vectors/cvm/, see its README.md): each vector
//! verifies, any change to the signed bytes is refused, the wrong chain,
//! an out-of-date platform, a time outside the collateral's validity, the
//! wrong binding and a measurement outside the allowlist each fail their
//! step by name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod snp;
mod snp_chain;
mod tdx;

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
    nomyo_core::attest::find_step(steps, name)
        .unwrap_or_else(|| panic!("no step {name}"))
        .status
}

/// The names of the steps that neither passed nor were left unrequested.
fn not_passed(steps: &[nomyo_core::cvm::Step]) -> Vec<&str> {
    steps
        .iter()
        .filter(|s| s.status != StepStatus::Pass && s.status != StepStatus::NotRequested)
        .map(|s| s.name.as_str())
        .collect()
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
