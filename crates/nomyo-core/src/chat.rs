//! OpenAI chat shapes that more than one crate transforms.
//!
//! The server and its backends pass chat requests and answers through as
//! JSON values (every field a client sends reaches the backend unchanged);
//! the transformations between the shapes live here, once.

use serde_json::{json, Value};

/// A complete `chat.completion` as one `chat.completion.chunk`: each
/// choice's `message` becomes its `delta`, with its `index` and
/// `finish_reason`; `id`, `created`, `model` and `usage` are kept. `None` if
/// the answer is not a JSON object.
pub fn completion_to_chunk(completion: &Value) -> Option<Value> {
    let obj = completion.as_object()?;
    let choices: Vec<Value> = obj
        .get("choices")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .enumerate()
                .map(|(i, c)| {
                    json!({
                        "index": c.get("index").cloned().unwrap_or(json!(i)),
                        "delta": c.get("message").cloned().unwrap_or(json!({})),
                        "finish_reason": c.get("finish_reason").cloned().unwrap_or(Value::Null),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut chunk = json!({
        "id": obj.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion.chunk",
        "created": obj.get("created").cloned().unwrap_or(Value::Null),
        "model": obj.get("model").cloned().unwrap_or(Value::Null),
        "choices": choices,
    });
    if let (Some(usage), Some(c)) = (obj.get("usage"), chunk.as_object_mut()) {
        c.insert("usage".to_owned(), usage.clone());
    }
    Some(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_becomes_one_chunk_with_its_messages_as_deltas() {
        let completion = json!({
            "id": "c1", "object": "chat.completion", "created": 7, "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"},
                {"message": {"role": "assistant", "tool_calls": []}, "finish_reason": "tool_calls"}
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        });
        let chunk = completion_to_chunk(&completion).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(
            (&chunk["id"], &chunk["created"], &chunk["model"]),
            (&json!("c1"), &json!(7), &json!("m"))
        );
        assert_eq!(chunk["choices"][0]["delta"]["content"], "hi");
        assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
        // A choice without an index gets its position.
        assert_eq!(chunk["choices"][1]["index"], 1);
        assert_eq!(chunk["choices"][1]["finish_reason"], "tool_calls");
        assert_eq!(chunk["usage"]["total_tokens"], 4);
    }

    #[test]
    fn only_an_object_is_a_completion() {
        assert!(completion_to_chunk(&json!([1, 2])).is_none());
        assert!(completion_to_chunk(&json!("text")).is_none());
        let bare = completion_to_chunk(&json!({})).unwrap();
        assert_eq!(bare["choices"], json!([]));
        assert!(bare.get("usage").is_none());
    }
}
