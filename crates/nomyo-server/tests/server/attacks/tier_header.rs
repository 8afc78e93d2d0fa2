//! `X-Security-Tier` tampering: raised, invalid or lowered in transit.

use super::*;

/// `public` is allowed on every tier, `secret` only on `maximum`.
fn tiered_state() -> (nomyo_server::state::AppStateBuilder, Arc<Double>) {
    let (b, backend) = echo_state(&["public", "secret"]);
    let b = b
        .tier(SecurityTier::Standard, allow_models(&["public"]))
        .tier(SecurityTier::High, allow_models(&["public"]))
        .tier(SecurityTier::Maximum, allow_models(&["public", "secret"]));
    (b, backend)
}

/// A proxy in front of [`tiered_state`] that rewrites `X-Security-Tier` on
/// every chat request to `standard`.
async fn tier_downgrading_proxy() -> Arc<Proxy> {
    let (b, _) = tiered_state();
    let p = start_proxy(b.build().unwrap()).await;
    p.set(Mode::RewriteTier("standard"));
    p
}

/// Request options asking for the `maximum` tier.
fn maximum() -> RequestOptions {
    RequestOptions::default().security_tier(SecurityTier::Maximum)
}

/// The errors a v1 and a v2 client get through `p` for a one-message
/// request to `model` that asks for `maximum`.
async fn downgraded(p: &Proxy, model: &str) -> Vec<(Protocol, Error)> {
    let mut errors = Vec::new();
    for proto in [Protocol::V1, Protocol::V2] {
        let c = p.client().protocol(proto).build().unwrap();
        let err = c.create_with(&ask_model(model, "x"), &maximum()).await;
        errors.push((proto, err.unwrap_err()));
    }
    errors
}

/// `X-Security-Tier` is a plain header (TLS protects it). Changed in
/// transit, it never gets a model served on a tier whose policy does not
/// allow it (403), an invalid value is 400, and on v2 a raised tier that
/// requires post-quantum refuses an X25519 request (403). Nothing reaches
/// the backend.
#[tokio::test]
async fn tier_header_tampering_never_grants_a_tier_the_policy_refuses() {
    let (b, backend) = tiered_state();
    let (base, _) = serve(b.build().unwrap()).await;
    for (model, tier, want) in [
        ("secret", "standard", 403),
        ("secret", "high", 403),
        ("public", "Maximum", 400),
        ("public", "ultra", 400),
    ] {
        let s = seal_json(&chat(model, "x"));
        let (st, _, b) = post_v1(&base, &s.id, &s.public_key_header, Some(tier), s.body).await;
        assert_eq!(
            st,
            want,
            "v1 {model} on {tier:?}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    let configs = key_configs(&base).await;
    let x = kem_config(&configs, Kem::X25519);
    for (model, tier, want) in [
        ("secret", "high", 403),
        ("public", "maximum", 403),
        ("public", "ultra", 400),
    ] {
        let r = seal_v2(&x, &chat(model, "x"));
        let (st, _, b) = post_v2(&base, &r.enc_hex, None, Some(tier), r.body()).await;
        assert_eq!(
            st,
            want,
            "v2 {model} on {tier}: {}",
            String::from_utf8_lossy(&b)
        );
    }
    assert_eq!(backend.calls.load(Ordering::SeqCst), 0);
}

/// A man in the middle lowers `X-Security-Tier` from `maximum` to
/// `standard` for a model both tiers allow: the server applies `standard`
/// and says so in the sealed `_metadata.security_tier` (authenticated in v2),
/// which the client reads and refuses (next test); a model only `maximum`
/// allows is refused by the server, never served lower.
#[tokio::test]
async fn tier_header_downgrade_is_visible_in_the_sealed_metadata() {
    let p = tier_downgrading_proxy().await;
    for (proto, err) in downgraded(&p, "public").await {
        assert!(
            matches!(
                err,
                Error::TierDowngrade {
                    served: Some(SecurityTier::Standard),
                    ..
                }
            ),
            "{proto:?}: {err:?}"
        );
    }
    for (proto, err) in downgraded(&p, "secret").await {
        assert!(matches!(err, Error::Forbidden(_)), "{proto:?}: {err:?}");
    }
}

/// What the client does with the downgrade above: the sealed
/// `_metadata.security_tier` says `standard`, the request asked for
/// `maximum`, so the answer is refused as a security failure.
#[tokio::test]
async fn tier_header_downgrade_is_refused_by_the_client() {
    let p = tier_downgrading_proxy().await;
    for (proto, err) in downgraded(&p, "public").await {
        assert!(
            matches!(
                err,
                Error::TierDowngrade {
                    requested: SecurityTier::Maximum,
                    served: Some(SecurityTier::Standard)
                }
            ),
            "{proto:?}: {err:?}"
        );
        assert!(err.is_security());
    }
}

/// The same downgrade on a v2 stream: the first chunk's sealed `_metadata`
/// names the lower tier, so the stream yields the security error and no text.
#[tokio::test]
async fn tier_header_downgrade_on_a_stream_is_refused_by_the_client() {
    let p = tier_downgrading_proxy().await;
    let c = p.client().protocol(Protocol::V2).build().unwrap();
    let mut stream = c
        .create_stream_with(&ask_model("public", "x"), &maximum())
        .await
        .unwrap();
    let first = futures::StreamExt::next(&mut stream).await.unwrap();
    let err = first.unwrap_err();
    assert!(matches!(err, Error::TierDowngrade { .. }), "{err:?}");
    assert!(futures::StreamExt::next(&mut stream).await.is_none());
}
