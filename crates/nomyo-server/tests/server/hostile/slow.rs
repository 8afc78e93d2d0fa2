//! Slow clients: dripped bodies, unfinished headers and idle connections.

use super::*;

/// Slow clients: a body dripped a byte at a time gets 408 once the body
/// timeout (1 s here) has passed, on both protocols; headers that never
/// finish and connections that send nothing hold no worker: `/health` and a
/// real request are served meanwhile.
#[tokio::test]
async fn slow_clients_time_out_and_do_not_block_others() {
    let (addr, configs) = server().await;
    let xwing = configs.iter().find(|c| c.kem == Kem::XWing).unwrap();
    // Idle connections and never-finished headers, held open throughout.
    let mut idle = Vec::new();
    for i in 0..50 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"POST /v1/chat/secure_completion HTTP/1.1\r\nHost: t\r\nX-Payload-ID: ")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    assert_healthy(addr, "50 idle connections").await;

    let v1 = v1_request(&chat_bytes(&chat("m", "slowly")), &[]);
    let (_, v2) = v2_request(xwing, &chat_bytes(&chat("m", "slowly")), &[]);
    for (name, bytes) in [("v1", v1), ("v2", v2)] {
        let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&bytes[..head_end]).await.unwrap();
        let t = Instant::now();
        let drip = async {
            for b in &bytes[head_end..] {
                if s.write_all(std::slice::from_ref(b)).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        // Meanwhile another client is served.
        let other = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let t = Instant::now();
            assert_healthy(addr, "a dripping body").await;
            t.elapsed()
        };
        let (_, health_took) =
            tokio::join!(tokio::time::timeout(Duration::from_secs(4), drip), other);
        assert!(health_took < Duration::from_secs(1), "{health_took:?}");
        let mut out = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out))
            .await
            .expect("an answer, not a hang")
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&out[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{name}: {text}");
        assert_no_internals(name, &text);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < QUICK,
            "{name}: 408 after {took:?}"
        );
    }
    // Still serving real work with the idle connections open.
    let g = seal_json(&chat("m", "after the slow ones"));
    let a = exchange(addr, &v1_raw(&g.id, &g.public_key_header, &g.body, &[])).await;
    assert_eq!(a.status, 200, "{}", a.head);
    drop(idle);
}
