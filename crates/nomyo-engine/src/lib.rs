//! The embedded inference engine: a GGUF model run in-process with llama.cpp,
//! served as a [`Backend`] so that `nomyo serve` needs no inference server and
//! plaintext never leaves the endpoint's process.
//!
//! - The model loads on a background thread; [`Backend::is_ready`] is false until
//!   it is loaded and warmed up ([`Engine::wait_ready`] waits for that).
//! - Requests follow OpenAI chat semantics: the model's own chat template
//!   ([`template`]), `temperature`, `top_p`, `seed`, `max_tokens`, `stop`, `n`,
//!   `response_format` (JSON object or schema, through llama.cpp grammar
//!   sampling), `frequency_penalty`, `presence_penalty`, `logit_bias`, true
//!   `usage` counts; [`Backend::chat_stream`] yields `chat.completion.chunk`s as
//!   tokens are produced.
//! - One inference thread runs up to [`EngineConfig::parallel`] requests at
//!   once, continuously batched: each decode step gives every running request
//!   its next token, and a new request's prompt joins between steps, a chunk
//!   at a time. Each request is a sequence of its own in llama.cpp's context
//!   (it attends to its own tokens only; its cells are removed when it ends;
//!   nothing is cached from one request to another). Up to
//!   [`EngineConfig::queue_capacity`] more wait, in arrival order, and further
//!   requests get [`BackendError::Unavailable`] (503 with `Retry-After`). A
//!   client that goes away cancels its request, queued or running.
//! - Nothing here logs a prompt or a completion; llama.cpp's own log lines go to
//!   `tracing` only when debug logging is enabled at start-up, and are dropped otherwise.
//!
//! [`Backend`]: nomyo_backend::Backend
//! [`Backend::is_ready`]: nomyo_backend::Backend::is_ready
//! [`Backend::chat_stream`]: nomyo_backend::Backend::chat_stream
//! [`BackendError::Unavailable`]: nomyo_backend::BackendError::Unavailable

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use nomyo_backend::TokenTimings;

pub mod context;
pub mod params;
pub mod paths;
pub mod response;
pub mod template;
pub mod text;

mod backend;
mod config;
mod start;
mod worker;

pub use config::{
    EngineConfig, EngineError, DEFAULT_CONTEXT, DEFAULT_PARALLEL, DEFAULT_QUEUE, DEFAULT_THREADS,
    MAX_PARALLEL,
};

use worker::Job;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    Loading = 0,
    Ready = 1,
    Failed = 2,
}

pub(crate) struct Shared {
    state: AtomicU8,
    ready_tx: watch::Sender<State>,
    /// The loaded model, for tokenising off the inference thread (llama.cpp's
    /// vocabulary is read-only once loaded).
    model: OnceLock<Arc<llama_cpp_2::model::LlamaModel>>,
    /// Where the worker reports per-token timings (set once by the server).
    timings: OnceLock<Arc<dyn TokenTimings>>,
}

impl Shared {
    fn state(&self) -> State {
        match self.state.load(Ordering::SeqCst) {
            1 => State::Ready,
            2 => State::Failed,
            _ => State::Loading,
        }
    }
}

/// The embedded model as a [`Backend`](nomyo_backend::Backend).
pub struct Engine {
    shared: Arc<Shared>,
    jobs: SyncSender<Job>,
    model_id: String,
    context_size: u32,
    parallel: usize,
    /// What a request that omits a sampling parameter gets: the model's own
    /// recommendation (`general.sampling.*`) where its file carries one, else
    /// the engine's defaults.
    sampling: params::SamplingDefaults,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model_id", &self.model_id)
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Whether the model is still loading (neither loaded nor failed).
    pub fn is_loading(&self) -> bool {
        *self.shared.ready_tx.borrow() == State::Loading
    }

    /// Waits until the model is loaded (or failed to load).
    pub async fn wait_ready(&self) -> Result<(), EngineError> {
        let mut rx = self.shared.ready_tx.subscribe();
        let state = *rx
            .wait_for(|s| *s != State::Loading)
            .await
            .map_err(|_| EngineError::LoadFailed)?;
        match state {
            State::Ready => Ok(()),
            _ => Err(EngineError::LoadFailed),
        }
    }

    /// How many tokens the model's tokenizer makes of `text` (special tokens
    /// such as `<|im_start|>` parsed as such, no BOS added), as `usage` counts
    /// them; `None` until the model is loaded.
    pub fn count_tokens(&self, text: &str) -> Option<usize> {
        let model = self.shared.model.get()?;
        Some(model.vocab().tokenize(text.as_bytes(), false, true).len())
    }

    /// The model id this engine serves.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The tokens one request may use (prompt plus answer): the context per
    /// sequence, as configured or from the model.
    pub fn context_size(&self) -> u32 {
        self.context_size
    }

    /// Requests decoding at once.
    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// The sampling parameters a request that omits them gets: the model
    /// file's `general.sampling.*` recommendation where it has one, else
    /// [`params::SamplingDefaults::ENGINE`].
    pub fn sampling_defaults(&self) -> params::SamplingDefaults {
        self.sampling
    }

    /// The loaded model's shape from llama.cpp's hyperparameters (what the
    /// KV cache is sized by); `None` until the model is loaded.
    pub fn model_shape(&self) -> Option<context::ModelShape> {
        self.shared
            .model
            .get()
            .map(|m| context::ModelShape::of_loaded(m))
    }
}
