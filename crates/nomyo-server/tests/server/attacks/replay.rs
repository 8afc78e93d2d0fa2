//! Replay: a captured request sent again, as is or under a substituted
//! `X-Public-Key`.

use super::*;

/// A captured v1 request sent again: the same `X-Payload-ID` → 409; the
/// same package under a fresh id → 409. The backend runs once.
#[tokio::test]
async fn replay_v1_captured_request_is_409() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("m", "once"));
    let (st, _, _) = post_v1(&base, &s.id, &s.public_key_header, None, s.body.clone()).await;
    assert_eq!(st, 200);
    let (st, _, b) = post_v1(&base, &s.id, &s.public_key_header, None, s.body.clone()).await;
    assert_eq!(st, 409);
    assert!(detail(&b).contains("replayed"));
    let (st, _, _) = post_v1(&base, &payload_id(), &s.public_key_header, None, s.body).await;
    assert_eq!(st, 409);
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
}

/// A captured v2 request sent again (same `enc`, same body) → 409; the same
/// `enc` with other chunks sealed in the same context → 409.
#[tokio::test]
async fn replay_v2_captured_request_is_409() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let configs = key_configs(&base).await;
    for kem in [Kem::X25519, Kem::XWing] {
        let mut r = seal_v2(&kem_config(&configs, kem), &chat("m", "once"));
        let (s, h, b) = post_v2(&base, &r.enc_hex, None, None, r.body()).await;
        assert_eq!(s, 200);
        r.try_open(&h, &b).unwrap();
        let (s, h, b) = post_v2(&base, &r.enc_hex, None, None, r.body()).await;
        assert_eq!(s, 409, "{kem}");
        assert!(detail(&b).contains("replayed"));
        assert!(h.get("ehbp-response-nonce").is_none());
        let more = r
            .sealer
            .seal_chunk(&serde_json::to_vec(&chat("m", "again")).unwrap())
            .unwrap();
        let (s, _, _) = post_v2(&base, &r.enc_hex, None, None, more).await;
        assert_eq!(s, 409, "{kem}");
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
}

/// An attacker replays a captured v1 body with their own `X-Public-Key` and
/// a fresh `X-Payload-ID` after the original was served: 409 (the package
/// itself is remembered for the replay window), nothing for the attacker.
#[tokio::test]
async fn substituted_public_key_with_replayed_body_is_409() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("m", "victim's prompt"));
    let (st, _, _) = post_v1(&base, &s.id, &s.public_key_header, None, s.body.clone()).await;
    assert_eq!(st, 200);
    let attacker = v1::encode_public_key_header(&other_key().public_key().to_pem());
    let (st, _, b) = post_v1(&base, &payload_id(), &attacker, None, s.body.clone()).await;
    assert_eq!(st, 409, "{}", String::from_utf8_lossy(&b));
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
}

/// The same attack when the attacker's copy arrives first (they hold the
/// victim's request back): v1 does not bind the answer key to the package,
/// so the server answers the attacker, who can read it. The victim's own
/// request then gets 409. docs/PROTOCOL.md §3.9; only TLS
/// stops this. In v2 there is no key header to substitute: the replayed
/// body is answered under the victim's HPKE context, which the attacker
/// cannot open.
#[tokio::test]
async fn substituted_public_key_replay_winning_the_race_reads_the_answer_v1_weakness() {
    let (b, _) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("m", "victim's prompt"));
    let attacker = v1::encode_public_key_header(&other_key().public_key().to_pem());
    let (st, _, body) = post_v1(&base, &payload_id(), &attacker, None, s.body.clone()).await;
    assert_eq!(st, 200);
    let pkg = Package::from_json(&body).unwrap();
    let plain = v1::open(&pkg, other_key()).unwrap();
    let v: Value = serde_json::from_slice(plain.expose_secret()).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "echo:victim's prompt"
    );
    let (st, _, _) = post_v1(&base, &s.id, &s.public_key_header, None, s.body).await;
    assert_eq!(st, 409, "the victim notices: their request is a replay now");

    // v2: the attacker relays the victim's body first; the answer is sealed
    // to the victim's context. The attacker's own context cannot open it.
    let configs = key_configs(&base).await;
    let victim = seal_v2(&kem_config(&configs, Kem::XWing), &chat("m", "victim v2"));
    let attacker = seal_v2(&kem_config(&configs, Kem::XWing), &chat("m", "attacker"));
    let (st, h, b) = post_v2(&base, &victim.enc_hex, None, None, victim.body()).await;
    assert_eq!(st, 200);
    assert!(attacker.try_open(&h, &b).is_err());
    assert!(victim.try_open(&h, &b).is_ok());
}
