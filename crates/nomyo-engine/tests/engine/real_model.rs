//! The engine against the real SmolLM2-135M-Instruct GGUF.
//!
//! The model comes from `scripts/fetch-model.sh` (it lands in `models/` at the
//! repository root), or from `$NOMYO_MODEL_FILE`. Without it these tests print why
//! and pass without checking anything; with `NOMYO_REQUIRE_MODEL=1` (CI) a
//! missing model fails them instead.

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

#[tokio::test]
async fn answers_the_capital_of_france_with_true_usage() {
    let Some(e) = engine().await else { return };
    assert!(e.is_ready());
    // The README's quick-start check: `--seed 1 --temperature 0.7`.
    let v = e
        .chat(ask(CAPITAL, json!({"temperature": 0.7, "seed": 1})))
        .await
        .expect("answer");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("chatcmpl-")));
    assert_eq!(v["model"], e.model_id());
    assert!(v["created"].as_u64().is_some());
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let text = content(&v);
    assert!(!text.trim().is_empty());

    // The prompt is SmolLM2's own template with its default system prompt
    // (llama.cpp's built-in matcher drops that prompt): the usage count is
    // that exact text's token count.
    let expected_prompt = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, \
         trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?\
         <|im_end|>\n<|im_start|>assistant\n";
    let (p, c, t) = usage(&v);
    assert_eq!(p as usize, e.count_tokens(expected_prompt).expect("loaded"));
    // The answer re-tokenises to as many tokens as were generated.
    assert_eq!(c as usize, e.count_tokens(text).expect("loaded"));
    assert_eq!(t, p + c);

    // A coherent answer, not just any text: greedy with a plain system prompt.
    let v = e
        .chat(with_system(
            "You are a helpful assistant.",
            CAPITAL,
            json!({"temperature": 0, "max_tokens": 40}),
        ))
        .await
        .expect("answer");
    assert!(content(&v).contains("Paris"), "{:?}", content(&v));
    let expected_prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(
        usage(&v).0 as usize,
        e.count_tokens(expected_prompt).expect("loaded")
    );
    assert!(
        usage(&v).0 < p,
        "no default system prompt added when one is given"
    );
}

#[tokio::test]
async fn same_seed_same_answer_and_seed_matters() {
    let Some(e) = engine().await else { return };
    let params =
        |seed: i64| json!({"temperature": 1.0, "top_p": 0.95, "seed": seed, "max_tokens": 32});
    let q = "Tell me a short story about a cat.";
    let a = e.chat(ask(q, params(1234))).await.expect("a");
    let b = e.chat(ask(q, params(1234))).await.expect("b");
    assert_eq!(content(&a), content(&b));
    assert_eq!(usage(&a), usage(&b));

    let mut others = Vec::new();
    for seed in [1, 2, 3] {
        others.push(content(&e.chat(ask(q, params(seed))).await.expect("other")).to_owned());
    }
    assert!(
        others.iter().any(|o| o != content(&a)),
        "at temperature 1 different seeds should give some different answer"
    );

    // `n = 2`: choice 0 is the single answer for the same seed, choice 1 uses seed + 1.
    let mut body = params(1234);
    body["n"] = json!(2);
    let two = e.chat(ask(q, body)).await.expect("n=2");
    let choices = two["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["message"]["content"], content(&a));
    assert_eq!(choices[1]["index"], 1);
    let single_1235 = e.chat(ask(q, params(1235))).await.expect("seed+1");
    assert_eq!(choices[1]["message"]["content"], content(&single_1235));
    let (p2, c2, _) = usage(&two);
    assert_eq!(p2, usage(&a).0, "the prompt is counted once");
    assert_eq!(c2, usage(&a).1 + usage(&single_1235).1);
}

#[tokio::test]
async fn max_tokens_is_respected_with_finish_reason_length() {
    let Some(e) = engine().await else { return };
    let v = e
        .chat(ask(
            "Write a long essay about the history of Europe.",
            json!({"temperature": 0, "max_tokens": 5}),
        ))
        .await
        .expect("answer");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(usage(&v).1, 5);
    assert!(!content(&v).is_empty());
    // `max_completion_tokens` is honoured too.
    let v = e
        .chat(ask(
            "Write a long essay about the history of Europe.",
            json!({"temperature": 0, "max_completion_tokens": 3}),
        ))
        .await
        .expect("answer");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(usage(&v).1, 3);
}

#[tokio::test]
async fn stop_sequences_cut_the_answer() {
    let Some(e) = engine().await else { return };
    let q = "List three fruits.";
    let full = e
        .chat(ask(q, json!({"temperature": 0, "max_tokens": 48})))
        .await
        .expect("full");
    let full = content(&full).to_owned();
    assert!(
        full.chars().count() > 12,
        "answer too short to test stops: {full:?}"
    );
    // A stop sequence taken from the middle of the greedy answer.
    let chars: Vec<(usize, char)> = full.char_indices().collect();
    let (start, _) = chars[chars.len() / 2];
    let end = chars
        .get(chars.len() / 2 + 3)
        .map_or(full.len(), |(i, _)| *i);
    let stop = full[start..end].to_owned();
    let expected = &full[..full.find(&stop).expect("present")];

    let v = e
        .chat(ask(
            q,
            json!({"temperature": 0, "max_tokens": 48, "stop": ["@@never@@", stop]}),
        ))
        .await
        .expect("stopped");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(content(&v), expected);
    assert!(usage(&v).1 < 48);
}

#[tokio::test]
async fn stream_concatenates_to_the_same_answer() {
    let Some(e) = engine().await else { return };
    let params = json!({"temperature": 0, "seed": 7, "max_tokens": 40});
    let whole = e.chat(ask(CAPITAL, params.clone())).await.expect("whole");

    let mut sp = params.clone();
    sp["stream"] = json!(true);
    sp["stream_options"] = json!({"include_usage": true});
    let mut stream = e.chat_stream(ask(CAPITAL, sp)).await.expect("stream");
    let mut chunks = Vec::new();
    while let Some(item) = stream.next().await {
        chunks.push(item.expect("chunk"));
    }
    assert!(chunks.len() > 3, "token by token: {} chunks", chunks.len());
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let id = chunks[0]["id"].as_str().expect("id").to_owned();
    let mut text = String::new();
    let mut finish = None;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id.as_str());
        if let Some(choice) = c["choices"].get(0) {
            if let Some(d) = choice["delta"]["content"].as_str() {
                text.push_str(d);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
    }
    assert_eq!(text, content(&whole));
    assert_eq!(
        finish.as_deref(),
        whole["choices"][0]["finish_reason"].as_str()
    );
    let last = chunks.last().expect("last");
    assert_eq!(last["choices"].as_array().map(Vec::len), Some(0));
    assert_eq!(last["usage"], whole["usage"]);
}

#[tokio::test]
async fn response_format_json_object_and_schema() {
    let Some(e) = engine().await else { return };
    let v = e
        .chat(with_system(
            "You are a helpful assistant. Answer in JSON.",
            CAPITAL,
            json!({"temperature": 0, "max_tokens": 200, "response_format": {"type": "json_object"}}),
        ))
        .await
        .expect("json_object");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let parsed: Value = serde_json::from_str(content(&v)).expect("valid JSON");
    assert!(parsed.is_object());

    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "population_millions": {"type": "integer"}
        },
        "required": ["city", "population_millions"],
        "additionalProperties": false
    });
    let v = e
        .chat(ask(
            "What is the capital of France and its population in millions?",
            json!({"temperature": 0.7, "seed": 3, "max_tokens": 120,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}}),
        ))
        .await
        .expect("json_schema");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let parsed: Value = serde_json::from_str(content(&v)).expect("valid JSON");
    assert!(parsed["city"].is_string(), "{parsed}");
    assert!(parsed["population_millions"].is_i64(), "{parsed}");
    assert_eq!(parsed.as_object().map(|o| o.len()), Some(2));
}

#[tokio::test]
async fn bad_requests_are_invalid_not_failures() {
    let Some(e) = engine().await else { return };
    // Longer than the model's 8192-token context (the default here).
    let long = "word ".repeat(9000);
    let err = e.chat(ask(&long, json!({}))).await.expect_err("too long");
    match err {
        BackendError::InvalidRequest(m) => {
            assert!(m.message.contains("context"), "{m:?}");
            assert_eq!(m.code, Some("context_length_exceeded"));
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    let err = e
        .chat(ask("x", json!({"logit_bias": {"99999999": 5}})))
        .await
        .expect_err("bad token id");
    assert!(matches!(err, BackendError::InvalidRequest(_)));
    let err = e
        .chat(ask("x", json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}}})))
        .await
        .expect_err("bad schema");
    assert!(matches!(err, BackendError::InvalidRequest(_)), "{err:?}");
    let err = e
        .chat_stream(ask("x", json!({"n": 2})))
        .await
        .err()
        .expect("n=2 stream");
    assert!(matches!(err, BackendError::InvalidRequest(_)));
    // The engine still answers afterwards.
    let v = e
        .chat(ask(CAPITAL, json!({"temperature": 0, "max_tokens": 4})))
        .await
        .expect("ok");
    assert_eq!(usage(&v).1, 4);
}

/// A bounded queue: with one request decoding at a time, while one runs and
/// one waits, a third is refused with 503; a client that goes away frees its
/// place.
#[tokio::test]
async fn full_queue_refuses_and_cancellation_frees_it() {
    let Some(path) = model_path() else { return };
    let mut c = EngineConfig::new(path);
    c.queue_capacity = 1;
    c.parallel = Some(1);
    let e = std::sync::Arc::new(Engine::start(c).expect("starts"));
    assert!(!e.is_ready(), "not ready before the model is loaded");
    e.wait_ready().await.expect("loads");
    assert!(e.is_ready());

    let long = json!({"temperature": 0, "max_tokens": 2000, "logit_bias": {"2": -100}});
    // A: running (its first chunk means the worker took it off the queue).
    let mut a = e
        .chat_stream(ask("Write a very long story.", long.clone()))
        .await
        .expect("a");
    a.next().await.expect("first chunk").expect("ok");
    // B: waiting in the queue.
    let eb = std::sync::Arc::clone(&e);
    let b = tokio::spawn(async move {
        eb.chat(ask(CAPITAL, json!({"temperature": 0, "max_tokens": 8})))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // C: refused.
    let err = e
        .chat(ask(CAPITAL, json!({"max_tokens": 2})))
        .await
        .expect_err("queue full");
    assert!(
        matches!(
            err,
            BackendError::Unavailable {
                retry_after: Some(_)
            }
        ),
        "{err:?}"
    );
    // Dropping A's stream cancels it; B then runs to completion.
    drop(a);
    let v = tokio::time::timeout(Duration::from_secs(60), b)
        .await
        .expect("B finishes soon after A is cancelled")
        .expect("join")
        .expect("B answered");
    assert_eq!(usage(&v).1, 8);
}

/// A prompt of about `tokens` tokens once templated.
fn prompt_of(e: &Engine, tokens: usize) -> String {
    let mut words = tokens;
    loop {
        let text = "word ".repeat(words);
        let n = e.count_tokens(&text).expect("loaded");
        if n + 20 >= tokens {
            return text;
        }
        words += tokens - n;
    }
}

/// Without `--context` the engine runs with the context the model was
/// trained for, the whole cache (4 sequences) within the KV cache budget:
/// 8192 tokens for SmolLM2-135M, whose KV cache takes 30 layers x 3 KV heads
/// x (64 + 64) x 2 bytes per token.
#[tokio::test]
async fn the_default_context_comes_from_the_model_within_the_memory_bound() {
    use nomyo_engine::context::{ModelShape, KV_CACHE_BUDGET_BYTES};
    let Some(e) = engine().await else { return };
    let shape = ModelShape::read(&model_path().expect("model")).expect("metadata");
    assert_eq!(shape.n_ctx_train, 8192);
    assert_eq!(shape.kv_bytes_per_token(), 30 * 3 * (64 + 64) * 2);
    // The metadata read before loading agrees with llama.cpp's loaded model.
    assert_eq!(Some(shape), e.model_shape());
    let parallel = e.parallel() as u64;
    assert_eq!(parallel, nomyo_engine::DEFAULT_PARALLEL as u64);
    let expected = shape
        .n_ctx_train
        .min((KV_CACHE_BUDGET_BYTES / (shape.kv_bytes_per_token() * parallel)) as u32);
    assert_eq!(e.context_size(), expected);
    assert_eq!(e.context_size(), 8192);
    // SmolLM2's GGUF recommends no sampling (no general.sampling.* keys), so
    // requests that name none get the engine's defaults.
    assert_eq!(
        e.sampling_defaults(),
        nomyo_engine::params::SamplingDefaults::ENGINE
    );
    assert!(
        u64::from(e.context_size()) * shape.kv_bytes_per_token() * parallel
            <= KV_CACHE_BUDGET_BYTES
    );
}

/// `--context 512` refuses a 600-token prompt with the context reason;
/// `--context 1024` answers it.
#[tokio::test]
async fn a_configured_context_bounds_the_prompt() {
    let Some(path) = model_path() else { return };
    let start = |n: u32| {
        let mut c = EngineConfig::new(&path);
        c.context_size = Some(n);
        Engine::start(c).expect("engine starts")
    };
    let small = start(512);
    small.wait_ready().await.expect("loads");
    assert_eq!(small.context_size(), 512);
    let text = prompt_of(&small, 600);
    let err = small
        .chat(ask(&text, json!({"max_tokens": 1})))
        .await
        .expect_err("600 tokens in 512");
    match err {
        BackendError::InvalidRequest(r) => {
            assert_eq!(r.code, Some("context_length_exceeded"));
            assert!(r.message.contains("context holds 512"), "{r:?}");
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    drop(small);

    let large = start(1024);
    large.wait_ready().await.expect("loads");
    let v = large
        .chat(ask(&text, json!({"max_tokens": 1, "temperature": 0})))
        .await
        .expect("600 tokens in 1024");
    let (prompt_tokens, _, _) = usage(&v);
    assert!((600..1024).contains(&prompt_tokens), "{prompt_tokens}");
}

/// A context of 0 or above the model's trained context is a setting error
/// at start-up (`nomyo serve` exits 2 on it).
#[test]
fn a_context_the_model_cannot_take_is_refused_at_start() {
    let Some(path) = model_path() else { return };
    for bad in [0, 8193, 100_000] {
        let mut c = EngineConfig::new(&path);
        c.context_size = Some(bad);
        match Engine::start(c) {
            Err(nomyo_engine::EngineError::Config(m)) => {
                assert!(m.contains(&format!("context {bad} is out of range")), "{m}");
                // Above the trained context, the message names it.
                if bad > 0 {
                    assert!(m.contains("from 64 to 8192"), "{m}");
                }
            }
            other => panic!("context {bad}: expected a setting error, got {other:?}"),
        }
    }
}
