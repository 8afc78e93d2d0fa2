//! `maximum` asked for over RSA (v1).

use super::*;

/// A client asks a default server for `maximum` over v1 (RSA-OAEP, not
/// post-quantum): refused with 403 naming the rule, exactly as v2 refuses
/// X25519 there, whether the tier comes from the header or from the model.
/// Only an operator's explicit `require_post_quantum = false` serves it.
#[tokio::test]
async fn maximum_tier_over_v1_rsa_is_refused_with_403() {
    let (b, backend) = echo(&["m", "secret"]);
    let b = b
        .tier(SecurityTier::Standard, allow_models(&["m"]))
        .tier(SecurityTier::Maximum, allow_models(&["m", "secret"]));
    let addr = serve(b.build().unwrap()).await;
    for (model, tier) in [("m", Some("maximum")), ("secret", None)] {
        let s = seal_json(&chat(model, "x"));
        let (status, body) = post_v1(addr, &s, None, tier).await;
        assert_eq!(
            status,
            403,
            "{model} {tier:?}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            detail(&body).contains("require_post_quantum"),
            "{}",
            detail(&body)
        );
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
    // `standard` over v1 is served as before.
    let s = seal_json(&chat("m", "x"));
    assert_eq!(post_v1(addr, &s, None, Some("standard")).await.0, 200);

    // The operator opts out for the tier: served over v1.
    let (b, _) = echo(&["m"]);
    let b = b
        .tier(SecurityTier::Maximum, allow_models(&["m"]))
        .require_post_quantum(SecurityTier::Maximum, false);
    let addr = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("m", "x"));
    let (status, body) = post_v1(addr, &s, None, Some("maximum")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        open_response(&body).1["_metadata"]["security_tier"],
        "maximum"
    );
}
