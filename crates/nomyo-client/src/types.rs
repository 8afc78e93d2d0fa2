//! OpenAI chat-completion types.
//!
//! The chat shapes are defined once, in [`nomyo_core::chat`], and re-exported
//! here. The common fields are typed; every other field is kept in an `extra`
//! map (`#[serde(flatten)]`), so any OpenAI parameter (`tools`,
//! `tool_choice`, `response_format`, `logprobs`, `n`, ...) passes through to
//! the server and any field the server adds comes back, exactly as the Python
//! client's dicts do.
//!
//! A [`ChatCompletion`] holds decrypted plaintext: its strings are wiped
//! (overwritten with zeros) when it is dropped. Because of that `Drop`, its
//! fields can be borrowed or cloned but not moved out; use
//! [`std::mem::take`] to take a field by value.

pub use nomyo_core::chat::{
    ChatCompletion, ChatMessage, ChatRequest, Choice, Content, CudaDevice, Extra, FinishReason,
    FunctionCall, FunctionDefinition, MemoryProtectionInfo, Metadata, Tool, ToolCall, Usage,
    STREAM_NOT_BOOLEAN,
};

/// One entry of `GET /v1/models` (OpenAI's shape, with the tiers that
/// allow it).
pub type ModelInfo = nomyo_core::chat::Model;
