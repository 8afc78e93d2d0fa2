//! The canary through the real processes (no secret in any log): `nomyo
//! proxy` in front of `nomyo serve` (RUST_LOG=trace) in front of an upstream
//! double. A unique prompt, a unique answer, the endpoint API key and the
//! proxy's access token must appear in no line either process writes, with
//! the proxy started at every log level: RUST_LOG=trace, debug, info, warn,
//! error, and `-v` / `-vv` (no RUST_LOG). Success (plain and streamed) and
//! error paths (wrong token, bad JSON, unknown model). The in-process
//! version with the filter switched per level is
//! `crates/nomyo-proxy/tests/canary.rs`.

// Runs `nomyo serve` and `nomyo proxy` (features `serve`, `proxy`).
#![cfg(all(feature = "serve", feature = "proxy"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::path::Path;
use std::process::Command;

use nomyo_testkit::log::{find_secret, has_access_line};
use support::{nomyo, serve_cmd, start, upstream_answering, Serve, API_KEY, EPHEMERAL_KEY};

fn unique(tag: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}{t:x}{:x}", std::process::id())
}

fn proxy_cmd(serve: &Serve, home: &Path, level: &[&str], rust_log: Option<&str>) -> Command {
    let mut cmd = nomyo();
    cmd.args(level)
        .args(["proxy", "--listen", "127.0.0.1:0", "--allow-http"])
        .args(["--base-url", &serve.url])
        .arg("--api-key-file")
        .arg(home.join("endpoint_key"))
        .arg("--access-token-file")
        .arg(home.join("token"))
        .arg("--known-servers")
        .arg(home.join("known_servers"))
        .env("HOME", home)
        .env_remove("NOMYO_API_KEY")
        .env_remove("NOMYO_BASE_URL")
        .env_remove("RUST_LOG");
    if let Some(l) = rust_log {
        cmd.env("RUST_LOG", l);
    }
    cmd
}

/// Status, body and the proxy's `x-request-id`.
async fn post(url: &str, token: &str, body: String) -> (u16, String, String) {
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, resp.text().await.unwrap_or_default(), id)
}

#[test]
fn secrets_never_reach_the_logs_of_nomyo_proxy_at_any_level() {
    let prompt = unique("PROMPTCANARY");
    let answer = unique("ANSWERCANARY");
    let token = unique("TOKENCANARY");
    let up = upstream_answering(&answer);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("endpoint_key"), format!("{API_KEY}\n")).unwrap();
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    let mut cmd = serve_cmd(&up, dir.path(), &EPHEMERAL_KEY);
    cmd.env("RUST_LOG", "trace");
    let srv = start(cmd).unwrap_or_else(|e| panic!("{e:?}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secrets = [
        ("prompt", prompt.as_str()),
        ("answer", answer.as_str()),
        ("API key", API_KEY),
        ("access token", token.as_str()),
    ];
    let chat = |model: &str, stream: bool| {
        serde_json::json!({
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": format!("About {prompt}")}],
        })
        .to_string()
    };
    let levels: [(&str, &[&str], Option<&str>); 7] = [
        ("RUST_LOG=trace", &[], Some("trace")),
        ("RUST_LOG=debug", &[], Some("debug")),
        ("RUST_LOG=info", &[], Some("info")),
        ("RUST_LOG=warn", &[], Some("warn")),
        ("RUST_LOG=error", &[], Some("error")),
        ("-v", &["-v"], None),
        ("-vv", &["-vv"], None),
    ];
    let mut ids = Vec::new();
    for (name, flags, rust_log) in levels {
        let proxy = start(proxy_cmd(&srv, dir.path(), flags, rust_log))
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        rt.block_on(async {
            let (s, body, id) = post(&proxy.url, &token, chat("tiny", false)).await;
            assert_eq!(s, 200, "{name}: {body}");
            assert!(body.contains(&answer), "{name}: {body}");
            ids.push(id);
            let (s, body, id) = post(&proxy.url, &token, chat("tiny", true)).await;
            assert_eq!(s, 200, "{name}: {body}");
            assert!(body.contains(&answer), "{name}: {body}");
            ids.push(id);
            let wrong = format!("{token}x");
            assert_eq!(post(&proxy.url, &wrong, chat("tiny", false)).await.0, 401);
            let bad = format!("{{\"model\": \"tiny\", \"messages\": [\"{prompt}\"");
            let (s, _, _) = post(&proxy.url, &token, bad).await;
            assert!((400..500).contains(&s), "{name}: {s}");
            let (s, _, _) = post(&proxy.url, &token, chat("no-such-model", false)).await;
            assert!(s >= 400, "{name}: {s}");
        });
        let logs = proxy.stop_and_collect();
        if matches!(name, "RUST_LOG=trace" | "RUST_LOG=debug" | "-v" | "-vv") {
            assert!(
                logs.lines().count() > 10,
                "{name}: the proxy logged: {logs}"
            );
        }
        if let Some((what, line)) = find_secret(&logs, &secrets) {
            panic!("{what} in the proxy's log at {name}: {line}");
        }
        eprintln!(
            "{name}: {} proxy log lines, no canary",
            logs.lines().count()
        );
    }
    let server_logs = srv.stderr.lock().unwrap().clone();
    assert!(server_logs.lines().count() > 50, "{server_logs}");
    // One request id from the proxy through the server: the id each answer
    // carried is the one in the server's access line.
    for id in &ids {
        assert!(id.starts_with("proxy-"), "{id}");
        assert!(
            has_access_line(&server_logs, id),
            "no server access line for {id}"
        );
    }
    if let Some((what, line)) = find_secret(&server_logs, &secrets) {
        panic!("{what} in the server's trace log: {line}");
    }
}
