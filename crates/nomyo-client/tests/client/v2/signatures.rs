//! Key lists whose signature does not check out: another signer within a
//! session, a list captured before a rotation (expired), a tampered list or
//! signature, a list signed by another key; all refused before anything is
//! sent.

use std::path::Path;
use std::sync::atomic::Ordering;

use nomyo_client::Error;
use nomyo_core::keys_signature::{KeysSignature, KeysSignatureError};
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_core::v2::HPKE_KEYS_PATH;
use nomyo_server::hpke_keys::HpkeKeySet;

use super::{
    ask, builder, known_servers_file, recording, records, start, state, state_signed_by, Server,
    SIG_HEADER,
};
use crate::common::shared_key;

/// What a client recording trust in `file` and a client pinning the v1 key
/// get when they ask `s`: both must be refused with a security error; the
/// two errors.
async fn refusals(s: &Server, file: &Path) -> Vec<Error> {
    let v1_fp = shared_key(1).public_key().fingerprint();
    let mut errors = Vec::new();
    for client in [
        recording(s, file).build().unwrap(),
        builder(s).pin(v1_fp).build().unwrap(),
    ] {
        let err = client.create(&ask("m", "secret")).await.unwrap_err();
        assert!(err.is_security(), "{err:?}");
        errors.push(err);
    }
    errors
}

/// A client without pins or a known-servers file (nothing vouches for any
/// key) that has verified a list signed by the server: the middleman
/// answers as a server of its own (its own RSA key at /pki/public_key, its
/// own HPKE keys under the same ids, its own signature). The cached keys
/// get 400 and the refetched list, signed by another key, is refused within
/// the session; before, the new signer was accepted as "unverified".
#[tokio::test]
async fn another_signer_within_a_session_is_refused_without_a_record() {
    let s = start(state(None)).await;
    let client = builder(&s).build().unwrap();
    client.create(&ask("m", "before")).await.unwrap();
    *s.app.write().unwrap() = nomyo_server::app(state_signed_by(3, None));
    let posts = s.posts.load(Ordering::SeqCst);
    let err = client.create(&ask("m", "my secret")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeysSignature {
                reason: KeysSignatureError::WrongKey { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        s.posts.load(Ordering::SeqCst),
        posts + 1,
        "only the request sealed to the genuine keys was sent"
    );
}

/// A key list the server signed before a rotation (its window has passed),
/// replayed by someone who kept it (and may since have learnt its private
/// keys): refused as expired, through a pin and through the known-servers
/// file alike, and nothing is sent.
#[tokio::test]
async fn a_key_list_captured_before_a_rotation_is_refused_as_expired() {
    let s = start(state(None)).await;
    let body = reqwest::get(format!("{}{HPKE_KEYS_PATH}", s.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Signed by the server's own key for a day that ended a day ago.
    let past = nomyo_core::keys_signature::Validity::new(now - 2 * 86_400, now - 86_400).unwrap();
    let old = KeysSignature::sign(&shared_key(1), &body, past)
        .unwrap()
        .to_header_value();
    s.keys.write().unwrap().signature = Some(Some(old));
    let (_dir, file) = known_servers_file();
    for err in refusals(&s, &file).await {
        assert!(
            matches!(
                err,
                Error::KeysSignature {
                    reason: KeysSignatureError::Expired { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("expired"), "{err}");
    }
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
}

/// Changes one base64 character of the `sig=` parameter (another valid
/// signature length, other bytes).
fn corrupt_sig(header: &str) -> String {
    let at = header.find("sig=").unwrap() + 4 + 20;
    let mut b = header.as_bytes().to_vec();
    b[at] = if b[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

/// Someone in the middle substitutes their own key configs and keeps the
/// server's signature (or alters the signature): refused as a security
/// error, before anything is sent, with or without a pin.
#[tokio::test]
async fn tampered_key_list_is_refused() {
    let s = start(state(None)).await;
    let foreign = HpkeKeySet::from_pairs(vec![
        ServerKeyPair::generate(0, Kem::X25519),
        ServerKeyPair::generate(1, Kem::XWing),
    ]);
    s.keys.write().unwrap().body = Some(foreign.encoded().to_vec());
    let (_dir, file) = known_servers_file();
    let v1_fp = shared_key(1).public_key().fingerprint();
    for err in refusals(&s, &file).await {
        assert!(
            matches!(
                err,
                Error::KeysSignature {
                    reason: KeysSignatureError::BadSignature,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("does not verify"), "{err}");
    }
    // The real list with a corrupted signature.
    s.keys.write().unwrap().body = None;
    let real = start(state(None)).await;
    let body = reqwest::get(format!("{}{HPKE_KEYS_PATH}", real.url))
        .await
        .unwrap();
    let header = body.headers()[SIG_HEADER].to_str().unwrap().to_owned();
    let bad = corrupt_sig(&header);
    assert_ne!(
        KeysSignature::parse(&bad).unwrap(),
        KeysSignature::parse(&header).unwrap()
    );
    s.keys.write().unwrap().signature = Some(Some(bad));
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(matches!(err, Error::KeysSignature { .. }), "{err:?}");
    // A malformed header is refused too (fail closed, not "unsigned").
    s.keys.write().unwrap().signature = Some(Some("rsa-pss-sha256;key=x".into()));
    let client = builder(&s).pin(v1_fp).build().unwrap();
    let err = client.create(&ask("m", "secret")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeysSignature {
                reason: KeysSignatureError::Malformed(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
    // The known-servers file got the (genuine) v1 key only.
    assert_eq!(records(&file), [format!("{} v1={v1_fp}", s.url)]);
}

/// A list signed by another RSA key, named as such or claiming to be the
/// server's: refused (the client refetches the v1 key once, finds it
/// unchanged, and does not trust the other key).
#[tokio::test]
async fn signature_by_another_key_is_refused() {
    let s = start(state(None)).await;
    let body = reqwest::get(format!("{}{HPKE_KEYS_PATH}", s.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let intruder = shared_key(3);
    let v1_fp = shared_key(1).public_key().fingerprint();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let window = nomyo_core::keys_signature::Validity::new(now - 60, now + 3600).unwrap();
    let named = KeysSignature::sign(&intruder, &body, window)
        .unwrap()
        .to_header_value();
    let claimed = named.replace(
        &intruder.public_key().fingerprint().to_string(),
        &v1_fp.to_string(),
    );
    assert_ne!(claimed, named);
    let (_dir, file) = known_servers_file();
    for (header, expect_wrong_key) in [(named, true), (claimed, false)] {
        s.keys.write().unwrap().signature = Some(Some(header));
        for client in [
            recording(&s, &file).build().unwrap(),
            builder(&s).pin(v1_fp).build().unwrap(),
            builder(&s).build().unwrap(),
        ] {
            let err = client.create(&ask("m", "secret")).await.unwrap_err();
            match &err {
                Error::KeysSignature {
                    reason: KeysSignatureError::WrongKey { expected, found },
                    ..
                } => {
                    assert!(expect_wrong_key, "{err:?}");
                    assert_eq!(*expected, v1_fp);
                    assert_eq!(*found, intruder.public_key().fingerprint());
                }
                Error::KeysSignature {
                    reason: KeysSignatureError::BadSignature,
                    ..
                } => assert!(!expect_wrong_key, "{err:?}"),
                other => panic!("expected a signature error, got {other:?}"),
            }
            assert!(err.is_security());
        }
    }
    assert_eq!(s.posts.load(Ordering::SeqCst), 0, "nothing was sent");
}
