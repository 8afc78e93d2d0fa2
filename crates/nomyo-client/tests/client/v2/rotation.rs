//! Key changes: new key ids after a change (422, refetch, success), HPKE
//! rotations accepted through the signing key, an unsigned rotation as a
//! key change, and an RSA rotation checked like v1.

use std::time::Duration;

use nomyo_client::{Error, TrustDecision};
use nomyo_core::keys::PrivateKey;
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_server::hpke_keys::{HpkeKeySet, HpkeKeyStore};
use nomyo_server::keystore::KeyStore;
use nomyo_server::AppState;

use super::{ask, builder, known_servers_file, recording, start, started, state, words_backend};
use crate::common::shared_key;

#[tokio::test]
async fn key_change_gives_422_then_refetch_and_success() {
    let (s, client) = started().await;
    let before = client.hpke_keys().await.unwrap();
    // The server's keys change (new key ids): the cached config is unknown.
    let set = HpkeKeySet::from_pairs(vec![
        ServerKeyPair::generate(7, Kem::X25519),
        ServerKeyPair::generate(8, Kem::XWing),
    ]);
    *s.app.write().unwrap() = nomyo_server::app(state(Some(set)));
    let c = client.create(&ask("m", "after rotation")).await.unwrap();
    assert_eq!(c.text(), Some("echo: after rotation"));
    let after = client.hpke_keys().await.unwrap();
    assert_ne!(before.fingerprint(), after.fingerprint());
    assert_eq!(after.config().key_id, 8);
}

/// A server with a real HPKE key store whose retired keys are dropped at
/// the first purge (no grace), as after a rotation's grace has expired.
fn rotating_state() -> AppState {
    let pem = shared_key(1).to_pkcs8_pem(None).unwrap();
    let key = PrivateKey::from_pem(&pem, None, "test").unwrap();
    AppState::builder(KeyStore::ephemeral(key))
        .backend("words", words_backend())
        .hpke_store(HpkeKeyStore::new(HpkeKeySet::generate()).with_grace(Duration::ZERO))
        .build()
        .unwrap()
}

/// The server rotates its HPKE keys (and the old ones are erased): clients
/// with the default trust (a known-servers file) and with a v1 pin keep
/// working through the 422 refetch, new clients too, and nothing about the
/// HPKE keys is ever recorded.
#[tokio::test]
async fn rotation_is_accepted_through_the_signing_key() {
    let st = rotating_state();
    let s = start(st.clone()).await;
    let (_dir, file) = known_servers_file();
    let v1_fp = shared_key(1).public_key().fingerprint();
    let tofu = recording(&s, &file).build().unwrap();
    let pinned = builder(&s).pin(v1_fp).build().unwrap();
    for c in [&tofu, &pinned] {
        c.create(&ask("m", "before")).await.unwrap();
    }
    let recorded = std::fs::read_to_string(&file).unwrap();
    let first = tofu.hpke_keys().await.unwrap();
    for round in 0..2 {
        st.rotate_hpke_keys().await.unwrap();
        assert_eq!(st.hpke_store().purge_expired(), 2, "old keys erased");
        for c in [&tofu, &pinned] {
            let a = c
                .create(&ask("m", &format!("after {round}")))
                .await
                .unwrap();
            assert_eq!(a.text(), Some(format!("echo: after {round}").as_str()));
        }
    }
    let now = tofu.hpke_keys().await.unwrap();
    assert_ne!(
        now.fingerprint(),
        first.fingerprint(),
        "keys were refetched"
    );
    assert_eq!(now.config().key_id, st.hpke_keys().key_ids()[1]);
    assert_eq!(now.signed_by(), Some(v1_fp));
    // Trusted through the v1 key verified at first contact (and cached).
    assert!(
        matches!(now.trust(), TrustDecision::FirstUse { .. }),
        "{:?}",
        now.trust()
    );
    assert_eq!(
        pinned.hpke_keys().await.unwrap().trust(),
        &TrustDecision::Pinned
    );
    // A new client after the rotations: the same single record.
    let fresh = recording(&s, &file).build().unwrap();
    fresh.create(&ask("m", "fresh")).await.unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), recorded);
    assert!(!recorded.contains("#v2"), "{recorded}");
}

/// Without the signature (a third-party EHBP server) a rotation looks like
/// any key change to a recorded config: refused, as before.
#[tokio::test]
async fn unsigned_rotation_is_a_key_change() {
    let st = rotating_state();
    let s = start(st.clone()).await;
    s.keys.write().unwrap().signature = Some(None);
    let (_dir, file) = known_servers_file();
    let client = recording(&s, &file).build().unwrap();
    client.create(&ask("m", "before")).await.unwrap();
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains(" v2=unsigned v2-key=x-wing:"));
    st.rotate_hpke_keys().await.unwrap();
    st.hpke_store().purge_expired();
    let err = client.create(&ask("m", "after")).await.unwrap_err();
    assert!(matches!(err, Error::ServerKeyChanged { .. }), "{err:?}");
}

/// The server rotates its RSA key: its key list is now signed by the new
/// key, which a client that recorded the old one refuses as a changed key
/// (exactly as v1 does), and a client pinning both keys accepts.
#[tokio::test]
async fn rsa_rotation_is_checked_like_v1() {
    let st = rotating_state();
    let s = start(st.clone()).await;
    let (_dir, file) = known_servers_file();
    let client = recording(&s, &file).build().unwrap();
    client.create(&ask("m", "before")).await.unwrap();
    let old = shared_key(1).public_key().fingerprint();
    let new = st.rotate_key().await.unwrap();
    st.rotate_hpke_keys().await.unwrap();
    st.hpke_store().purge_expired();
    let err = client.create(&ask("m", "after")).await.unwrap_err();
    assert!(matches!(err, Error::ServerKeyChanged { .. }), "{err:?}");
    let both = builder(&s).pins([old, new]).build().unwrap();
    both.create(&ask("m", "pinned both")).await.unwrap();
    assert_eq!(both.hpke_keys().await.unwrap().signed_by(), Some(new));
}
