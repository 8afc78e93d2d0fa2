//! Plain HTTP to loopback never goes through a proxy from the environment.
//! Its own test binary: it sets proxy variables for the whole process.
#![allow(clippy::unwrap_used)]

use nomyo_client::{ChatMessage, ChatRequest, Client, KnownServers};
use nomyo_testkit::v1_double::{shared_key, Double};

fn hello() -> ChatRequest {
    ChatRequest::new("test-model").message(ChatMessage::user("hello there"))
}

/// Plain HTTP to loopback is allowed because it stays on this machine, so
/// it never goes through an HTTP proxy named in the environment (which
/// would see the API key and could answer with its own server key): with
/// `HTTP_PROXY` and `ALL_PROXY` pointing at a dead address, a loopback
/// server is still reached directly.
#[tokio::test]
async fn loopback_plain_http_bypasses_proxies_from_the_environment() {
    let d = Double::start(shared_key(1)).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    // The only test in this binary: nothing else reads the environment.
    std::env::set_var("HTTP_PROXY", &proxy);
    std::env::set_var("http_proxy", &proxy);
    std::env::set_var("ALL_PROXY", &proxy);
    let client = Client::builder()
        .base_url(d.url())
        .known_servers(KnownServers::Off)
        .build()
        .unwrap();
    client.create(&hello()).await.unwrap();
    let client = Client::builder()
        .base_url(d.url().replace("127.0.0.1", "localhost"))
        .known_servers(KnownServers::Off)
        .build()
        .unwrap();
    client.create(&hello()).await.unwrap();
    assert_eq!(d.posts().len(), 2);
}
