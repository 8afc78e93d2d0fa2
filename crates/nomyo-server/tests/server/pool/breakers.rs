//! Circuit breakers: opened and closed by probes, the cool-down and
//! its single half-open trial.

use super::*;

#[tokio::test]
async fn probes_open_and_close_breakers() {
    let (a, b) = (start("a").await, start("b").await);
    a.ctl.chat_status.store(503, Ordering::SeqCst);
    a.ctl.models_status.store(503, Ordering::SeqCst);
    let (p, m) = pool(&[&a, &b], |c| {
        c.health_check_interval = Duration::from_millis(100);
        c.breaker_cooldown = Duration::from_secs(60);
    })
    .await;
    // The probe takes A out without any request having failed there.
    wait_for_breaker(&m, &a, 1, "probe never opened A").await;
    for i in 0..4 {
        assert_eq!(content(&p.chat(req(i)).await.unwrap()), "from:b");
    }
    assert_eq!(a.hits(), 0);
    // A recovers: the probe closes its breaker long before the cool-down.
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    a.ctl.models_status.store(0, Ordering::SeqCst);
    wait_for_breaker(&m, &a, 0, "probe never closed A").await;
    for i in 0..4 {
        p.chat(req(i)).await.unwrap();
    }
    assert_eq!(a.hits(), 2, "A takes its share again");
}

/// Moves the breakers' clock (tokio's) `d` ahead at once, instead of
/// waiting for a cool-down on the wall clock. The clock is paused only for
/// the jump: the rest of the test talks to real sockets, whose timers must
/// run as usual.
async fn past(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

#[tokio::test]
async fn an_open_breaker_lets_one_trial_through_after_its_cool_down() {
    let a = start("a").await;
    a.ctl.chat_status.store(500, Ordering::SeqCst);
    let (p, m) = pool(&[&a], |c| {
        c.breaker_failures = 1;
        // Far longer than the test: only the moved clock passes it.
        c.breaker_cooldown = Duration::from_secs(3600);
    })
    .await;
    assert!(matches!(
        p.chat(req(0)).await,
        Err(BackendError::Upstream(_))
    ));
    assert_eq!(breaker(&m, &a), 1);
    assert!(!p.is_ready());
    // Open: refused without asking A.
    match p.chat(req(1)).await {
        Err(BackendError::Unavailable { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(3600)));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(a.hits(), 1);
    // After the cool-down one trial goes through; it fails: open again.
    past(Duration::from_secs(3601)).await;
    assert!(p.is_ready());
    assert!(p.chat(req(2)).await.is_err());
    assert_eq!(a.hits(), 2);
    assert_eq!(breaker(&m, &a), 1);
    assert!(p.chat(req(3)).await.is_err());
    assert_eq!(a.hits(), 2);
    // The next trial succeeds: closed.
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    past(Duration::from_secs(3601)).await;
    p.chat(req(4)).await.unwrap();
    assert_eq!(breaker(&m, &a), 0);
    assert_eq!(m.breaker_opened.get_or_create(&labels(&a)).get(), 2);
    p.chat(req(5)).await.unwrap();
    assert_eq!(a.hits(), 4);
}

#[tokio::test]
async fn a_half_open_breaker_admits_a_single_trial() {
    let a = start("a").await;
    a.ctl.chat_status.store(502, Ordering::SeqCst);
    let (p, m) = pool(&[&a], |c| {
        c.breaker_failures = 1;
        c.breaker_cooldown = Duration::from_secs(3600);
    })
    .await;
    assert!(p.chat(req(0)).await.is_err());
    a.ctl.chat_status.store(0, Ordering::SeqCst);
    a.ctl.delay_ms.store(300, Ordering::SeqCst);
    past(Duration::from_secs(3601)).await;
    let (trial, other) = tokio::join!(p.chat(req(1)), p.chat(req(2)));
    assert!(trial.is_ok());
    assert!(matches!(other, Err(BackendError::Unavailable { .. })));
    assert_eq!(a.hits(), 2);
    assert_eq!(breaker(&m, &a), 0);
}
