//! What a default `nomyo serve` exposes to callers it did not mean to serve:
//! a web page driving a loopback server through DNS rebinding (a name of its
//! own resolving to 127.0.0.1), and `/metrics` read by anyone. Each server
//! here is built from a config file through `serve::prepare`, as `nomyo
//! serve` builds it.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{Request, StatusCode};
use common::*;
use nomyo_server::backend::Backend;
use nomyo_server::config::FileConfig;
use nomyo_server::serve::{self, EmbeddedParams};
use tower::ServiceExt;

/// `nomyo serve` with this config (an echo backend as its embedded model,
/// a fresh 2048-bit key), listening on `listen`; returns the bound address.
async fn serve_config(extra: &str, listen: &str) -> (SocketAddr, nomyo_server::AppState) {
    let toml = format!(
        "listen = \"{listen}\"\nephemeral_key = true\nkey_bits = 2048\n{extra}\n\
         [[backends]]\nname = \"local\"\ntype = \"embedded\"\n"
    );
    let settings = common::settings(&toml);
    let prepared = serve::prepare(settings, |_p: EmbeddedParams| {
        Ok(echo_backend(&["m"]) as Arc<dyn Backend>)
    })
    .await
    .unwrap();
    let bound = serve::bind(prepared.listen, None).await.unwrap();
    let addr = bound.local_addr();
    let state = prepared.state.clone();
    tokio::spawn(bound.run(
        prepared.state,
        Duration::from_secs(1),
        std::future::pending::<()>(),
    ));
    (addr, state)
}

async fn get(addr: SocketAddr, path: &str, host: &str, bearer: Option<&str>) -> (u16, String) {
    let mut r = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .header("host", host);
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// A page on `rebind.evil.example` (resolving to 127.0.0.1) sends requests to
/// a loopback `nomyo serve`: its `Host` is not a loopback name, so every
/// route answers 403 (the public key, the secure routes, health). Loopback
/// names and configured `allowed_hosts` are served.
#[tokio::test]
async fn dns_rebinding_page_cannot_drive_a_loopback_server() {
    let (addr, _) = serve_config("allowed_hosts = [\"nomyo.internal\"]", "127.0.0.1:0").await;
    for path in [
        "/pki/public_key",
        "/health",
        "/v1/models",
        "/.well-known/hpke-keys",
    ] {
        let (status, body) = get(addr, path, "rebind.evil.example", None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("localhost"), "{body}");
        let (status, _) = get(addr, path, "rebind.evil.example:12434", None).await;
        assert_eq!(status, 403, "{path}");
    }
    let s = seal_json(&chat("m", "from a web page"));
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/secure_completion"))
        .header("host", "rebind.evil.example")
        .header("x-payload-id", &s.id)
        .header("x-public-key", &s.public_key_header)
        .body(s.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    for host in [
        format!("127.0.0.1:{}", addr.port()),
        format!("localhost:{}", addr.port()),
        "nomyo.internal".to_owned(),
    ] {
        assert_eq!(get(addr, "/health", &host, None).await.0, 200, "{host}");
    }
}

/// By default `/metrics` answers loopback peers only: a peer from another
/// address gets 404, as if it did not exist.
#[tokio::test]
async fn metrics_are_not_public_by_default() {
    let (addr, state) = serve_config("", "127.0.0.1:0").await;
    let host = format!("127.0.0.1:{}", addr.port());
    let (status, body) = get(addr, "/metrics", &host, None).await;
    assert_eq!(status, 200);
    assert!(body.contains("nomyo_requests_in_flight"));
    let app = nomyo_server::app(state);
    for (peer, want) in [("192.0.2.10:5000", 404), ("[::1]:5000", 200)] {
        let mut req = Request::get("/metrics")
            .header("host", "localhost")
            .body(Body::empty())
            .unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let status = app.clone().oneshot(req).await.unwrap().status();
        assert_eq!(status.as_u16(), want, "{peer}");
    }
}

/// With a metrics token, `/metrics` needs it (401 without, or with another).
#[tokio::test]
async fn metrics_behind_a_token_refuse_callers_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("metrics_token");
    std::fs::write(&token_file, "metrics-secret-1\n").unwrap();
    let (addr, _) = serve_config(
        &format!("metrics_token_file = \"{}\"", token_file.display()),
        "127.0.0.1:0",
    )
    .await;
    let host = format!("127.0.0.1:{}", addr.port());
    assert_eq!(get(addr, "/metrics", &host, None).await.0, 401);
    assert_eq!(get(addr, "/metrics", &host, Some("wrong")).await.0, 401);
    let (status, body) = get(addr, "/metrics", &host, Some("metrics-secret-1")).await;
    assert_eq!(status, StatusCode::OK.as_u16());
    assert!(body.contains("nomyo_requests_in_flight"));
    // A token and `metrics = false` contradict each other.
    let err = FileConfig::from_toml(&format!(
        "metrics = false\nmetrics_token_file = \"{}\"\nephemeral_key = true",
        token_file.display()
    ))
    .unwrap()
    .resolve()
    .unwrap_err();
    assert!(err.to_string().contains("metrics"), "{err}");
}

/// A key directory whose files another user owns (mode 0600, so only that
/// user can read them, or replace them with keys of their own): the server
/// refuses to start with either the RSA key or the HPKE key file, and says
/// which file and how to fix it. Needs root to hand a file to another user;
/// elsewhere it checks only the files' own owner.
#[cfg(unix)]
#[tokio::test]
async fn key_files_owned_by_another_user_are_refused() {
    use nomyo_server::hpke_keys::{HpkeKeySet, KEY_FILE};
    use nomyo_server::keystore::{KeySource, KeyStore};
    use std::os::unix::fs::{chown, MetadataExt};
    let dir = tempfile::tempdir().unwrap();
    let src = || KeySource {
        dir: dir.path().to_owned(),
        password: None,
        bits: nomyo_core::keys::RsaBits::B2048,
    };
    KeyStore::load_or_generate(src()).unwrap();
    HpkeKeySet::load_or_generate(dir.path()).unwrap();
    let me = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().uid();
    assert!(HpkeKeySet::load(dir.path()).unwrap().is_some());
    if me != 0 {
        eprintln!("not root: cannot give the key files to another user; owner check not exercised");
        return;
    }
    let other = 4242;
    let rsa = dir.path().join(nomyo_core::keys::PRIVATE_KEY_FILE);
    let hpke = dir.path().join(KEY_FILE);
    chown(&hpke, Some(other), None).unwrap();
    let err = HpkeKeySet::load(dir.path()).unwrap_err();
    assert!(
        err.contains("owned by uid 4242") && err.contains("chown"),
        "{err}"
    );
    chown(&hpke, Some(me), None).unwrap();
    chown(&rsa, Some(other), None).unwrap();
    let err = KeyStore::load_or_generate(src()).unwrap_err();
    assert!(err.is_security(), "{err}");
    assert!(err.to_string().contains("owned by uid 4242"), "{err}");
}
