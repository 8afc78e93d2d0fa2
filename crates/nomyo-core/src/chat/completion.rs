//! The complete answer: [`ChatCompletion`], its [`Choice`]s, [`Usage`] and
//! [`FinishReason`].

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroize;

use super::{lenient_i64, wipe_map, wipe_value, ChatMessage, Extra, Metadata};

/// A chat completion (`"object": "chat.completion"`), decrypted.
///
/// Its strings are wiped when it is dropped. Because of that `Drop`, its
/// fields can be borrowed or cloned but not moved out; use
/// [`std::mem::take`] to take a field by value.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// The completion's id.
    #[serde(default)]
    pub id: String,
    /// `chat.completion`.
    #[serde(default)]
    pub object: String,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub created: i64,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The answers.
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// What the server and the client report about the request's protection.
    #[serde(rename = "_metadata", default)]
    pub metadata: Metadata,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

impl std::fmt::Debug for ChatCompletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatCompletion")
            .field("id", &self.id)
            .field("model", &self.model)
            .field("choices", &self.choices)
            .field("usage", &self.usage)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl ChatCompletion {
    /// The text of the first choice, if it has plain-text content.
    pub fn text(&self) -> Option<&str> {
        self.choices.first().and_then(|c| c.message.text())
    }

    /// The whole completion as JSON (with `_metadata`), serialised into
    /// locked memory that is zeroed when dropped.
    pub fn to_json(&self, pretty: bool) -> crate::SecretBuf {
        let mut out = crate::SecretBuf::with_capacity(4096);
        // Serialising these types into memory cannot fail: every map key is
        // a string and no Serialize impl here returns an error.
        let _ = if pretty {
            serde_json::to_writer_pretty(&mut out, self)
        } else {
            serde_json::to_writer(&mut out, self)
        };
        out
    }
}

impl Drop for ChatCompletion {
    fn drop(&mut self) {
        self.id.zeroize();
        for choice in &mut self.choices {
            choice.wipe();
        }
        wipe_map(&mut self.extra);
    }
}

/// One answer.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Its index.
    #[serde(default)]
    pub index: u32,
    /// The assistant's message.
    #[serde(default)]
    pub message: ChatMessage,
    /// `stop`, `length`, `tool_calls`, `content_filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// Log probabilities, when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

impl std::fmt::Debug for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Choice")
            .field("index", &self.index)
            .field("message", &self.message)
            .field("finish_reason", &self.finish_reason)
            .finish_non_exhaustive()
    }
}

impl Choice {
    /// [`Self::finish_reason`] when it is one OpenAI defines.
    pub fn finish(&self) -> Option<FinishReason> {
        self.finish_reason.as_deref().and_then(FinishReason::parse)
    }

    fn wipe(&mut self) {
        self.message.zeroize();
        if let Some(v) = &mut self.logprobs {
            wipe_value(v);
        }
        wipe_map(&mut self.extra);
    }
}

/// Token counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    /// The counts of one answer; `total_tokens` is their sum.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            extra: Extra::new(),
        }
    }
}

/// Why a choice ended: the `finish_reason` values OpenAI defines.
///
/// [`Choice::finish_reason`] and [`ChunkChoice::finish_reason`] stay
/// strings, so that a value a backend invents passes through unchanged;
/// [`Choice::finish`] reads one of these from it.
///
/// [`ChunkChoice::finish_reason`]: super::ChunkChoice::finish_reason
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// The model ended its turn, or a stop sequence appeared.
    Stop,
    /// `max_tokens` or the end of the context was reached.
    Length,
    /// The model called tools.
    ToolCalls,
    /// Content was withheld by a filter.
    ContentFilter,
    /// The model called a function (the deprecated `functions` parameter).
    FunctionCall,
}

impl FinishReason {
    /// The OpenAI string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
            Self::FunctionCall => "function_call",
        }
    }

    /// The reason an OpenAI string names, `None` for any other string.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Stop,
            Self::Length,
            Self::ToolCalls,
            Self::ContentFilter,
            Self::FunctionCall,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
