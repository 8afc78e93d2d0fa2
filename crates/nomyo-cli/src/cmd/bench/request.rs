//! The chat `nomyo bench` sends: a prompt of the requested size, the
//! sampling options, and with `--stream` the usage chunk asked for.

use nomyo_client::{ChatMessage, ChatRequest};

use super::Args;

/// The prompt for the requested size.
pub(super) fn prompt_text(
    prompt_tokens: Option<usize>,
    body_bytes: Option<usize>,
    overhead: usize,
) -> String {
    const WORDS: [&str; 8] = [
        "alpha ", "bravo ", "charlie ", "delta ", "echo ", "foxtrot ", "golf ", "hotel ",
    ];
    if let Some(n) = prompt_tokens {
        let mut s = String::with_capacity(n * 7);
        for i in 0..n {
            s.push_str(WORDS[i % WORDS.len()]);
        }
        return s.trim_end().to_owned();
    }
    if let Some(b) = body_bytes {
        let want = b.saturating_sub(overhead).max(1);
        let mut s = String::with_capacity(want + 8);
        let mut i = 0;
        while s.len() < want {
            s.push_str(WORDS[i % WORDS.len()]);
            i += 1;
        }
        s.truncate(want);
        return s;
    }
    "Say hello.".to_owned()
}

/// Builds the request; with --body-bytes its JSON is that many bytes.
pub(super) fn build_request(args: &Args, model: &str) -> (ChatRequest, usize) {
    let make = |prompt: String| {
        let mut r = ChatRequest::new(model).message(ChatMessage::user(prompt));
        r.max_tokens = args.max_tokens;
        r.temperature = args.temperature;
        if !args.logit_bias.is_empty() {
            let map: serde_json::Map<String, serde_json::Value> = args
                .logit_bias
                .iter()
                .map(|(id, bias)| (id.to_string(), serde_json::json!(bias)))
                .collect();
            r = r.with("logit_bias", serde_json::Value::Object(map));
        }
        if args.stream {
            r.stream = Some(true);
            // The last chunk then carries the generated tokens.
            r = r.with("stream_options", serde_json::json!({"include_usage": true}));
        }
        r
    };
    let size = |r: &ChatRequest| serde_json::to_vec(r).map_or(0, |v| v.len());
    // The JSON around an empty prompt (the padding is plain ASCII: no escaping).
    let overhead = size(&make(String::new()));
    let request = make(prompt_text(args.prompt_tokens, args.body_bytes, overhead));
    let bytes = size(&request);
    (request, bytes)
}
