//! The quote each v1 and v2 answer carries for its payload id, checked by
//! nomyo-core and by `tpm2_checkquote`, on the tiers configured for it.

use std::collections::BTreeSet;
use std::process::Command;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use nomyo_core::tpm::{self, HashAlg};
use nomyo_core::SecurityTier;
use nomyo_testkit::swtpm::{on_path, swtpm};
use serde_json::{json, Value};

use super::{b64d, open, pcr_values};
use crate::common::*;

/// `tpm2_checkquote` on a per-answer block for `payload_id`: whether
/// tpm2-tools accepts the quote for that payload id (`None`: no
/// tpm2-tools, the check is skipped).
fn checkquote(block: &Value, payload_id: &str) -> Option<bool> {
    if !on_path("tpm2_checkquote") {
        assert!(
            std::env::var("NOMYO_REQUIRE_TPM").map_or(true, |v| v != "1"),
            "NOMYO_REQUIRE_TPM=1 but tpm2_checkquote is not installed"
        );
        eprintln!("tpm2_checkquote not installed: the tools check is skipped");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, field: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, b64d(&block[field])).unwrap();
        path
    };
    let ak = write("ak.pub", "aik_pubkey_b64");
    let msg = write("quote.msg", "quote_b64");
    let sig = write("quote.sig", "signature_b64");
    let out = Command::new("tpm2_checkquote")
        .arg("-u")
        .arg(&ak)
        .arg("-m")
        .arg(&msg)
        .arg("-s")
        .arg(&sig)
        .args(["-g", "sha256", "-q"])
        .arg(hex::encode(tpm::extra_data_for(payload_id)))
        .output()
        .unwrap();
    Some(out.status.success())
}

/// Checks a per-answer block: it verifies for `payload_id` with
/// nomyo-core and with tpm2-tools, and for no other id.
fn check_block(block: &Value, payload_id: &str, ak_fingerprint: &str) {
    assert_eq!(block["is_available"], true, "{block}");
    assert_eq!(block["pcr_banks"], "sha256:0,7,10");
    let ak = b64d(&block["aik_pubkey_b64"]);
    assert_eq!(
        format!("sha256:{}", hex::encode(HashAlg::Sha256.digest(&[&ak]))),
        ak_fingerprint
    );
    let attest = b64d(&block["quote_b64"]);
    let sig = b64d(&block["signature_b64"]);
    tpm::verify_quote(
        &ak,
        &attest,
        &sig,
        &tpm::extra_data_for(payload_id),
        Some(&pcr_values(block)),
    )
    .expect("the answer's quote verifies for its payload id");
    assert!(tpm::verify_quote(&ak, &attest, &sig, &tpm::extra_data_for("other-id"), None).is_err());
    if let Some(ok) = checkquote(block, payload_id) {
        assert!(ok, "tpm2_checkquote refused the quote for its payload id");
        assert_eq!(
            checkquote(block, "another-payload-id"),
            Some(false),
            "tpm2_checkquote accepted the quote for another payload id"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_answers_carry_a_quote_for_their_payload_id() {
    use nomyo_core::v2::framing::FrameDecoder;
    use nomyo_core::v2::keys::{Kem, KeyConfig};
    use nomyo_core::v2::request::RequestSealer;
    use nomyo_core::v2::response::parse_response_nonce;

    let Some(tpm) = swtpm() else { return };
    let keys = tempfile::tempdir().unwrap();
    let att = open(&tpm, keys.path(), 32).await;
    let ak = att.evidence().unwrap().ak_fingerprint.clone();
    let app = nomyo_server::app(
        state_with(&["m"])
            .tier(SecurityTier::Standard, allow_models(&["m"]))
            .tier(SecurityTier::High, allow_models(&["m"]))
            .tier(SecurityTier::Maximum, allow_models(&["m"]))
            .require_post_quantum(SecurityTier::Maximum, false)
            .attestation_tiers(BTreeSet::from([SecurityTier::Maximum]))
            .quote_tiers(BTreeSet::from([
                SecurityTier::Standard,
                SecurityTier::Maximum,
            ]))
            .attestation(att)
            .build()
            .unwrap(),
    );

    // v1: the payload id is the request's X-Payload-ID; `maximum`
    // (requires attestation) is served, the server having a TPM.
    for tier in ["standard", "maximum"] {
        let sealed = seal_json(&chat("m", "hi"));
        let (s, _, body) = oneshot(&app, sealed.request(None, Some(tier))).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let (_, answer) = open_response(&body);
        assert_eq!(answer["_metadata"]["payload_id"], sealed.id.as_str());
        check_block(&answer["_metadata"]["tpm_attestation"], &sealed.id, &ak);
    }
    // A tier with attestation_per_answer = false: no quote.
    let (s, _, body) = oneshot(
        &app,
        seal_json(&chat("m", "hi")).request(None, Some("high")),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        open_response(&body).1["_metadata"]["tpm_attestation"],
        json!({"is_available": false})
    );

    // v2, whole and streamed: the payload id the client derives from its
    // own enc (docs/PROTOCOL.md §1.7).
    let configs = KeyConfig::parse_list(&fetch_hpke_keys(&app).await).unwrap();
    let config = configs.iter().find(|c| c.kem == Kem::XWing).unwrap();
    for stream in [false, true] {
        let (enc, mut sealer) = RequestSealer::new(config).unwrap();
        let mut body = chat("m", "hi");
        body["stream"] = json!(stream);
        let frame = sealer
            .seal_chunk(&serde_json::to_vec(&body).unwrap())
            .unwrap();
        let req = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .header("ehbp-encapsulated-key", hex::encode(&enc))
            .header("x-security-tier", "maximum")
            .body(Body::from(frame))
            .unwrap();
        let (s, h, body) = oneshot(&app, req).await;
        assert_eq!(s, StatusCode::OK);
        let nonce = parse_response_nonce(h["ehbp-response-nonce"].to_str().unwrap()).unwrap();
        let mut opener = sealer.response_opener(&nonce).unwrap();
        let mut frames = FrameDecoder::new(1 << 20);
        frames.push(&body);
        let mut plain = Vec::new();
        while let Some(f) = frames.next_frame().unwrap() {
            plain.extend_from_slice(opener.open_chunk(&f).unwrap().expose_secret());
        }
        let text = String::from_utf8(plain).unwrap();
        let answer: Value = if stream {
            let first = text
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .expect("a chunk event");
            serde_json::from_str(first).unwrap()
        } else {
            serde_json::from_str(&text).unwrap()
        };
        let id = hex::encode(
            &nomyo_core::Fingerprint::of_parts(&[&b"nomyo-v2-enc\0"[..], &enc[..]]).0[..8],
        );
        assert_eq!(
            answer["_metadata"]["payload_id"],
            id.as_str(),
            "stream {stream}"
        );
        check_block(&answer["_metadata"]["tpm_attestation"], &id, &ak);
    }
}
