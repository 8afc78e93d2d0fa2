//! The OpenAI chat-completion parameters the engine honours, parsed and checked
//! once before a request is queued.
//!
//! Every message names the field and the accepted range, never the value the
//! client sent (values may be prompt text).

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use nomyo_backend::{BackendError, Rejection};

/// At most this many stop sequences (the OpenAI limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// At most this many choices (`n`) per request: each is generated in turn.
pub const MAX_CHOICES: u32 = 4;
/// Longest stop sequence accepted, in bytes.
const MAX_STOP_LEN: usize = 256;

/// One chat message, ready for the chat template.
pub struct Message {
    /// `system`, `user`, `assistant` or `tool` (`developer` becomes `system`).
    pub role: String,
    /// The text content; text parts of an array content are joined.
    pub content: Zeroizing<String>,
}

/// A constraint on the output's shape (`response_format`).
#[derive(Clone, Debug, PartialEq)]
pub enum OutputFormat {
    /// Free text (`{"type": "text"}` or no `response_format`).
    Text,
    /// Any JSON object (`json_object`).
    JsonObject,
    /// JSON matching this schema (`json_schema`), serialised.
    JsonSchema(String),
}

/// The sampling and stopping parameters of one request.
#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// `temperature` (0 = greedy). OpenAI default 1.
    pub temperature: f32,
    /// `top_p` nucleus sampling; 1 = off.
    pub top_p: f32,
    /// `top_k` (llama.cpp extension); 0 = off.
    pub top_k: i32,
    /// `min_p` (llama.cpp extension); 0 = off.
    pub min_p: f32,
    /// `frequency_penalty` in -2..=2.
    pub frequency_penalty: f32,
    /// `presence_penalty` in -2..=2.
    pub presence_penalty: f32,
    /// `logit_bias`: token id and bias in -100..=100.
    pub logit_bias: Vec<(i32, f32)>,
    /// The sampler seed (`seed`, or a random one).
    pub seed: u32,
    /// Whether the client gave a seed.
    pub seeded: bool,
}

/// What a request that omits a sampling parameter gets. OpenAI's defaults
/// (temperature 1, top_p 1) suit large models; a small one such as the
/// default SmolLM2-135M-Instruct then often answers with gibberish, so the
/// engine's defaults are lower (chosen by trying them on that model; see the
/// crate README). Explicit values in a request always win.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingDefaults {
    /// `temperature` when the request gives none.
    pub temperature: f32,
    /// `top_p` when the request gives none.
    pub top_p: f32,
    /// `top_k` when the request gives none (0 = off).
    pub top_k: i32,
    /// `min_p` when the request gives none (0 = off).
    pub min_p: f32,
}

impl SamplingDefaults {
    /// The engine's defaults for a model whose metadata carries none.
    pub const ENGINE: SamplingDefaults = SamplingDefaults {
        temperature: 0.2,
        top_p: 0.9,
        top_k: 0,
        min_p: 0.0,
    };

    /// The defaults a GGUF file recommends in its `general.sampling.*`
    /// metadata (`temp`, `top_p`, `top_k`, `min_p`), each falling back to
    /// [`ENGINE`](Self::ENGINE) when absent or out of range. `get` returns a
    /// metadata value as text (llama-cpp-2's `meta_val_str`).
    pub fn from_metadata(get: impl Fn(&str) -> Option<String>) -> SamplingDefaults {
        let num = |key: &str, lo: f32, hi: f32| {
            get(key)
                .and_then(|v| v.trim().parse::<f32>().ok())
                .filter(|x| x.is_finite() && (lo..=hi).contains(x))
        };
        let d = Self::ENGINE;
        SamplingDefaults {
            temperature: num("general.sampling.temp", 0.0, 2.0).unwrap_or(d.temperature),
            top_p: num("general.sampling.top_p", 0.0, 1.0).unwrap_or(d.top_p),
            top_k: num("general.sampling.top_k", 0.0, 1_000_000.0)
                .map(|k| k as i32)
                .unwrap_or(d.top_k),
            min_p: num("general.sampling.min_p", 0.0, 1.0).unwrap_or(d.min_p),
        }
    }
}

impl Default for SamplingDefaults {
    fn default() -> Self {
        Self::ENGINE
    }
}

/// A checked request: what the worker needs to run it.
pub struct GenerationRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Sampling parameters.
    pub sampling: SamplingParams,
    /// `max_completion_tokens` / `max_tokens`; `None` = up to the context's end.
    pub max_tokens: Option<u32>,
    /// `stop` sequences (not included in the answer).
    pub stop: Vec<String>,
    /// `n`: the number of choices.
    pub n: u32,
    /// `response_format`.
    pub format: OutputFormat,
    /// `stream_options.include_usage` (streaming only).
    pub include_usage: bool,
}

impl std::fmt::Debug for GenerationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No message content, no stop strings (they can echo the prompt).
        f.debug_struct("GenerationRequest")
            .field("messages", &self.messages.len())
            .field("sampling", &self.sampling)
            .field("max_tokens", &self.max_tokens)
            .field("stop", &self.stop.len())
            .field("n", &self.n)
            .field("format", &std::mem::discriminant(&self.format))
            .finish()
    }
}

/// A parameter with a bad value (`invalid_value`, naming the parameter).
fn invalid(param: &str, msg: impl Into<String>) -> BackendError {
    BackendError::InvalidRequest(Rejection::invalid_value(param, msg))
}

/// A parameter the embedded model does not implement (`unsupported_parameter`).
fn unsupported(param: &str, msg: impl Into<String>) -> BackendError {
    BackendError::InvalidRequest(Rejection::unsupported(param, msg))
}

/// Reads an optional number field, checking it is finite and within `lo..=hi`.
fn number(
    body: &Map<String, Value>,
    key: &str,
    lo: f64,
    hi: f64,
) -> Result<Option<f64>, BackendError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let x = v
                .as_f64()
                .ok_or_else(|| invalid(key, format!("`{key}` must be a number")))?;
            if !x.is_finite() || x < lo || x > hi {
                return Err(invalid(
                    key,
                    format!("`{key}` must be between {lo} and {hi}"),
                ));
            }
            Ok(Some(x))
        }
    }
}

/// Reads an optional non-negative integer field no larger than `hi`.
fn integer(
    body: &Map<String, Value>,
    key: &str,
    lo: u64,
    hi: u64,
) -> Result<Option<u64>, BackendError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let x = v
                .as_u64()
                .filter(|x| (lo..=hi).contains(x))
                .ok_or_else(|| {
                    invalid(key, format!("`{key}` must be an integer from {lo} to {hi}"))
                })?;
            Ok(Some(x))
        }
    }
}

/// Maps an OpenAI `seed` (any 64-bit integer) onto llama.cpp's 32-bit seeds.
///
/// llama.cpp treats `0xFFFF_FFFF` as "pick a random seed", so the result stays
/// below it: reducing modulo `2^32 - 1` keeps every seed deterministic.
pub fn fold_seed(seed: i64) -> u32 {
    // Two's-complement reinterpretation is intended: -1 and 2^64-1 are one seed.
    let wide = seed as u64;
    // The remainder is < 2^32 - 1, so it fits.
    (wide % u64::from(u32::MAX)) as u32
}

fn parse_seed(body: &Map<String, Value>) -> Result<(u32, bool), BackendError> {
    match body.get("seed") {
        None | Some(Value::Null) => Ok((fold_seed(rand::random::<i64>()), false)),
        Some(v) => {
            let s = v
                .as_i64()
                .or_else(|| v.as_u64().map(|u| u as i64))
                .ok_or_else(|| invalid("seed", "`seed` must be an integer"))?;
            Ok((fold_seed(s), true))
        }
    }
}

fn parse_content(index: usize, value: Option<&Value>) -> Result<Zeroizing<String>, BackendError> {
    match value {
        None | Some(Value::Null) => Ok(Zeroizing::new(String::new())),
        Some(Value::String(s)) => Ok(Zeroizing::new(s.clone())),
        Some(Value::Array(parts)) => {
            let mut text = Zeroizing::new(String::new());
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str);
                match (kind, part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some("text"), None) => {
                        return Err(invalid("messages", format!(
                            "messages[{index}]: a text content part needs a string `text`"
                        )))
                    }
                    _ => {
                        return Err(unsupported("messages", format!(
                            "messages[{index}]: only text content parts are supported by the embedded model"
                        )))
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(invalid(
            "messages",
            format!("messages[{index}].content must be a string or an array of text parts"),
        )),
    }
}

fn parse_messages(body: &Map<String, Value>) -> Result<Vec<Message>, BackendError> {
    let list = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("messages", "`messages` must be an array of messages"))?;
    if list.is_empty() {
        return Err(invalid("messages", "`messages` must not be empty"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| invalid("messages", format!("messages[{i}] must be an object")))?;
        let role = obj
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("messages", format!("messages[{i}].role must be a string")))?;
        let role = match role {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "tool",
            _ => {
                return Err(invalid(
                    "messages",
                    format!(
                    "messages[{i}].role must be one of system, developer, user, assistant, tool"
                ),
                ))
            }
        };
        if obj.get("tool_calls").is_some_and(|v| !v.is_null()) {
            return Err(unsupported(
                "messages",
                "tool calls are not supported by the embedded model",
            ));
        }
        out.push(Message {
            role: role.to_owned(),
            content: parse_content(i, obj.get("content"))?,
        });
    }
    Ok(out)
}

fn parse_stop(body: &Map<String, Value>) -> Result<Vec<String>, BackendError> {
    let list: Vec<&Value> = match body.get("stop") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(_)) => vec![&body["stop"]],
        Some(Value::Array(a)) => a.iter().collect(),
        Some(_) => {
            return Err(invalid(
                "stop",
                "`stop` must be a string or an array of strings",
            ))
        }
    };
    if list.len() > MAX_STOP_SEQUENCES {
        return Err(invalid(
            "stop",
            format!("`stop` may hold at most {MAX_STOP_SEQUENCES} sequences"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        let s = v
            .as_str()
            .ok_or_else(|| invalid("stop", "`stop` must be a string or an array of strings"))?;
        if s.is_empty() || s.len() > MAX_STOP_LEN {
            return Err(invalid(
                "stop",
                format!("each `stop` sequence must be 1 to {MAX_STOP_LEN} bytes long"),
            ));
        }
        out.push(s.to_owned());
    }
    Ok(out)
}

fn parse_format(body: &Map<String, Value>) -> Result<OutputFormat, BackendError> {
    let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(OutputFormat::Text);
    };
    let kind = rf
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("response_format", "`response_format.type` must be a string"))?;
    match kind {
        "text" => Ok(OutputFormat::Text),
        "json_object" => Ok(OutputFormat::JsonObject),
        "json_schema" => {
            let schema = rf
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .filter(|s| s.is_object() || s.is_boolean())
                .ok_or_else(|| {
                    invalid(
                        "response_format",
                        "`response_format.json_schema.schema` must be a JSON schema object",
                    )
                })?;
            Ok(OutputFormat::JsonSchema(schema.to_string()))
        }
        _ => Err(invalid(
            "response_format",
            "`response_format.type` must be text, json_object or json_schema",
        )),
    }
}

fn parse_logit_bias(body: &Map<String, Value>) -> Result<Vec<(i32, f32)>, BackendError> {
    let Some(map) = body.get("logit_bias").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let map = map
        .as_object()
        .ok_or_else(|| invalid("logit_bias", "`logit_bias` must map token ids to numbers"))?;
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let id: i32 = k
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| invalid("logit_bias", "`logit_bias` keys must be token ids"))?;
        let bias = v
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                invalid(
                    "logit_bias",
                    "`logit_bias` values must be numbers from -100 to 100",
                )
            })?;
        out.push((id, bias as f32));
    }
    Ok(out)
}

/// Checks an OpenAI chat-completion request body and extracts what the engine
/// honours. `streaming` is true for [`chat_stream`](nomyo_backend::Backend::chat_stream).
/// Omitted sampling parameters get [`SamplingDefaults::ENGINE`].
pub fn parse(
    body: &Map<String, Value>,
    streaming: bool,
) -> Result<GenerationRequest, BackendError> {
    parse_with_defaults(body, streaming, &SamplingDefaults::ENGINE)
}

/// [`parse`], with the model's own sampling defaults for omitted parameters.
pub fn parse_with_defaults(
    body: &Map<String, Value>,
    streaming: bool,
    defaults: &SamplingDefaults,
) -> Result<GenerationRequest, BackendError> {
    for unsupported_key in ["tools", "functions"] {
        if body
            .get(unsupported_key)
            .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(unsupported(
                unsupported_key,
                format!(
                    "`{unsupported_key}` (tool calling) is not supported by the embedded model"
                ),
            ));
        }
    }
    if body.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(
            "logprobs",
            "`logprobs` is not supported by the embedded model",
        ));
    }

    let messages = parse_messages(body)?;
    let temperature =
        number(body, "temperature", 0.0, 2.0)?.map_or(defaults.temperature, |x| x as f32);
    let top_p = number(body, "top_p", 0.0, 1.0)?.map_or(defaults.top_p, |x| x as f32);
    let top_k = integer(body, "top_k", 0, 1_000_000)?.map_or(defaults.top_k, |x| x as i32);
    let min_p = number(body, "min_p", 0.0, 1.0)?.map_or(defaults.min_p, |x| x as f32);
    let frequency_penalty = number(body, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32;
    let presence_penalty = number(body, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32;
    let logit_bias = parse_logit_bias(body)?;
    let (seed, seeded) = parse_seed(body)?;

    // `max_completion_tokens` is the current name; `max_tokens` the older one.
    let max_tokens = match integer(body, "max_completion_tokens", 1, u64::from(u32::MAX))? {
        Some(n) => Some(n),
        None => integer(body, "max_tokens", 1, u64::from(u32::MAX))?,
    }
    .map(|n| n as u32);

    let n = integer(body, "n", 1, u64::from(MAX_CHOICES))?.unwrap_or(1) as u32;
    if streaming && n != 1 {
        return Err(unsupported(
            "n",
            "`n` must be 1 when streaming from the embedded model",
        ));
    }
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    Ok(GenerationRequest {
        messages,
        sampling: SamplingParams {
            temperature,
            top_p,
            top_k,
            min_p,
            frequency_penalty,
            presence_penalty,
            logit_bias,
            seed,
            seeded,
        },
        max_tokens,
        stop: parse_stop(body)?,
        n,
        format: parse_format(body)?,
        include_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    fn err(v: Value) -> String {
        match parse(&body(v), false) {
            Err(BackendError::InvalidRequest(m)) => m.message,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    fn rejection(v: Value) -> Rejection {
        match parse(&body(v), false) {
            Err(BackendError::InvalidRequest(r)) => r,
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn rejections_carry_openai_code_and_param() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let r = rejection(json!({"messages": msgs, "temperature": 5}));
        assert_eq!(r.code, Some("invalid_value"));
        assert_eq!(r.param.as_deref(), Some("temperature"));
        assert!(r.message.contains("between 0 and 2"), "{}", r.message);
        let r = rejection(json!({"messages": msgs, "tools": [{"type": "function"}]}));
        assert_eq!(r.code, Some("unsupported_parameter"));
        assert_eq!(r.param.as_deref(), Some("tools"));
        let r = rejection(json!({"messages": msgs, "logprobs": true}));
        assert_eq!(r.code, Some("unsupported_parameter"));
        assert_eq!(r.param.as_deref(), Some("logprobs"));
        let r = rejection(json!({"messages": []}));
        assert_eq!(r.param.as_deref(), Some("messages"));
    }

    #[test]
    fn defaults_suit_a_small_model_and_explicit_values_win() {
        let r = parse(
            &body(json!({"messages": [{"role": "user", "content": "hi"}]})),
            false,
        )
        .expect("valid");
        assert_eq!(r.sampling.temperature, 0.2);
        assert_eq!(r.sampling.top_p, 0.9);
        assert_eq!(r.sampling.top_k, 0);
        assert_eq!(r.sampling.min_p, 0.0);
        // A null is an omission; any explicit value wins, even OpenAI's 1.
        let r = parse(
            &body(json!({"messages": [{"role": "user", "content": "hi"}],
                         "temperature": null, "top_p": 1})),
            false,
        )
        .expect("valid");
        assert_eq!(r.sampling.temperature, 0.2);
        assert_eq!(r.sampling.top_p, 1.0);
        let r = parse(
            &body(json!({"messages": [{"role": "user", "content": "hi"}],
                         "temperature": 1.0, "top_p": 0.5})),
            false,
        )
        .expect("valid");
        assert_eq!(r.sampling.temperature, 1.0);
        assert_eq!(r.sampling.top_p, 0.5);
        assert_eq!(r.max_tokens, None);
        assert_eq!(r.n, 1);
        assert!(!r.sampling.seeded);
        assert!(r.stop.is_empty());
        assert_eq!(r.format, OutputFormat::Text);
    }

    #[test]
    fn reads_every_supported_field() {
        let r = parse(
            &body(json!({
                "messages": [
                    {"role": "developer", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
                ],
                "temperature": 0.7, "top_p": 0.9, "seed": 42, "max_tokens": 7,
                "stop": ["\n\n", "END"], "n": 2,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
                "logit_bias": {"15": -100},
                "presence_penalty": 0.5
            })),
            false,
        )
        .expect("valid");
        assert_eq!(r.messages[0].role, "system");
        assert_eq!(r.messages[1].content.as_str(), "ab");
        assert_eq!(r.sampling.temperature, 0.7);
        assert_eq!(r.sampling.top_p, 0.9);
        assert_eq!(r.sampling.seed, 42);
        assert!(r.sampling.seeded);
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!(r.stop, vec!["\n\n".to_owned(), "END".to_owned()]);
        assert_eq!(r.n, 2);
        assert_eq!(
            r.format,
            OutputFormat::JsonSchema(r#"{"type":"object"}"#.into())
        );
        assert_eq!(r.sampling.logit_bias, vec![(15, -100.0)]);
        assert_eq!(r.sampling.presence_penalty, 0.5);
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let r = parse(
            &body(json!({"messages": [{"role": "user", "content": "x"}],
                         "max_tokens": 9, "max_completion_tokens": 3})),
            false,
        )
        .expect("valid");
        assert_eq!(r.max_tokens, Some(3));
    }

    #[test]
    fn rejects_bad_input_with_the_field_name() {
        let m = |extra: Value| {
            let mut b = json!({"messages": [{"role": "user", "content": "x"}]});
            for (k, v) in extra.as_object().expect("object") {
                b[k] = v.clone();
            }
            err(b)
        };
        assert!(err(json!({})).contains("messages"));
        assert!(err(json!({"messages": []})).contains("empty"));
        assert!(err(json!({"messages": [{"role": "wizard", "content": "x"}]})).contains("role"));
        assert!(err(json!({"messages": [{"role": "user", "content": 5}]})).contains("content"));
        assert!(
            err(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}))
                .contains("text")
        );
        assert!(m(json!({"temperature": 3})).contains("temperature"));
        assert!(m(json!({"temperature": "hot"})).contains("temperature"));
        assert!(m(json!({"top_p": -0.1})).contains("top_p"));
        assert!(m(json!({"max_tokens": 0})).contains("max_tokens"));
        assert!(m(json!({"max_tokens": -5})).contains("max_tokens"));
        assert!(m(json!({"n": 9})).contains("`n`"));
        assert!(m(json!({"seed": "x"})).contains("seed"));
        assert!(m(json!({"stop": ["a", "b", "c", "d", "e"]})).contains("stop"));
        assert!(m(json!({"stop": [""]})).contains("stop"));
        assert!(m(json!({"stop": 3})).contains("stop"));
        assert!(m(json!({"response_format": {"type": "yaml"}})).contains("response_format"));
        assert!(m(json!({"response_format": {"type": "json_schema"}})).contains("schema"));
        assert!(m(json!({"tools": [{"type": "function"}]})).contains("tool"));
        assert!(m(json!({"logprobs": true})).contains("logprobs"));
        assert!(m(json!({"logit_bias": {"a": 1}})).contains("logit_bias"));
    }

    #[test]
    fn errors_never_echo_content() {
        let secret = "TOP-SECRET-PROMPT";
        let e = err(json!({"messages": [{"role": secret, "content": secret}]}));
        assert!(!e.contains(secret));
        let e = err(
            json!({"messages": [{"role": "user", "content": "x"}], "stop": [secret, secret, secret, secret, secret]}),
        );
        assert!(!e.contains(secret));
    }

    #[test]
    fn streaming_needs_one_choice() {
        let b = body(json!({"messages": [{"role": "user", "content": "x"}], "n": 2}));
        assert!(parse(&b, false).is_ok());
        assert!(matches!(
            parse(&b, true),
            Err(BackendError::InvalidRequest(_))
        ));
    }

    #[test]
    fn seeds_fold_deterministically_below_the_random_marker() {
        assert_eq!(fold_seed(1), 1);
        assert_eq!(fold_seed(0), 0);
        assert_ne!(fold_seed(-1), u32::MAX);
        assert_eq!(fold_seed(i64::from(u32::MAX)), 0);
        assert_eq!(fold_seed(-1), fold_seed(-1));
        assert!(fold_seed(i64::MIN) < u32::MAX);
    }

    #[test]
    fn a_model_s_metadata_sets_the_defaults_and_bad_values_fall_back() {
        let meta = |key: &str| match key {
            "general.sampling.temp" => Some("0.6".to_owned()),
            "general.sampling.top_p" => Some("0.95".to_owned()),
            "general.sampling.top_k" => Some("20".to_owned()),
            "general.sampling.min_p" => Some("nonsense".to_owned()),
            _ => None,
        };
        let d = SamplingDefaults::from_metadata(meta);
        assert_eq!(d.temperature, 0.6);
        assert_eq!(d.top_p, 0.95);
        assert_eq!(d.top_k, 20);
        assert_eq!(d.min_p, SamplingDefaults::ENGINE.min_p);
        assert_eq!(
            SamplingDefaults::from_metadata(|_| Some("7".to_owned())).temperature,
            SamplingDefaults::ENGINE.temperature
        );
        assert_eq!(
            SamplingDefaults::from_metadata(|_| None),
            SamplingDefaults::ENGINE
        );
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let r = parse_with_defaults(&body(json!({"messages": msgs})), false, &d).expect("valid");
        assert_eq!((r.sampling.temperature, r.sampling.top_k), (0.6, 20));
        let r = parse_with_defaults(&body(json!({"messages": msgs, "top_k": 0})), false, &d)
            .expect("valid");
        assert_eq!(r.sampling.top_k, 0);
    }
}
