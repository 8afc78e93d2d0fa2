//! The sampler chain of one choice: logit bias, penalties, the grammar of a
//! `response_format` (llama.cpp's JSON-schema converter), then greedy or
//! top-k / top-p / min-p / temperature sampling with the choice's seed.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use nomyo_backend::{BackendError, Rejection};

use crate::params::{GenerationRequest, OutputFormat};

/// The sampler chain of one choice of `req`, sampling with `seed`.
pub(super) fn sampler(
    model: &LlamaModel,
    req: &GenerationRequest,
    seed: u32,
) -> Result<LlamaSampler, BackendError> {
    let s = &req.sampling;
    let n_vocab = model.n_vocab();
    let mut chain = Vec::new();
    if !s.logit_bias.is_empty() {
        if s.logit_bias.iter().any(|(id, _)| *id >= n_vocab) {
            return Err(BackendError::InvalidRequest(Rejection::invalid_value(
                "logit_bias",
                format!("`logit_bias` token ids must be below {n_vocab}"),
            )));
        }
        let biases: Vec<LlamaLogitBias> = s
            .logit_bias
            .iter()
            .map(|(id, b)| LlamaLogitBias::new(LlamaToken(*id), *b))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &biases));
    }
    if s.frequency_penalty != 0.0 || s.presence_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            64,
            1.0,
            s.frequency_penalty,
            s.presence_penalty,
        ));
    }
    if let Some(grammar) = grammar(&req.format)? {
        let g = LlamaSampler::grammar(model, &grammar, "root").map_err(|_| {
            BackendError::InvalidRequest(Rejection::unsupported(
                "response_format",
                "`response_format`: the schema could not be turned into a grammar",
            ))
        })?;
        chain.push(g);
    }
    if s.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(s.top_k));
        }
        if s.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(s.top_p, 1));
        }
        if s.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(s.min_p, 1));
        }
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(seed));
    }
    Ok(LlamaSampler::chain_simple(chain))
}

/// The GBNF grammar for a `response_format`, by llama.cpp's own
/// JSON-schema converter (`json_object` is the schema `{"type": "object"}`).
fn grammar(format: &OutputFormat) -> Result<Option<String>, BackendError> {
    let schema = match format {
        OutputFormat::Text => return Ok(None),
        OutputFormat::JsonObject => r#"{"type":"object"}"#,
        OutputFormat::JsonSchema(s) => s.as_str(),
    };
    llama_cpp_2::json_schema_to_grammar(schema)
        .map(Some)
        .map_err(|_| {
            BackendError::InvalidRequest(Rejection::unsupported(
            "response_format",
            "`response_format.json_schema.schema` is not a schema the embedded model can follow",
        ))
        })
}

/// Choice `i` of a request samples with `seed + i` (staying below llama.cpp's
/// "random seed" marker `u32::MAX`), so every choice is reproducible.
pub(super) fn seed_for_choice(seed: u32, i: u32) -> u32 {
    ((u64::from(seed) + u64::from(i)) % u64::from(u32::MAX)) as u32
}
