//! Failover: before the first answer byte and never after, and never
//! reported as unavailable once an endpoint had the request.

use super::*;

#[tokio::test]
async fn a_failing_endpoint_is_failed_over_and_its_breaker_opens() {
    let (a, b) = (start("a").await, start("b").await);
    a.ctl.chat_status.store(503, Ordering::SeqCst);
    let (p, m) = pool(&[&a, &b], |c| {
        c.breaker_failures = 2;
        c.breaker_cooldown = Duration::from_secs(60);
    })
    .await;
    for i in 0..6 {
        let v = p.chat(req(i)).await.unwrap();
        assert_eq!(content(&v), "from:b");
    }
    // Two failures opened A's breaker: it was not tried again.
    assert_eq!(a.hits(), 2);
    assert_eq!(b.hits(), 6);
    assert_eq!(outcomes(&m, &a, "failed"), 2);
    assert_eq!(breaker(&m, &a), 1);
    assert_eq!(m.breaker_opened.get_or_create(&labels(&a)).get(), 1);
    assert_eq!(breaker(&m, &b), 0);
    assert!(p.is_ready());
    // Closing connections also fails over (A is killed: connect refused).
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    b.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // B down and A's breaker open for a minute: nothing to route to.
    match p.chat(req(9)).await {
        Err(BackendError::Unavailable { retry_after }) => assert!(retry_after.is_some()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn killing_an_upstream_mid_load_is_invisible_to_clients() {
    let (a, b) = (start("a").await, start("b").await);
    for u in [&a, &b] {
        u.ctl.delay_ms.store(300, Ordering::SeqCst);
    }
    let (p, m) = pool(&[&a, &b], |_| {}).await;
    let p = Arc::new(p);
    let load = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            let mut all = Vec::new();
            for wave in 0..3 {
                let answers =
                    futures::future::join_all((0..8).map(|i| p.chat(req(wave * 10 + i)))).await;
                all.extend(answers);
            }
            all
        })
    };
    // A dies while its first wave is being answered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.ctl.in_flight.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "A never got load");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    let answers = load.await.unwrap();
    assert_eq!(answers.len(), 24);
    for r in &answers {
        let v = r.as_ref().expect("no client-visible error");
        assert_eq!(content(v), "from:b");
    }
    assert!(
        outcomes(&m, &a, "failed") >= 4,
        "A's in-flight requests failed over"
    );
    assert_eq!(outcomes(&m, &a, "ok"), 0);
}

#[tokio::test]
async fn streams_fail_over_before_the_first_chunk_and_never_after() {
    let (a, b) = (start("a").await, start("b").await);
    let (p, m) = pool(&[&a, &b], |_| {}).await;
    // A fails before its first chunk (503, then a cut): B answers.
    a.ctl.chat_status.store(503, Ordering::SeqCst);
    let s = p.chat_stream(req(0)).await.unwrap();
    let items: Vec<_> = s.collect().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].as_ref().unwrap(), &chunk("b"));
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    a.ctl.cut_before_first.store(true, Ordering::SeqCst);
    for i in 1..3 {
        let items: Vec<_> = p.chat_stream(req(i)).await.unwrap().collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap(), &chunk("b"));
    }
    assert_eq!(
        outcomes(&m, &a, "failed"),
        3,
        "A was tried first every time"
    );
    // Cut after the first chunk: the client sees the chunk, then the error;
    // no other endpoint is asked.
    a.ctl.cut_before_first.store(false, Ordering::SeqCst);
    for u in [&a, &b] {
        u.ctl.cut_after_first.store(true, Ordering::SeqCst);
    }
    let before = a.hits() + b.hits();
    let items: Vec<_> = p.chat_stream(req(5)).await.unwrap().collect().await;
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(items[1].is_err());
    assert_eq!(
        a.hits() + b.hits(),
        before + 1,
        "a cut stream is not retried"
    );
    assert_eq!(outcomes(&m, &a, "cut") + outcomes(&m, &b, "cut"), 1);
}

/// An endpoint that received the request and failed (500), and one that
/// refused it before taking it (503), in either order: the pool answers
/// with the first failure, never `Unavailable`, which would give the
/// request's replay claim back and let the same bytes run again (over v1,
/// replayed with another `X-Public-Key`, the answer then goes to whoever
/// replays it).
#[tokio::test]
async fn a_request_that_reached_an_endpoint_is_never_reported_as_unavailable() {
    let (a, b) = (start("a").await, start("b").await);
    a.ctl.chat_status.store(500, Ordering::SeqCst);
    b.ctl.chat_status.store(503, Ordering::SeqCst);
    let (p, _m) = pool(&[&a, &b], |c| {
        c.breaker_failures = 100;
    })
    .await;
    for i in 0..4 {
        match p.chat(req(i)).await {
            Err(BackendError::Unavailable { .. }) => {
                panic!("request {i}: reported as never taken after endpoint a had it")
            }
            Ok(_) => panic!("request {i}: no endpoint answers"),
            Err(_) => {}
        }
        match p.chat_stream(req(10 + i)).await {
            Err(BackendError::Unavailable { .. }) => {
                panic!("stream {i}: reported as never taken after endpoint a had it")
            }
            Ok(_) => panic!("stream {i}: no endpoint answers"),
            Err(_) => {}
        }
    }
    // Every request was tried at both endpoints, in both orders.
    assert_eq!(a.hits(), 8);
    assert_eq!(b.hits(), 8);
}
