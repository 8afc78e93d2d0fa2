//! TPM attestation (docs/PROTOCOL.md §14) against a software TPM of each
//! test's own: swtpm with an EK certificate from a local CA made for the
//! test (`swtpm_setup --create-ek-cert` with `swtpm_localca`), on a free
//! port, killed on drop.
//! Without swtpm the TPM tests are skipped with a printed reason, unless
//! NOMYO_REQUIRE_TPM=1 (then they fail). The tier rule without a TPM needs
//! no TPM and always runs.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use nomyo_core::SecurityTier;
use nomyo_server::config::FileConfig;
use serde_json::{json, Value};

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post_json(path: &str, v: &Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

#[cfg(not(feature = "tpm"))]
#[test]
fn tpm_tests_need_the_tpm_feature() {
    assert!(
        std::env::var("NOMYO_REQUIRE_TPM").map_or(true, |v| v != "1"),
        "NOMYO_REQUIRE_TPM=1 but nomyo-server is built without its `tpm` feature"
    );
    eprintln!("skipped: the TPM tests need `--features tpm`");
}

/// The tests that drive a TPM (feature `tpm`).
#[cfg(feature = "tpm")]
mod with_tpm {
    use super::*;

    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;
    use std::time::Instant;

    use base64::Engine as _;
    use nomyo_core::tpm::{self, HashAlg};
    use nomyo_server::attestation::Attestation;
    use nomyo_testkit::swtpm::{on_path, swtpm, SwTpm};

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
            tpm::make_credential(&ek_public, &secret, &[&[0, 0x0b][..], &[1u8; 32]].concat())
                .unwrap();
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
        assert!(
            tpm::verify_quote(&ak, &attest, &sig, &tpm::extra_data_for("other-id"), None).is_err()
        );
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
