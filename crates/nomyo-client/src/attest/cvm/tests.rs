//! Tests of the confidential-VM checks: decoding the route's answer, the
//! route's and each answer's report verified with real Milan evidence, the
//! key binding, and which refusals may come from another chip.

use super::*;

fn body(kind: &str, version: u32) -> String {
    format!(
        r#"{{"version":{version},"kind":"{kind}","provider":"sev_guest","v1_key_fingerprint":"sha256:00",
        "v2_keys_b64":"AAM=","report_data":"00","report_b64":"AAQ=","auxblob_b64":"AAU=","generation":1}}"#
    )
}

#[test]
fn the_documented_answer_decodes_and_is_told_from_tpm_evidence() {
    let b = body("sev-snp", 1);
    assert!(is_cvm(b.as_bytes()));
    assert!(!is_cvm(br#"{"version":1,"ak_public_b64":"AA=="}"#));
    assert!(!is_cvm(b"not json"));
    let e = CvmEvidence::parse(b.as_bytes()).unwrap();
    assert_eq!(e.kind, Kind::SevSnp);
    assert_eq!(e.report, [0, 4]);
    assert_eq!(e.auxblob.as_deref(), Some(&[0u8, 5][..]));
    assert_eq!(e.v2_keys.as_deref(), Some(&[0u8, 3][..]));
    assert_eq!(
        CvmEvidence::parse(body("tdx", 1).as_bytes()).unwrap().kind,
        Kind::Tdx
    );
}

#[test]
fn bad_answers_are_refused_without_echoing_them() {
    let e = CvmEvidence::parse(body("sgx", 1).as_bytes()).unwrap_err();
    assert!(e.contains("unknown kind"), "{e}");
    assert!(CvmEvidence::parse(body("tdx", 2).as_bytes())
        .unwrap_err()
        .contains("version 2"));
    let bad = body("tdx", 1).replace("\"AAQ=\"", "\"secret words!\"");
    let e = CvmEvidence::parse(bad.as_bytes()).unwrap_err();
    assert!(e.contains("report_b64") && !e.contains("secret"), "{e}");
}

#[test]
fn an_answer_without_a_report_or_of_another_kind_is_refused() {
    let e = check_answer(&[], None, "p", None).unwrap_err().why;
    assert!(e.contains("no confidential-VM report"), "{e}");
    let block = CvmAttestation {
        kind: "tdx".into(),
        provider: "tdx_guest".into(),
        report_b64: "AAQ=".into(),
        extra: Default::default(),
    };
    let sev = Endorsement::SevSnp(Box::new(
        SevSnpEndorsement::verify(nomyo_testkit::tsm::MILAN_VCEK, None).unwrap(),
    ));
    let e = check_answer(&[sev], None, "p", Some(&block))
        .unwrap_err()
        .why;
    assert!(e.contains("kind \"tdx\""), "{e}");
}

fn milan(auxblob: Option<Vec<u8>>) -> CvmEvidence {
    CvmEvidence {
        kind: Kind::SevSnp,
        provider: "sev_guest".into(),
        v1_key_fingerprint: String::new(),
        v2_keys: None,
        report: nomyo_testkit::tsm::milan_report(),
        auxblob,
    }
}

fn status(steps: &[Step], name: &str) -> StepStatus {
    steps.iter().find(|s| s.name == name).unwrap().status
}

#[test]
fn a_real_report_verifies_with_the_servers_certificate_table_and_a_replay_is_refused() {
    let evidence = milan(Some(nomyo_testkit::tsm::milan_cert_table()));
    let carried: [u8; 64] = evidence.report[0x50..0x90].try_into().unwrap();
    let options = AttestOptions::default();

    // The report data the client expects: every step passes.
    let (steps, found, endorsement) = verify_route(&evidence, &options, carried);
    assert!(passed(&steps), "{steps:?}");
    assert!(matches!(found, CvmFound::SevSnp { product_line: Some(ref l), .. } if l == "Milan"));
    let endorsement = endorsement.unwrap();

    // An authentic report made for another nonce (replayed): the
    // signature passes, the report data fails.
    let mut other = carried;
    other[0] ^= 1;
    let (steps, _, _) = verify_route(&evidence, &options, other);
    assert_eq!(status(&steps, "report_signature"), StepStatus::Pass);
    assert_eq!(status(&steps, "report_data"), StepStatus::Fail);
    assert!(!passed(&steps));

    // The policy applies: a measurement not on the list fails.
    let deny = Policy::parse(&format!(
        "[sev_snp]\nmeasurements = [\"{}\"]\n",
        "00".repeat(48)
    ))
    .unwrap();
    let (steps, _, _) = verify_route(&evidence, &options.clone().policy(deny), carried);
    assert_eq!(status(&steps, "measurement"), StepStatus::Fail);

    // An answer's report is checked with the endorsement, for the
    // answer's own payload id: this report carries another's.
    let block = CvmAttestation {
        kind: "sev-snp".into(),
        provider: "sev_guest".into(),
        report_b64: base64::engine::general_purpose::STANDARD.encode(&evidence.report),
        extra: Default::default(),
    };
    let e = check_answer(
        std::slice::from_ref(&endorsement),
        None,
        "payload-1",
        Some(&block),
    )
    .unwrap_err()
    .why;
    assert!(
        e.contains("report_data fail") && !e.contains("report_signature"),
        "{e}"
    );
    // A byte flipped in the signed part.
    let mut bad = evidence.report.clone();
    bad[0x90] ^= 1;
    let block = CvmAttestation {
        report_b64: base64::engine::general_purpose::STANDARD.encode(&bad),
        ..block
    };
    let e = check_answer(&[endorsement], None, "payload-1", Some(&block))
        .unwrap_err()
        .why;
    assert!(e.contains("report_signature fail"), "{e}");
}

#[test]
fn without_a_vcek_the_chain_is_unverified_and_names_the_flag() {
    let (steps, _, endorsement) = verify_route(&milan(None), &AttestOptions::default(), [0; 64]);
    let vcek = steps.iter().find(|s| s.name == "vcek").unwrap();
    assert_eq!(vcek.status, StepStatus::Unverified);
    assert!(vcek.detail.contains("--sev-snp-vcek"), "{}", vcek.detail);
    assert!(endorsement.is_none());
    // Given on the command line instead, it verifies.
    let options = AttestOptions {
        sev_snp_vcek: Some(nomyo_testkit::tsm::MILAN_VCEK.to_vec()),
        ..AttestOptions::default()
    };
    let evidence = milan(None);
    let carried: [u8; 64] = evidence.report[0x50..0x90].try_into().unwrap();
    let (steps, _, _) = verify_route(&evidence, &options, carried);
    assert!(passed(&steps), "{steps:?}");
}

/// The origin of a server never reached (what is checked here needs
/// none) and the server key trusted for it.
fn offline() -> (&'static str, crate::ServerKey) {
    let origin = "http://127.0.0.1:1";
    let key = nomyo_testkit::keys::server_key().public_key().clone();
    let v1 = crate::ServerKey {
        fingerprint: key.fingerprint(),
        key,
        trust: crate::TrustDecision::Unverified,
    };
    (origin, v1)
}

fn hpke_keys(config: nomyo_core::v2::keys::KeyConfig) -> crate::HpkeKeys {
    crate::HpkeKeys {
        fingerprint: config.fingerprint(),
        configs: vec![config],
        chosen: 0,
        trust: crate::TrustDecision::Unverified,
        signed_by: None,
    }
}

fn key_binding(v: &Verification) -> &Step {
    v.steps.iter().find(|s| s.name == "key_binding").unwrap()
}

#[test]
fn the_key_binding_speaks_of_the_report() {
    use nomyo_core::v2::keys::{Kem, KeyConfig, ServerKeyPair};
    let (origin, v1) = offline();
    let b64 = base64::engine::general_purpose::STANDARD;
    let bound = ServerKeyPair::generate(1, Kem::X25519);
    let used = hpke_keys(ServerKeyPair::generate(2, Kem::X25519).config().clone());
    let body = serde_json::json!({
        "version": 1,
        "kind": "sev-snp",
        "provider": "sev_guest",
        "v1_key_fingerprint": v1.fingerprint().to_string(),
        "v2_keys_b64": b64.encode(KeyConfig::encode_list(std::slice::from_ref(bound.config()))),
        "report_b64": b64.encode(nomyo_testkit::tsm::milan_report()),
    })
    .to_string();
    let options = AttestOptions::default();
    let v = attest_cvm(origin, body.as_bytes(), &[0; 32], &v1, None, &options);
    let step = key_binding(&v);
    assert!(
        step.detail.contains("the report binds the trusted v1 key")
            && !step.detail.contains("quote"),
        "{}",
        step.detail
    );
    // The v2 key this client seals to is not in the bound list.
    let v = attest_cvm(
        origin,
        body.as_bytes(),
        &[0; 32],
        &v1,
        Some(&used),
        &options,
    );
    let step = key_binding(&v);
    assert_eq!(step.as_read, Some(StepStatus::Fail));
    assert!(
        step.detail
            .ends_with("is not in the key list the report binds"),
        "{}",
        step.detail
    );
}

#[test]
fn an_answer_that_does_not_parse_names_the_kind_it_claims() {
    let (origin, v1) = offline();
    let kind = |body: &str| {
        let v = attest_cvm(
            origin,
            body.as_bytes(),
            &[0; 32],
            &v1,
            None,
            &AttestOptions::default(),
        );
        assert!(v.cvm.is_none() && !v.passed());
        assert_eq!(v.steps[0].name, "evidence");
        v.kind
    };
    // A version this client does not speak, a field that does not decode.
    assert_eq!(kind(&body("tdx", 2)), "tdx");
    assert_eq!(
        kind(&body("sev-snp", 1).replace("\"AAQ=\"", "\"!\"")),
        "sev-snp"
    );
    // A kind this client does not know, or one that is not a string.
    assert_eq!(kind(&body("sgx", 1)), "unknown");
    assert_eq!(kind(r#"{"version":1,"kind":7}"#), "unknown");
}

#[test]
fn only_a_report_failing_the_chips_steps_may_come_from_another_chip() {
    let evidence = milan(Some(nomyo_testkit::tsm::milan_cert_table()));
    let carried: [u8; 64] = evidence.report[0x50..0x90].try_into().unwrap();
    let (_, _, endorsement) = verify_route(&evidence, &AttestOptions::default(), carried);
    let endorsement = endorsement.unwrap();
    let block = |report: &[u8]| CvmAttestation {
        kind: "sev-snp".into(),
        provider: "sev_guest".into(),
        report_b64: base64::engine::general_purpose::STANDARD.encode(report),
        extra: Default::default(),
    };
    let refusal = |payload_id: &str, block: &CvmAttestation, policy: Option<&Policy>| {
        check_answer(
            std::slice::from_ref(&endorsement),
            policy,
            payload_id,
            Some(block),
        )
        .unwrap_err()
    };
    // Another request's report data: authentic, so from a verified
    // chip, and refused as it is.
    let r = refusal("payload-1", &block(&evidence.report), None);
    assert!(r.why.contains("report_data fail") && !r.other_chip, "{r:?}");
    // A measurement the policy does not allow: the same.
    let deny = Policy::parse(&format!(
        "[sev_snp]\nmeasurements = [\"{}\"]\n",
        "00".repeat(48)
    ))
    .unwrap();
    let r = refusal("payload-1", &block(&evidence.report), Some(&deny));
    assert!(r.why.contains("measurement fail") && !r.other_chip, "{r:?}");
    // A signature the verified chip's key did not make: perhaps another
    // chip's.
    let mut other = evidence.report.clone();
    other[0x90] ^= 1;
    let r = refusal("payload-1", &block(&other), None);
    assert!(
        r.why.contains("report_signature fail") && r.other_chip,
        "{r:?}"
    );
    // No report, or one of another kind: refused as they are.
    assert!(
        !check_answer(std::slice::from_ref(&endorsement), None, "p", None)
            .unwrap_err()
            .other_chip
    );
    let tdx = CvmAttestation {
        kind: "tdx".into(),
        ..block(&other)
    };
    assert!(!refusal("p", &tdx, None).other_chip);
    assert!(
        !check_answer(&[], None, "p", Some(&block(&other)))
            .unwrap_err()
            .other_chip
    );
    // The steps themselves.
    let step = |name: &str, status| Step::new(name, status, "");
    use StepStatus::*;
    assert!(only_chip_steps_failed(&[
        step("report_signature", Fail),
        step("report_data", Unverified)
    ]));
    assert!(only_chip_steps_failed(&[
        step("vcek_tcb", Pass),
        step("chip_id", Fail)
    ]));
    assert!(!only_chip_steps_failed(&[
        step("chip_id", Fail),
        step("debug", Fail)
    ]));
    assert!(!only_chip_steps_failed(&[
        step("report_signature", Pass),
        step("min_tcb", Fail)
    ]));
    assert!(!only_chip_steps_failed(&[step("report_signature", Pass)]));
}
