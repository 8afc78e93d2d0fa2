//! Server-sent events in the shape the OpenAI SDKs parse: `data: {json}`
//! followed by a blank line, the stream closed by `data: [DONE]`.

use bytes::Bytes;
use nomyo_client::ChatCompletion;
use serde::Serialize;
use serde_json::{json, Map, Value};

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
    let mut head = Map::new();
    head.insert("id".into(), json!(c.id));
    head.insert("object".into(), json!("chat.completion.chunk"));
    head.insert("created".into(), json!(c.created));
    head.insert("model".into(), json!(c.model));
    if let Some(fp) = &c.system_fingerprint {
        head.insert("system_fingerprint".into(), json!(fp));
    }
    let chunk = |choices: Value, extra: Option<(&str, Value)>| {
        let mut m = head.clone();
        m.insert("choices".into(), choices);
        if let Some((k, v)) = extra {
            m.insert(k.into(), v);
        }
        Value::Object(m)
    };

    let mut events = Vec::with_capacity(2 * c.choices.len() + 2);
    for (i, choice) in c.choices.iter().enumerate() {
        let msg = &choice.message;
        let mut delta = Map::new();
        delta.insert(
            "role".into(),
            json!(if msg.role.is_empty() {
                "assistant"
            } else {
                msg.role.as_str()
            }),
        );
        delta.insert(
            "content".into(),
            serde_json::to_value(&msg.content).unwrap_or(Value::Null),
        );
        if let Some(calls) = &msg.tool_calls {
            // Streamed tool calls carry their position as `index`.
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(n, call)| {
                    let mut v = serde_json::to_value(call).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert("index".into(), json!(n));
                    }
                    v
                })
                .collect();
            delta.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(r) = &msg.reasoning_content {
            delta.insert("reasoning_content".into(), json!(r));
        }
        if let Some(r) = &msg.refusal {
            delta.insert("refusal".into(), json!(r));
        }
        let mut first = json!({"index": choice.index, "delta": delta, "finish_reason": null});
        if let Some(lp) = &choice.logprobs {
            first["logprobs"] = lp.clone();
        }
        // The server's `_metadata` rides on the first chunk, as in v2.
        let meta = (i == 0)
            .then(|| serde_json::to_value(&c.metadata).ok())
            .flatten()
            .map(|m| ("_metadata", m));
        events.push(event(&chunk(json!([first]), meta)));
        let last = json!({"index": choice.index, "delta": {},
            "finish_reason": choice.finish_reason.as_deref().unwrap_or("stop")});
        events.push(event(&chunk(json!([last]), None)));
    }
    if include_usage {
        let usage = serde_json::to_value(&c.usage).unwrap_or(Value::Null);
        events.push(event(&chunk(json!([]), Some(("usage", usage)))));
    }
    events.push(Bytes::from_static(DONE));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
