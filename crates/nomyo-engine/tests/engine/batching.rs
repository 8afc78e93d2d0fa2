//! Continuous batching with the real model: requests decode together, yet
//! each sees only its own tokens, and nothing of one request is left for
//! the next.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nomyo_engine::{Engine, EngineConfig};
use nomyo_server::backend::{Backend, ChatRequest};
use serde_json::{json, Value};

use crate::real_model::{ask, content, model_path, usage, CAPITAL};

/// An engine decoding `parallel` requests at once, loaded.
async fn engine(parallel: usize) -> Option<Arc<Engine>> {
    let path = model_path()?;
    let mut c = EngineConfig::new(path);
    c.parallel = Some(parallel);
    c.context_size = Some(1024);
    c.queue_capacity = 16;
    let e = Arc::new(Engine::start(c).expect("engine starts"));
    e.wait_ready().await.expect("model loads");
    assert_eq!(e.parallel(), parallel);
    Some(e)
}

/// Greedy, exactly `tokens` tokens (the end-of-turn token is banned), so that
/// every request of a batch runs as long as the others.
fn greedy(question: &str, tokens: u32) -> ChatRequest {
    ask(
        question,
        json!({"temperature": 0, "max_tokens": tokens, "logit_bias": {"2": -100}}),
    )
}

/// Asks every request at once; the answers in the same order.
async fn all_at_once(e: &Arc<Engine>, requests: Vec<ChatRequest>) -> Vec<Value> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let e = Arc::clone(e);
            tokio::spawn(async move { e.chat(r).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join").expect("answer"));
    }
    out
}

const NEIGHBOURS_A: [&str; 3] = [
    "Write a poem about the sea.",
    "List three prime numbers.",
    "Why is the sky blue?",
];
const NEIGHBOURS_B: [&str; 3] = [
    "Describe a cat in one sentence.",
    "What is two plus two?",
    "Name a famous painter.",
];

/// A request's greedy answer is the same byte for byte whatever its
/// neighbours in the batch ask (same number of neighbours, same lengths of
/// answer). Alone against batched is printed, not asserted: llama.cpp does
/// not promise the same logits for batches of different sizes.
#[tokio::test]
async fn a_greedy_answer_does_not_depend_on_what_its_neighbours_ask() {
    let Some(e) = engine(4).await else { return };
    let run = |neighbours: [&'static str; 3]| {
        let e = Arc::clone(&e);
        async move {
            let mut requests = vec![greedy(CAPITAL, 40)];
            requests.extend(neighbours.iter().map(|q| greedy(q, 40)));
            let answers = all_at_once(&e, requests).await;
            for a in &answers {
                assert_eq!(usage(a).1, 40, "every request ran its 40 tokens");
            }
            answers
        }
    };
    let with_a = run(NEIGHBOURS_A).await;
    let with_b = run(NEIGHBOURS_B).await;
    let again_a = run(NEIGHBOURS_A).await;
    assert_eq!(
        content(&with_a[0]),
        content(&with_b[0]),
        "the same request answered differently beside other neighbours"
    );
    assert_eq!(content(&with_a[0]), content(&again_a[0]));
    // The neighbours answered their own questions, not one another's.
    for (a, b) in with_a[1..].iter().zip(&with_b[1..]) {
        assert_ne!(content(a), content(b));
    }
    for (a, again) in with_a[1..].iter().zip(&again_a[1..]) {
        assert_eq!(content(a), content(again));
    }

    let alone = e.chat(greedy(CAPITAL, 40)).await.expect("alone");
    eprintln!(
        "alone vs batched: {}",
        if content(&alone) == content(&with_a[0]) {
            "identical"
        } else {
            "different"
        }
    );
}

/// A sequence's slot carries nothing into the next request: with one slot,
/// a request answered after others (a finished one, a cancelled one, one
/// with a long prompt) gets the answer it got first.
#[tokio::test]
async fn a_slot_serves_the_next_request_as_if_new() {
    let Some(e) = engine(1).await else { return };
    let probe = || greedy("Name a colour.", 16);
    let first = e.chat(probe()).await.expect("first");

    // A finished request with another conversation in the same slot.
    e.chat(greedy("Tell me a long story about dragons.", 64))
        .await
        .expect("other");
    let after_finished = e.chat(probe()).await.expect("after a finished one");
    assert_eq!(content(&first), content(&after_finished));

    // A cancelled one: its stream dropped after a few chunks.
    let mut s = e
        .chat_stream(greedy("Write a very long story.", 500))
        .await
        .expect("stream");
    for _ in 0..4 {
        s.next().await.expect("chunk").expect("ok");
    }
    drop(s);
    let after_cancelled = tokio::time::timeout(Duration::from_secs(60), e.chat(probe()))
        .await
        .expect("the slot is freed")
        .expect("after a cancelled one");
    assert_eq!(content(&first), content(&after_cancelled));

    // Several choices (the cache is rewound to the prompt between them).
    let two = e
        .chat(ask(
            "Name a colour.",
            json!({"temperature": 0, "max_tokens": 16, "logit_bias": {"2": -100}, "n": 2}),
        ))
        .await
        .expect("n = 2");
    let choices = two["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 2);
    for c in choices {
        assert_eq!(
            c["message"]["content"],
            first["choices"][0]["message"]["content"]
        );
    }
    // After the cache was wiped when idle.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after_idle = e.chat(probe()).await.expect("after idle");
    assert_eq!(content(&first), content(&after_idle));
}

/// Four streams at once all stream at once: every one's first token arrives
/// before any of them ends (one request at a time would end the first before
/// the second started).
#[tokio::test]
async fn four_streams_decode_together() {
    let Some(e) = engine(4).await else { return };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, &'static str)>();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let e = Arc::clone(&e);
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = e
                .chat_stream(greedy(NEIGHBOURS_A.get(i).copied().unwrap_or(CAPITAL), 48))
                .await
                .expect("stream");
            let mut first = true;
            while let Some(chunk) = s.next().await {
                let chunk = chunk.expect("chunk");
                let text = chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("");
                if first && !text.is_empty() {
                    first = false;
                    let _ = tx.send((i, "first"));
                }
            }
            let _ = tx.send((i, "end"));
        }));
    }
    drop(tx);
    for t in tasks {
        t.await.expect("stream task");
    }
    let mut events = Vec::new();
    while let Some(ev) = rx.recv().await {
        events.push(ev);
    }
    let firsts = events.iter().filter(|(_, k)| *k == "first").count();
    assert_eq!(firsts, 4, "{events:?}");
    let first_end = events.iter().position(|(_, k)| *k == "end").expect("ends");
    let last_first = events
        .iter()
        .rposition(|(_, k)| *k == "first")
        .expect("firsts");
    assert!(
        last_first < first_end,
        "a stream ended before another began: {events:?}"
    );
}

/// More requests than slots: the ones beyond wait their turn, in order,
/// and every one is answered in full.
#[tokio::test]
async fn requests_beyond_the_slots_wait_and_are_all_answered() {
    let Some(e) = engine(2).await else { return };
    let requests: Vec<ChatRequest> = (0..6).map(|i| greedy(CAPITAL, 8 + i)).collect();
    let answers = all_at_once(&e, requests).await;
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(usage(a).1, 8 + i as u64);
    }
}

/// Every request of a batch keeps its own parameters: a schema grammar, a
/// stop sequence, a forced token, seeded sampling (two requests with the
/// same seed in one batch answer the same; another seed differs), and two
/// choices.
#[tokio::test]
async fn each_request_keeps_its_own_parameters_in_the_batch() {
    let Some(e) = engine(8).await else { return };
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": false
    });
    let seeded = |seed: u32| {
        ask(
            "Write a sentence about the sea.",
            json!({"temperature": 1.0, "seed": seed, "max_tokens": 24}),
        )
    };
    let requests = vec![
        ask(
            CAPITAL,
            json!({"temperature": 0, "max_tokens": 60,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}),
        ),
        // Greedy, the answer cut before its first space.
        ask(
            CAPITAL,
            json!({"temperature": 0, "max_tokens": 40, "stop": [" "]}),
        ),
        // Token 504 forced: the answer is its text, four times.
        ask(
            CAPITAL,
            json!({"temperature": 0, "max_tokens": 4, "logit_bias": {"504": 100}}),
        ),
        seeded(11),
        seeded(11),
        seeded(12),
        ask(
            CAPITAL,
            json!({"temperature": 0.8, "seed": 5, "max_tokens": 12, "n": 2}),
        ),
    ];
    let answers = all_at_once(&e, requests).await;

    let city: Value = serde_json::from_str(content(&answers[0])).expect("valid JSON");
    assert!(city["city"].is_string(), "{city}");
    assert_eq!(answers[0]["choices"][0]["finish_reason"], "stop");

    let cut = content(&answers[1]);
    assert!(!cut.contains(' '), "{cut:?}");
    assert_eq!(answers[1]["choices"][0]["finish_reason"], "stop");

    let forced = content(&answers[2]);
    assert!(!forced.is_empty());
    assert_eq!(forced, forced[..forced.len() / 4].repeat(4), "{forced:?}");

    assert_eq!(
        content(&answers[3]),
        content(&answers[4]),
        "same seed, same answer"
    );
    assert_ne!(content(&answers[3]), content(&answers[5]), "another seed");

    let two = answers[6]["choices"].as_array().expect("choices");
    assert_eq!(two.len(), 2);
    assert!(usage(&answers[6]).1 <= 24);
}
