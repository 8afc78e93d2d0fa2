//! Readiness follows the upstreams: a server in front of an upstream that
//! cannot be reached answers `/health` with 503 and names the upstream (its
//! URL without user info or query) in its log, refuses chat at once with 503,
//! and turns ready once the upstream comes up. Its own test binary: the log
//! subscriber is process-wide.

#![allow(clippy::unwrap_used)]

use nomyo_testkit::server as common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use common::Capture;

/// The log at the default level (info), captured once for this binary.
fn log() -> &'static Capture {
    static LOG: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(capture.clone())
            .with_ansi(false)
            .init();
        capture
    })
}

/// An address nothing listens on (reserved, then released).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A server built by the product's start-up path from `toml`.
async fn server(toml: &str) -> axum::Router {
    let settings = common::settings(toml);
    let prepared = nomyo_server::serve::prepare(settings, |_| Err("no embedded".into()))
        .await
        .unwrap();
    nomyo_server::app(prepared.state)
}

async fn health(app: &axum::Router) -> (StatusCode, Value) {
    let (status, _, body) = common::oneshot_get(app, "/health").await;
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn an_unreachable_upstream_is_not_ready_and_is_named_in_the_log() {
    let log = log();
    let addr = free_addr();
    // User info and a query in the URL: the log names the URL without them.
    let toml = format!(
        "ephemeral_key = true\nkey_bits = 2048\n\
         [[backends]]\nname = \"upstream\"\ntype = \"upstream\"\n\
         url = \"http://opsuser:s3cr3t-pw@{addr}/v1?token=q-s3cr3t\"\nmodels = [\"m\"]\n"
    );
    let settings = common::settings(&toml);
    // The plain one-URL path (what `--upstream URL` builds).
    assert!(matches!(
        settings.backends[..],
        [nomyo_server::config::BackendSpec::Upstream { .. }]
    ));
    let app = server(&toml).await;

    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["backends"], 1);
    assert_eq!(body["backends_ready"], 0);
    assert_eq!(body["backend_status"][0]["name"], "upstream");
    assert_eq!(body["backend_status"][0]["ready"], false);
    let text = body.to_string();
    assert!(
        !text.contains(&addr.to_string()),
        "no address in /health: {text}"
    );

    // Chat is refused at once (not after a connect time-out), with a retry hint.
    let key = common::fetch_public_key(&app).await;
    let plain = serde_json::to_vec(&common::chat("m", "hello")).unwrap();
    let started = std::time::Instant::now();
    let (status, headers, _) =
        common::oneshot(&app, common::seal_to(&plain, &key).request(None, None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(5));

    let logged = log.text();
    let named = format!("http://{addr}/v1");
    assert!(
        logged
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&named)),
        "the log names the upstream {named}:\n{logged}"
    );
    for secret in ["opsuser", "s3cr3t-pw", "q-s3cr3t"] {
        assert!(!logged.contains(secret), "{secret} in the log:\n{logged}");
    }
}

#[tokio::test]
async fn a_server_turns_ready_when_its_upstream_comes_up() {
    let log = log();
    let addr = free_addr();
    let toml = format!(
        "ephemeral_key = true\nkey_bits = 2048\n\
         [[backends]]\nname = \"up\"\ntype = \"upstream\"\nurl = \"http://{addr}/v1\"\n\
         models = [\"m\"]\nhealth_check_interval = \"1s\"\n"
    );
    let app = server(&toml).await;
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable");

    let seen = common::start_upstream_on(addr).await;
    // Probes run every second: ready within a few of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = health(&app).await;
        if status == StatusCode::OK {
            assert_eq!(body["status"], "ok");
            assert_eq!(body["backends_ready"], 1);
            assert_eq!(body["backend_status"][0]["ready"], true);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready 10 s after the upstream came up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let key = common::fetch_public_key(&app).await;
    let plain = serde_json::to_vec(&common::chat("m", "hello")).unwrap();
    let (status, _, body) =
        common::oneshot(&app, common::seal_to(&plain, &key).request(None, None)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(seen.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(
        log.text().contains("upstream endpoint ready again"),
        "{}",
        log.text()
    );
}
