//! HTTP/2 abuse against the real server (`serve::bind` + `run`, cleartext
//! HTTP/2 with prior knowledge), spoken with the `h2` crate: a rapid-reset
//! flood, an oversized header list, and more streams than allowed. Each must
//! leave the server answering everyone else at once.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use nomyo_server::serve::{H2_MAX_CONCURRENT_STREAMS, H2_MAX_HEADER_LIST};

async fn h2_connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn get(path: &str) -> Request<()> {
    Request::builder()
        .method(Method::GET)
        .uri(format!("http://localhost{path}"))
        .body(())
        .unwrap()
}

/// `GET /health` on a fresh HTTP/2 connection answers 200, quickly.
async fn healthy(addr: SocketAddr) {
    let t = Instant::now();
    let mut send = h2_connect(addr).await.ready().await.unwrap();
    let (resp, _) = send.send_request(get("/health"), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("health answered in time")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(t.elapsed() < Duration::from_secs(5));
}

async fn server() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let state = state_with(&["m"]).build().unwrap();
    let (addr, stop, _task) = serve_real(state, None).await;
    (addr, stop)
}

/// A gauge from `GET /metrics` (HTTP/2).
async fn gauge(addr: SocketAddr, name: &str) -> f64 {
    let mut send = h2_connect(addr).await.ready().await.unwrap();
    let (resp, _) = send.send_request(get("/metrics"), true).unwrap();
    let mut body = resp.await.unwrap().into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text)
        .unwrap()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test]
async fn rapid_reset_flood_leaves_no_work_behind_and_others_are_served() {
    let (addr, _stop) = server().await;
    healthy(addr).await;
    // The CVE-2023-44487 pattern: open a stream for a slow route (a v1 POST
    // whose body never comes: the handler takes a processing slot and waits
    // for the body) and reset it at once, thousands of times on one
    // connection. hyper either sends GOAWAY (resets outpacing accepts) or
    // drops each handler with its stream; either way nothing may pile up.
    let sealed = seal_json(&chat("m", "flood"));
    let mut send = h2_connect(addr).await;
    let mut sent = 0;
    for i in 0..5000 {
        send = match send.ready().await {
            Ok(s) => s,
            Err(_) => break, // GOAWAY: the server stopped the flood
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri("http://localhost/v1/chat/secure_completion")
            .header("content-type", "application/octet-stream")
            .header("x-payload-id", format!("flood-{i}"))
            .header("x-public-key", &sealed.public_key_header)
            .body(())
            .unwrap();
        match send.send_request(req, false) {
            Ok((_resp, mut body)) => body.send_reset(h2::Reason::CANCEL),
            Err(_) => break,
        }
        sent += 1;
    }
    assert!(sent > 0);
    eprintln!("reset flood: {sent} streams opened and reset before the server stopped it (5000 = never stopped)");
    // Everyone else is served at once, and every slot the flood took is
    // given back.
    healthy(addr).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (in_flight, queued) = (
            gauge(addr, "nomyo_requests_in_flight").await,
            gauge(addr, "nomyo_queue_depth").await,
        );
        if in_flight == 0.0 && queued == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {sent} reset streams: {in_flight} in flight, {queued} queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn oversized_header_list_is_refused_and_the_server_keeps_serving() {
    let (addr, _stop) = server().await;
    let mut send = h2_connect(addr).await.ready().await.unwrap();
    let big = "a".repeat(H2_MAX_HEADER_LIST as usize + 1024);
    let req = Request::builder()
        .method(Method::GET)
        .uri("http://localhost/health")
        .header("x-padding", big)
        .body(())
        .unwrap();
    let outcome = match send.send_request(req, true) {
        Ok((resp, _)) => tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .expect("an answer or a reset in time"),
        Err(e) => Err(e),
    };
    match outcome {
        // hyper answers 431, or resets the stream / closes the connection.
        Ok(resp) => assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => assert!(
            e.reason().is_some() || e.is_go_away() || e.is_io(),
            "unexpected error: {e:?}"
        ),
    }
    healthy(addr).await;
}

#[tokio::test]
async fn streams_beyond_the_limit_wait_and_everyone_is_answered() {
    let (addr, _stop) = server().await;
    let mut send = h2_connect(addr).await.ready().await.unwrap();
    // One answered request: the server's SETTINGS have arrived by then.
    let (first, _) = send.send_request(get("/health"), true).unwrap();
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    // The server announces its limit; a conforming client never exceeds it
    // (the h2 client queues), and every request is still answered.
    assert_eq!(
        send.current_max_send_streams(),
        H2_MAX_CONCURRENT_STREAMS as usize
    );
    let n = H2_MAX_CONCURRENT_STREAMS as usize + 72;
    let mut pending = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = send.clone().ready().await.unwrap();
        let (resp, _) = s.send_request(get("/health"), true).unwrap();
        pending.push(tokio::spawn(resp));
    }
    for p in pending {
        let resp = tokio::time::timeout(Duration::from_secs(20), p)
            .await
            .expect("answered in time")
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    healthy(addr).await;
}
