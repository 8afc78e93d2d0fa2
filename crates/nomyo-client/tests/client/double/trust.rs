//! Which server key the client trusts: pins checked before anything is
//! sent, trust on first use and a changed key refused, a rotated key
//! refetched under pins.

use nomyo_client::{Error, KnownServers, TrustDecision};

use super::{builder, hello};
use crate::common::{shared_key, Double};

#[tokio::test]
async fn pins_are_enforced_before_anything_is_sent() {
    let d = Double::start(shared_key(1)).await;
    let wrong = shared_key(2).public_key().fingerprint();
    let right = shared_key(1).public_key().fingerprint();
    let client = builder(&d).pin(wrong).build().unwrap();
    match client.create(&hello()).await {
        Err(e @ Error::PinMismatch { .. }) => {
            assert!(e.is_security());
            let s = e.to_string();
            assert!(
                s.contains(&right.to_string()) && s.contains(&wrong.to_string()),
                "{s}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.posts().len(), 0, "nothing sent to an unpinned key");
    let client = builder(&d).pins([wrong, right]).build().unwrap();
    client.create(&hello()).await.unwrap();
    assert_eq!(
        *client.server_key().await.unwrap().trust(),
        TrustDecision::Pinned
    );
}

#[tokio::test]
async fn trust_on_first_use_then_a_changed_key_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nomyo/known_servers");
    let d = Double::start(shared_key(1)).await;
    let b = || builder(&d).known_servers(KnownServers::File(file.clone()));

    let first = b().build().unwrap();
    first.create(&hello()).await.unwrap();
    assert_eq!(
        *first.server_key().await.unwrap().trust(),
        TrustDecision::FirstUse { file: file.clone() }
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let fp = shared_key(1).public_key().fingerprint();
    assert_eq!(
        text,
        format!(
            "{}\n{}\n{} v1={fp}\n",
            nomyo_client::trust::FORMAT_HEADER,
            text.lines().nth(1).unwrap(),
            d.url()
        )
    );

    let second = b().build().unwrap();
    second.create(&hello()).await.unwrap();
    assert!(matches!(
        second.server_key().await.unwrap().trust(),
        TrustDecision::Known { .. }
    ));

    // The server now presents another key: a new client refuses it.
    d.set_key(shared_key(2));
    let posts = d.posts().len();
    let third = b().build().unwrap();
    match third.create(&hello()).await {
        Err(e @ Error::ServerKeyChanged { .. }) => {
            assert!(e.is_security());
            let s = e.to_string();
            assert!(
                s.contains(&file.display().to_string()) && s.contains("line 3"),
                "{s}"
            );
            assert!(s.contains(&shared_key(2).public_key().fingerprint().to_string()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.posts().len(), posts, "nothing sent to a changed key");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "never recorded"
    );

    // A client that cached the old key finds out at its next request.
    match second.create(&hello()).await {
        Err(Error::ServerKeyChanged { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_rotated_key_is_refetched_and_the_request_resealed() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d)
        .pins([
            shared_key(1).public_key().fingerprint(),
            shared_key(2).public_key().fingerprint(),
        ])
        .build()
        .unwrap();
    client.create(&hello()).await.unwrap();
    d.set_key(shared_key(2));
    let c = client.create(&hello()).await.unwrap();
    assert_eq!(c.text(), Some("echo: hello there"));
    assert_eq!(d.key_gets(), 2);
    let posts = d.posts();
    assert_eq!(posts.len(), 3, "one refused, one resealed");
    assert_ne!(posts[1].body, posts[2].body);
    assert_eq!(
        client.server_key().await.unwrap().fingerprint(),
        shared_key(2).public_key().fingerprint()
    );
    // And the new key is used straight away from now on.
    client.create(&hello()).await.unwrap();
    assert_eq!(d.posts().len(), 4);
    assert_eq!(d.key_gets(), 2);
}
