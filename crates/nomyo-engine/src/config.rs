//! How to run the engine: its settings with their defaults and bounds, and
//! why it could not start.

use std::path::PathBuf;

use crate::paths;

/// Inference threads when none are configured.
///
/// One: on the 2-core machines this project targets, two threads were faster
/// only on an idle machine and collapsed whenever another process was busy
/// (llama.cpp's threads spin at barriers waiting for each other), while one
/// thread held its speed; see BENCHMARKS.md.
pub const DEFAULT_THREADS: usize = 1;
/// Context per sequence (prompt plus answer, in tokens) when none is
/// configured and the model's metadata cannot be read (loading it then fails
/// anyway). With readable metadata the default is the model's own, bounded
/// by a KV cache budget: [`context::ModelShape::default_context`](crate::context::ModelShape::default_context).
pub const DEFAULT_CONTEXT: u32 = 2048;
/// Requests that may wait behind the running ones when none is configured.
pub const DEFAULT_QUEUE: usize = 8;
/// Requests decoding at once when none is configured.
///
/// Four: on 2 cores, batching a small model buys fairness (four users see
/// tokens at once instead of three waiting for the first answer) more than
/// throughput; see BENCHMARKS.md. Memory: the KV cache holds context x
/// parallel tokens ([`context`](crate::context)).
pub const DEFAULT_PARALLEL: usize = 4;
/// The most requests that may decode at once.
pub const MAX_PARALLEL: usize = 64;

/// How to run the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// The model id served (`/v1/models`, the `model` field of answers);
    /// `None` = the file name without `.gguf`.
    pub model_id: Option<String>,
    /// llama.cpp compute threads; `None` = [`DEFAULT_THREADS`].
    pub threads: Option<usize>,
    /// Tokens one request may use, prompt plus answer: the context per
    /// sequence. `None` = the model's trained context within the KV cache
    /// budget ([`context`](crate::context)); a value must be from [`context::MIN_CONTEXT`](crate::context::MIN_CONTEXT)
    /// to the model's trained context.
    pub context_size: Option<u32>,
    /// Requests that may wait while `parallel` run; more are refused with 503.
    pub queue_capacity: usize,
    /// Requests decoding at once (1 to [`MAX_PARALLEL`]); `None` =
    /// [`DEFAULT_PARALLEL`]. Each is a sequence with a context of its own.
    pub parallel: Option<usize>,
}

impl EngineConfig {
    /// Defaults for the model at `model_path`.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            model_id: None,
            threads: None,
            context_size: None,
            queue_capacity: DEFAULT_QUEUE,
            parallel: None,
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The model file does not exist.
    #[error(
        "model file {} not found; fetch the default model with `{}` (from the repository), \
         or give --model FILE.gguf",
        .path.display(),
        paths::FETCH_SCRIPT
    )]
    ModelMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file is not a GGUF model.
    #[error("{} is not a GGUF model file", .path.display())]
    NotGguf {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read model file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid engine setting: {0}")]
    Config(String),
    /// The inference thread could not be started.
    #[error("cannot start the inference thread: {0}")]
    Thread(#[source] std::io::Error),
    /// llama.cpp could not load the model (details were printed on stderr).
    #[error("the embedded model failed to load")]
    LoadFailed,
}
