//! Running the backend twice: a cancelled, timed-out or failed request
//! sent again, and an honest retry after a refusal before dispatch.

use super::*;

/// A slow request is cancelled mid-way (HTTP/2 stream reset while the
/// backend runs) and the very same bytes are sent again: the second is a
/// replay (409) and the backend ran once.
#[tokio::test]
async fn cancelled_mid_request_and_resent_is_409_and_the_backend_runs_once() {
    let (b, backend) = echo(&["slow"]);
    let addr = serve(b.build().unwrap()).await;
    let s = seal_json(&chat("slow", "run me twice"));
    let mut send = h2_connect(addr, None).await;
    let (resp, mut body) = send.send_request(v1_head(&s), false).unwrap();
    body.send_data(Bytes::from(s.body.clone()), true).unwrap();
    // Reset once the backend has the request (the echo "slow" model sleeps
    // 600 ms).
    assert!(
        eventually(Duration::from_secs(10), async || backend
            .calls
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    drop(resp);
    body.send_reset(h2::Reason::CANCEL);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let (status, answer) = post_v1(addr, &s, None, None).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&answer));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
}

/// The request time-out (504) and a backend failure (502) come after the
/// backend was given the request: sending the same bytes again is a replay.
#[tokio::test]
async fn timed_out_or_failed_request_resent_is_409_and_the_backend_runs_once() {
    let (b, backend) = echo(&["slow", "broken"]);
    let b = b.limits(Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    for (model, first) in [("slow", 504), ("broken", 502)] {
        let before = backend.calls.load(Ordering::SeqCst);
        let s = seal_json(&chat(model, "x"));
        assert_eq!(post_v1(addr, &s, None, None).await.0, first, "{model}");
        let (status, answer) = post_v1(addr, &s, None, None).await;
        assert_eq!(status, 409, "{model}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(backend.calls.load(Ordering::SeqCst), before + 1, "{model}");
    }
}

/// A request refused before it reached the backend (the processing queue
/// full: 503) keeps nothing: the client's retry of the same bytes (what the
/// reference client does after 503) is served.
#[tokio::test]
async fn retry_after_a_refusal_before_dispatch_is_served() {
    let (b, backend) = echo(&["m", "slow"]);
    let b = b.limits(Limits {
        max_concurrency: 1,
        max_queue: 0,
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    let slow = seal_json(&chat("slow", "hold the slot"));
    let holder = tokio::spawn(async move { post_v1(addr, &slow, None, None).await.0 });
    assert!(
        eventually(Duration::from_secs(10), async || backend
            .calls
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    let s = seal_json(&chat("m", "retry me"));
    assert_eq!(post_v1(addr, &s, None, None).await.0, 503);
    assert_eq!(holder.await.unwrap(), 200);
    let (status, answer) = post_v1(addr, &s, None, None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(
        open_response(&answer).1["choices"][0]["message"]["content"],
        "echo:retry me"
    );
}
