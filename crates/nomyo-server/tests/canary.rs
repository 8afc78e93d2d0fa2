//! The canary: a unique prompt string, the completion that quotes it, the
//! client's API key and the upstream API key never appear in the server's
//! logs, at any level (TRACE, every target: ours, axum, hyper, reqwest...),
//! on success or on any error path. Its own test binary: the subscriber is
//! process-global.

#![allow(clippy::unwrap_used)]

use nomyo_testkit::server as common;

use std::sync::Arc;

use common::*;
use nomyo_server::policy::ApiKeys;
use nomyo_server::upstream::{UpstreamBackend, UpstreamConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(capture.clone())
        .with_ansi(false)
        .init();

    let canary = format!("CANARY-{}", uuid::Uuid::new_v4().simple());
    let api_key = format!("APIKEY-{}", uuid::Uuid::new_v4().simple());
    let upstream_key = format!("UPKEY-{}", uuid::Uuid::new_v4().simple());

    let (url, _seen) = start_upstream().await;
    let mut cfg = UpstreamConfig::new(url);
    cfg.api_key = Some(nomyo_core::SecretString::from(upstream_key.clone()));
    cfg.timeout = std::time::Duration::from_secs(1);
    let upstream = UpstreamBackend::connect(cfg).await.unwrap();
    let mut keys = ApiKeys::open();
    keys.add_key(&api_key);
    let st =
        nomyo_server::AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
            .backend("up", Arc::new(upstream))
            .api_keys(keys)
            .build()
            .unwrap();
    let (addr, _stop, _task) = serve_real(st, None).await;

    let send = |plain: Vec<u8>, key: Option<String>| async move {
        let s = seal_to(&plain, server_key().public_key());
        let mut extra = vec![
            ("X-Payload-ID", s.id.clone()),
            ("X-Public-Key", s.public_key_header.clone()),
        ];
        if let Some(k) = key {
            extra.push(("Authorization", format!("Bearer {k}")));
        }
        let extra: Vec<(&str, &str)> = extra.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let (status, body) = raw_http(addr, &raw_head(&extra, s.body.len()), &s.body).await;
        (s.id, status, body)
    };
    let req =
        |model: &str| serde_json::to_vec(&chat(model, &format!("please repeat {canary}"))).unwrap();

    let mut ids = Vec::new();
    // Success: the upstream echoes the prompt into the completion.
    let (id, status, body) = send(req("m"), Some(api_key.clone())).await;
    assert_eq!(status, 200);
    let (_, answer) = open_response(body.as_bytes());
    assert!(answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains(&canary));
    ids.push(id);
    // Error paths, including upstream errors whose bodies quote the prompt.
    for (model, expected) in [
        ("fail", 502),
        ("busy", 503),
        ("gone", 404),
        ("garbage", 502),
        ("slow", 504),
    ] {
        let (id, status, body) = send(req(model), Some(api_key.clone())).await;
        assert_eq!(status, expected, "{model}: {body}");
        assert!(
            !body.contains(&canary),
            "{model}: the error body quotes the prompt"
        );
        ids.push(id);
    }
    let bad = [
        format!("not json {canary}").into_bytes(),
        serde_json::to_vec(
            &json!({"model": "m", "messages": [{"role":"user","content": canary}], "stream": true}),
        )
        .unwrap(),
        serde_json::to_vec(
            &json!({"model": canary, "messages": [{"role":"user","content": canary}]}),
        )
        .unwrap(),
    ];
    for plain in bad {
        let (_, status, body) = send(plain, Some(api_key.clone())).await;
        assert!((400..500).contains(&status), "{status} {body}");
        assert!(!body.contains(&canary));
    }
    // Wrong API key: the presented key is not logged either.
    let wrong = format!("WRONGKEY-{}", uuid::Uuid::new_v4().simple());
    let (_, status, _) = send(req("m"), Some(wrong.clone())).await;
    assert_eq!(status, 401);

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let logs = capture.text();
    if std::env::var_os("NOMYO_SHOW_LOGS").is_some() {
        eprintln!("{logs}");
    }
    // The capture works: it holds trace-level lines and our request ids.
    assert!(logs.contains("TRACE"), "no trace-level lines captured");
    assert!(logs.contains(&ids[0]), "payload ids should be logged");
    assert!(
        logs.contains("backend error"),
        "error paths should be logged"
    );
    // One access line per request, success and refusals alike: ids, route,
    // status, sizes; the secrets checks below cover these lines too.
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("nomyo::access"))
        .collect();
    assert!(access.len() >= 10, "{} access lines", access.len());
    for status in [200, 401, 404, 502, 503, 504] {
        assert!(
            access
                .iter()
                .any(|l| l.contains(&format!("status={status}"))
                    && l.contains("route=/v1/chat/secure_completion")
                    && l.contains("request_bytes=")
                    && l.contains("response_bytes=")
                    && l.contains("duration_ms=")),
            "no access line with status {status}"
        );
    }
    // The handlers' own lines name their request (the access span).
    assert!(
        logs.lines()
            .any(|l| l.contains("request{id=") && l.contains("backend error")),
        "handler lines without their request id"
    );
    for secret in [&canary, &api_key, &upstream_key, &wrong] {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret reached the logs: {}",
            &secret[..8]
        );
    }
    assert!(
        !logs.contains("upstream-echo:"),
        "completion text reached the logs"
    );
    assert!(
        !logs.contains("please repeat"),
        "prompt text reached the logs"
    );
    assert!(
        !logs.contains("BEGIN PUBLIC KEY"),
        "keys do not belong in logs"
    );
}
