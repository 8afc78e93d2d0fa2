//! What the model answers: the right answer with true usage, seeds,
//! `max_tokens`, stop sequences, streaming and response formats.

use super::*;

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
