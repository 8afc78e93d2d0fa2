//! A server without a TPM: the attestation routes answer 404, answers say
//! there is no quote, and `maximum` (which requires attestation by default)
//! is refused after the post-quantum rule; and a build without the `tpm`
//! feature under NOMYO_REQUIRE_TPM=1 fails.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use nomyo_core::SecurityTier;
use nomyo_server::config::FileConfig;
use serde_json::json;

use super::{get, post_json};
use crate::common::*;

#[cfg(not(feature = "tpm"))]
#[test]
fn tpm_tests_need_the_tpm_feature() {
    assert!(
        std::env::var("NOMYO_REQUIRE_TPM").map_or(true, |v| v != "1"),
        "NOMYO_REQUIRE_TPM=1 but nomyo-server is built without its `tpm` feature"
    );
    eprintln!("skipped: the TPM tests need `--features tpm`");
}

#[tokio::test]
async fn without_a_tpm_the_routes_404() {
    let app = nomyo_server::app(state_with(&["m"]).build().unwrap());
    let (s, _, body) = oneshot(
        &app,
        get(&format!(
            "/.well-known/nomyo-attestation?nonce={}",
            "00".repeat(16)
        )),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(detail(&body), "this server has no TPM attestation");
    // Answers say there is no quote.
    let (s, _, body) = oneshot(&app, seal_json(&chat("m", "x")).request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        open_response(&body).1["_metadata"]["tpm_attestation"],
        json!({"is_available": false})
    );
    let (s, _, _) = oneshot(
        &app,
        post_json(
            "/.well-known/nomyo-attestation/activate",
            &json!({"credential_blob_b64": "AA==", "encrypted_secret_b64": "AA=="}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// `maximum` on a server without a TPM: the post-quantum rule's 403 first,
/// then the attestation rule's 503.
#[tokio::test]
async fn maximum_without_a_tpm_is_503_after_the_post_quantum_403() {
    let toml = |pq: bool| {
        format!(
            "[tiers.standard]\nmodels = [\"*\"]\n[tiers.maximum]\nmodels = [\"*\"]\nrequire_post_quantum = {pq}\n"
        )
    };
    for (pq, status) in [
        (true, StatusCode::FORBIDDEN),
        (false, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let settings = FileConfig::from_toml(&toml(pq)).unwrap();
        let tiers = settings.tiers.clone().unwrap();
        assert!(tiers["maximum"].require_attestation.is_none());
        let resolved = settings.resolve().unwrap();
        assert_eq!(
            resolved.attestation.required_tiers,
            BTreeSet::from([SecurityTier::Maximum]),
            "maximum requires attestation by default"
        );
        let app = nomyo_server::app(
            state_with(&["m"])
                .tier(SecurityTier::Standard, allow_models(&["m"]))
                .tier(SecurityTier::Maximum, allow_models(&["m"]))
                .require_post_quantum(SecurityTier::Maximum, pq)
                .attestation_tiers(resolved.attestation.required_tiers.clone())
                .build()
                .unwrap(),
        );
        let (s, _, body) = oneshot(
            &app,
            seal_json(&chat("m", "x")).request(None, Some("maximum")),
        )
        .await;
        assert_eq!(s, status, "{}", String::from_utf8_lossy(&body));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                detail(&body),
                "the security tier requires TPM attestation (require_attestation) and this server has none"
            );
        }
        // standard is served.
        let (s, _, _) = oneshot(
            &app,
            seal_json(&chat("m", "x")).request(None, Some("standard")),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    // An operator's explicit opt-out.
    let settings = FileConfig::from_toml(
        "[tiers.maximum]\nmodels = [\"*\"]\nrequire_attestation = false\nattestation_per_answer = false\n",
    )
    .unwrap()
    .resolve()
    .unwrap();
    assert!(settings.attestation.required_tiers.is_empty());
    assert!(!settings
        .attestation
        .quote_tiers
        .contains(&SecurityTier::Maximum));
    assert!(settings
        .attestation
        .quote_tiers
        .contains(&SecurityTier::High));
    assert_eq!(settings.attestation.queue, 32);
    assert!(settings.attestation.tpm.is_none());
    let settings =
        FileConfig::from_toml("[attestation]\ntpm = \"device:/dev/tpmrm0\"\nqueue = 4\n")
            .unwrap()
            .resolve()
            .unwrap();
    assert_eq!(
        settings.attestation.tpm.as_deref(),
        Some("device:/dev/tpmrm0")
    );
    assert_eq!(settings.attestation.queue, 4);
    assert!(FileConfig::from_toml("[attestation]\nqueue = 0\n")
        .unwrap()
        .resolve()
        .is_err());
}
