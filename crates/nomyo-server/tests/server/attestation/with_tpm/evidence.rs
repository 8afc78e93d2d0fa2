//! The evidence route (a quote over the nonce and the current keys, the EK
//! certificate), bad nonces, credential activation, the AK kept across a
//! restart, and the time a quote takes.

use std::time::Instant;

use axum::http::StatusCode;
use nomyo_core::tpm;
use nomyo_testkit::swtpm::swtpm;
use serde_json::{json, Value};

use super::{b64d, b64e, open, pcr_values};
use crate::attestation::{get, post_json};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_route_activation_and_a_stable_ak() {
    let Some(tpm) = swtpm() else { return };
    let keys = tempfile::tempdir().unwrap();
    let att = open(&tpm, keys.path(), 32).await;
    let ak_first = att.evidence().unwrap().ak_fingerprint.clone();
    #[cfg(unix)]
    for f in ["ak.pub", "ak.priv"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let app = nomyo_server::app(state_with(&["m"]).attestation(att).build().unwrap());

    // GET: a quote over the nonce and the current keys.
    let nonce = [0x5au8; 24];
    let t = Instant::now();
    let (s, h, body) = oneshot(
        &app,
        get(&format!(
            "/.well-known/nomyo-attestation?nonce={}",
            hex::encode(nonce)
        )),
    )
    .await;
    eprintln!("evidence route (PCR read + quote): {:?}", t.elapsed());
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "application/json");
    let ev: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ev["version"], 1);
    assert_eq!(ev["ak_fingerprint"], ak_first);
    assert_eq!(ev["pcr_banks"], "sha256:0,7,10");
    let v1_key = fetch_public_key(&app).await;
    assert_eq!(ev["v1_key_fingerprint"], v1_key.fingerprint().to_string());
    let v2_keys = b64d(&ev["v2_keys_b64"]);
    assert_eq!(v2_keys, fetch_hpke_keys(&app).await);
    let ak_public = b64d(&ev["ak_public_b64"]);
    let expected = tpm::attestation_extra_data(&nonce, &v1_key.fingerprint(), &v2_keys);
    let quote = tpm::verify_quote(
        &ak_public,
        &b64d(&ev["quote_b64"]),
        &b64d(&ev["signature_b64"]),
        &expected,
        Some(&pcr_values(&ev)),
    )
    .expect("the route's quote verifies");
    assert_eq!(quote.extra_data, expected);
    // Another nonce's data does not match.
    let other = tpm::attestation_extra_data(&[0u8; 24], &v1_key.fingerprint(), &v2_keys);
    assert!(tpm::verify_quote(
        &ak_public,
        &b64d(&ev["quote_b64"]),
        &b64d(&ev["signature_b64"]),
        &other,
        None
    )
    .is_err());
    // The EK certificate from the TPM's NV index: DER, the local CA's.
    let certs = ev["ek_certificates_b64"].as_array().unwrap();
    assert!(!certs.is_empty(), "swtpm_setup wrote an EK certificate");
    assert_eq!(b64d(&certs[0])[0], 0x30, "DER SEQUENCE");

    // Bad nonces: 400.
    for q in [
        "",
        "?nonce=abcd",
        "?nonce=zz",
        &format!("?nonce={}", "00".repeat(65)),
    ] {
        let (s, _, _) = oneshot(&app, get(&format!("/.well-known/nomyo-attestation{q}"))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
    }

    // /activate: the credential made in software comes back from the TPM.
    let ek_public = b64d(&ev["ek_public_b64"]);
    let ak_name = tpm::Public::from_tpm2b(&ak_public).unwrap().name();
    let secret = [0xc3u8; 32];
    let made = tpm::make_credential(&ek_public, &secret, &ak_name).unwrap();
    let t = Instant::now();
    let (s, _, body) = oneshot(
        &app,
        post_json(
            "/.well-known/nomyo-attestation/activate",
            &json!({
                "credential_blob_b64": b64e(&made.id_object),
                "encrypted_secret_b64": b64e(&made.encrypted_secret),
            }),
        ),
    )
    .await;
    eprintln!("activate: {:?}", t.elapsed());
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(b64d(&v["secret_b64"]), secret);

    // A credential for another Name, a tampered blob, garbage: one opaque 400.
    let wrong_name =
        tpm::make_credential(&ek_public, &secret, &[&[0, 0x0b][..], &[1u8; 32]].concat()).unwrap();
    let mut tampered = made.id_object.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    for (blob, enc) in [
        (
            wrong_name.id_object.clone(),
            wrong_name.encrypted_secret.clone(),
        ),
        (tampered, made.encrypted_secret.clone()),
        (b"garbage".to_vec(), b"garbage".to_vec()),
    ] {
        let (s, _, body) = oneshot(
            &app,
            post_json(
                "/.well-known/nomyo-attestation/activate",
                &json!({"credential_blob_b64": b64e(&blob), "encrypted_secret_b64": b64e(&enc)}),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(detail(&body), "credential activation failed");
    }
    for bad in [
        json!({}),
        json!({"credential_blob_b64": "!!", "encrypted_secret_b64": "AA=="}),
        json!([1]),
    ] {
        let (s, _, _) = oneshot(
            &app,
            post_json("/.well-known/nomyo-attestation/activate", &bad),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    let big = json!({"credential_blob_b64": "A".repeat(5000), "encrypted_secret_b64": "AA=="});
    let (s, _, _) = oneshot(
        &app,
        post_json("/.well-known/nomyo-attestation/activate", &big),
    )
    .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // A restart loads the saved AK: the same key.
    drop(app);
    let again = open(&tpm, keys.path(), 32).await;
    assert_eq!(again.evidence().unwrap().ak_fingerprint, ak_first);
    assert_eq!(again.evidence().unwrap().ak_public, ak_public);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quote_time_against_swtpm() {
    let Some(tpm) = swtpm() else { return };
    let keys = tempfile::tempdir().unwrap();
    let att = open(&tpm, keys.path(), 32).await;
    let n = 20;
    let t = Instant::now();
    for i in 0..n {
        let q = att
            .quote(&tpm::extra_data_for(&format!("id-{i}")))
            .await
            .unwrap();
        assert!(q.pcrs_match());
    }
    eprintln!(
        "quote (PCR read + TPM2_Quote, through the queue): {:.2} ms each over {n}",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(n)
    );
}
