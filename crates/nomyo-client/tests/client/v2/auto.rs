//! `Protocol::Auto`: v2 chosen when published, no fall-back to v1 for a
//! server known to speak v2, and `high` or `maximum` never sent over v1.

use std::sync::atomic::Ordering;

use nomyo_client::{Downgrade, Error, KnownBy, Protocol, SecurityTier};

use super::{ask, builder, known_servers_file, recording, start, state};
use crate::common;

/// Protocol auto and a server recorded as speaking v2 whose key list now
/// answers 404 (a middleman hiding it to force v1): refused with the reason
/// and the line to delete; protocol v1 chosen explicitly still works.
#[tokio::test]
async fn auto_refuses_to_fall_back_to_v1_for_a_server_known_to_speak_v2() {
    let s = start(state(None)).await;
    let (_dir, file) = known_servers_file();
    let first = recording(&s, &file)
        .protocol(Protocol::Auto)
        .build()
        .unwrap();
    assert!(first.uses_v2().await.unwrap());
    s.keys.write().unwrap().status = Some(404);
    let auto = recording(&s, &file)
        .protocol(Protocol::Auto)
        .build()
        .unwrap();
    let err = auto.create(&ask("m", "my secret")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Downgrade {
                refused: Downgrade::NoV2Keys,
                known_by: KnownBy::Record { line: 3, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_security());
    let text = err.to_string();
    assert!(
        text.contains("--protocol v1") && text.contains("delete line 3"),
        "{text}"
    );
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
    let v1 = recording(&s, &file).protocol(Protocol::V1).build().unwrap();
    v1.create(&ask("m", "explicit v1")).await.unwrap();
}

/// Protocol auto against a server without v2 keys (first contact): the
/// standard tier goes over v1, `high` and `maximum` never do unless v1 was
/// chosen explicitly. Auto is the builder's default.
#[tokio::test]
async fn auto_never_sends_high_or_maximum_over_v1() {
    assert_eq!(Protocol::default(), Protocol::Auto);
    let s = start(state(None)).await;
    s.keys.write().unwrap().status = Some(404);
    for tier in [SecurityTier::High, SecurityTier::Maximum] {
        let auto = common::local_client(&s.url)
            .protocol(Protocol::default())
            .security_tier(tier)
            .build()
            .unwrap();
        assert!(!auto.uses_v2().await.unwrap());
        let err = auto.create(&ask("m", "secret")).await.unwrap_err();
        assert!(matches!(err, Error::TierNeedsV2 { .. }), "{err:?}");
        assert!(err.is_security());
        assert!(err.to_string().contains("--protocol v1"), "{err}");
    }
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
    let standard = common::local_client(&s.url)
        .protocol(Protocol::default())
        .build()
        .unwrap();
    standard.create(&ask("m", "plain")).await.unwrap();
    let explicit = common::local_client(&s.url)
        .protocol(Protocol::V1)
        .security_tier(SecurityTier::High)
        .build()
        .unwrap();
    let sent = explicit.create(&ask("m", "explicit")).await;
    assert!(!matches!(sent, Err(Error::TierNeedsV2 { .. })), "{sent:?}");
}

#[tokio::test]
async fn auto_selects_v2_when_published() {
    let s = start(state(None)).await;
    let client = builder(&s).protocol(Protocol::Auto).build().unwrap();
    assert!(client.uses_v2().await.unwrap());
    let c = client.create(&ask("m", "auto")).await.unwrap();
    assert_eq!(
        c.metadata.encryption_algorithm.as_deref(),
        Some("ehbp-x-wing")
    );
}
