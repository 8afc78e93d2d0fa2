//! Base URLs: plain HTTP refused before any network I/O unless loopback,
//! malformed URLs refused, and an OpenAI-style `/v1` suffix dropped.

use std::time::Duration;

use nomyo_client::{Client, Error, KnownServers};

use super::hello;
use crate::common::{shared_key, Double};

#[tokio::test]
async fn plain_http_is_refused_before_any_network_io() {
    let d = Double::start(shared_key(1)).await;
    // Not loopback (TEST-NET-1 and a name): plain HTTP needs allow_http.
    for url in [
        "http://192.0.2.1:12434",
        "http://[2001:db8::1]:12434",
        "http://example.com",
        "http://localhost.example.com",
        "http://128.0.0.1",
        // A trailing dot may send the name to DNS instead of the hosts file.
        "http://localhost.",
    ] {
        let e = Client::builder().base_url(url).build().unwrap_err();
        assert!(matches!(e, Error::InsecureUrl { .. }), "{url}: {e:?}");
        assert!(e.to_string().contains("https://"));
    }
    for bad in [
        "ftp://x",
        "not a url",
        "https://user:pw@host",
        "https://h/?q=1",
    ] {
        assert!(
            matches!(
                Client::builder().base_url(bad).build(),
                Err(Error::Config(_))
            ),
            "{bad}"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(d.connections(), 0);
}

#[tokio::test]
async fn loopback_plain_http_needs_no_consent_and_a_v1_suffix_is_dropped() {
    let d = Double::start(shared_key(1)).await;
    // Every loopback address is accepted like the default server's.
    for url in [
        "http://127.0.0.1:12434",
        "http://127.1.2.3",
        "http://[::1]:12434/",
        "http://localhost:12434",
        "http://LOCALHOST:12434",
    ] {
        Client::builder()
            .base_url(url)
            .known_servers(KnownServers::Off)
            .build()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    // An OpenAI-style base URL (".../v1", with or without a slash) finds the
    // NOMYO routes at the server's root; no allow_http for loopback.
    for suffix in ["/v1", "/v1/"] {
        let url = format!("{}{suffix}", d.url());
        let client = Client::builder()
            .base_url(&url)
            .known_servers(KnownServers::Off)
            .build()
            .unwrap();
        assert_eq!(client.origin(), d.url());
        client.create(&hello()).await.unwrap();
    }
    assert_eq!(d.posts().len(), 2);
    // A path prefix other than a trailing /v1 is kept.
    let client = Client::builder()
        .base_url(format!("{}/v1x", d.url()))
        .known_servers(KnownServers::Off)
        .max_retries(0)
        .build()
        .unwrap();
    assert!(client.create(&hello()).await.is_err());
    assert_eq!(d.posts().len(), 2);
}
