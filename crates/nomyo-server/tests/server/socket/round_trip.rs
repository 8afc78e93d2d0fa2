//! The round trip over a socket, then a graceful shutdown that finishes the
//! request in flight and closes the port.

use std::time::Duration;

use super::post;
use crate::common::*;

#[tokio::test]
async fn round_trip_then_graceful_shutdown_finishes_in_flight() {
    let st = state_with(&["m", "slow"]).build().unwrap();
    let (addr, stop, task) = serve_real(st.clone(), None).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let pem = client
        .get(format!("{base}/pki/public_key"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, server_key().public_key().to_pem());
    let (s, body) = post(&client, &base, &seal_json(&chat("m", "over a socket"))).await;
    assert_eq!(s, 200);
    assert_eq!(
        open_response(&body).1["choices"][0]["message"]["content"],
        "echo:over a socket"
    );

    // A slow request in flight when shutdown starts still gets its answer.
    let c2 = client.clone();
    let b2 = base.clone();
    let slow = tokio::spawn(async move { post(&c2, &b2, &seal_json(&chat("slow", "x"))).await.0 });
    let t = std::time::Instant::now();
    while st.metrics().in_flight.get() < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "slow request never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), 200);
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Closed for new connections.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
