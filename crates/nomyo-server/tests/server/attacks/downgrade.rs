//! Downgrade: protocol fields and suites changed in transit, on both
//! protocols.

use super::*;

/// A v1 package whose `version`, `algorithm`, `key_algorithm` or
/// `payload_algorithm` was changed in transit is refused with 400 before any
/// decryption or backend call; an answer whose `version` was changed is
/// refused by the client.
#[tokio::test]
async fn downgrade_v1_package_fields_are_refused() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let fields: &[(&str, &str)] = &[
        ("version", "0.9"),
        ("version", "1.1"),
        ("version", ""),
        ("algorithm", "hybrid-aes128-rsa2048"),
        ("algorithm", "none"),
        ("key_algorithm", "RSA-OAEP-SHA1"),
        ("key_algorithm", "RSA-PKCS1-v1_5"),
        ("payload_algorithm", "AES-128-GCM"),
        ("payload_algorithm", "AES-256-CBC"),
    ];
    for (field, value) in fields {
        let s = seal_json(&chat("m", "downgrade me"));
        let body = mutate_package(&s.body, |v| v[*field] = json!(value));
        let (status, _, resp) = post_v1(&base, &s.id, &s.public_key_header, None, body).await;
        assert_eq!(
            status,
            400,
            "{field}={value}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert!(!detail(&resp).is_empty());
    }
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );

    // The answer side: the client checks the package before decrypting.
    let p = proxy_in(Mode::DowngradeV1Answer).await;
    let client = p.client().build().unwrap();
    let err = client.create(&ask("hi")).await.unwrap_err();
    assert!(matches!(err, Error::Security(_)), "{err:?}");
}

/// v2 suite downgrade: an `enc` of one KEM presented under the other suite's
/// key id, an `enc` of no suite's length, and an X25519 request on a tier
/// that requires the post-quantum suite are all refused before the backend.
#[tokio::test]
async fn downgrade_v2_suite_and_kem_mismatch_is_refused() {
    let (b, backend) = echo_state(&["m"]);
    let (base, _) = serve(b.build().unwrap()).await;
    let configs = key_configs(&base).await;
    let x = kem_config(&configs, Kem::X25519);
    let xw = kem_config(&configs, Kem::XWing);

    // X-Wing enc (1120 bytes) claimed to be for the X25519 key and vice versa.
    for (sealed_to, claimed) in [(&xw, &x), (&x, &xw)] {
        let r = seal_v2(sealed_to, &chat("m", "downgrade"));
        let id = claimed.key_id.to_string();
        let (s, h, b) = post_v2(&base, &r.enc_hex, Some(&id), None, r.body()).await;
        assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
        assert!(
            detail(&b).contains("Ehbp-Encapsulated-Key"),
            "{}",
            detail(&b)
        );
        assert!(h.get("ehbp-response-nonce").is_none());
    }
    // An X-Wing enc cut to 32 bytes (what an X25519 enc looks like): the
    // X25519 key cannot open it.
    let r = seal_v2(&xw, &chat("m", "downgrade"));
    let x_id = x.key_id.to_string();
    let (s, _, _) = post_v2(&base, &r.enc_hex[..64], Some(&x_id), None, r.body()).await;
    assert_eq!(s, 400);
    // An enc of neither length.
    let (s, _, _) = post_v2(&base, &r.enc_hex[..100], None, None, r.body()).await;
    assert_eq!(s, 400);
    // X25519 on `maximum`, which requires X-Wing by default.
    let r = seal_v2(&x, &chat("m", "downgrade"));
    let (s, _, b) = post_v2(&base, &r.enc_hex, None, Some("maximum"), r.body()).await;
    assert_eq!(s, 403, "{}", String::from_utf8_lossy(&b));
    assert!(
        detail(&b).to_lowercase().contains("post-quantum"),
        "{}",
        detail(&b)
    );
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the backend"
    );
}
