//! The server's keys change under clients that recorded them (trust on
//! first use, a known-servers file).

use super::*;

/// Clients that recorded the server's keys (trust on first use, a
/// known-servers file), then the server behind the same origin presents
/// other keys: RSA for v1, HPKE with the given key ids for v2.
struct KeyChange {
    proxy: Arc<Proxy>,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    cached: [Client; 2],
}

/// A client through `proxy` speaking `proto` that records the server's keys
/// in the known-servers file `file`.
fn recording_client(proxy: &Proxy, file: &std::path::Path, proto: Protocol) -> Client {
    proxy
        .client()
        .protocol(proto)
        .known_servers(KnownServers::File(file.to_owned()))
        .build()
        .unwrap()
}

async fn key_change(hpke_ids: (u8, u8)) -> KeyChange {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_servers");
    let proxy = start_proxy(state_with(&["m"]).build().unwrap()).await;
    let cached = [
        recording_client(&proxy, &file, Protocol::V1),
        recording_client(&proxy, &file, Protocol::V2),
    ];
    for c in &cached {
        c.create(&ask("before")).await.unwrap();
    }
    let new_hpke = HpkeKeySet::from_pairs(vec![
        ServerKeyPair::generate(hpke_ids.0, Kem::X25519),
        ServerKeyPair::generate(hpke_ids.1, Kem::XWing),
    ]);
    proxy.swap_server(
        AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(
            PrivateKey::generate(RsaBits::B2048).unwrap(),
        ))
        .backend("echo", echo_backend(&["m"]))
        .hpke_keys(new_hpke)
        .build()
        .unwrap(),
    );
    KeyChange {
        proxy,
        _dir: dir,
        file,
        cached,
    }
}

impl KeyChange {
    /// Both clients that cached the old keys refuse their next request as a
    /// changed key.
    async fn cached_clients_refuse(&self) {
        for (c, proto) in self.cached.iter().zip(["v1", "v2"]) {
            let err = c.create(&ask("after")).await.unwrap_err();
            assert!(
                matches!(err, Error::ServerKeyChanged { .. }),
                "{proto}: {err:?}"
            );
        }
    }
}

/// The server key changes mid-session (new RSA key; new HPKE keys under new
/// key ids, as a rotation publishes them): new v1 and v2 clients refuse with
/// `Error::ServerKeyChanged` before sending anything, and clients that cached
/// the old keys refuse at their next request (v1 after the 400, v2 after the
/// 422 that makes it refetch the keys).
#[tokio::test]
async fn server_key_change_mid_session_is_refused() {
    let k = key_change((7, 8)).await;
    let before = k.proxy.forwarded.load(Ordering::SeqCst);
    for proto in [Protocol::V1, Protocol::V2] {
        let c = recording_client(&k.proxy, &k.file, proto);
        let err = c.create(&ask("after")).await.unwrap_err();
        assert!(
            matches!(err, Error::ServerKeyChanged { .. }),
            "{proto:?}: {err:?}"
        );
        assert!(err.is_security());
    }
    assert_eq!(
        k.proxy.forwarded.load(Ordering::SeqCst),
        before,
        "nothing sent to a changed key"
    );
    k.cached_clients_refuse().await;
}

/// A server restarted with freshly generated HPKE keys reuses key ids 0 and
/// 1 (`HpkeKeySet::generate`). A v2 client that cached the old configs names
/// key id 1; the server cannot open the request and answers an unsealed 400
/// "decryption failed" (correct: with a key id it holds, that is what
/// tampering looks like). The client then refetches the key list once, finds
/// it signed by a different server key, and refuses it as a changed key.
#[tokio::test]
async fn server_key_change_with_reused_key_ids_is_noticed_by_a_cached_v2_client() {
    let k = key_change((0, 1)).await;
    let err = k.cached[1].create(&ask("after")).await.unwrap_err();
    assert!(matches!(err, Error::ServerKeyChanged { .. }), "{err:?}");
    assert!(err.is_security());
}

/// Both cached clients (v1 and v2) fail closed after the key change: an
/// error, never an answer, and nothing decrypted under the wrong key.
#[tokio::test]
async fn server_key_change_with_reused_key_ids_fails_closed() {
    let k = key_change((0, 1)).await;
    k.cached_clients_refuse().await;
}
