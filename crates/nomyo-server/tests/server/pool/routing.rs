//! Choosing an endpoint: least in flight, round robin on ties, per-endpoint
//! caps, and 503 with `Retry-After` when nothing can take a request.

use super::*;

#[tokio::test]
async fn least_in_flight_spreads_requests_and_ties_go_round_robin() {
    let (a, b, c) = (start("a").await, start("b").await, start("c").await);
    let (p, m) = pool(&[&a, &b, &c], |_| {}).await;
    assert_eq!(p.models(), vec!["m".to_owned()]);
    assert!(p.is_ready());
    // Idle pool: ties go round robin.
    for i in 0..3 {
        p.chat(req(i)).await.unwrap();
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (1, 1, 1));
    // Six concurrent slow requests: two per endpoint, never three on one.
    for u in [&a, &b, &c] {
        u.ctl.delay_ms.store(300, Ordering::SeqCst);
    }
    let answers = futures::future::join_all((0..6).map(|i| p.chat(req(i)))).await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!((a.hits(), b.hits(), c.hits()), (3, 3, 3));
    for u in [&a, &b, &c] {
        assert_eq!(u.ctl.max_in_flight.load(Ordering::SeqCst), 2);
        assert_eq!(outcomes(&m, u, "ok"), 3);
        assert_eq!(m.in_flight.get_or_create(&labels(u)).get(), 0);
    }
}

#[tokio::test]
async fn caps_and_all_down_give_503_with_retry_after() {
    let (a, b) = (start("a").await, start("b").await);
    for u in [&a, &b] {
        u.ctl.delay_ms.store(400, Ordering::SeqCst);
    }
    let (p, _m) = pool(&[&a, &b], |c| c.max_concurrency_per_endpoint = 1).await;
    let answers = futures::future::join_all((0..3).map(|i| p.chat(req(i)))).await;
    assert!(answers[0].is_ok() && answers[1].is_ok());
    match &answers[2] {
        Err(BackendError::Unavailable { retry_after }) => assert!(retry_after.is_some()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(a.hits() + b.hits(), 2, "the capped request went nowhere");

    // Every endpoint down: 503 with Retry-After through the whole server.
    a.kill();
    b.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let state = nomyo_server::AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(
        common::server_key(),
    ));
    let em = state.endpoint_metrics();
    let p = PoolBackend::connect("p", config(&[&a, &b]), em)
        .await
        .unwrap();
    let app = nomyo_server::app(state.backend("p", Arc::new(p)).build().unwrap());
    let sealed = common::seal_json(&common::chat("m", "hello"));
    let (status, headers, _) = common::oneshot(&app, sealed.request(None, None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    // The pool's probe at start found both down: not ready, so the request
    // was refused before any endpoint was tried. The per-endpoint series
    // are exported, breakers open.
    let (status, _, _) = common::oneshot_get(&app, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, body) = common::oneshot_get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let open = format!(
        "nomyo_upstream_endpoint_breaker_state{{backend=\"p\",endpoint=\"{}\"}} 1",
        redact_url(&a.url)
    );
    assert!(text.contains(&open), "{open} in\n{text}");
}
