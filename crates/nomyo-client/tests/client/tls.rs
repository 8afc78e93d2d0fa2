//! Over TLS: the certificate is verified, and the client multiplexes
//! concurrent requests over one HTTP/2 connection when the server offers it.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{shared_key, Double};
use nomyo_client::{ChatMessage, ChatRequest, Client, Error, KnownServers};

fn certificate() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    (c.cert.pem(), c.key_pair.serialize_pem())
}

fn hello() -> ChatRequest {
    ChatRequest::new("m").message(ChatMessage::user("over tls"))
}

#[tokio::test]
async fn http2_over_tls_one_connection_for_concurrent_requests() {
    let (cert, key) = certificate();
    let d = Double::start_tls(shared_key(1), &cert, &key).await;
    let url = format!("https://{}", d.addr);
    let client = Client::builder()
        .base_url(&url)
        .root_certificate_pem(cert.as_bytes())
        .unwrap()
        .client_key(shared_key(0))
        .known_servers(KnownServers::Off)
        .build()
        .unwrap();
    client.prepare().await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.create(&hello()).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().text(), Some("echo: over tls"));
    }
    let posts = d.posts();
    assert_eq!(posts.len(), 8);
    assert!(
        posts
            .iter()
            .all(|p| p.version == axum::http::Version::HTTP_2),
        "{:?}",
        posts.iter().map(|p| p.version).collect::<Vec<_>>()
    );
    // Eight requests in flight at once over a single connection: multiplexed.
    assert_eq!(d.connections(), 1);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let (cert, key) = certificate();
    let d = Double::start_tls(shared_key(1), &cert, &key).await;
    let client = Client::builder()
        .base_url(format!("https://{}", d.addr))
        .client_key(shared_key(0))
        .known_servers(KnownServers::Off)
        .build()
        .unwrap();
    match client.create(&hello()).await {
        Err(e @ Error::Tls { .. }) => {
            assert!(e.is_security());
            assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // Not retried: one handshake, nothing fetched or sent.
    assert_eq!(d.connections(), 1);
    assert_eq!(d.key_gets(), 0);
    assert_eq!(d.posts().len(), 0);
}
