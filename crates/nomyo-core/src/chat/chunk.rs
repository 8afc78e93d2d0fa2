//! The streamed answer: [`ChatCompletionChunk`], its [`ChunkChoice`]s and
//! their [`Delta`]s.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{wipe_map, wipe_value, Extra, Usage};

/// One typed streamed chunk (`chat.completion.chunk`).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The completion's id.
    #[serde(default)]
    pub id: String,
    /// `chat.completion.chunk`.
    #[serde(default)]
    pub object: String,
    /// Unix time of creation.
    #[serde(default)]
    pub created: i64,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The deltas.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// The server's `_metadata` (on the first chunk).
    #[serde(rename = "_metadata", default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Every other field (`usage`, `system_fingerprint`, ...), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl fmt::Debug for ChatCompletionChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatCompletionChunk")
            .field("id", &self.id)
            .field("model", &self.model)
            .field("choices", &self.choices)
            .finish_non_exhaustive()
    }
}

impl ChatCompletionChunk {
    /// A chunk of the answer `id` (`chat.completion.chunk`), with no
    /// choices yet.
    pub fn new(id: impl Into<String>, created: i64, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            object: super::CHUNK_OBJECT.to_owned(),
            created,
            model: model.into(),
            ..Self::default()
        }
    }

    /// The first choice's content delta, if any.
    pub fn text(&self) -> Option<&str> {
        self.choices.first()?.delta.content.as_deref()
    }

    /// The chunk's `usage` (kept in `extra`): `None` when absent, `null` or
    /// not a usage object.
    pub fn usage(&self) -> Option<Usage> {
        Usage::deserialize(self.extra.get("usage")?).ok()
    }

    /// Sets `usage`: the counts, or `null` (which OpenAI sends on every chunk
    /// but the last when `stream_options.include_usage` is set).
    pub fn set_usage(&mut self, usage: Option<&Usage>) {
        let v = usage
            .and_then(|u| serde_json::to_value(u).ok())
            .unwrap_or(serde_json::Value::Null);
        self.extra.insert("usage".to_owned(), v);
    }
}

/// One choice of a streamed chunk.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Its index.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the last chunk of a choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Every other field (`logprobs`, ...), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChunkChoice {
    /// [`Self::finish_reason`] when it is one OpenAI defines.
    pub fn finish(&self) -> Option<super::FinishReason> {
        self.finish_reason
            .as_deref()
            .and_then(super::FinishReason::parse)
    }
}

impl fmt::Debug for ChunkChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkChoice")
            .field("index", &self.index)
            .field(
                "content_chars",
                &self.delta.content.as_ref().map(|c| c.len()),
            )
            .field("finish_reason", &self.finish_reason)
            .finish_non_exhaustive()
    }
}

/// The increment of a streamed choice.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant` on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool-call fragments, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// Every other field (`reasoning_content`, `refusal`, ...), passed through.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Drop for Delta {
    /// The answer's text (and tool-call fragments) is plaintext: zeroed when
    /// the chunk is dropped, as [`super::ChatCompletion`]'s is.
    fn drop(&mut self) {
        if let Some(c) = &mut self.content {
            zeroize::Zeroize::zeroize(c);
        }
        if let Some(v) = &mut self.tool_calls {
            wipe_value(v);
        }
        wipe_map(&mut self.extra);
    }
}
