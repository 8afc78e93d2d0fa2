//! Answers tampered with on the way back: swapped between requests,
//! forged to the sent public key, stripped of their response nonce.

use super::*;

/// v2 binds each answer to its request: two concurrent requests, and B's
/// answer cannot be opened with A's context (nor A's with B's); through a
/// swapping proxy the client refuses the other request's answer.
#[tokio::test]
async fn response_swap_v2_is_refused() {
    let (base, _) = serve(state_with(&["m"]).build().unwrap()).await;
    let configs = key_configs(&base).await;
    for kem in [Kem::X25519, Kem::XWing] {
        let cfg = kem_config(&configs, kem);
        let a = seal_v2(&cfg, &chat("m", "request A"));
        let b = seal_v2(&cfg, &chat("m", "request B"));
        let (ra, rb) = tokio::join!(
            post_v2(&base, &a.enc_hex, None, None, a.body()),
            post_v2(&base, &b.enc_hex, None, None, b.body())
        );
        assert_eq!((ra.0, rb.0), (200, 200));
        assert!(a.try_open(&ra.1, &ra.2).is_ok());
        assert!(b.try_open(&rb.1, &rb.2).is_ok());
        assert!(a.try_open(&rb.1, &rb.2).is_err(), "{kem}: B opened with A");
        assert!(b.try_open(&ra.1, &ra.2).is_err(), "{kem}: A opened with B");
        // A's body under B's nonce header: still refused.
        assert!(a.try_open(&rb.1, &ra.2).is_err());
    }

    let p = proxy_in(Mode::SwapAnswers).await;
    let client = p.client().protocol(Protocol::V2).build().unwrap();
    client.create(&ask("first")).await.unwrap();
    let err = client.create(&ask("second")).await.unwrap_err();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
}

/// v1: an answer sealed to another client's key cannot be opened; the answer
/// to the same client's earlier request (outer `payload_id` rewritten) is
/// refused by the check of the encrypted `_metadata.payload_id`.
#[tokio::test]
async fn response_swap_v1_is_refused() {
    let p = proxy_in(Mode::SwapAnswers).await;
    let me = p.client().build().unwrap();
    me.create(&ask("first")).await.unwrap();
    let err = me.create(&ask("second")).await.unwrap_err();
    assert!(matches!(err, Error::ResponseMismatch(_)), "{err:?}");

    // The next answer the proxy holds is `me`'s; another client gets it.
    let other = p.client().client_key(shared(other_key())).build().unwrap();
    let err = other.create(&ask("third")).await.unwrap_err();
    assert!(matches!(err, Error::Security(_)), "{err:?}");
    assert!(err.is_security());
}

/// v1 has no response authentication: anyone who sees the request's
/// `X-Public-Key` (it travels in clear) can seal a complete answer to it,
/// and the client accepts it. Only TLS stops this in v1 (SECURITY.md); v2
/// answers are keyed by the request's HPKE secret (see
/// `response_swap_v2_is_refused`).
#[tokio::test]
async fn forged_answer_sealed_to_the_sent_public_key_is_accepted_v1_weakness() {
    let p = proxy_in(Mode::ForgeV1Answer).await;
    let client = p.client().build().unwrap();
    let answer = client.create(&ask("hi")).await.unwrap();
    assert_eq!(answer.text(), Some("forged by the man in the middle"));
    assert_eq!(
        p.forwarded.load(Ordering::SeqCst),
        0,
        "the server never saw it"
    );
}

/// A 2xx v2 answer without `Ehbp-Response-Nonce` is treated as unencrypted
/// and refused by the client, plain and streamed.
#[tokio::test]
async fn stripped_response_nonce_fails_closed() {
    let p = proxy_in(Mode::StripNonce).await;
    let client = p.client().protocol(Protocol::V2).build().unwrap();
    let err = client.create(&ask("hello")).await.unwrap_err();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
    assert!(err.to_string().contains("MISSING_RESPONSE_NONCE"), "{err}");
    let err = client.create_stream(&ask("hello")).await.err().unwrap();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
}
