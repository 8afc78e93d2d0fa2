//! Server-sent events in the shape the OpenAI SDKs parse: `data: {json}`
//! followed by a blank line, the stream closed by `data: [DONE]`.

use bytes::Bytes;
// The chat shapes of `nomyo_core::chat`, as the client re-exports them.
use nomyo_client::types::{ChatCompletion, ChatMessage, Content, Extra, FinishReason};
use nomyo_client::{ChatCompletionChunk, ChunkChoice, Delta};
use serde::Serialize;
use serde_json::Value;

use crate::error::ProxyError;

/// The last event of a complete stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// `data: <json>\n\n`.
pub(crate) fn event<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serialising these values into memory cannot fail: every map key is a
    // string and no Serialize impl involved returns an error.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// An error inside a stream that has already started (the status line is
/// sent): the SDKs raise an `APIError` on a `data: {"error": ...}` event.
pub(crate) fn error_event(e: &ProxyError) -> Bytes {
    event(&e.body())
}

/// A protocol v1 answer (v1 cannot stream) as the events an OpenAI
/// streaming server would have sent: per choice one chunk with the role and
/// the whole content (and tool calls), then one with its `finish_reason`;
/// then the usage chunk if `include_usage`; then `[DONE]`.
pub(crate) fn from_completion(c: &ChatCompletion, include_usage: bool) -> Vec<Bytes> {
    let head = || {
        let mut chunk = ChatCompletionChunk::new(c.id.as_str(), c.created, c.model.as_str());
        if let Some(fp) = &c.system_fingerprint {
            chunk
                .extra
                .insert("system_fingerprint".to_owned(), Value::String(fp.clone()));
        }
        chunk
    };

    let mut events = Vec::with_capacity(2 * c.choices.len() + 2);
    for (i, choice) in c.choices.iter().enumerate() {
        let mut first = head();
        let mut extra = Extra::new();
        if let Some(lp) = &choice.logprobs {
            extra.insert("logprobs".to_owned(), lp.clone());
        }
        first.choices.push(ChunkChoice {
            index: choice.index,
            delta: first_delta(&choice.message),
            finish_reason: None,
            extra,
        });
        // The server's `_metadata` rides on the first chunk, as in v2.
        if i == 0 {
            first.metadata = serde_json::to_value(&c.metadata).ok();
        }
        events.push(event(&first));

        let mut last = head();
        last.choices.push(ChunkChoice {
            index: choice.index,
            delta: Delta::default(),
            finish_reason: Some(
                choice
                    .finish_reason
                    .clone()
                    .unwrap_or_else(|| FinishReason::Stop.as_str().to_owned()),
            ),
            extra: Extra::new(),
        });
        events.push(event(&last));
    }
    if include_usage {
        let mut usage = head();
        usage.set_usage(c.usage.as_ref());
        events.push(event(&usage));
    }
    events.push(Bytes::from_static(DONE));
    events
}

/// The delta of a choice's first chunk: the whole message (role, content,
/// tool calls, reasoning, refusal).
fn first_delta(msg: &ChatMessage) -> Delta {
    // `Delta` wipes itself on drop, so it is filled in field by field.
    let mut delta = Delta::default();
    let role = if msg.role.is_empty() {
        "assistant"
    } else {
        msg.role.as_str()
    };
    delta.role = Some(role.to_owned());
    match &msg.content {
        Some(Content::Text(text)) => delta.content = Some(text.clone()),
        // `content` is on this chunk even when the message has none (`null`)
        // or has content parts; `Delta::content` holds text only.
        other => {
            let v = serde_json::to_value(other).unwrap_or(Value::Null);
            delta.extra.insert("content".to_owned(), v);
        }
    }
    if let Some(calls) = &msg.tool_calls {
        // Streamed tool calls carry their position as `index`.
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(n, call)| {
                let mut v = serde_json::to_value(call).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("index".to_owned(), n.into());
                }
                v
            })
            .collect();
        delta.tool_calls = Some(Value::Array(calls));
    }
    if let Some(r) = &msg.reasoning_content {
        delta
            .extra
            .insert("reasoning_content".to_owned(), Value::String(r.clone()));
    }
    if let Some(r) = &msg.refusal {
        delta
            .extra
            .insert("refusal".to_owned(), Value::String(r.clone()));
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(events: &[Bytes]) -> Vec<Value> {
        events
            .iter()
            .map(|e| {
                let s = std::str::from_utf8(e).unwrap();
                assert!(s.starts_with("data: ") && s.ends_with("\n\n"), "{s:?}");
                let d = &s[6..s.len() - 2];
                if d == "[DONE]" {
                    Value::String("DONE".into())
                } else {
                    serde_json::from_str(d).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn a_complete_answer_becomes_a_stream() {
        let c: ChatCompletion = serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "f", "arguments": "{\"x\":1}"}}]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            "_metadata": {"is_encrypted": true}
        }))
        .unwrap();
        let ev = parse(&from_completion(&c, true));
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[0]["object"], "chat.completion.chunk");
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(
            ev[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(ev[0]["_metadata"]["is_encrypted"], true);
        assert!(ev[0]["choices"][0]["finish_reason"].is_null());
        assert_eq!(ev[1]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev[2]["choices"], json!([]));
        assert_eq!(ev[2]["usage"]["total_tokens"], 3);
        assert_eq!(ev[3], "DONE");

        let plain: ChatCompletion = serde_json::from_value(json!({
            "id": "x", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]
        }))
        .unwrap();
        let ev = parse(&from_completion(&plain, false));
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0]["choices"][0]["delta"]["content"], "hi");
        assert_eq!(ev[1]["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn every_event_has_the_keys_and_values_of_an_openai_stream() {
        let c: ChatCompletion = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 9, "model": "m",
            "system_fingerprint": "fp", "service_tier": "default",
            "choices": [
                {"index": 0, "finish_reason": "stop", "logprobs": {"content": []},
                    "message": {"role": "assistant", "content": "hi",
                        "reasoning_content": "think", "name": "n", "audio": {"id": "a"}}},
                {"index": 1,
                    "message": {"role": "", "refusal": "no",
                        "tool_calls": [{"id": "c1", "type": "function", "x": 1,
                            "function": {"name": "f", "arguments": "{}"}}]}},
                {"index": 2,
                    "message": {"role": "assistant",
                        "content": [{"type": "text", "text": "part"}]}}
            ],
            "_metadata": {"payload_id": "p", "security_tier": "standard"}
        }))
        .unwrap();
        let head = json!({"id": "x", "object": "chat.completion.chunk", "created": 9,
            "model": "m", "system_fingerprint": "fp"});
        let chunk = |more: Value| {
            let mut v = head.clone();
            for (k, x) in more.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        let ev = parse(&from_completion(&c, true));
        let expected = vec![
            chunk(json!({
                "choices": [{"index": 0, "finish_reason": null, "logprobs": {"content": []},
                    "delta": {"role": "assistant", "content": "hi", "reasoning_content": "think"}}],
                "_metadata": {"payload_id": "p", "security_tier": "standard"}
            })),
            chunk(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})),
            chunk(json!({
                "choices": [{"index": 1, "finish_reason": null,
                    "delta": {"role": "assistant", "content": null, "refusal": "no",
                        "tool_calls": [{"index": 0, "id": "c1", "type": "function", "x": 1,
                            "function": {"name": "f", "arguments": "{}"}}]}}]
            })),
            chunk(json!({"choices": [{"index": 1, "delta": {}, "finish_reason": "stop"}]})),
            chunk(json!({
                "choices": [{"index": 2, "finish_reason": null,
                    "delta": {"role": "assistant",
                        "content": [{"type": "text", "text": "part"}]}}]
            })),
            chunk(json!({"choices": [{"index": 2, "delta": {}, "finish_reason": "stop"}]})),
            // No usage in the answer: `usage: null`.
            chunk(json!({"choices": [], "usage": null})),
            json!("DONE"),
        ];
        assert_eq!(ev, expected);
    }
}
