//! Slow clients and silent backends holding the processing slots or
//! the server's memory.

use super::*;

/// Clients that send their headers, then the body a trickle at a time,
/// hold no processing slot: with `max_concurrency = 2` and no queue, two of
/// them leave the server answering everyone else at once.
#[tokio::test]
async fn slow_body_senders_do_not_hold_the_processing_slots() {
    use tokio::io::AsyncWriteExt;
    let (b, _) = echo(&["m"]);
    let b = b.limits(Limits {
        max_concurrency: 2,
        max_queue: 0,
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    let mut slow = Vec::new();
    for _ in 0..2 {
        let s = seal_json(&chat("m", "slowly"));
        let head = raw_head(
            &[
                ("X-Payload-ID", &s.id),
                ("X-Public-Key", &s.public_key_header),
            ],
            s.body.len(),
        );
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        c.write_all(&s.body[..10]).await.unwrap();
        slow.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let s = seal_json(&chat("m", "meanwhile"));
        let (status, body) = post_v1(addr, &s, None, None).await;
        assert_eq!(
            status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    drop(slow);
}

/// A backend whose streams never end: a 4 KiB chunk whenever asked. Counts
/// in `alive` the streams still alive (dropped when the server cuts them).
fn endless_streams(alive: &Arc<std::sync::atomic::AtomicUsize>) -> Arc<Double> {
    let alive = Arc::clone(alive);
    Double::new("endless", &["m"])
        .answer(|r| Ok(completion(r.model(), "short")))
        .stream(move |_| {
            alive.fetch_add(1, Ordering::SeqCst);
            let alive = Alive(Arc::clone(&alive));
            let text = "x".repeat(4096);
            Ok(futures::stream::repeat_with(move || {
                let _ = &alive;
                Ok(text_chunk("m", &text))
            })
            .boxed())
        })
        .arc()
}

struct Alive(Arc<std::sync::atomic::AtomicUsize>);
impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Clients that send most of a large body and then stall cannot make the
/// server buffer without bound: bodies count against
/// `max_buffered_body_bytes`, a body that would exceed it is refused (503)
/// while small requests still fit and are served.
#[tokio::test]
async fn stalled_large_bodies_cannot_fill_the_servers_memory() {
    use tokio::io::AsyncWriteExt;
    let (b, _) = echo(&["m"]);
    let b = b.limits(Limits {
        max_body_bytes: 64 * 1024,
        max_buffered_body_bytes: 96 * 1024,
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    // 60 KiB of a 64 KiB body, then nothing.
    let s = seal_json(&chat("m", "x"));
    let head = raw_head(
        &[
            ("X-Payload-ID", &s.id),
            ("X-Public-Key", &s.public_key_header),
        ],
        64 * 1024,
    );
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled.write_all(head.as_bytes()).await.unwrap();
    stalled.write_all(&vec![b' '; 60 * 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A second large body does not fit in what is left...
    let big = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (status, body) = {
        let mut big = big;
        big.write_all(head.as_bytes()).await.unwrap();
        let _ = big.write_all(&vec![b' '; 60 * 1024]).await;
        let mut out = Vec::new();
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(Duration::from_secs(10), big.read_to_end(&mut out))
            .await
            .expect("answered at once")
            .unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        (
            text.split_whitespace().nth(1).unwrap_or("").to_owned(),
            text,
        )
    };
    assert_eq!(status, "503", "{body}");
    // ...a small request does.
    let s = seal_json(&chat("m", "small"));
    let (status, body) = post_v1(addr, &s, None, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    drop(stalled);
}

/// Two HTTP/2 clients ask for v2 streams and never read them (a zero
/// flow-control window): with `max_concurrency = 2` and no queue, the
/// streams are cut after the write time-out, the backend's streams are
/// dropped and the slots come back, so others are served.
#[tokio::test]
async fn stalled_stream_readers_do_not_hold_the_processing_slots() {
    let alive = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b = AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
        .backend("endless", endless_streams(&alive))
        .limits(Limits {
            max_concurrency: 2,
            max_queue: 0,
            stream_write_timeout: Duration::from_secs(1),
            ..Limits::default()
        });
    let addr = serve(b.build().unwrap()).await;
    let config = x25519_config(addr).await;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut send = h2_connect(addr, Some(0)).await;
        let (enc, body) = v2_stream_request(&config, &format!("never read {i}"));
        let req = Request::builder()
            .method(Method::POST)
            .uri("http://localhost/v1/chat/completions")
            .header("content-type", "application/json")
            .header("ehbp-encapsulated-key", enc)
            .body(())
            .unwrap();
        let (resp, mut tx) = send.send_request(req, false).unwrap();
        tx.send_data(Bytes::from(body), true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // Kept, never read.
        held.push((send, resp));
    }
    assert_eq!(alive.load(Ordering::SeqCst), 2);
    let t = Instant::now();
    let served = eventually(Duration::from_secs(20), async || {
        let s = seal_json(&chat("m", "meanwhile"));
        post_v1(addr, &s, None, None).await.0 == 200
    })
    .await;
    assert!(served, "the stalled streams still hold every slot");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        alive.load(Ordering::SeqCst),
        0,
        "backend streams left running"
    );
    drop(held);
}

/// A backend stream that stops producing is cut after the idle time-out
/// and gives its slot back.
#[tokio::test]
async fn silent_backend_streams_are_cut_after_the_idle_timeout() {
    let silent = Double::new("silent", &["m"])
        .answer(|r| Ok(completion(r.model(), "short")))
        .stream(|_| Ok(futures::stream::pending().boxed()));
    let b = AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
        .backend("silent", silent.arc())
        .limits(Limits {
            max_concurrency: 1,
            max_queue: 0,
            stream_idle_timeout: Duration::from_secs(1),
            ..Limits::default()
        });
    let addr = serve(b.build().unwrap()).await;
    let config = x25519_config(addr).await;
    let (enc, body) = v2_stream_request(&config, "wait forever");
    let t = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("ehbp-encapsulated-key", enc)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The body ends (cut: no sealed [DONE]) after about the idle time-out.
    let _ = tokio::time::timeout(Duration::from_secs(10), resp.bytes())
        .await
        .expect("the silent stream was never cut");
    assert!(t.elapsed() >= Duration::from_millis(900));
    let s = seal_json(&chat("m", "next"));
    assert_eq!(post_v1(addr, &s, None, None).await.0, 200);
}
