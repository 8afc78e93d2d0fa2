//! Failures: refused statuses as typed errors (not retried), retryable
//! statuses resent sealed once, bounded retries, `Retry-After`, dropped
//! connections, an unreachable server, timeouts, and bad answers as
//! security errors.

use std::time::{Duration, Instant};

use nomyo_client::Error;

use super::{builder, hello};
use crate::common::{local_client, shared_key, Answer, Double, Scripted};

type Check = fn(&Error) -> bool;

#[tokio::test]
async fn refused_requests_map_to_typed_errors_and_are_not_retried() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).max_retries(3).build().unwrap();
    client.prepare().await.unwrap();
    let cases: [(u16, Check); 5] = [
        (400, |e| matches!(e, Error::InvalidRequest(_))),
        (401, |e| matches!(e, Error::Authentication(_))),
        (403, |e| matches!(e, Error::Forbidden(_))),
        (404, |e| matches!(e, Error::NotFound(_))),
        (413, |e| matches!(e, Error::Api(_))),
    ];
    for (status, is) in cases {
        let before = d.posts().len();
        d.script([Scripted::Status(status, "the reason", None)]);
        let e = client.create(&hello()).await.unwrap_err();
        assert!(is(&e), "{status}: {e:?}");
        assert_eq!(e.status(), Some(status));
        assert_eq!(e.api_error().unwrap().detail(), "the reason");
        assert_eq!(e.api_error().unwrap().attempts(), 1);
        assert!(e.to_string().contains("the reason"), "{e}");
        assert!(!e.to_string().contains("hello there"));
        assert_eq!(d.posts().len(), before + 1, "{status} must not be retried");
    }
    // A 400 makes the client check once whether the server rotated its key.
    assert_eq!(d.key_gets(), 2);
}

#[tokio::test]
async fn retryable_statuses_resend_the_same_sealed_request() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    d.script([
        Scripted::Status(503, "busy", None),
        Scripted::Status(502, "upstream", None),
    ]);
    let c = client.create(&hello()).await.unwrap();
    assert_eq!(c.text(), Some("echo: hello there"));
    let posts = d.posts();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[0].body, posts[1].body, "no second encryption");
    assert_eq!(posts[1].body, posts[2].body);
    assert_eq!(
        posts[0].headers["x-payload-id"],
        posts[2].headers["x-payload-id"]
    );
    assert_eq!(d.key_gets(), 1);
}

#[tokio::test]
async fn retries_are_bounded_and_the_last_error_is_typed() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).max_retries(2).build().unwrap();
    for (status, check) in [
        (
            500u16,
            (|e: &Error| matches!(e, Error::Server(_))) as fn(&Error) -> bool,
        ),
        (504, |e| matches!(e, Error::Server(_))),
        (503, |e| matches!(e, Error::ServiceUnavailable(_))),
        (429, |e| matches!(e, Error::RateLimit { .. })),
    ] {
        let before = d.posts().len();
        d.script(std::iter::repeat_n(
            Scripted::Status(status, "down", None),
            3,
        ));
        let e = client.create(&hello()).await.unwrap_err();
        assert!(check(&e), "{e:?}");
        assert!(e.is_server_or_network());
        assert_eq!(e.api_error().unwrap().attempts(), 3);
        assert!(e.to_string().contains("after 3 attempts"), "{e}");
        assert_eq!(d.posts().len(), before + 3);
    }
    // max_retries(0): one attempt only.
    let once = builder(&d).max_retries(0).build().unwrap();
    let before = d.posts().len();
    d.script([Scripted::Status(503, "down", None)]);
    assert!(matches!(
        once.create(&hello()).await,
        Err(Error::ServiceUnavailable(_))
    ));
    assert_eq!(d.posts().len(), before + 1);
}

#[tokio::test]
async fn retry_after_is_honoured_and_an_excessive_one_is_returned() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    client.prepare().await.unwrap();
    d.script([Scripted::Status(429, "slow down", Some("1"))]);
    let t = Instant::now();
    client.create(&hello()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());

    d.script([Scripted::Status(429, "come back tomorrow", Some("86400"))]);
    let before = d.posts().len();
    let t = Instant::now();
    match client.create(&hello()).await {
        Err(Error::RateLimit { retry_after, error }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(86400)));
            assert_eq!(error.detail(), "come back tomorrow");
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(d.posts().len(), before + 1);
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    client.prepare().await.unwrap();
    // The key fetch used one connection; the server now goes away for a bit.
    let c0 = d.connections();
    // Make the pooled connection unusable: next requests need new ones.
    drop(client);
    let client = builder(&d).build().unwrap();
    d.state
        .drop_connections
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let c = client.create(&hello()).await.unwrap();
    assert_eq!(c.text(), Some("echo: hello there"));
    assert!(d.connections() >= c0 + 3, "{} {}", d.connections(), c0);
}

#[tokio::test]
async fn unreachable_server_is_a_connection_error_after_retries() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let client = local_client(&format!("http://{addr}")).build().unwrap();
    match client.create(&hello()).await {
        Err(e @ Error::Connection { .. }) => {
            assert!(e.is_server_or_network());
            let s = e.to_string();
            assert!(
                s.contains("after 3 attempts") && s.contains(&addr.to_string()),
                "{s}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_timeout_is_not_retried() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    client.prepare().await.unwrap();
    d.set_answer(Answer::Hang);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(d.posts().len(), 1);
}

#[tokio::test]
async fn bad_answers_are_security_errors_without_content() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    d.set_answer(Answer::Downgraded);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Security(nomyo_core::Error::UnsupportedVersion { .. })
        ),
        "{e:?}"
    );
    assert!(e.is_security());

    d.set_answer(Answer::TamperedTag);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Security(nomyo_core::Error::DecryptionFailed)),
        "{e:?}"
    );

    d.set_answer(Answer::ForeignOuterId);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(
        matches!(&e, Error::ResponseMismatch(_)) && e.is_security(),
        "{e:?}"
    );

    d.set_answer(Answer::ForeignInnerId);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(matches!(&e, Error::ResponseMismatch(_)), "{e:?}");

    d.set_answer(Answer::NotJson);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(matches!(&e, Error::InvalidResponse(_)), "{e:?}");
    assert!(!e.to_string().contains("not json"), "{e}");
    // None of these is retried.
    assert_eq!(d.posts().len(), 5);
}
