//! How many tokens one request may use: the context per sequence.
//!
//! The engine runs one sequence per request (prompt plus answer), `parallel`
//! of them at once. A sequence's context is `--context N` when given, else
//! the context the model was trained for (`n_ctx_train` in the GGUF
//! metadata), bounded by a memory budget for the whole KV cache that
//! llama.cpp allocates (context × parallel tokens; the engine wipes it when
//! idle):
//!
//! ```text
//! KV bytes per token = layers × KV heads × (key head dim + value head dim) × bytes per element
//! default context    = min(n_ctx_train, KV_CACHE_BUDGET_BYTES / (KV bytes per token × parallel))
//! ```
//!
//! The cache holds f16 elements (llama.cpp's default cache type, which the
//! engine uses): 2 bytes each. SmolLM2-135M: 30 × 3 × (64 + 64) × 2 =
//! 23,040 bytes per token, so 4 sequences of its 8192 trained tokens take
//! 720 MiB, within the 1 GiB budget.

use std::path::Path;

use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;

/// The KV cache budget (all sequences) that bounds the default context: 1 GiB.
pub const KV_CACHE_BUDGET_BYTES: u64 = 1 << 30;
/// Bytes of one KV cache element (f16, llama.cpp's default cache type).
pub const KV_CACHE_BYTES_PER_ELEMENT: u64 = 2;
/// The smallest context accepted.
pub const MIN_CONTEXT: u32 = 64;
/// The largest context accepted when the model does not say (its metadata
/// could not be read; loading it will then fail and say why).
pub const MAX_CONTEXT: u32 = 1_048_576;

/// What the model's metadata says about its context and KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    /// The context the model was trained for (`n_ctx_train`).
    pub n_ctx_train: u32,
    /// Transformer layers.
    pub n_layer: u32,
    /// Key/value heads (grouped-query attention shares them).
    pub n_head_kv: u32,
    /// Key head dimension (`{arch}.attention.key_length`, else embedding / heads).
    pub head_dim_k: u32,
    /// Value head dimension (`{arch}.attention.value_length`, else embedding / heads).
    pub head_dim_v: u32,
}

impl ModelShape {
    /// KV cache bytes one token of context takes (see the module docs).
    pub fn kv_bytes_per_token(&self) -> u64 {
        u64::from(self.n_layer)
            * u64::from(self.n_head_kv)
            * (u64::from(self.head_dim_k) + u64::from(self.head_dim_v))
            * KV_CACHE_BYTES_PER_ELEMENT
    }

    /// The context per sequence used when none is configured, with
    /// `parallel` sequences: the trained context, the whole cache bounded by
    /// [`KV_CACHE_BUDGET_BYTES`], at least [`MIN_CONTEXT`].
    pub fn default_context(&self, parallel: usize) -> u32 {
        let per_token = self
            .kv_bytes_per_token()
            .saturating_mul(parallel.max(1) as u64)
            .max(1);
        let bound = u32::try_from(KV_CACHE_BUDGET_BYTES / per_token).unwrap_or(u32::MAX);
        self.n_ctx_train.min(bound).max(MIN_CONTEXT)
    }

    /// The largest context accepted (`--context` above it is refused).
    pub fn max_context(&self) -> u32 {
        self.n_ctx_train.max(MIN_CONTEXT)
    }

    /// Reads the shape from `path`'s metadata: llama.cpp reads the GGUF
    /// header and the vocabulary, no weights (`{arch}.context_length`,
    /// `block_count`, `attention.head_count`, `attention.head_count_kv`,
    /// `embedding_length`, `attention.key_length` / `value_length`). `Err`
    /// with the reason when it cannot be read.
    pub fn read(path: &Path) -> Result<Self, String> {
        Self::read_with_sampling(path).map(|(shape, _)| shape)
    }

    /// [`Self::read`], and the sampling defaults the file recommends
    /// (`general.sampling.*`, [`crate::params::SamplingDefaults::from_metadata`]),
    /// from the same read of the metadata.
    pub fn read_with_sampling(
        path: &Path,
    ) -> Result<(Self, crate::params::SamplingDefaults), String> {
        let backend = crate::worker::backend()?;
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model =
            LlamaModel::load_from_file(backend, path, &params).map_err(|e| e.to_string())?;
        let arch = model
            .meta_val_str("general.architecture")
            .map_err(|_| "the model names no architecture".to_owned())?;
        let num = |key: &str| -> Option<u32> {
            model
                .meta_val_str(&format!("{arch}.{key}"))
                .ok()
                .and_then(|v| v.trim().parse().ok())
        };
        let need =
            |key: &str| num(key).ok_or_else(|| format!("the model's metadata has no {arch}.{key}"));
        let n_head = need("attention.head_count")?.max(1);
        let n_embd = need("embedding_length")?;
        let shape = Self {
            n_ctx_train: need("context_length")?,
            n_layer: need("block_count")?,
            // llama.cpp's default when absent: as many KV heads as heads.
            n_head_kv: num("attention.head_count_kv").unwrap_or(n_head),
            head_dim_k: num("attention.key_length").unwrap_or(n_embd / n_head),
            head_dim_v: num("attention.value_length").unwrap_or(n_embd / n_head),
        };
        if shape.n_ctx_train == 0 || shape.kv_bytes_per_token() == 0 {
            return Err("the model's metadata gives no context or attention shape".into());
        }
        let sampling =
            crate::params::SamplingDefaults::from_metadata(|k| model.meta_val_str(k).ok());
        Ok((shape, sampling))
    }

    /// The shape of a loaded model, from llama.cpp's own hyperparameters.
    pub(crate) fn of_loaded(model: &LlamaModel) -> Self {
        let n_head = model.n_head().max(1);
        let n_embd = u32::try_from(model.n_embd()).unwrap_or(0);
        let arch = model.meta_val_str("general.architecture").ok();
        let dim = |what: &str| -> u32 {
            arch.as_deref()
                .and_then(|a| model.meta_val_str(&format!("{a}.attention.{what}")).ok())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(n_embd / n_head)
        };
        Self {
            n_ctx_train: model.n_ctx_train(),
            n_layer: model.n_layer(),
            n_head_kv: model.n_head_kv(),
            head_dim_k: dim("key_length"),
            head_dim_v: dim("value_length"),
        }
    }
}

/// The context per sequence to run with, `parallel` sequences at once:
/// `requested` (checked against the model) or the model's default. `Err` is
/// a message for a usage error.
pub fn resolve(
    requested: Option<u32>,
    shape: Option<&ModelShape>,
    parallel: usize,
) -> Result<u32, String> {
    let max = shape.map_or(MAX_CONTEXT, ModelShape::max_context);
    match (requested, shape) {
        (Some(n), _) if !(MIN_CONTEXT..=max).contains(&n) => Err(match shape {
            Some(s) => format!(
                "context {n} is out of range: from {MIN_CONTEXT} to {} tokens (the context the model was trained for)",
                s.n_ctx_train
            ),
            None => format!("context {n} is out of range: from {MIN_CONTEXT} to {MAX_CONTEXT} tokens"),
        }),
        (Some(n), _) => Ok(n),
        (None, Some(s)) => Ok(s.default_context(parallel)),
        // Unreadable metadata: loading will fail and say why; until then a
        // small context.
        (None, None) => Ok(crate::DEFAULT_CONTEXT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> ModelShape {
        ModelShape {
            n_ctx_train: 8192,
            n_layer: 30,
            n_head_kv: 3,
            head_dim_k: 64,
            head_dim_v: 64,
        }
    }

    #[test]
    fn kv_size_and_default_follow_the_formula() {
        let s = smollm2();
        assert_eq!(s.kv_bytes_per_token(), 23_040);
        assert_eq!(s.default_context(1), 8192);
        assert_eq!(s.default_context(4), 8192);
        // 1 GiB / (23,040 x 8) = 5825 tokens per sequence.
        assert_eq!(s.default_context(8), 5825);
        // A model whose trained context does not fit the budget is bounded by it.
        let big = ModelShape {
            n_ctx_train: 131_072,
            n_layer: 32,
            n_head_kv: 8,
            head_dim_k: 128,
            head_dim_v: 128,
        };
        assert_eq!(big.kv_bytes_per_token(), 131_072);
        assert_eq!(big.default_context(1), 8192);
        assert_eq!(big.default_context(4), 2048);
    }

    #[test]
    fn requested_contexts_are_checked_against_the_model() {
        let s = smollm2();
        assert_eq!(resolve(None, Some(&s), 4), Ok(8192));
        assert_eq!(resolve(None, Some(&s), 16), Ok(2912));
        // A configured context is per sequence, whatever the parallelism.
        assert_eq!(resolve(Some(512), Some(&s), 16), Ok(512));
        assert_eq!(resolve(Some(8192), Some(&s), 4), Ok(8192));
        for bad in [0, 1, 63, 8193] {
            let e = resolve(Some(bad), Some(&s), 4).expect_err("out of range");
            assert!(e.contains("from 64 to 8192"), "{e}");
        }
        assert_eq!(resolve(None, None, 4), Ok(crate::DEFAULT_CONTEXT));
        assert!(resolve(Some(0), None, 1).is_err());
    }
}
