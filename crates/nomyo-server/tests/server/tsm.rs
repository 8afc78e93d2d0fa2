//! Confidential-VM evidence through configfs-tsm (docs/PROTOCOL.md §15),
//! against a directory laid out like configfs-tsm with a stand-in for the
//! kernel's provider ([`nomyo_testkit::tsm::FakeTsm`]). (This machine has no
//! SEV-SNP or TDX; the reports' signatures are not real, so these tests
//! check the binding of keys, nonce and payload id, not the vendors'
//! signatures.)

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use common::*;
use nomyo_core::SecurityTier;
use nomyo_server::attestation::tsm::{TsmKind, REPORT_DATA_LEN};
use nomyo_server::attestation::Attestation;
use nomyo_testkit::tsm::{report_data_offset as offset, FakeTsm};
use serde_json::Value;

async fn open(fake: &FakeTsm) -> Result<Attestation, String> {
    let dir = fake.path().to_owned();
    tokio::task::spawn_blocking(move || Attestation::open_tsm(&dir, 4))
        .await
        .unwrap()
}

fn b64d(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("base64")
}

fn report_data_of(report: &[u8], provider: &str) -> Vec<u8> {
    let at = offset(provider);
    report[at..at + REPORT_DATA_LEN].to_vec()
}

fn padded(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.resize(REPORT_DATA_LEN, 0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_bind_the_keys_the_nonce_and_each_answer() {
    for (provider, kind) in [("sev_guest", TsmKind::SevSnp), ("tdx_guest", TsmKind::Tdx)] {
        let fake = FakeTsm::start(provider, false);
        let att = open(&fake).await.unwrap();
        assert_eq!(att.tsm_source(), Some((provider, kind)));
        assert!(att.is_available());
        assert!(att.evidence().is_none(), "no TPM evidence");
        let app = nomyo_server::app(
            state_with(&["m"])
                .attestation(att)
                .attestation_tiers(BTreeSet::from([SecurityTier::Standard]))
                .build()
                .unwrap(),
        );

        // The route: the report data is the route's binding, padded.
        for nonce in [[0x11u8; 16], [0x22u8; 16]] {
            let (s, _, body) = oneshot_get(
                &app,
                &format!(
                    "/.well-known/nomyo-attestation?nonce={}",
                    hex::encode(nonce)
                ),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            let ev: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(ev["version"], 1);
            assert_eq!(ev["kind"], kind.name());
            assert_eq!(ev["provider"], provider);
            let v1 = fetch_public_key(&app).await;
            assert_eq!(ev["v1_key_fingerprint"], v1.fingerprint().to_string());
            let v2 = b64d(&ev["v2_keys_b64"]);
            assert_eq!(v2, fetch_hpke_keys(&app).await);
            let binding = nomyo_core::tpm::attestation_extra_data(&nonce, &v1.fingerprint(), &v2);
            let report = b64d(&ev["report_b64"]);
            assert_eq!(report_data_of(&report, provider), padded(&binding));
            assert_eq!(ev["report_data"], hex::encode(padded(&binding)));
            assert_eq!(ev["auxblob_b64"].is_string(), provider == "sev_guest");
        }

        // An answer: its report carries its own payload id's data; the tier
        // that requires attestation is served.
        let sealed = seal_json(&chat("m", "hi"));
        let (s, _, body) = oneshot(&app, sealed.request(None, Some("standard"))).await;
        assert_eq!(s, StatusCode::OK, "{}", detail(&body));
        let answer = open_response(&body).1;
        let meta = &answer["_metadata"];
        assert_eq!(meta["payload_id"], sealed.id.as_str());
        assert_eq!(meta["tpm_attestation"]["is_available"], false);
        assert_eq!(meta["attestation"]["kind"], kind.name());
        assert_eq!(meta["attestation"]["provider"], provider);
        let report = b64d(&meta["attestation"]["report_b64"]);
        assert_eq!(
            report_data_of(&report, provider),
            padded(&nomyo_core::tpm::extra_data_for(&sealed.id))
        );

        // No TPM: activation is not offered.
        let (s, _, _) = oneshot(
            &app,
            Request::post("/.well-known/nomyo-attestation/activate")
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"credential_blob_b64":"AA==","encrypted_secret_b64":"AA=="}"#,
                ))
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_without_the_data_written_is_never_served() {
    let fake = FakeTsm::start("sev_guest", true);
    let app = nomyo_server::app(
        state_with(&["m"])
            .attestation(open(&fake).await.unwrap())
            .build()
            .unwrap(),
    );
    let (s, _, body) = oneshot_get(
        &app,
        &format!("/.well-known/nomyo-attestation?nonce={}", "ab".repeat(16)),
    )
    .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!String::from_utf8_lossy(&body).contains("report_b64"));
    // Nor an answer with it.
    let (s, _, _) = oneshot(&app, seal_json(&chat("m", "hi")).request(None, None)).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_provider_or_a_missing_directory_is_refused_at_start() {
    let fake = FakeTsm::start("arm_cca_guest", false);
    let e = open(&fake).await.unwrap_err();
    assert!(e.contains("\"arm_cca_guest\" is not supported"), "{e}");
    let e = tokio::task::spawn_blocking(|| {
        Attestation::open_tsm(Path::new("/nonexistent/tsm/report"), 4)
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(e.contains("is not a configfs-tsm report directory"), "{e}");
}

/// `[attestation] source` and `tsm_dir`: tsm takes the default directory,
/// or the one given; conflicting or incomplete settings are refused with
/// what to change.
#[test]
fn the_source_setting_picks_tpm_or_tsm_and_refuses_conflicts() {
    use nomyo_server::config::FileConfig;
    let resolve = |toml: &str| FileConfig::from_toml(toml).unwrap().resolve();
    let s = resolve("[attestation]\nsource = \"tsm\"\n").unwrap();
    assert_eq!(
        s.attestation.tsm_dir.as_deref(),
        Some(Path::new("/sys/kernel/config/tsm/report"))
    );
    assert!(s.attestation.tpm.is_none());
    let s = resolve("[attestation]\nsource = \"tsm\"\ntsm_dir = \"/tmp/tsm\"\n").unwrap();
    assert_eq!(
        s.attestation.tsm_dir.as_deref(),
        Some(Path::new("/tmp/tsm"))
    );
    let s = resolve("[attestation]\ntpm = \"device:/dev/tpmrm0\"\n").unwrap();
    assert!(s.attestation.tsm_dir.is_none());
    assert!(resolve("[attestation]\nsource = \"none\"\n")
        .unwrap()
        .attestation
        .tsm_dir
        .is_none());
    for (bad, says) in [
        ("[attestation]\nsource = \"tpm\"\n", "needs the TPM's TCTI"),
        (
            "[attestation]\nsource = \"tsm\"\ntpm = \"device:/dev/tpmrm0\"\n",
            "conflicts with none and tsm",
        ),
        (
            "[attestation]\ntsm_dir = \"/tmp/tsm\"\n",
            "needs attestation = \"tsm\"",
        ),
        (
            "[attestation]\nsource = \"sgx\"\n",
            "not one of none, tpm, tsm",
        ),
    ] {
        let e = resolve(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}
