//! What the engine refuses or bounds: bad requests, a full queue, and the
//! context (from the model by default, or configured) a prompt must fit.

use super::*;

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
