//! Requests and streams: both suites, a request of several frames, a
//! stream complete and cut, no streaming over v1; a stripped response
//! nonce and a tampered answer fail closed, plain and streamed.

use std::sync::atomic::Ordering;

use futures::StreamExt;
use nomyo_client::{Error, Protocol};
use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_server::hpke_keys::HpkeKeySet;

use super::{ask, builder, start, started, state};

#[tokio::test]
async fn v2_plain_request_prefers_x_wing() {
    let (_s, client) = started().await;
    let c = client.create(&ask("m", "hello v2")).await.unwrap();
    assert_eq!(c.text(), Some("echo: hello v2"));
    assert_eq!(c.metadata.is_encrypted, Some(true));
    assert_eq!(
        c.metadata.encryption_algorithm.as_deref(),
        Some("ehbp-x-wing")
    );
    let keys = client.hpke_keys().await.unwrap();
    assert_eq!(keys.configs().len(), 2);
    assert_eq!(keys.config().kem, Kem::XWing);
    // The server reports the suite it actually used.
    assert_eq!(
        c.metadata.extra["hpke"]["kem"],
        "x-wing",
        "{:?}",
        c.metadata.extra.keys().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn v2_plain_request_with_x25519_only_server() {
    let set = HpkeKeySet::from_pairs(vec![ServerKeyPair::generate(3, Kem::X25519)]);
    let s = start(state(Some(set))).await;
    let client = builder(&s).build().unwrap();
    let c = client.create(&ask("m", "hi x25519")).await.unwrap();
    assert_eq!(c.text(), Some("echo: hi x25519"));
    assert_eq!(
        c.metadata.encryption_algorithm.as_deref(),
        Some("ehbp-x25519")
    );
    assert_eq!(client.hpke_keys().await.unwrap().config().key_id, 3);
}

#[tokio::test]
async fn v2_large_request_spans_several_frames() {
    let (_s, client) = started().await;
    let big = "x".repeat(200 * 1024);
    let c = client.create(&ask("m", &big)).await.unwrap();
    assert_eq!(c.text().unwrap().len(), big.len() + "echo: ".len());
}

#[tokio::test]
async fn v2_stream_yields_every_chunk_then_ends() {
    let (_s, client) = started().await;
    let mut stream = client
        .create_stream(&ask("m", "one two three"))
        .await
        .unwrap();
    let mut text = String::new();
    let mut n = 0;
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        assert_eq!(c.object, "chat.completion.chunk");
        text.push_str(c.text().unwrap_or(""));
        n += 1;
    }
    assert_eq!(n, 3);
    assert_eq!(text, "one two three ");
}

#[tokio::test]
async fn v2_cut_stream_is_an_error() {
    let (_s, client) = started().await;
    let mut stream = client
        .create_stream(&ask("cut", "one two three"))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.text(), Some("one "));
    let err = stream.next().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("[DONE]"), "{err}");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn stripped_response_nonce_fails_closed() {
    let s = start(state(None)).await;
    s.strip_nonce.store(true, Ordering::SeqCst);
    let client = builder(&s).build().unwrap();
    let err = client.create(&ask("m", "hello")).await.unwrap_err();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
    assert!(err.is_security());
    assert!(err.to_string().contains("MISSING_RESPONSE_NONCE"), "{err}");
    let err = client
        .create_stream(&ask("m", "hello"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
}

#[tokio::test]
async fn v1_client_cannot_stream() {
    let s = start(state(None)).await;
    let client = builder(&s).protocol(Protocol::V1).build().unwrap();
    let err = client.create_stream(&ask("m", "x")).await.err().unwrap();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
}

#[tokio::test]
async fn tampered_response_fails_plain_and_streamed() {
    let s = start(state(None)).await;
    s.tamper.store(true, Ordering::SeqCst);
    let client = builder(&s).build().unwrap();
    let err = client.create(&ask("m", "hello")).await.unwrap_err();
    assert!(matches!(err, Error::V2Security(_)), "{err:?}");
    let mut stream = client.create_stream(&ask("m", "one two")).await.unwrap();
    let mut items = Vec::new();
    while let Some(i) = stream.next().await {
        items.push(i);
    }
    // Whatever came before, the stream ends in an error, never complete.
    let last = items.pop().unwrap();
    assert!(matches!(last, Err(Error::V2Security(_))), "{last:?}");
}
