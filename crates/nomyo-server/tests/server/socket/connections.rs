//! Per connection: each peer address has its own rate bucket on an open
//! server, and a refusal before the body is read says `Connection: close`.

use std::time::Duration;

use crate::common::*;

/// One raw exchange from a chosen loopback source address.
async fn raw_from(src: &str, addr: std::net::SocketAddr, head: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn open_server_rate_limits_each_peer_address() {
    let limits = nomyo_server::limits::Limits {
        rate_per_minute: 1,
        rate_burst: 1,
        ..Default::default()
    };
    let st = state_with(&["m"]).limits(limits).build().unwrap();
    let (addr, _stop, _task) = serve_real(st, None).await;
    let send = |src: &'static str| async move {
        let g = seal_json(&chat("m", "x"));
        let head = raw_head(
            &[
                ("X-Payload-ID", &g.id),
                ("X-Public-Key", &g.public_key_header),
            ],
            g.body.len(),
        );
        raw_from(src, addr, &head, &g.body).await
    };
    assert_eq!(send("127.0.0.1").await, 200);
    assert_eq!(send("127.0.0.1").await, 429);
    // Another peer has its own bucket (all of 127/8 is loopback on Linux).
    assert_eq!(send("127.0.0.2").await, 200);
    assert_eq!(send("127.0.0.2").await, 429);
}

/// A request refused on its headers alone (here: plaintext to the v2 route
/// and a v1 request without its headers, refused before the body is read)
/// leaves its body unread, so the server ends the connection after the
/// refusal: the response must say `Connection: close`, or a client that
/// reuses the connection sends its next request into a connection the
/// server closes, and gets no answer at all ("Server disconnected without
/// sending a response", seen with an EHBP client that streams its body).
#[tokio::test]
async fn a_refusal_before_the_body_says_the_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let st = state_with(&["m"]).build().unwrap();
    let (addr, _stop, _task) = serve_real(st, None).await;
    let body = "x".repeat(300);
    for path in ["/v1/chat/completions", "/v1/chat/secure_completion"] {
        let sized = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len(),
        );
        // Chunked, as an EHBP client streams its body.
        let chunked = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len(),
        );
        for request in [&sized, &chunked] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // The head first; the body once the refusal is on its way.
            let (head, rest) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
            s.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = s.write_all(rest.as_bytes()).await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
                .await
                .expect("the server must answer and close, not hang");
            let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
            assert!(text.starts_with("http/1.1 4"), "{path}: {text}");
            assert!(text.contains("\r\nconnection: close\r\n"), "{path}: {text}");
        }
    }
}
