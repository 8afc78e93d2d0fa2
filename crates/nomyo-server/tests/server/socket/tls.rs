//! TLS with a self-signed certificate (plain HTTP on the TLS port gets no
//! success), and bad TLS files as a clear start error.

use super::post;
use crate::common::*;

#[tokio::test]
async fn tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert_pem) = self_signed_tls(dir.path());
    let bound = nomyo_server::serve::bind("127.0.0.1:0".parse().unwrap(), Some(&tls))
        .await
        .unwrap();
    assert!(bound.url().starts_with("https://127.0.0.1:"));
    let (addr, _stop, _task) = serve_real(state_with(&["m"]).build().unwrap(), Some(&tls)).await;
    drop(bound);
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (s, body) = post(&client, &base, &seal_json(&chat("m", "over tls"))).await;
    assert_eq!(s, 200);
    assert_eq!(
        open_response(&body).1["choices"][0]["message"]["content"],
        "echo:over tls"
    );
    // Plain HTTP on the TLS port gets no answer a client could take for success.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/health", addr.port()))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn bad_tls_files_are_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.pem");
    std::fs::write(&c, "not a cert").unwrap();
    let tls = nomyo_server::config::TlsFiles {
        cert: c.clone(),
        key: c,
    };
    let e = nomyo_server::serve::bind("127.0.0.1:0".parse().unwrap(), Some(&tls))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
}
