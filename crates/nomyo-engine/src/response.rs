//! The OpenAI response objects: `chat.completion` and
//! `chat.completion.chunk`, built from the shapes of [`nomyo_backend::chat`].

use nomyo_backend::chat::{
    self, ChatCompletion, ChatCompletionChunk, ChatMessage, Choice, ChunkChoice, Delta, Extra,
};
use serde_json::Value;

/// Why a choice ended (the engine ends one with `stop` or `length`).
pub use nomyo_backend::chat::FinishReason;

/// Token counts of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens of the rendered prompt (once, whatever `n` is).
    pub prompt_tokens: u32,
    /// Tokens generated over all choices (the end-of-turn token not counted).
    pub completion_tokens: u32,
}

impl From<Usage> for chat::Usage {
    /// The OpenAI `usage` object.
    fn from(u: Usage) -> Self {
        chat::Usage::new(u.prompt_tokens.into(), u.completion_tokens.into())
    }
}

/// The delta that opens a streamed choice: `{"role": "assistant", "content": ""}`.
pub fn start_delta() -> Delta {
    let mut d = Delta::default();
    d.role = Some("assistant".to_owned());
    d.content = Some(String::new());
    d
}

/// A delta of generated text: `{"content": text}`.
pub fn text_delta(text: String) -> Delta {
    let mut d = Delta::default();
    d.content = Some(text);
    d
}

/// A chunk as a JSON value: the [`Backend`](nomyo_backend::Backend) trait
/// hands answers on as values. Serialising these shapes cannot fail (every
/// map key is a string, no `Serialize` impl returns an error); `null` would
/// reach the server as an answer that is not an object (502), never a panic.
fn chunk_value(c: &ChatCompletionChunk) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
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

    fn created(&self) -> i64 {
        i64::try_from(self.created).unwrap_or(i64::MAX)
    }

    /// A `chat.completion` with these choices: (text, finish reason) by index.
    pub fn completion(&self, choices: &[(String, FinishReason)], usage: Usage) -> Value {
        // `ChatCompletion` wipes itself on drop, so it is filled in field by field.
        let mut c = ChatCompletion::default();
        c.id.clone_from(&self.id);
        c.object = chat::COMPLETION_OBJECT.to_owned();
        c.created = self.created();
        c.model.clone_from(&self.model);
        c.choices = choices
            .iter()
            .zip(0..)
            .map(|((text, reason), index)| {
                let mut message = ChatMessage::assistant(text.as_str());
                // OpenAI sends `"refusal": null`; the typed field leaves a
                // `None` out, so the explicit null is kept beside it.
                message.extra.insert("refusal".to_owned(), Value::Null);
                Choice {
                    index,
                    message,
                    finish_reason: Some(reason.as_str().to_owned()),
                    logprobs: Some(Value::Null),
                    extra: Extra::new(),
                }
            })
            .collect();
        c.usage = Some(usage.into());
        // As for chunks (`chunk_value`): this cannot fail.
        let mut v = serde_json::to_value(&c).unwrap_or(Value::Null);
        // A backend's answer carries no `_metadata`: the server adds it
        // (docs/PROTOCOL.md §1.7).
        if let Some(o) = v.as_object_mut() {
            o.remove("_metadata");
        }
        v
    }

    /// A chunk of this response with no choices yet.
    fn chunk_head(&self) -> ChatCompletionChunk {
        ChatCompletionChunk::new(self.id.as_str(), self.created(), self.model.as_str())
    }

    /// A `chat.completion.chunk` for choice 0 with this `delta` and finish reason.
    /// `with_usage_field` adds `"usage": null` (OpenAI does so on every chunk
    /// when `stream_options.include_usage` is set).
    pub fn chunk(
        &self,
        delta: Delta,
        finish: Option<FinishReason>,
        with_usage_field: bool,
    ) -> Value {
        let mut c = self.chunk_head();
        let mut extra = Extra::new();
        extra.insert("logprobs".to_owned(), Value::Null);
        c.choices.push(ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish.map(|f| f.as_str().to_owned()),
            extra,
        });
        if with_usage_field {
            c.set_usage(None);
        }
        chunk_value(&c)
    }

    /// The final usage chunk (`choices` empty) of `stream_options.include_usage`.
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        let mut c = self.chunk_head();
        c.set_usage(Some(&usage.into()));
        chunk_value(&c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        // Every key and value, as OpenAI sends them.
        assert_eq!(
            v,
            json!({
                "id": m.id, "object": "chat.completion", "created": m.created, "model": "m",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi", "refusal": null},
                    "logprobs": null,
                    "finish_reason": "length",
                }],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            })
        );
    }

    #[test]
    fn chunks_have_the_openai_shape() {
        let m = ResponseMeta::new("m");
        let c = m.chunk(text_delta("x".into()), None, false);
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["choices"][0]["delta"]["content"], "x");
        assert!(c["choices"][0]["finish_reason"].is_null());
        assert!(c.get("usage").is_none());
        let head = json!({"id": m.id, "object": "chat.completion.chunk",
            "created": m.created, "model": "m"});
        let with = |mut v: Value, more: Value| {
            for (k, x) in more.as_object().into_iter().flatten() {
                v[k] = x.clone();
            }
            v
        };
        assert_eq!(
            c,
            with(
                head.clone(),
                json!({"choices": [{"index": 0, "delta": {"content": "x"},
                    "logprobs": null, "finish_reason": null}]})
            )
        );
        let c = m.chunk(start_delta(), None, true);
        assert_eq!(
            c,
            with(
                head.clone(),
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                    "logprobs": null, "finish_reason": null}], "usage": null})
            )
        );
        let c = m.chunk(Delta::default(), Some(FinishReason::Stop), true);
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert!(c["usage"].is_null() && c.get("usage").is_some());
        assert_eq!(c["choices"][0]["delta"], json!({}));
        let u = m.usage_chunk(Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
        });
        assert_eq!(u["choices"].as_array().map(Vec::len), Some(0));
        assert_eq!(u["usage"]["total_tokens"], 2);
        assert_eq!(
            u,
            with(
                head,
                json!({"choices": [], "usage":
                    {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            )
        );
    }
}
