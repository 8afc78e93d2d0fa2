//! The tests that drive a TPM (feature `tpm`): the evidence route and
//! credential activation, and the quote each answer carries. What they
//! share: base64, opening the TPM as `nomyo serve` does, and a wire block's
//! PCR values.

mod answers;
mod evidence;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use nomyo_core::tpm::{self, HashAlg};
use nomyo_server::attestation::Attestation;
use nomyo_testkit::swtpm::SwTpm;
use serde_json::Value;

fn b64d(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("base64")
}

fn b64e(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Opens the TPM as `nomyo serve` does, its AK saved in `ak_dir`.
pub async fn open(tpm: &SwTpm, ak_dir: &Path, queue: usize) -> Attestation {
    let tcti = tpm.tcti();
    let dir = ak_dir.to_owned();
    tokio::task::spawn_blocking(move || Attestation::open(&tcti, Some(&dir), queue))
        .await
        .unwrap()
        .unwrap()
}

/// The PCR values of a wire block (`pcr_values.sha256`).
pub fn pcr_values(v: &Value) -> tpm::PcrValues {
    let mut bank = BTreeMap::new();
    for (i, hexv) in v["pcr_values"]["sha256"].as_object().unwrap() {
        bank.insert(
            i.parse::<u32>().unwrap(),
            hex::decode(hexv.as_str().unwrap()).unwrap(),
        );
    }
    BTreeMap::from([(HashAlg::Sha256, bank)])
}
