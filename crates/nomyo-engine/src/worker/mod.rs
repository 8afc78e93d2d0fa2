//! The inference thread: owns llama.cpp's model and context, loads the model,
//! then runs the queued requests, several at once (continuous batching).
//!
//! Everything llama.cpp does happens on this one OS thread (plus llama.cpp's own
//! compute threads), never on the tokio reactor. The context holds `parallel`
//! sequences, one per running request, each with its own part of the KV cache
//! (`kv_unified` off: a sequence's attention reads its own cells only). Every
//! step is one `llama_decode` of one batch: the next token of every sequence
//! that is generating, then prompt tokens of sequences that joined, a chunk at
//! a time ([`PREFILL_CHUNK`] while others generate), so that a long prompt
//! does not stall everyone's next token. A request joins between steps, in
//! the order it arrived; one that ends (finished, failed, or its client gone)
//! has its cells removed at once and its slot serves the next request. When
//! no request has run for [`IDLE_WIPE`], the whole cache is wiped (its
//! buffers overwritten with zeros).
//!
//! Requests wait in a bounded queue in front of the thread ([`crate::Engine`]
//! refuses new ones when it is full), so a request waits at most for the
//! requests before it, each bounded by its `max_tokens` and its context.
//!
//! The parts: [`load`](mod@load) reads the model and its chat template and
//! warms it up; [`scheduler`] runs the batch loop (admission, one decode per
//! step, release, the idle wipe); [`sequence`] is one running request and how
//! a sampled token advances it; [`sampler`] builds a choice's sampler chain.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use tokio::sync::mpsc::UnboundedSender;

use nomyo_backend::BackendError;

use crate::params::GenerationRequest;
use crate::response::{FinishReason, Usage};
use crate::{Shared, State};

mod load;
mod sampler;
mod scheduler;
mod sequence;

pub(crate) use load::backend;
use load::{load, warm_up, Loaded, Progress};
use scheduler::Scheduler;
use sequence::Generator;

/// What the worker tells the waiting request.
pub(crate) enum Event {
    /// The prompt is evaluated; generation starts.
    Started,
    /// New answer text for a choice.
    Delta(u32, String),
    /// A choice ended.
    ChoiceDone(u32, FinishReason),
    /// All choices ended.
    Done(Usage),
    /// The request failed (nothing more follows).
    Failed(BackendError),
}

/// A queued request.
pub(crate) struct Job {
    pub request: GenerationRequest,
    pub events: UnboundedSender<Event>,
    pub request_id: String,
    pub queued_at: Instant,
}

/// Prompt tokens a joining sequence may add to a step while other sequences
/// are generating: a long prompt is evaluated over several steps, and each
/// of those steps also gives every running sequence its next token. (With
/// nothing generating, a step takes a whole batch of prompt tokens.)
pub(crate) const PREFILL_CHUNK: usize = 128;

/// How long the engine stays idle before it wipes the whole KV cache.
/// A finished sequence's cells are removed at once (no later sequence can
/// attend to them), but their data stays in memory until overwritten; this
/// wipe overwrites it. Not after every request: at several megabytes per
/// hundred tokens of context, the wipe would delay a request that arrives
/// right after another.
pub(crate) const IDLE_WIPE: Duration = Duration::from_millis(500);

/// What the worker needs to start.
pub(crate) struct WorkerConfig {
    pub model_path: PathBuf,
    pub threads: i32,
    /// Tokens per sequence (one request: prompt plus answer).
    pub context_size: u32,
    /// Sequences decoding at once.
    pub parallel: u32,
    pub batch_size: u32,
}

/// The worker thread's body: load, warm up, then serve the queue until every
/// sender is gone.
pub(crate) fn run(config: WorkerConfig, shared: Arc<Shared>, jobs: Receiver<Job>) {
    let started = Instant::now();
    let loaded = match load(&config) {
        Ok(l) => l,
        Err(msg) => {
            eprintln!("nomyo: the embedded model could not be loaded: {msg}");
            tracing::error!(error = %msg, "embedded model failed to load");
            fail_all(&shared, jobs, "embedded model failed to load");
            return;
        }
    };
    let Loaded {
        model,
        template,
        progress_printed,
    } = loaded;
    let model = Arc::new(model);
    let _ = shared.model.set(Arc::clone(&model));

    // `parallel` sequences, each with `context_size` cells of its own.
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.context_size * config.parallel))
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size)
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads)
        .with_n_seq_max(config.parallel)
        .with_kv_unified(false);
    let mut ctx = match backend().and_then(|b| {
        model
            .new_context(b, ctx_params)
            .map_err(|e| format!("could not create a context: {e}"))
    }) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("nomyo: the embedded model could not be started: {msg}");
            fail_all(&shared, jobs, "embedded model failed to start");
            return;
        }
    };

    // Warm-up: one decode pages the weights in and sets up llama.cpp's compute
    // graph, so the first request does not pay for it.
    warm_up(&model, &mut ctx);
    let elapsed = started.elapsed();
    if progress_printed || elapsed >= Progress::QUIET_FOR {
        eprintln!("nomyo: model loaded in {:.1} s", elapsed.as_secs_f64());
    }
    tracing::info!(
        load_ms = elapsed.as_millis() as u64,
        threads = config.threads,
        context = config.context_size,
        parallel = config.parallel,
        "embedded model ready"
    );
    shared.set_state(State::Ready);

    let context =
        (config.context_size as usize).min(ctx.n_ctx() as usize / config.parallel as usize);
    let mut scheduler = Scheduler {
        gen: Generator {
            model: &model,
            template: &template,
            context,
        },
        slots: (0..config.parallel).map(|_| None).collect(),
        batch: LlamaBatch::new(config.batch_size as usize, 1),
        batch_size: config.batch_size as usize,
        arrivals: 0,
        timings: &shared.timings,
        poisoned: false,
    };
    scheduler.serve(&mut ctx, &jobs);
    ctx.clear_kv_cache();
}

/// Answers every queued request, and any that still arrives, with `why`.
fn fail_all(shared: &Shared, jobs: Receiver<Job>, why: &str) {
    shared.set_state(State::Failed);
    for job in jobs {
        let _ = job
            .events
            .send(Event::Failed(BackendError::Internal(why.into())));
    }
}

impl Shared {
    pub(crate) fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::SeqCst);
        // `send` would drop the value when nobody is subscribed yet (a model
        // that fails, or loads, before the first `wait_ready`), which would
        // then wait forever: store it regardless.
        self.ready_tx.send_replace(state);
    }
}
