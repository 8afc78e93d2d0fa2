//! The client against the real server (`nomyo_server::app`) over a socket on
//! 127.0.0.1, with an in-process backend that answers at once.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::shared_key;
use nomyo_client::{
    ChatMessage, ChatRequest, Client, ClientBuilder, Error, KnownServers, SecretString,
    SecurityTier, TrustDecision,
};
use nomyo_core::keys::{PrivateKey, RsaBits};
use nomyo_server::backend::BackendError;
use nomyo_server::keystore::KeyStore;
use nomyo_server::limits::Limits;
use nomyo_server::policy::{ApiKeys, ModelSet, TierRule};
use nomyo_server::AppState;
use nomyo_testkit::backend::{prompt_of, Double};
use serde_json::{json, Value};

/// Answers at once with the last user message echoed, and the `seed` it
/// was given as `seed_seen`; failures queued in `fail_first` come first.
fn echo() -> Arc<Double> {
    Double::new("echo", &["echo"])
        .answer(|r| {
            Ok(json!({
                "id": "chatcmpl-echo", "object": "chat.completion", "created": 1764300000,
                "model": r.model(),
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": format!("echo: {}", prompt_of(r))}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
                "seed_seen": r.body.get("seed").cloned().unwrap_or(Value::Null),
            }))
        })
        .arc()
}

struct Server {
    url: String,
    state: AppState,
    echo: Arc<Double>,
}

fn server_private_key(slot: usize) -> PrivateKey {
    // KeyStore takes ownership: reload the shared key from its PEM.
    let pem = shared_key(slot).to_pkcs8_pem(None).unwrap();
    PrivateKey::from_pem(&pem, None, "test").unwrap()
}

async fn start(
    configure: impl FnOnce(nomyo_server::state::AppStateBuilder) -> nomyo_server::state::AppStateBuilder,
) -> Server {
    start_with_keys(KeyStore::ephemeral(server_private_key(1)), configure).await
}

async fn start_with_keys(
    keys: KeyStore,
    configure: impl FnOnce(nomyo_server::state::AppStateBuilder) -> nomyo_server::state::AppStateBuilder,
) -> Server {
    let echo = echo();
    let builder = AppState::builder(keys).backend_with_models(
        "echo",
        echo.clone(),
        ModelSet::from_names(["echo"]),
    );
    let state = configure(builder).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = nomyo_server::app(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        url: format!("http://{addr}"),
        state,
        echo,
    }
}

fn builder(s: &Server) -> ClientBuilder {
    common::local_client(&s.url)
}

fn ask(prompt: &str) -> ChatRequest {
    ChatRequest::new("echo").message(ChatMessage::user(prompt))
}

#[tokio::test]
async fn answers_with_server_metadata() {
    let s = start(|b| b).await;
    let client = builder(&s)
        .security_tier(SecurityTier::High)
        .build()
        .unwrap();
    let c = client.create(&ask("bonjour").seed(7)).await.unwrap();
    assert_eq!(c.text(), Some("echo: bonjour"));
    assert_eq!(c.extra["seed_seen"], 7);
    let m = &c.metadata;
    assert_eq!(m.security_tier.as_deref(), Some("high"));
    assert_eq!(m.response_status.as_deref(), Some("success"));
    assert_eq!(m.is_encrypted, Some(true));
    assert!(m.payload_id.as_deref().is_some_and(|p| p.len() == 36));
    assert!(m.processed_at.is_some());
    let mp = m.memory_protection.as_ref().unwrap();
    assert_eq!(mp.platform, std::env::consts::OS);
    assert!(m.cuda_device.is_some());
    // The model list the CLI uses when -m is not given.
    let models = client.models().await.unwrap();
    assert_eq!(
        models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        ["echo"]
    );
}

#[tokio::test]
async fn each_refusal_is_its_typed_error() {
    let mut keys = ApiKeys::open();
    keys.add_key("sk-good");
    let s = start(|b| {
        b.api_keys(keys)
            .tier(SecurityTier::Standard, TierRule::any())
            .tier(
                SecurityTier::Maximum,
                TierRule {
                    backends: vec![],
                    models: ModelSet::from_names(["another-model"]),
                },
            )
    })
    .await;
    let good = || builder(&s).api_key(SecretString::from("sk-good".to_owned()));

    // 401: no key, wrong key.
    for client in [
        builder(&s).build().unwrap(),
        builder(&s)
            .api_key(SecretString::from("sk-bad".to_owned()))
            .build()
            .unwrap(),
    ] {
        let e = client.create(&ask("x")).await.unwrap_err();
        assert!(matches!(e, Error::Authentication(_)), "{e:?}");
        assert_eq!(e.status(), Some(401));
        assert!(e.is_auth());
    }
    // 403: model not allowed on the maximum tier.
    let e = good()
        .security_tier(SecurityTier::Maximum)
        .build()
        .unwrap()
        .create(&ask("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e:?}");
    assert!(e.to_string().contains("tier"), "{e}");
    // 404: unknown model.
    let client = good().build().unwrap();
    let e = client
        .create(&ChatRequest::new("no-such-model").message(ChatMessage::user("x")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    // 400: the server refuses an empty message list (after decrypting it).
    let e = client.create(&ChatRequest::new("echo")).await.unwrap_err();
    assert!(matches!(e, Error::InvalidRequest(_)), "{e:?}");
    assert!(e.to_string().contains("messages"), "{e}");
    // None of these reached the backend, and the good request does.
    assert_eq!(s.echo.calls.load(Ordering::SeqCst), 0);
    client.create(&ask("x")).await.unwrap();
    assert_eq!(s.echo.calls.load(Ordering::SeqCst), 1);
}

/// Retries resend the same sealed request. The server gives a request's
/// replay claim back when the backend did not take it (503 unavailable), so
/// such a retry is served; once the backend ran (a 502 or 504 after the
/// upstream had the request), the same bytes are a replay (409), so the
/// backend never runs twice for one request.
#[tokio::test]
async fn backend_failures_are_retried_through_the_real_server() {
    let s = start(|b| b).await;
    s.echo.fail_first.lock().unwrap().extend([
        BackendError::Unavailable {
            retry_after: Some(Duration::from_secs(1)),
        },
        BackendError::Unavailable { retry_after: None },
    ]);
    let client = builder(&s).build().unwrap();
    let t = Instant::now();
    let c = client.create(&ask("again")).await.unwrap();
    assert_eq!(c.text(), Some("echo: again"));
    assert_eq!(s.echo.calls.load(Ordering::SeqCst), 3);
    // The 503 carried Retry-After: 1, and the client waited for it.
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());

    // Exhausted: three 503s.
    s.echo.fail_first.lock().unwrap().extend([
        BackendError::Unavailable { retry_after: None },
        BackendError::Unavailable { retry_after: None },
        BackendError::Unavailable { retry_after: None },
    ]);
    let e = client.create(&ask("again")).await.unwrap_err();
    assert!(
        matches!(e, Error::ServiceUnavailable(_)) && e.status() == Some(503),
        "{e:?}"
    );
    assert_eq!(s.echo.calls.load(Ordering::SeqCst), 6);

    // The backend ran and failed (502): the retry of the same bytes is a
    // replay, and the backend is not called again.
    s.echo
        .fail_first
        .lock()
        .unwrap()
        .extend([BackendError::Upstream("boom".into())]);
    let e = client.create(&ask("again")).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e:?}");
    assert!(!e.to_string().contains("boom"));
    assert_eq!(s.echo.calls.load(Ordering::SeqCst), 7);

    // Without retries the 502 and the 504 of a backend time-out come through.
    let once = builder(&s).max_retries(0).build().unwrap();
    for (failure, status) in [
        (BackendError::Upstream("boom".into()), 502),
        (BackendError::Timeout, 504),
    ] {
        s.echo.fail_first.lock().unwrap().push_back(failure);
        let e = once.create(&ask("again")).await.unwrap_err();
        assert!(
            matches!(e, Error::Server(_)) && e.status() == Some(status),
            "{e:?}"
        );
        assert!(!e.to_string().contains("boom"));
    }
}

#[tokio::test]
async fn rate_limits_return_retry_after() {
    let s = start(|b| {
        b.limits(Limits {
            rate_per_minute: 1,
            rate_burst: 1,
            ..Limits::default()
        })
    })
    .await;
    let client = builder(&s).build().unwrap();
    client.create(&ask("one")).await.unwrap();
    let t = Instant::now();
    match client.create(&ask("two")).await {
        Err(Error::RateLimit { retry_after, error }) => {
            // ~60 s is more than this client waits: it returns at once.
            assert!(
                retry_after.unwrap() > Duration::from_secs(5),
                "{retry_after:?}"
            );
            assert_eq!(error.status(), 429);
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn pins_and_known_servers_against_the_server() {
    let s = start(|b| b).await;
    let fp = shared_key(1).public_key().fingerprint();
    let wrong = shared_key(2).public_key().fingerprint();
    let e = builder(&s)
        .pin(wrong)
        .build()
        .unwrap()
        .create(&ask("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PinMismatch { .. }), "{e:?}");
    assert_eq!(s.echo.calls.load(Ordering::SeqCst), 0);
    builder(&s)
        .pin(fp)
        .build()
        .unwrap()
        .create(&ask("x"))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_servers");
    let tofu = || {
        builder(&s)
            .known_servers(KnownServers::File(file.clone()))
            .build()
            .unwrap()
    };
    let k = tofu().prepare().await.unwrap();
    assert!(matches!(k.trust(), TrustDecision::FirstUse { .. }));
    assert_eq!(k.fingerprint(), fp);
    let k = tofu().prepare().await.unwrap();
    assert!(matches!(k.trust(), TrustDecision::Known { .. }));
}

#[tokio::test]
async fn key_rotation_on_the_server() {
    // No grace: the old key stops opening requests at once.
    let s = start_with_keys(
        KeyStore::ephemeral(server_private_key(1)).with_grace(Duration::ZERO),
        |b| b,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_servers");
    // A client without a record of the key: refetches, reseals, carries on.
    let open = builder(&s).build().unwrap();
    // A client that trusted the first key on first use.
    let tofu = builder(&s)
        .known_servers(KnownServers::File(file.clone()))
        .build()
        .unwrap();
    open.create(&ask("before")).await.unwrap();
    tofu.create(&ask("before")).await.unwrap();

    let new_fp = s.state.rotate_key().await.unwrap();
    s.state.keys().purge_expired();
    assert_ne!(new_fp, shared_key(1).public_key().fingerprint());

    let c = open.create(&ask("after")).await.unwrap();
    assert_eq!(c.text(), Some("echo: after"));
    assert_eq!(open.server_key().await.unwrap().fingerprint(), new_fp);

    match tofu.create(&ask("after")).await {
        Err(Error::ServerKeyChanged { found, known, .. }) => {
            assert_eq!(found, new_fp);
            assert_eq!(known, shared_key(1).public_key().fingerprint());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn concurrent_requests_share_one_client() {
    let s = start(|b| b).await;
    let client = builder(&s).build().unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.create(&ask(&format!("n{i}"))).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let c = t.await.unwrap().unwrap();
        assert_eq!(c.text().unwrap(), format!("echo: n{i}"));
    }
}

#[tokio::test]
async fn ephemeral_4096_bit_client_key_against_a_4096_bit_server() {
    let key = tokio::task::spawn_blocking(|| PrivateKey::generate(RsaBits::B4096).unwrap())
        .await
        .unwrap();
    let s = start_with_keys(KeyStore::ephemeral(key), |b| b).await;
    let client = Client::builder()
        .base_url(&s.url)
        .allow_http(true)
        .known_servers(KnownServers::Off)
        .build()
        .unwrap();
    let c = client.create(&ask("full size")).await.unwrap();
    assert_eq!(c.text(), Some("echo: full size"));
    assert_eq!(client.server_key().await.unwrap().public_key().bits(), 4096);
    assert_eq!(client.client_public_key().await.unwrap().bits(), 4096);
}
