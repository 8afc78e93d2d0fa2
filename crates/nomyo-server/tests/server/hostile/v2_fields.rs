//! The matrix's v2 wire-field rows: `Ehbp-Encapsulated-Key` values, key
//! ids, the tier header, bodies of no or hostile frames, a plaintext body
//! without the header, and an X25519 enc under the X-Wing key's id.

use super::cases::{case, Case, V2Field};
use super::*;

/// The v2 wire-field rows. `enc_hex` and `good_frames` come from one sealer
/// to the `xwing` key (`good_frames` seals `good_plain`); `configs` are all
/// the server's keys.
pub(super) fn v2_wire_fields(
    configs: &[KeyConfig],
    xwing: &KeyConfig,
    x25519: &KeyConfig,
    enc_hex: String,
    good_frames: Vec<u8>,
    good_plain: &[u8],
) -> Vec<Case> {
    let mut cases = Vec::new();
    // Key ids are random per key set: pick one the server does not have.
    let unknown_id = (0..=255u8)
        .find(|id| configs.iter().all(|c| c.key_id != *id))
        .unwrap()
        .to_string();
    let v2_field_cases: Vec<V2Field> = vec![
        (
            "enc not hex",
            "zz".repeat(1120),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc odd length",
            format!("{enc_hex}0"),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc uppercase+spaces",
            format!(" {} ", "G".repeat(64)),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc empty",
            String::new(),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc 8 KiB",
            "ab".repeat(4096),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "enc of no suite's length",
            enc_hex[..200].to_owned(),
            vec![],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id negative",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", "-1".into())],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id 256",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", "256".into())],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id 1.0",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", "1.0".into())],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id empty",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", String::new())],
            good_frames.clone(),
            &[400],
        ),
        (
            "key id unknown",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", unknown_id.clone())],
            good_frames.clone(),
            &[422],
        ),
        (
            "tier invalid",
            enc_hex.clone(),
            vec![("X-Security-Tier", "ultra".into())],
            good_frames.clone(),
            &[400],
        ),
        ("body empty", enc_hex.clone(), vec![], Vec::new(), &[400]),
        (
            "body of zero-length frames only",
            enc_hex.clone(),
            vec![],
            vec![0u8; 64],
            &[400],
        ),
        (
            "body 3 bytes (inside a prefix)",
            enc_hex.clone(),
            vec![],
            vec![0, 0, 1],
            &[400],
        ),
        (
            "frame announcing 4 GiB",
            enc_hex.clone(),
            vec![],
            {
                let mut b = u32::MAX.to_be_bytes().to_vec();
                b.extend_from_slice(&[7u8; 100]);
                b
            },
            &[400],
        ),
        (
            "frame of garbage ciphertext",
            enc_hex.clone(),
            vec![("Nomyo-Key-Id", xwing.key_id.to_string())],
            {
                let mut b = Vec::new();
                encode_frame(&[0x55u8; 300], &mut b);
                b
            },
            &[400],
        ),
        (
            "plaintext JSON body, no enc header",
            String::new(),
            vec![],
            good_plain.to_vec(),
            &[400],
        ),
    ];
    for (name, enc_value, extra, body, expect) in v2_field_cases {
        let bytes = if name.contains("no enc header") {
            request(
                "/v1/chat/completions",
                &[("Content-Type", "application/json".into())],
                &body,
                Some(body.len()),
            )
        } else {
            v2_raw(&enc_value, &extra, &body)
        };
        cases.push(case(format!("v2 {name}"), bytes, expect));
    }
    // X25519 enc sent with the X-Wing key's id: 400, not a downgrade.
    let (xe, mut xs) = RequestSealer::new(x25519).unwrap();
    let body = xs.seal_chunk(good_plain).unwrap();
    cases.push(case(
        "v2 X25519 enc under the X-Wing key id",
        v2_raw(
            &hex::encode(xe),
            &[("Nomyo-Key-Id", xwing.key_id.to_string())],
            &body,
        ),
        &[400],
    ));
    cases
}
