//! `nomyo serve`'s logs as an operator reads them: at the default level one
//! start line (model, context, threads, attestation) and one access line per
//! request; `--log-format json` prints one JSON object per log line; `-v`
//! with the embedded model prints none of llama.cpp's own lines (thousands
//! per model load); those come at `-vv` only.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used)]

use crate::support;

use std::time::Duration;

use support::{http_get, serve_cmd_open, started, upstream};
#[cfg(feature = "engine")]
use support::{model, serve_embedded_cmd};

#[test]
fn default_level_has_the_start_line_and_one_access_line_per_request() {
    let up = upstream();
    let serve = started(serve_cmd_open(
        &up.url,
        &["--ephemeral-key", "--key-bits", "2048"],
    ));
    let (status, _) = http_get(serve.addr(), "/health");
    assert_eq!(status, 200);
    let (status, _) = http_get(serve.addr(), "/no/such/route");
    assert_eq!(status, 404);
    assert!(serve.wait_stderr("status=404", Duration::from_secs(5)));
    let err = serve.stop_and_collect();
    let start: Vec<&str> = err.lines().filter(|l| l.contains("nomyo::serve")).collect();
    assert_eq!(start.len(), 1, "{err}");
    assert!(start[0].contains("INFO"), "{err}");
    assert!(start[0].contains("model=tiny"), "{err}");
    assert!(start[0].contains("attestation=\"none\""), "{err}");
    let access: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("nomyo::access"))
        .collect();
    assert_eq!(access.len(), 2, "{err}");
    assert!(access[0].contains("route=/health"), "{err}");
    assert!(access[0].contains("status=200"), "{err}");
    assert!(access[0].contains("protocol=\"plain\""), "{err}");
    assert!(access[0].contains("duration_ms="), "{err}");
    assert!(access[1].contains("route=unmatched"), "{err}");
    assert!(
        !err.contains("/no/such/route"),
        "a raw path reached the log: {err}"
    );
    // Nothing else at info: debug lines stay behind -v.
    assert!(!err.contains("DEBUG"), "{err}");
}

// The embedded model: not in the client-only build.
#[cfg(feature = "engine")]
#[test]
fn json_format_and_no_llama_cpp_lines_at_debug() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cmd = serve_embedded_cmd(dir.path(), &model, &["-v", "--log-format", "json"]);
    let serve = started(cmd);
    assert!(
        serve.wait_stderr("embedded model ready", Duration::from_secs(120)),
        "{}",
        serve.stderr.lock().unwrap()
    );
    let (status, _) = http_get(serve.addr(), "/health");
    assert_eq!(status, 200);
    assert!(serve.wait_stderr("nomyo::access", Duration::from_secs(5)));
    let err = serve.stop_and_collect();

    let mut logs = Vec::new();
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("nomyo") {
            // The human notices of the CLI (server key, load progress).
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        logs.push(v);
    }
    assert!(
        logs.iter().any(|v| v["level"] == "DEBUG"),
        "-v is debug: {err}"
    );
    // llama.cpp's lines (target llama-cpp-2: tensor dumps, model metadata)
    // only at trace.
    assert!(
        !logs.iter().any(|v| v["target"] == "llama-cpp-2"),
        "llama.cpp lines at debug level"
    );
    assert!(!err.contains("tensor"), "tensor lines at debug level");
    assert!(
        logs.len() < 200,
        "{} log lines for one start and one request",
        logs.len()
    );
    let start: Vec<_> = logs
        .iter()
        .filter(|v| v["target"] == "nomyo::serve")
        .collect();
    assert_eq!(start.len(), 1, "{err}");
    assert!(start[0]["model"]
        .as_str()
        .unwrap()
        .ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert_eq!(start[0]["context"], 8192);
    assert_eq!(start[0]["threads"], 1);
    assert_eq!(start[0]["attestation"], "none");
    let access: Vec<_> = logs
        .iter()
        .filter(|v| v["target"] == "nomyo::access")
        .collect();
    assert_eq!(access.len(), 1, "{err}");
    assert_eq!(access[0]["route"], "/health");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["request_id"].as_str().unwrap().len(), 32);
    assert!(access[0]["response_bytes"].as_u64().unwrap() > 0);
}
