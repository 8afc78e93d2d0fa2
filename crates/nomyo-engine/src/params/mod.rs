//! The OpenAI chat-completion parameters the engine honours, parsed and checked
//! once before a request is queued.
//!
//! Every message names the field and the accepted range, never the value the
//! client sent (values may be prompt text).
//!
//! The types here are what a checked request holds; [`parse`] and
//! [`parse_with_defaults`] read a request body into them.

use nomyo_backend::{BackendError, Rejection};
use zeroize::Zeroizing;

mod body;
mod messages;
mod options;
#[cfg(test)]
mod tests;

pub use body::{fold_seed, parse, parse_with_defaults};

/// A parameter with a bad value (`invalid_value`, naming the parameter).
fn invalid(param: &str, msg: impl Into<String>) -> BackendError {
    BackendError::InvalidRequest(Rejection::invalid_value(param, msg))
}

/// A parameter the embedded model does not implement (`unsupported_parameter`).
fn unsupported(param: &str, msg: impl Into<String>) -> BackendError {
    BackendError::InvalidRequest(Rejection::unsupported(param, msg))
}

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
