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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::watch;
use zeroize::Zeroizing;

use nomyo_backend::chat::Delta;
use nomyo_backend::{Backend, BackendError, ChatRequest, ChunkStream, TokenTimings};

pub mod context;
pub mod params;
pub mod paths;
pub mod response;
pub mod template;
pub mod text;
mod worker;

use response::{FinishReason, ResponseMeta};
use worker::{Event, Job, WorkerConfig};

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
/// by a KV cache budget: [`context::ModelShape::default_context`].
pub const DEFAULT_CONTEXT: u32 = 2048;
/// Requests that may wait behind the running ones when none is configured.
pub const DEFAULT_QUEUE: usize = 8;
/// Requests decoding at once when none is configured.
///
/// Four: on 2 cores, batching a small model buys fairness (four users see
/// tokens at once instead of three waiting for the first answer) more than
/// throughput; see BENCHMARKS.md. Memory: the KV cache holds context x
/// parallel tokens ([`context`]).
pub const DEFAULT_PARALLEL: usize = 4;
/// The most requests that may decode at once.
pub const MAX_PARALLEL: usize = 64;
/// Tokens per llama.cpp batch during prompt evaluation.
const BATCH_SIZE: u32 = 512;

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
    /// budget ([`context`]); a value must be from [`context::MIN_CONTEXT`]
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

/// The embedded model as a [`Backend`].
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

/// Checks that `path` is a readable GGUF file (by its magic bytes), so that a
/// wrong path fails at start-up with a clear message rather than in the background.
fn check_model_file(path: &Path) -> Result<(), EngineError> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::ModelMissing {
                path: path.to_owned(),
            })
        }
        Err(source) => {
            return Err(EngineError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    let mut magic = [0u8; 4];
    match f.read_exact(&mut magic) {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        Ok(()) => Err(EngineError::NotGguf {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(EngineError::NotGguf {
            path: path.to_owned(),
        }),
        Err(source) => Err(EngineError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Engine {
    /// Checks the configuration and the model file, then starts loading the
    /// model on a background thread and returns at once (not ready yet).
    pub fn start(config: EngineConfig) -> Result<Self, EngineError> {
        let threads = config.threads.unwrap_or(DEFAULT_THREADS);
        if !(1..=512).contains(&threads) {
            return Err(EngineError::Config("threads must be from 1 to 512".into()));
        }
        // A value no model could take is refused before the file is read.
        if let Some(n) = config.context_size {
            context::resolve(Some(n), None, 1).map_err(EngineError::Config)?;
        }
        let parallel = config.parallel.unwrap_or(DEFAULT_PARALLEL);
        if !(1..=MAX_PARALLEL).contains(&parallel) {
            return Err(EngineError::Config(format!(
                "parallel must be from 1 to {MAX_PARALLEL}"
            )));
        }
        if !(1..=10_000).contains(&config.queue_capacity) {
            return Err(EngineError::Config(
                "queue capacity must be from 1 to 10000".into(),
            ));
        }
        check_model_file(&config.model_path)?;
        // The model's shape from its metadata (no weights), read now so that
        // a context it cannot take is refused at start-up. If it cannot be
        // read, the load in the background fails and says why.
        let (shape, sampling) = match context::ModelShape::read_with_sampling(&config.model_path) {
            Ok((s, d)) => (Some(s), d),
            Err(e) => {
                tracing::debug!(error = %e, "model metadata unreadable");
                (None, params::SamplingDefaults::ENGINE)
            }
        };
        let context_size = context::resolve(config.context_size, shape.as_ref(), parallel)
            .map_err(EngineError::Config)?;
        let model_id = config.model_id.clone().unwrap_or_else(|| {
            let name = config
                .model_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "embedded".into());
            name.strip_suffix(".gguf")
                .map(str::to_owned)
                .unwrap_or(name)
        });

        let (ready_tx, _) = watch::channel(State::Loading);
        let shared = Arc::new(Shared {
            state: AtomicU8::new(State::Loading as u8),
            ready_tx,
            model: OnceLock::new(),
            timings: OnceLock::new(),
        });
        let (jobs, rx) = sync_channel(config.queue_capacity);
        let worker_config = WorkerConfig {
            model_path: config.model_path.clone(),
            threads: threads as i32,
            context_size,
            parallel: parallel as u32,
            batch_size: BATCH_SIZE.min(context_size).max(parallel as u32),
        };
        let worker_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("nomyo-engine".into())
            .stack_size(8 << 20)
            .spawn(move || worker::run(worker_config, worker_shared, rx))
            .map_err(EngineError::Thread)?;
        tracing::debug!(
            model = %model_id,
            threads,
            context = context_size,
            parallel,
            n_ctx_train = shape.map(|s| s.n_ctx_train),
            kv_bytes_per_token = shape.map(|s| s.kv_bytes_per_token()),
            temperature = sampling.temperature,
            top_p = sampling.top_p,
            "embedded model loading"
        );
        Ok(Self {
            shared,
            jobs,
            model_id,
            context_size,
            parallel,
            sampling,
        })
    }

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

    fn submit(
        &self,
        request: params::GenerationRequest,
        request_id: &str,
    ) -> Result<UnboundedReceiver<Event>, BackendError> {
        if self.shared.state() == State::Failed {
            return Err(BackendError::Internal(
                "embedded model failed to load".into(),
            ));
        }
        let (events, rx) = unbounded_channel();
        let job = Job {
            request,
            events,
            request_id: request_id.to_owned(),
            queued_at: Instant::now(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => {
                tracing::debug!(request_id, "embedded model queue full");
                Err(BackendError::Unavailable {
                    retry_after: Some(Duration::from_secs(1)),
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(BackendError::Internal("inference thread stopped".into()))
            }
        }
    }
}

fn worker_gone() -> BackendError {
    BackendError::Internal("inference thread stopped".into())
}

#[async_trait::async_trait]
impl Backend for Engine {
    fn name(&self) -> &str {
        "embedded"
    }

    fn models(&self) -> Vec<String> {
        vec![self.model_id.clone()]
    }

    fn is_ready(&self) -> bool {
        self.shared.state() == State::Ready
    }

    fn observe_tokens(&self, timings: Arc<dyn TokenTimings>) {
        let _ = self.shared.timings.set(timings);
    }

    async fn chat(&self, request: ChatRequest) -> Result<Value, BackendError> {
        let req = params::parse_with_defaults(&request.body, false, &self.sampling)?;
        let n = req.n as usize;
        let mut rx = self.submit(req, &request.request_id)?;
        let meta = ResponseMeta::new(&self.model_id);
        let mut texts: Vec<Zeroizing<String>> =
            (0..n).map(|_| Zeroizing::new(String::new())).collect();
        let mut finishes = vec![FinishReason::Stop; n];
        while let Some(event) = rx.recv().await {
            match event {
                Event::Started => {}
                Event::Delta(i, d) => {
                    if let Some(t) = texts.get_mut(i as usize) {
                        t.push_str(&d);
                    }
                }
                Event::ChoiceDone(i, f) => {
                    if let Some(slot) = finishes.get_mut(i as usize) {
                        *slot = f;
                    }
                }
                Event::Done(usage) => {
                    let choices: Vec<(String, FinishReason)> = texts
                        .iter()
                        .zip(&finishes)
                        .map(|(t, f)| (t.as_str().to_owned(), *f))
                        .collect();
                    return Ok(meta.completion(&choices, usage));
                }
                Event::Failed(e) => return Err(e),
            }
        }
        Err(worker_gone())
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, BackendError> {
        let req = params::parse_with_defaults(&request.body, true, &self.sampling)?;
        let include_usage = req.include_usage;
        let mut rx = self.submit(req, &request.request_id)?;
        // Wait until the prompt is accepted and evaluated, so that a bad request
        // gets its own status instead of a stream that fails at once.
        match rx.recv().await {
            Some(Event::Started) => {}
            Some(Event::Failed(e)) => return Err(e),
            _ => return Err(worker_gone()),
        }
        let meta = ResponseMeta::new(&self.model_id);
        let first = meta.chunk(response::start_delta(), None, include_usage);

        struct St {
            rx: UnboundedReceiver<Event>,
            meta: ResponseMeta,
            include_usage: bool,
            done: bool,
        }
        let rest = futures::stream::unfold(
            St {
                rx,
                meta,
                include_usage,
                done: false,
            },
            |mut st| async move {
                if st.done {
                    return None;
                }
                loop {
                    let item = match st.rx.recv().await {
                        Some(Event::Started) => continue,
                        Some(Event::Delta(_, d)) => {
                            Ok(st
                                .meta
                                .chunk(response::text_delta(d), None, st.include_usage))
                        }
                        Some(Event::ChoiceDone(_, f)) => {
                            Ok(st.meta.chunk(Delta::default(), Some(f), st.include_usage))
                        }
                        Some(Event::Done(usage)) => {
                            st.done = true;
                            if st.include_usage {
                                Ok(st.meta.usage_chunk(usage))
                            } else {
                                return None;
                            }
                        }
                        Some(Event::Failed(e)) => {
                            st.done = true;
                            Err(e)
                        }
                        None => {
                            st.done = true;
                            Err(worker_gone())
                        }
                    };
                    return Some((item, st));
                }
            },
        );
        Ok(futures::stream::once(async move { Ok(first) })
            .chain(rest)
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_names_the_fetch_script() {
        let e = Engine::start(EngineConfig::new("/nonexistent/model.gguf")).expect_err("missing");
        assert!(matches!(e, EngineError::ModelMissing { .. }));
        let msg = e.to_string();
        assert!(msg.contains("scripts/fetch-model.sh"), "{msg}");
        assert!(msg.contains("/nonexistent/model.gguf"), "{msg}");
    }

    #[test]
    fn non_gguf_file_is_refused_at_start() {
        let dir = std::env::temp_dir().join(format!("nomyo-engine-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let f = dir.join("not-a-model.gguf");
        std::fs::write(&f, b"hello world").expect("write");
        let e = Engine::start(EngineConfig::new(&f)).expect_err("not gguf");
        assert!(matches!(e, EngineError::NotGguf { .. }), "{e}");
        std::fs::write(&f, b"GG").expect("write");
        assert!(matches!(
            Engine::start(EngineConfig::new(&f)),
            Err(EngineError::NotGguf { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let mut c = EngineConfig::new("/nonexistent.gguf");
        c.threads = Some(0);
        assert!(matches!(Engine::start(c), Err(EngineError::Config(_))));
        let mut c = EngineConfig::new("/nonexistent.gguf");
        c.queue_capacity = 0;
        assert!(matches!(Engine::start(c), Err(EngineError::Config(_))));
        let mut c = EngineConfig::new("/nonexistent.gguf");
        c.context_size = Some(1);
        assert!(matches!(Engine::start(c), Err(EngineError::Config(_))));
        for bad in [0, MAX_PARALLEL + 1] {
            let mut c = EngineConfig::new("/nonexistent.gguf");
            c.parallel = Some(bad);
            assert!(matches!(Engine::start(c), Err(EngineError::Config(_))));
        }
    }
}
