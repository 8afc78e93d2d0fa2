//! How v2 keys are trusted: pins (of the v1 key or of a config), a signed
//! list recorded as the v1 key only, an unsigned list of an unknown server
//! trusted on first use.

use std::sync::atomic::Ordering;

use nomyo_client::{Downgrade, Error, KnownBy, Protocol, TrustDecision};

use super::{ask, builder, known_servers_file, recording, records, start, state};
use crate::common::shared_key;

#[tokio::test]
async fn pins_apply_to_v2_keys() {
    let s = start(state(None)).await;
    let probe = builder(&s).build().unwrap();
    let xwing = probe.hpke_keys().await.unwrap().fingerprint();
    let v1_fp = shared_key(1).public_key().fingerprint();

    // A pin that matches neither the v1 key nor a config: refused before
    // anything is sent.
    let other = shared_key(2).public_key().fingerprint();
    let client = builder(&s).pin(other).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(matches!(err, Error::PinMismatch { .. }), "{err:?}");
    assert!(err.is_security());
    assert_eq!(s.posts.load(Ordering::SeqCst), 0);

    // The v1 pin covers the signed v2 keys.
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let c = client.create(&ask("m", "pinned v1")).await.unwrap();
    assert_eq!(c.text(), Some("echo: pinned v1"));
    let keys = client.hpke_keys().await.unwrap();
    assert_eq!(keys.trust(), &TrustDecision::Pinned);
    assert_eq!(keys.signed_by(), Some(v1_fp));

    // A pin of the config itself is still honoured.
    let client = builder(&s).pin(xwing).build().unwrap();
    let c = client.create(&ask("m", "pinned")).await.unwrap();
    assert_eq!(c.text(), Some("echo: pinned"));
    assert_eq!(
        client.hpke_keys().await.unwrap().trust(),
        &TrustDecision::Pinned
    );

    // Against an unsigned list a v1 pin proves nothing, and the pinned
    // server signs its lists: refused as a stripped signature.
    s.keys.write().unwrap().signature = Some(None);
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Downgrade {
                refused: Downgrade::UnsignedKeyList,
                known_by: KnownBy::Pin,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_security());
}

/// A signed list is trusted through the v1 key: one record, `ORIGIN`
/// (shared with v1 clients), never one per HPKE config.
#[tokio::test]
async fn signed_v2_keys_record_only_the_v1_key() {
    let s = start(state(None)).await;
    let (_dir, file) = known_servers_file();
    let v2 = recording(&s, &file).build().unwrap();
    v2.create(&ask("m", "v2 first")).await.unwrap();
    let keys = v2.hpke_keys().await.unwrap();
    assert!(matches!(keys.trust(), TrustDecision::FirstUse { .. }));
    let v1_fp = shared_key(1).public_key().fingerprint();
    assert_eq!(keys.signed_by(), Some(v1_fp));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        records(&file),
        [format!("{} v1={v1_fp} v2=signed", s.url)],
        "{text}"
    );
    // A v1 client of the same origin finds the key recorded.
    let v1 = recording(&s, &file).protocol(Protocol::V1).build().unwrap();
    v1.create(&ask("m", "v1 next")).await.unwrap();
    assert!(matches!(
        v1.server_key().await.unwrap().trust(),
        TrustDecision::Known { .. }
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

/// An unsigned list from a server nothing is known about (a third-party
/// EHBP server): its config is trusted on first use and recorded on the
/// origin's line (`v2=unsigned v2-key=...`).
#[tokio::test]
async fn unsigned_list_of_an_unknown_server_is_trusted_on_first_use() {
    let s = start(state(None)).await;
    s.keys.write().unwrap().signature = Some(None);
    let (_dir, file) = known_servers_file();
    let v2 = recording(&s, &file).build().unwrap();
    v2.create(&ask("m", "v2 first")).await.unwrap();
    let keys = v2.hpke_keys().await.unwrap();
    assert!(matches!(keys.trust(), TrustDecision::FirstUse { .. }));
    assert_eq!(keys.signed_by(), None);
    assert_eq!(
        records(&file),
        [format!(
            "{} v2=unsigned v2-key=x-wing:{}",
            s.url,
            keys.fingerprint()
        )]
    );
    // A second v2 client finds the recorded key.
    let again = recording(&s, &file).build().unwrap();
    again.create(&ask("m", "again")).await.unwrap();
    assert!(matches!(
        again.hpke_keys().await.unwrap().trust(),
        TrustDecision::Known { .. }
    ));
}
