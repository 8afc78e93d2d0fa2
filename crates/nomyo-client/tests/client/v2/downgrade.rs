//! Signature stripping: a middleman's unsigned list for a server whose v1
//! key is on record, at the first fetch and on the refetch after a 422 or
//! 400, is refused and nothing is sealed to the middleman's keys.

use nomyo_client::{Downgrade, Error, KnownBy, Protocol};
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_server::hpke_keys::HpkeKeySet;

use super::{
    ask, builder, known_servers_file, recording, records, start, state, KeysRewrite, Server,
};

/// The server's own key set, with ids 1 and 2: never the middleman's (a
/// generated set's ids are random and could be 90 or 91).
fn server_state() -> nomyo_server::AppState {
    state(Some(HpkeKeySet::from_pairs(vec![
        ServerKeyPair::generate(1, Kem::X25519),
        ServerKeyPair::generate(2, Kem::XWing),
    ])))
}

/// A foreign key set (a middleman's own X-Wing and X25519 keys, with key
/// ids the server does not use), encoded as a key list.
fn middleman_keys() -> (HpkeKeySet, Vec<u8>) {
    let set = HpkeKeySet::from_pairs(vec![
        ServerKeyPair::generate(90, Kem::X25519),
        ServerKeyPair::generate(91, Kem::XWing),
    ]);
    let body = set.encoded().to_vec();
    (set, body)
}

/// POSTs sealed to one of the middleman's key ids.
fn sealed_to_middleman(s: &Server) -> usize {
    s.post_key_ids
        .lock()
        .unwrap()
        .iter()
        .filter(|id| **id == 90 || **id == 91)
        .count()
}

/// Signature stripping on the first GET: the known-servers file holds the
/// server's v1 key from an earlier v1 session, and a middleman serves its
/// own unsigned X-Wing list. Before the fix the list counted as a first use
/// ("first contact ... trusting its x-wing key") and the prompt was sealed
/// to the middleman; now it is refused before anything is sent.
#[tokio::test]
async fn unsigned_key_list_for_a_server_with_a_recorded_v1_key_is_refused() {
    let s = start(server_state()).await;
    let (_dir, file) = known_servers_file();
    let v1 = recording(&s, &file).protocol(Protocol::V1).build().unwrap();
    v1.create(&ask("m", "v1 first")).await.unwrap();
    let before = std::fs::read_to_string(&file).unwrap();
    let (_set, body) = middleman_keys();
    *s.keys.write().unwrap() = KeysRewrite {
        body: Some(body),
        signature: Some(None),
        status: None,
    };
    for protocol in [Protocol::V2, Protocol::Auto] {
        let v2 = recording(&s, &file).protocol(protocol).build().unwrap();
        let err = v2.create(&ask("m", "my secret")).await.unwrap_err();
        match &err {
            Error::Downgrade {
                refused: Downgrade::UnsignedKeyList,
                known_by: KnownBy::Record { line, .. },
                ..
            } => assert_eq!(*line, 3),
            other => panic!("{protocol:?}: expected a refused downgrade, got {other:?}"),
        }
        assert!(err.is_security());
        assert!(err.to_string().contains("delete line 3 of"), "{err}");
    }
    assert_eq!(
        sealed_to_middleman(&s),
        0,
        "nothing sealed to the middleman"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before,
        "nothing recorded"
    );
}

/// The attack of the man-in-the-middle run: the known-servers file holds the
/// server's v1 key; the client's first list is the server's signed one; the
/// middleman answers a POST with the server's 422 key-config problem (or a
/// plain 400), which makes the client refetch the keys, and serves its own
/// unsigned X-Wing list. Before the fix the client took that list as a
/// first use and sealed the retried prompt to the middleman; now the refetch
/// is verified like the first fetch and refused, with or without a
/// known-servers file, and nothing is sealed to the middleman's keys.
#[tokio::test]
async fn signature_stripped_on_the_refetch_after_422_or_400_is_refused() {
    let problem = format!(
        r#"{{"type":"{}","title":"key configuration mismatch"}}"#,
        nomyo_core::v2::KEY_CONFIG_PROBLEM_TYPE
    );
    for (status, reply) in [
        (422u16, problem.clone()),
        (400, r#"{"detail":"decryption failed"}"#.to_owned()),
    ] {
        let s = start(server_state()).await;
        let (_dir, file) = known_servers_file();
        recording(&s, &file)
            .protocol(Protocol::V1)
            .build()
            .unwrap()
            .create(&ask("m", "v1 first"))
            .await
            .unwrap();
        let with_file = recording(&s, &file).build().unwrap();
        let without_file = builder(&s).build().unwrap();
        for client in [&with_file, &without_file] {
            client.create(&ask("m", "before")).await.unwrap();
        }
        // Count only what is sealed from here on.
        let sealed_before = sealed_to_middleman(&s);
        let (_set, body) = middleman_keys();
        for (client, from_record) in [(&with_file, true), (&without_file, false)] {
            *s.keys.write().unwrap() = KeysRewrite {
                body: Some(body.clone()),
                signature: Some(None),
                status: None,
            };
            *s.post_reply.lock().unwrap() = Some((status, reply.clone()));
            let err = client.create(&ask("m", "my secret")).await.unwrap_err();
            match (&err, from_record) {
                (
                    Error::Downgrade {
                        refused: Downgrade::UnsignedKeyList,
                        known_by: KnownBy::Record { .. },
                        ..
                    },
                    true,
                )
                | (
                    Error::Downgrade {
                        refused: Downgrade::UnsignedKeyList,
                        known_by: KnownBy::SignedListSeen,
                        ..
                    },
                    false,
                ) => {}
                _ => panic!("after {status}: expected a refused downgrade, got {err:?}"),
            }
            assert!(err.is_security());
            *s.keys.write().unwrap() = KeysRewrite::default();
        }
        assert_eq!(
            sealed_to_middleman(&s) - sealed_before,
            0,
            "after {status}: nothing sealed to the middleman"
        );
        assert!(
            records(&file)[0].ends_with("v2=signed"),
            "{:?}",
            records(&file)
        );
    }
}
