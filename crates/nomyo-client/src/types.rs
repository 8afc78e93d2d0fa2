//! OpenAI chat-completion types.
//!
//! The common fields are typed; every other field is kept in an `extra` map
//! (`#[serde(flatten)]`), so any OpenAI parameter (`tools`, `tool_choice`,
//! `response_format`, `logprobs`, `n`, ...) passes through to the server and
//! any field the server adds comes back, exactly as the Python client's dicts
//! do.
//!
//! A [`ChatCompletion`] holds decrypted plaintext: its strings are wiped
//! (overwritten with zeros) when it is dropped. Because of that `Drop`, its
//! fields can be borrowed or cloned but not moved out; use
//! [`std::mem::take`] to take a field by value.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroize;

/// Extra JSON fields kept beside the typed ones.
pub type Extra = Map<String, Value>;

/// A chat-completion request: `{"model": ..., "messages": [...], ...}`.
///
/// ```
/// use nomyo_client::{ChatMessage, ChatRequest};
/// use serde_json::json;
///
/// let request = ChatRequest::new("Qwen/Qwen3-0.6B")
///     .message(ChatMessage::system("Answer briefly."))
///     .message(ChatMessage::user("What is the capital of France?"))
///     .temperature(0.2)
///     .max_tokens(64)
///     // Any other OpenAI parameter passes through unchanged:
///     .with("response_format", json!({"type": "json_object"}));
/// let wire = serde_json::to_value(&request).unwrap();
/// assert_eq!(wire["messages"][1]["content"], "What is the capital of France?");
/// assert_eq!(wire["response_format"]["type"], "json_object");
/// assert!(wire.get("seed").is_none()); // unset options are not sent
/// ```
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model to use. Empty when a JSON request omits it (the proxy
    /// then picks the server's only model).
    #[serde(default)]
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature (0–2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Maximum number of tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Stop sequence(s): a string or an array of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Value>,
    /// Seed for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Number of choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Presence penalty (-2–2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty (-2–2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    /// `{"type": "json_object"}`, `{"type": "json_schema", ...}`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// End-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other parameter, passed through unchanged.
    #[serde(flatten)]
    pub extra: Extra,
}

impl std::fmt::Debug for ChatRequest {
    /// Shows the shape, never the messages' text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRequest")
            .field("model", &self.model)
            .field("messages", &self.messages.len())
            .field("extra_fields", &self.extra.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Zeroize for ChatRequest {
    /// Overwrites the messages (and every other string) with zeros, e.g.
    /// once the request has been sent: a request holds the prompt.
    fn zeroize(&mut self) {
        for m in &mut self.messages {
            m.zeroize();
        }
        self.messages.clear();
        if let Some(s) = &mut self.user {
            s.zeroize();
        }
        for v in [
            &mut self.stop,
            &mut self.tool_choice,
            &mut self.response_format,
        ]
        .into_iter()
        .flatten()
        {
            wipe_value(v);
        }
        wipe_map(&mut self.extra);
    }
}

impl ChatRequest {
    /// A request for `model` with no messages yet.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }
    /// Appends a message.
    pub fn message(mut self, message: ChatMessage) -> Self {
        self.messages.push(message);
        self
    }
    /// Sets `temperature`.
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = Some(t);
        self
    }
    /// Sets `max_tokens`.
    pub fn max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }
    /// Sets `seed`.
    pub fn seed(mut self, seed: i64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Sets `tools`.
    pub fn tools(mut self, tools: Vec<Tool>) -> Self {
        self.tools = Some(tools);
        self
    }
    /// Sets any other parameter (`logprobs`, `top_logprobs`, `logit_bias`, ...).
    pub fn with(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }
}

/// A message's content: text, or an array of content parts (text, images).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// OpenAI content parts, kept as JSON.
    Parts(Vec<Value>),
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Text(s) => write!(f, "Text([redacted; {} bytes])", s.len()),
            Content::Parts(p) => write!(f, "Parts([redacted; {} parts])", p.len()),
        }
    }
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Content::Text(s)
    }
}
impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Content::Text(s.to_owned())
    }
}

/// One message of a conversation, in a request or a response.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, `developer`.
    #[serde(default)]
    pub role: String,
    /// The text (or content parts); `None` for an assistant message that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Optional participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls the model made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `role: tool`: the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The chain of thought of reasoning models (Qwen3, DeepSeek-R1), apart from `content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// A refusal message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

impl std::fmt::Debug for ChatMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatMessage")
            .field("role", &self.role)
            .field("content", &self.content)
            .field("tool_calls", &self.tool_calls.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl Zeroize for ChatMessage {
    fn zeroize(&mut self) {
        match &mut self.content {
            Some(Content::Text(s)) => s.zeroize(),
            Some(Content::Parts(parts)) => parts.iter_mut().for_each(wipe_value),
            None => {}
        }
        for s in [
            &mut self.name,
            &mut self.reasoning_content,
            &mut self.refusal,
            &mut self.tool_call_id,
        ]
        .into_iter()
        .flatten()
        {
            s.zeroize();
        }
        for call in self.tool_calls.iter_mut().flatten() {
            call.function.name.zeroize();
            call.function.arguments.zeroize();
            wipe_map(&mut call.function.extra);
            wipe_map(&mut call.extra);
        }
        wipe_map(&mut self.extra);
    }
}

impl ChatMessage {
    /// A message with `role` and text `content`.
    pub fn new(role: impl Into<String>, content: impl Into<Content>) -> Self {
        Self {
            role: role.into(),
            content: Some(content.into()),
            ..Self::default()
        }
    }
    /// A `system` message.
    pub fn system(content: impl Into<Content>) -> Self {
        Self::new("system", content)
    }
    /// A `user` message.
    pub fn user(content: impl Into<Content>) -> Self {
        Self::new("user", content)
    }
    /// An `assistant` message.
    pub fn assistant(content: impl Into<Content>) -> Self {
        Self::new("assistant", content)
    }
    /// A `tool` message answering the call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<Content>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new("tool", content)
        }
    }
    /// The text content, when it is plain text.
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            Some(Content::Text(s)) => Some(s),
            _ => None,
        }
    }
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `function` today.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDefinition,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Tool {
    /// A function tool with a JSON-schema `parameters` object.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        Self {
            kind: "function".into(),
            function: FunctionDefinition {
                name: name.into(),
                description: Some(description.into()),
                parameters: Some(parameters),
                extra: Extra::new(),
            },
            extra: Extra::new(),
        }
    }
}

/// A function definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// The function's name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Every other field (`strict`, ...).
    #[serde(flatten)]
    pub extra: Extra,
}

/// A tool call the model made.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id.
    #[serde(default)]
    pub id: String,
    /// Always `function` today.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

fn function_kind() -> String {
    "function".into()
}

impl std::fmt::Debug for ToolCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolCall")
            .field("id", &self.id)
            .field("function", &self.function.name)
            .finish_non_exhaustive()
    }
}

/// A function call: the name and the arguments as a JSON string.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    #[serde(default)]
    pub name: String,
    /// The arguments, a JSON document as a string.
    #[serde(default)]
    pub arguments: String,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A chat completion (`"object": "chat.completion"`), decrypted.
///
/// Its strings are wiped when it is dropped (see the module docs).
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
    /// What the server and this client report about the request's protection.
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
    pub fn to_json(&self, pretty: bool) -> nomyo_core::SecretBuf {
        let mut out = nomyo_core::SecretBuf::with_capacity(4096);
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
    fn wipe(&mut self) {
        self.message.zeroize();
        if let Some(v) = &mut self.logprobs {
            wipe_value(v);
        }
        wipe_map(&mut self.extra);
    }
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

pub(crate) fn wipe_map(m: &mut Extra) {
    for (mut k, mut v) in std::mem::take(m) {
        k.zeroize();
        wipe_value(&mut v);
    }
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model id to put in [`ChatRequest::model`].
    pub id: String,
    /// The tiers that allow it (a nomyo-rs server extension; empty otherwise).
    #[serde(default)]
    pub security_tiers: Vec<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
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

/// The `_metadata` object (docs/PROTOCOL.md §1.7): what the server
/// reports, plus what this client adds (`payload_id`, `processed_at`,
/// `is_encrypted`, `encryption_algorithm`), as the Python client does.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The request's `X-Payload-ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_id: Option<String>,
    /// Unix seconds when the server processed the request.
    #[serde(
        default,
        deserialize_with = "lenient_opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub processed_at: Option<i64>,
    /// Always `true` for this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_encrypted: Option<bool>,
    /// `hybrid-aes256-rsa4096` for v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    /// `success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<String>,
    /// The tier that served the request (`standard`, `high`, `maximum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_tier: Option<String>,
    /// The server's memory protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_protection: Option<MemoryProtectionInfo>,
    /// The server's GPU, hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_device: Option<CudaDevice>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `_metadata.memory_protection`: what the server reports about its memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryProtectionInfo {
    /// `linux`, `windows`, `darwin`, ...
    #[serde(default)]
    pub platform: String,
    /// Whether `mlock` succeeded.
    #[serde(default)]
    pub memory_locking: bool,
    /// Whether buffers are zeroed.
    #[serde(default)]
    pub secure_zeroing: bool,
    /// Whether core dumps are suppressed.
    #[serde(default)]
    pub core_dump_prevention: bool,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `_metadata.cuda_device`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CudaDevice {
    /// Whether a GPU is available.
    #[serde(default)]
    pub available: bool,
    /// SHA-256 hex of the device name, or empty.
    #[serde(default)]
    pub device_hash: String,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Accepts an integer or a float (some servers send `time.time()`).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(lenient_opt_i64(d)?.unwrap_or(0))
}

fn lenient_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<serde_json::Number>::deserialize(d)?;
    Ok(v.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_round_trip() {
        let wire = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1764300000.5,
            "model": "m",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant", "content": null,
                    "reasoning_content": "thinking",
                    "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}],
                    "audio": {"id": "a"}
                },
                "finish_reason": "tool_calls",
                "logprobs": {"content": []}
            }],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                      "prompt_tokens_details": {"cached_tokens": 0}},
            "service_tier": "default",
            "_metadata": {"payload_id": "p", "processed_at": 17, "is_encrypted": true,
                "security_tier": "high",
                "memory_protection": {"platform": "linux", "memory_locking": true,
                    "secure_zeroing": true, "core_dump_prevention": false},
                "cuda_device": {"available": false, "device_hash": ""},
                "worker": "w1"}
        });
        let c: ChatCompletion = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(c.created, 1764300000);
        let m = &c.choices[0].message;
        assert_eq!(m.reasoning_content.as_deref(), Some("thinking"));
        let calls = m.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.name, "weather");
        assert_eq!(m.extra["audio"]["id"], "a");
        assert_eq!(c.extra["service_tier"], "default");
        assert_eq!(c.metadata.security_tier.as_deref(), Some("high"));
        assert_eq!(c.metadata.extra["worker"], "w1");
        assert_eq!(c.usage.as_ref().unwrap().total_tokens, 7);
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        assert_eq!(back["choices"][0]["logprobs"], json!({"content": []}));
        assert_eq!(back["_metadata"]["memory_protection"]["platform"], "linux");
    }

    #[test]
    fn request_passes_unknown_parameters() {
        let r = ChatRequest::new("m")
            .message(ChatMessage::user("hi"))
            .seed(7)
            .tools(vec![Tool::function(
                "f",
                "does f",
                json!({"type": "object"}),
            )])
            .with("logprobs", json!(true))
            .with("n", json!(2));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["seed"], 7);
        assert_eq!(v["logprobs"], true);
        assert_eq!(v["n"], 2);
        assert_eq!(v["tools"][0]["function"]["name"], "f");
        assert_eq!(v["tools"][0]["type"], "function");
        let back: ChatRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back.n, Some(2));
        assert_eq!(back.extra["logprobs"], true);
    }

    #[test]
    fn zeroize_request_and_json_output() {
        let mut r = ChatRequest::new("m").message(ChatMessage::user("secret"));
        r.zeroize();
        assert!(r.messages.is_empty());
        let c: ChatCompletion = serde_json::from_value(json!({
            "choices": [{"message": {"role": "assistant", "content": "hi"}}],
            "_metadata": {"payload_id": "p"}
        }))
        .unwrap();
        let out: Value = serde_json::from_slice(c.to_json(true).expose_secret()).unwrap();
        assert_eq!(out["_metadata"]["payload_id"], "p");
        assert_eq!(out["choices"][0]["message"]["content"], "hi");
    }

    #[test]
    fn debug_hides_text() {
        let r = ChatRequest::new("m").message(ChatMessage::user("my secret diagnosis"));
        assert!(!format!("{r:?}").contains("diagnosis"));
        let c: ChatCompletion = serde_json::from_value(json!({
            "choices": [{"message": {"role": "assistant", "content": "secret answer"}}]
        }))
        .unwrap();
        assert_eq!(c.text(), Some("secret answer"));
        assert!(!format!("{c:?}").contains("answer"));
    }
}
