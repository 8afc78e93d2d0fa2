//! The TPM structure parsers of `nomyo_core::tpm` (what a client reads from
//! a server's `tpm_attestation` block: TPM2B_PUBLIC, TPMS_ATTEST,
//! TPMT_SIGNATURE; and the credential file format): never panic, refuse
//! with a one-line message, and what parses is what was read (the public
//! area and the credential file re-encode to the input). The same input,
//! cut in three, goes through verify_quote and, as an EK, make_credential.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_core::tpm::{make_credential, verify_quote, Attest, MadeCredential, Public, Signature};

fn short_message(e: &dyn std::fmt::Display) {
    let msg = e.to_string();
    assert!(
        !msg.is_empty() && msg.len() < 300 && !msg.contains('\n'),
        "{msg}"
    );
}

fuzz_target!(|data: &[u8]| {
    match Public::from_tpm2b(data) {
        Ok(p) => {
            assert_eq!(p.marshalled(), &data[2..]);
            assert_eq!(p.name().len(), 2 + p.name_alg.digest_len());
        }
        Err(e) => short_message(&e),
    }
    match Public::from_tpmt(data) {
        Ok(p) => assert_eq!(p.marshalled(), data),
        Err(e) => short_message(&e),
    }
    match Attest::parse_quote(data) {
        Ok(a) => {
            assert!(a.extra_data.len() <= 66);
            for sel in &a.quote.pcr_select {
                assert!(sel.indices().all(|i| i < 64));
            }
        }
        Err(e) => short_message(&e),
    }
    if let Err(e) = Signature::parse(data) {
        short_message(&e);
    }
    match MadeCredential::from_tools_file(data) {
        Ok(c) => assert_eq!(c.to_tools_file(), data),
        Err(e) => short_message(&e),
    }

    // Three parts: [len_a: u16][len_b: u16] a b c.
    if data.len() >= 4 {
        let la = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let lb = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let rest = &data[4..];
        if la + lb <= rest.len() {
            let (a, rest) = rest.split_at(la);
            let (b, c) = rest.split_at(lb);
            if let Err(e) = verify_quote(a, c, b, &[0; 16], None) {
                short_message(&e);
            }
            if let Err(e) = make_credential(a, &[1; 16], c) {
                short_message(&e);
            }
        }
    }
});
