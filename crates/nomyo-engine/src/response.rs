//! The OpenAI response objects: `chat.completion` and `chat.completion.chunk`.

use serde_json::{json, Value};

/// Why a choice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn, or a stop sequence appeared.
    Stop,
    /// `max_tokens` or the end of the context was reached.
    Length,
}

impl FinishReason {
    /// The OpenAI string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Token counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the rendered prompt (once, whatever `n` is).
    pub prompt_tokens: u32,
    /// Tokens generated over all choices (the end-of-turn token not counted).
    pub completion_tokens: u32,
}

impl Usage {
    /// The OpenAI `usage` object.
    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// What every object of one response shares.
#[derive(Clone, Debug)]
pub struct ResponseMeta {
    /// `chatcmpl-...`
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model id.
    pub model: String,
}

impl ResponseMeta {
    /// A fresh id and the current time.
    pub fn new(model: &str) -> Self {
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            model: model.to_owned(),
        }
    }

    /// A `chat.completion` with these choices: (text, finish reason) by index.
    pub fn completion(&self, choices: &[(String, FinishReason)], usage: Usage) -> Value {
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(i, (text, reason))| {
                json!({
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": null},
                    "logprobs": null,
                    "finish_reason": reason.as_str(),
                })
            })
            .collect();
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage.to_json(),
        })
    }

    /// A `chat.completion.chunk` for choice 0 with this `delta` and finish reason.
    /// `with_usage_field` adds `"usage": null` (OpenAI does so on every chunk
    /// when `stream_options.include_usage` is set).
    pub fn chunk(
        &self,
        delta: Value,
        finish: Option<FinishReason>,
        with_usage_field: bool,
    ) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish.map(FinishReason::as_str),
            }],
        });
        if with_usage_field {
            v["usage"] = Value::Null;
        }
        v
    }

    /// The final usage chunk (`choices` empty) of `stream_options.include_usage`.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.to_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_has_the_openai_shape() {
        let m = ResponseMeta::new("m");
        assert!(m.id.starts_with("chatcmpl-"));
        let v = m.completion(
            &[("hi".into(), FinishReason::Length)],
            Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
            },
        );
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "m");
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 5);
        assert!(v["created"].as_u64().is_some_and(|t| t > 1_600_000_000));
    }

    #[test]
    fn chunks_have_the_openai_shape() {
        let m = ResponseMeta::new("m");
        let c = m.chunk(json!({"content": "x"}), None, false);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["content"], "x");
        assert!(c["choices"][0]["finish_reason"].is_null());
        assert!(c.get("usage").is_none());
        let c = m.chunk(json!({}), Some(FinishReason::Stop), true);
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert!(c["usage"].is_null() && c.get("usage").is_some());
        let u = m.usage_chunk(Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
        });
        assert_eq!(u["choices"].as_array().map(Vec::len), Some(0));
        assert_eq!(u["usage"]["total_tokens"], 2);
    }
}
