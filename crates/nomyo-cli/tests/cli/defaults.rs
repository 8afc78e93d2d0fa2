//! Defaults that work, through the real processes: `nomyo serve --listen
//! localhost:0` (resolved to loopback), `nomyo proxy --port 0` pointed at the
//! server with an OpenAI-style `.../v1` base URL and no `--allow-http`
//! (loopback), and a chat request without `"model"` (the server serves one).

// Runs `nomyo serve` and `nomyo proxy` (features `serve`, `proxy`).
#![cfg(all(feature = "serve", feature = "proxy"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use support::{nomyo, start, started, upstream, EPHEMERAL_KEY};

#[test]
fn localhost_listen_port_flag_v1_base_url_and_no_model_work_together() {
    let up = upstream();
    let mut serve = nomyo();
    serve
        .args(["serve", "--listen", "localhost:0", "--upstream", &up.url])
        .args(EPHEMERAL_KEY)
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_LOG");
    let serve = started(serve);
    assert!(
        serve.url.starts_with("http://127.0.0.1:"),
        "localhost resolves to loopback: {}",
        serve.url
    );

    let home = tempfile::tempdir().unwrap();
    let mut proxy = nomyo();
    proxy
        .args(["proxy", "--port", "0"])
        .args(["--base-url", &format!("{}/v1", serve.url)])
        .arg("--known-servers")
        .arg(home.path().join("known_servers"))
        .env("HOME", home.path())
        .env_remove("NOMYO_API_KEY")
        .env_remove("NOMYO_BASE_URL")
        .env_remove("RUST_LOG");
    let proxy =
        start(proxy).unwrap_or_else(|(code, err)| panic!("nomyo proxy exited ({code:?}): {err}"));
    assert!(proxy.url.starts_with("http://127.0.0.1:"), "{}", proxy.url);
    assert!(
        proxy.wait_stderr(
            &format!("forwarding to {}", serve.url),
            std::time::Duration::from_secs(20)
        ),
        "{}",
        proxy.stderr.lock().unwrap()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/chat/completions", proxy.url))
            .json(&serde_json::json!({"messages": [{"role": "user", "content": "hello"}]}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hi", "{body}");
    assert_eq!(up.posts.load(std::sync::atomic::Ordering::SeqCst), 1);
}
