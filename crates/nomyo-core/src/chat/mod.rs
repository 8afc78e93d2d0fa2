//! OpenAI chat shapes, once for every crate: the request
//! ([`ChatRequest`], [`ChatMessage`], [`Tool`], ...), the answer
//! ([`ChatCompletion`], [`Choice`], [`Usage`], [`FinishReason`]), the
//! streamed answer ([`ChatCompletionChunk`], [`ChunkChoice`], [`Delta`]),
//! the `_metadata` object the server adds ([`Metadata`], docs/PROTOCOL.md
//! §1.7), the model list ([`ModelList`], [`Model`]), and the
//! transformations between them ([`completion_to_chunk`]).
//!
//! The common fields are typed; every other field is kept in an `extra` map
//! (`#[serde(flatten)]`), so any OpenAI parameter (`tools`, `tool_choice`,
//! `response_format`, `logprobs`, `n`, ...) and any field a backend or server
//! adds passes through unchanged. The server and its backends pass requests
//! and answers through as JSON values; the producers of answers (the
//! embedded engine, the proxy's event stream, the server's `_metadata`)
//! build them from these types.
//!
//! These types hold plaintext prompts and answers: the `nomyo` binary wipes
//! their memory when it is freed (its global allocator is
//! [`WipeOnFree`](crate::wipe_alloc::WipeOnFree); SECURITY.md, "Memory: what
//! is wiped and what is not"), and a program that does not install that
//! allocator gets no such guarantee beyond what these types wipe themselves
//! ([`ChatCompletion`] and [`Delta`] on drop, [`ChatRequest`] through
//! [`Zeroize`]).

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use zeroize::Zeroize;

mod chunk;
mod completion;
mod metadata;
mod models;
mod request;
#[cfg(test)]
mod tests;

pub use chunk::{ChatCompletionChunk, ChunkChoice, Delta};
pub use completion::{ChatCompletion, Choice, FinishReason, Usage};
pub use metadata::{CudaDevice, CvmAttestation, MemoryProtectionInfo, Metadata, TpmAttestation};
pub use models::{Model, ModelList, LIST_OBJECT, MODELS_PATH, MODEL_OBJECT, OWNED_BY};
pub use request::{
    ChatMessage, ChatRequest, Content, FunctionCall, FunctionDefinition, Tool, ToolCall,
    STREAM_NOT_BOOLEAN,
};

/// Extra JSON fields kept beside the typed ones.
pub type Extra = Map<String, Value>;

/// `"object"` of a complete answer.
pub const COMPLETION_OBJECT: &str = "chat.completion";
/// `"object"` of a streamed answer's chunk.
pub const CHUNK_OBJECT: &str = "chat.completion.chunk";

/// A complete `chat.completion` as one `chat.completion.chunk`: each
/// choice's `message` becomes its `delta`, with its `index` and
/// `finish_reason`; `id`, `created`, `model` and `usage` are kept. `None` if
/// the answer is not a JSON object.
///
/// It works on JSON values, not on [`ChatCompletion`]: a backend's answer
/// passes through the server as it came, every field and every value kept,
/// even one the typed shapes would read differently.
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
        "object": CHUNK_OBJECT,
        "created": obj.get("created").cloned().unwrap_or(Value::Null),
        "model": obj.get("model").cloned().unwrap_or(Value::Null),
        "choices": choices,
    });
    if let (Some(usage), Some(c)) = (obj.get("usage"), chunk.as_object_mut()) {
        c.insert("usage".to_owned(), usage.clone());
    }
    Some(chunk)
}

/// Overwrites every string in a JSON value (keys included) with zeros.
pub(crate) fn wipe_value(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe_value),
        Value::Object(m) => wipe_map(m),
        _ => {}
    }
}

/// Overwrites every key and string of a map with zeros, and empties it.
pub(crate) fn wipe_map(m: &mut Extra) {
    for (mut k, mut v) in std::mem::take(m) {
        k.zeroize();
        wipe_value(&mut v);
    }
}

/// Accepts an integer or a float (some servers send `time.time()`).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(lenient_opt_i64(d)?.unwrap_or(0))
}

fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<serde_json::Number>::deserialize(d)?;
    Ok(v.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))))
}
