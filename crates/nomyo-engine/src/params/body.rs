//! Reading a request body: the entry points, the refusal of parameters the
//! embedded model does not implement, the checks of numeric fields, and the
//! seed.

use serde_json::{Map, Value};

use nomyo_backend::BackendError;

use super::messages::parse_messages;
use super::options::{parse_format, parse_logit_bias, parse_stop};
use super::{
    invalid, unsupported, GenerationRequest, SamplingDefaults, SamplingParams, MAX_CHOICES,
};

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
