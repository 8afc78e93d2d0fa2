//! The engine against the real SmolLM2-135M-Instruct GGUF.
//!
//! The model comes from `scripts/fetch-model.sh` (it lands in `models/` at the
//! repository root), or from `$NOMYO_MODEL_FILE`. Without it these tests print why
//! and pass without checking anything; with `NOMYO_REQUIRE_MODEL=1` (CI) a
//! missing model fails them instead.

mod answers;
mod limits;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use nomyo_core::SecurityTier;
use nomyo_engine::{Engine, EngineConfig};
use nomyo_server::backend::{Backend, BackendError, ChatRequest};
use serde_json::{json, Map, Value};

pub(crate) fn model_path() -> Option<PathBuf> {
    let path = std::env::var_os("NOMYO_MODEL_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models")
                .join(nomyo_engine::paths::DEFAULT_MODEL_FILE)
        });
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "model file {} is missing: run scripts/fetch-model.sh to fetch it",
        path.display()
    );
    if std::env::var("NOMYO_REQUIRE_MODEL").is_ok_and(|v| v == "1") {
        panic!("{msg} (NOMYO_REQUIRE_MODEL=1)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// One engine shared by the tests of this file (one model load).
async fn engine() -> Option<&'static Engine> {
    static ENGINE: OnceLock<Option<Engine>> = OnceLock::new();
    let e = ENGINE
        .get_or_init(|| {
            model_path().map(|p| {
                let mut c = EngineConfig::new(p);
                c.queue_capacity = 32;
                Engine::start(c).expect("engine starts")
            })
        })
        .as_ref()?;
    e.wait_ready().await.expect("model loads");
    Some(e)
}

pub(crate) fn request(body: Value) -> ChatRequest {
    let body: Map<String, Value> = body.as_object().cloned().expect("object");
    ChatRequest {
        body,
        tier: SecurityTier::Standard,
        request_id: "test".into(),
    }
}

pub(crate) fn ask(question: &str, extra: Value) -> ChatRequest {
    let mut body = json!({
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "messages": [{"role": "user", "content": question}],
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    request(body)
}

pub(crate) fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content string")
}

pub(crate) fn usage(v: &Value) -> (u64, u64, u64) {
    let u = &v["usage"];
    (
        u["prompt_tokens"].as_u64().expect("prompt_tokens"),
        u["completion_tokens"].as_u64().expect("completion_tokens"),
        u["total_tokens"].as_u64().expect("total_tokens"),
    )
}

pub(crate) const CAPITAL: &str = "What is the capital of France?";

fn with_system(system: &str, question: &str, extra: Value) -> ChatRequest {
    let mut r = ask(question, extra);
    r.body.insert(
        "messages".into(),
        json!([{"role": "system", "content": system}, {"role": "user", "content": question}]),
    );
    r
}
