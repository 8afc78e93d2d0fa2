//! The request: [`ChatRequest`] and its [`ChatMessage`]s, [`Content`],
//! [`Tool`]s and [`ToolCall`]s (the last also in answers).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroize;

use super::{wipe_map, wipe_value, Extra};

/// A chat-completion request: `{"model": ..., "messages": [...], ...}`.
///
/// ```
/// use nomyo_core::chat::{ChatMessage, ChatRequest};
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
    /// Whether the answer is streamed (`chat.completion.chunk` events).
    /// The client sets it itself for `create_stream`. Anything but `true`,
    /// `false` or `null` is refused with [`STREAM_NOT_BOOLEAN`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "stream_flag"
    )]
    pub stream: Option<bool>,
    /// Every other parameter, passed through unchanged.
    #[serde(flatten)]
    pub extra: Extra,
}

/// What a request whose `stream` is not a boolean (or `null`) is refused
/// with; the parse error's message contains it.
pub const STREAM_NOT_BOOLEAN: &str = "\"stream\" must be true or false";

/// `stream`: a boolean or `null`, without copying any other value.
fn stream_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct Flag;
    impl<'de> serde::de::Visitor<'de> for Flag {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(STREAM_NOT_BOOLEAN)
        }
        fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Self::Value, E> {
            Ok(Some(b))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Flag)
        }
    }
    d.deserialize_option(Flag)
}

impl std::fmt::Debug for ChatRequest {
    /// Shows the shape, never the messages' text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatRequest")
            .field("model", &self.model)
            .field("messages", &self.messages.len())
            .field("stream", &self.stream)
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
    /// `stream` set to a boolean or `null` goes to its typed field, as when
    /// the request is parsed from JSON.
    pub fn with(mut self, key: impl Into<String>, value: Value) -> Self {
        let key = key.into();
        match (key.as_str(), &value) {
            // The typed field, as parsing the JSON would set it.
            ("stream", Value::Bool(b)) => self.stream = Some(*b),
            ("stream", Value::Null) => self.stream = None,
            _ => {
                self.extra.insert(key, value);
            }
        }
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
