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

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;
use zeroize::Zeroize;

use nomyo_backend::{BackendError, Rejection, TokenTimings};

use crate::params::{GenerationRequest, OutputFormat};
use crate::response::{FinishReason, Usage};
use crate::template::{ChatTemplate, CHATML_TEMPLATE};
use crate::text::TextAssembler;
use crate::{Shared, State};

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

/// llama.cpp's global backend: initialised once per process (a second
/// `llama_backend_init` is refused), with its logging routed to `tracing`
/// (target `llama-cpp-2`) only when trace logging is on (`-vv`): its
/// thousands of lines per model load (tensor by tensor) never reach stderr
/// at debug level (`-v`) or below.
pub(crate) fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let trace = tracing::enabled!(tracing::Level::TRACE);
            llama_cpp_2::send_logs_to_tracing(
                llama_cpp_2::LogOptions::default().with_logs_enabled(trace),
            );
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Prints load progress on stderr once loading has taken more than a moment.
struct Progress {
    start: Instant,
    last_decile: i32,
    printed: bool,
}

impl Progress {
    const QUIET_FOR: std::time::Duration = std::time::Duration::from_millis(500);

    fn update(&mut self, fraction: f32) {
        let decile = (fraction * 10.0).floor() as i32;
        if decile > self.last_decile && self.start.elapsed() >= Self::QUIET_FOR {
            self.last_decile = decile;
            self.printed = true;
            eprintln!("nomyo: loading model... {}%", decile * 10);
        }
    }
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

struct Loaded {
    model: LlamaModel,
    template: ChatTemplate,
    progress_printed: bool,
}

fn load(config: &WorkerConfig) -> Result<Loaded, String> {
    let backend = backend()?;
    let progress = Arc::new(std::sync::Mutex::new(Progress {
        start: Instant::now(),
        last_decile: 0,
        printed: false,
    }));
    let p = Arc::clone(&progress);
    let params = LlamaModelParams::default().with_progress_callback(move |f| {
        if let Ok(mut p) = p.lock() {
            p.update(f);
        }
        true
    });
    let model = LlamaModel::load_from_file(backend, &config.model_path, &params).map_err(|e| {
        format!(
            "llama.cpp could not read {} ({e}); is it a complete GGUF file?",
            config.model_path.display()
        )
    })?;
    let progress_printed = progress.lock().map(|p| p.printed).unwrap_or(false);

    let vocab = model.vocab();
    let piece = |t: LlamaToken| {
        if t.0 >= 0 && t.0 < vocab.n_tokens() {
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        } else {
            String::new()
        }
    };
    let (bos, eos) = (piece(vocab.bos()), piece(vocab.eos()));
    let source = model
        .chat_template(None)
        .ok()
        .and_then(|t| t.to_string().ok());
    let template = match source.as_deref().map(|s| ChatTemplate::new(s, &bos, &eos)) {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the model's chat template does not compile; using ChatML");
            ChatTemplate::new(CHATML_TEMPLATE, &bos, &eos).map_err(|e| e.to_string())?
        }
        None => {
            tracing::warn!("the model has no chat template; using ChatML");
            ChatTemplate::new(CHATML_TEMPLATE, &bos, &eos).map_err(|e| e.to_string())?
        }
    };
    Ok(Loaded {
        model,
        template,
        progress_printed,
    })
}

fn warm_up(model: &LlamaModel, ctx: &mut LlamaContext<'_>) {
    let vocab = model.vocab();
    let token = if vocab.bos().0 >= 0 {
        vocab.bos()
    } else {
        LlamaToken(0)
    };
    let mut batch = LlamaBatch::new(1, 1);
    if batch.add(token, 0, &[0], true).is_ok() {
        if let Err(e) = ctx.decode(&mut batch) {
            tracing::warn!(error = %e, "warm-up decode failed");
        }
    }
    ctx.clear_kv_cache();
}

struct Generator<'m> {
    model: &'m LlamaModel,
    template: &'m ChatTemplate,
    /// Tokens one request may use (its sequence's share of the context).
    context: usize,
}

fn internal(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(format!("{what}: {e}"))
}

/// Overwrites token ids (prompt tokens encode the prompt) before they are freed.
fn wipe(tokens: &mut [LlamaToken]) {
    for t in tokens.iter_mut() {
        t.0.zeroize();
    }
}

/// One running request: a sequence of the context.
struct Sequence {
    request_id: String,
    events: UnboundedSender<Event>,
    /// Arrival order (prompts are evaluated first come, first served).
    arrival: u64,
    queued_at: Instant,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens in the cache.
    fed: usize,
    /// One sampler per choice; `choice` is the one running.
    samplers: Vec<LlamaSampler>,
    choice: usize,
    stop: Vec<String>,
    text: TextAssembler,
    /// Position of the next token in the cache.
    pos: i32,
    /// The token sampled last, to be decoded in the next step.
    next: Option<LlamaToken>,
    /// Where this sequence's logits are in the batch just decoded.
    logits: Option<i32>,
    generated: u32,
    budget: u32,
    usage: Usage,
    started: bool,
    first_token: Option<Duration>,
    last_token: Option<Instant>,
    gaps: Vec<Duration>,
}

impl Drop for Sequence {
    fn drop(&mut self) {
        wipe(&mut self.prompt);
    }
}

/// What became of a sequence after a step.
enum Outcome {
    Running,
    Done,
    Cancelled,
    Failed(BackendError),
}

struct Scheduler<'m, 's> {
    gen: Generator<'m>,
    /// Slot `i` runs sequence id `i`.
    slots: Vec<Option<Sequence>>,
    batch: LlamaBatch<'static>,
    batch_size: usize,
    arrivals: u64,
    timings: &'s OnceLock<Arc<dyn TokenTimings>>,
    /// A sequence's cells could not be removed: end all and wipe.
    poisoned: bool,
}

impl Scheduler<'_, '_> {
    fn running(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Runs until every sender is gone and every running request has ended.
    fn serve(&mut self, ctx: &mut LlamaContext<'_>, jobs: &Receiver<Job>) {
        let mut open = true;
        let mut wiped = true;
        loop {
            self.drop_cancelled(ctx);
            if self.running() == 0 {
                if !open {
                    return;
                }
                // Idle: wait for a request; wipe the cache if none comes soon.
                let job = if wiped {
                    jobs.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    jobs.recv_timeout(IDLE_WIPE)
                };
                match job {
                    Ok(job) => self.admit(job),
                    Err(RecvTimeoutError::Timeout) => {
                        ctx.clear_kv_cache();
                        wiped = true;
                        tracing::debug!("engine idle: KV cache wiped");
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while open && self.running() < self.slots.len() {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            if self.running() == 0 {
                continue;
            }
            wiped = false;
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(ctx)));
            if step.is_err() || self.poisoned {
                if step.is_err() {
                    tracing::error!("inference panicked");
                }
                for slot in &mut self.slots {
                    if let Some(seq) = slot.take() {
                        let _ = seq.events.send(Event::Failed(BackendError::Internal(
                            "inference failed".into(),
                        )));
                    }
                }
                ctx.clear_kv_cache();
                self.poisoned = false;
                wiped = true;
            }
        }
    }

    /// Ends the sequences whose client went away.
    fn drop_cancelled(&mut self, ctx: &mut LlamaContext<'_>) {
        for id in 0..self.slots.len() {
            if self.slots[id]
                .as_ref()
                .is_some_and(|s| s.events.is_closed())
            {
                self.release(ctx, id, Outcome::Cancelled);
            }
        }
    }

    /// Checks and prepares a request (template, tokens, samplers) and gives
    /// it a free slot; a request that cannot run is answered at once.
    fn admit(&mut self, job: Job) {
        if job.events.is_closed() {
            tracing::debug!(request_id = %job.request_id, "request cancelled while queued");
            return;
        }
        let Some(id) = self.slots.iter().position(Option::is_none) else {
            // Never: a job is taken only when a slot is free.
            let _ = job.events.send(Event::Failed(BackendError::Unavailable {
                retry_after: Some(Duration::from_secs(1)),
            }));
            return;
        };
        let wait = job.queued_at.elapsed();
        if let Some(t) = self.timings.get() {
            t.queued(wait);
        }
        match self.gen.prepare(&job.request) {
            Ok((prompt, samplers, budget)) => {
                self.arrivals += 1;
                tracing::debug!(
                    request_id = %job.request_id,
                    sequence = id,
                    wait_ms = wait.as_millis() as u64,
                    prompt_tokens = prompt.len(),
                    "request joins the batch"
                );
                let usage = Usage {
                    prompt_tokens: prompt.len() as u32,
                    completion_tokens: 0,
                };
                self.slots[id] = Some(Sequence {
                    request_id: job.request_id,
                    events: job.events,
                    arrival: self.arrivals,
                    queued_at: job.queued_at,
                    pos: prompt.len() as i32,
                    prompt,
                    fed: 0,
                    samplers,
                    choice: 0,
                    text: TextAssembler::new(job.request.stop.clone()),
                    stop: job.request.stop,
                    next: None,
                    logits: None,
                    generated: 0,
                    budget,
                    usage,
                    started: false,
                    first_token: None,
                    last_token: None,
                    gaps: Vec::new(),
                });
            }
            Err(e) => {
                tracing::debug!(request_id = %job.request_id, error = %e, "request refused");
                let _ = job.events.send(Event::Failed(e));
            }
        }
    }

    /// One decode: every generating sequence's next token, then prompt
    /// tokens of joining sequences (oldest first), then sampling.
    fn step(&mut self, ctx: &mut LlamaContext<'_>) {
        self.batch.clear();
        let mut in_batch = Vec::with_capacity(self.slots.len());
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let Some(seq) = slot else { continue };
            seq.logits = None;
            if let Some(token) = seq.next.take() {
                if self.batch.add(token, seq.pos, &[id as i32], true).is_err() {
                    continue;
                }
                seq.logits = Some(self.batch.n_tokens() - 1);
                seq.pos += 1;
                in_batch.push(id);
            }
        }
        let generating = in_batch.len();
        let mut room = if generating > 0 {
            PREFILL_CHUNK.min(self.batch_size.saturating_sub(generating))
        } else {
            self.batch_size
        };
        let mut joining: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(id, s)| {
                s.as_ref()
                    .filter(|s| s.fed < s.prompt.len())
                    .map(|s| (s.arrival, id))
            })
            .collect();
        joining.sort_unstable();
        for (_, id) in joining {
            if room == 0 {
                break;
            }
            let Some(seq) = self.slots[id].as_mut() else {
                continue;
            };
            let end = (seq.fed + room).min(seq.prompt.len());
            for i in seq.fed..end {
                let last = i == seq.prompt.len() - 1;
                if self
                    .batch
                    .add(seq.prompt[i], i as i32, &[id as i32], last)
                    .is_err()
                {
                    break;
                }
                if last {
                    seq.logits = Some(self.batch.n_tokens() - 1);
                }
                seq.fed = i + 1;
                room -= 1;
            }
            in_batch.push(id);
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = ctx.decode(&mut self.batch) {
            tracing::error!(error = %e, tokens = self.batch.n_tokens(), "decode failed");
            for id in in_batch {
                self.release(ctx, id, Outcome::Failed(internal("decode", &e)));
            }
            return;
        }
        for id in 0..self.slots.len() {
            let Some(seq) = self.slots[id].as_mut() else {
                continue;
            };
            let Some(idx) = seq.logits.take() else {
                continue;
            };
            let outcome = self.gen.advance(ctx, id, seq, idx, self.timings.get());
            if !matches!(outcome, Outcome::Running) {
                self.release(ctx, id, outcome);
            }
        }
    }

    /// Frees slot `id`: its cells are removed from the cache, its prompt
    /// tokens wiped, and its request told how it ended.
    fn release(&mut self, ctx: &mut LlamaContext<'_>, id: usize, outcome: Outcome) {
        let Some(seq) = self.slots[id].take() else {
            return;
        };
        let removed = matches!(
            ctx.clear_kv_cache_seq(Some(id as u32), None, None),
            Ok(true)
        );
        if !removed || ctx.kv_cache_seq_pos_max(id as i32) != -1 {
            // Cannot happen for a whole sequence; if it did, no later request
            // may see these cells: every sequence ends and the cache is wiped.
            tracing::error!(
                sequence = id,
                "could not remove a sequence's cells; wiping the cache"
            );
            self.poisoned = true;
        }
        let mut gaps = seq.gaps.clone();
        gaps.sort_unstable();
        let gap_ms = |q: f64| {
            gaps.get(((gaps.len() as f64 - 1.0) * q).round() as usize)
                .map(|d| d.as_secs_f64() * 1000.0)
        };
        let run_ms = seq.queued_at.elapsed().as_millis() as u64;
        match outcome {
            Outcome::Done => {
                tracing::debug!(
                    request_id = %seq.request_id,
                    sequence = id,
                    run_ms,
                    ttft_ms = seq.first_token.map(|d| d.as_millis() as u64),
                    itl_p50_ms = gap_ms(0.5),
                    itl_max_ms = gap_ms(1.0),
                    prompt_tokens = seq.usage.prompt_tokens,
                    completion_tokens = seq.usage.completion_tokens,
                    "embedded completion"
                );
                let _ = seq.events.send(Event::Done(seq.usage));
            }
            Outcome::Cancelled => {
                tracing::debug!(request_id = %seq.request_id, sequence = id, "request cancelled by the client");
            }
            Outcome::Failed(e) => {
                tracing::debug!(request_id = %seq.request_id, sequence = id, error = %e, "embedded completion failed");
                let _ = seq.events.send(Event::Failed(e));
            }
            Outcome::Running => {}
        }
    }
}

impl Generator<'_> {
    /// Renders and tokenises a request and builds its samplers: the prompt
    /// tokens, one sampler per choice, and the token budget per choice.
    fn prepare(
        &self,
        req: &GenerationRequest,
    ) -> Result<(Vec<LlamaToken>, Vec<LlamaSampler>, u32), BackendError> {
        let prompt = self.template.render(&req.messages).map_err(|e| {
            tracing::debug!(error = %e, "chat template failed");
            BackendError::InvalidRequest(Rejection::invalid_value(
                "messages",
                "the model's chat template does not accept these messages",
            ))
        })?;
        let vocab = self.model.vocab();
        let bos_text = vocab.token_to_piece(vocab.bos(), true, None);
        let add_bos = vocab.should_add_bos()
            && !(bos_text.is_empty() || prompt.as_bytes().starts_with(&bos_text));
        let mut tokens = vocab.tokenize(prompt.as_bytes(), add_bos, true);
        drop(prompt);
        let checked = self.check(req, &tokens);
        match checked {
            Ok((samplers, budget)) => Ok((tokens, samplers, budget)),
            Err(e) => {
                wipe(&mut tokens);
                Err(e)
            }
        }
    }

    fn check(
        &self,
        req: &GenerationRequest,
        prompt: &[LlamaToken],
    ) -> Result<(Vec<LlamaSampler>, u32), BackendError> {
        let n_ctx = self.context;
        if prompt.is_empty() {
            return Err(BackendError::InvalidRequest(Rejection::invalid_value(
                "messages",
                "the prompt is empty",
            )));
        }
        // At least one token must be generated after the prompt.
        if prompt.len() >= n_ctx {
            return Err(BackendError::InvalidRequest(Rejection::context_length(
                format!(
                    "the conversation is {} tokens long; the embedded model's context holds {n_ctx}",
                    prompt.len()
                ),
            )));
        }
        let room = (n_ctx - prompt.len()) as u32;
        let budget = req.max_tokens.map_or(room, |m| m.min(room));
        // Samplers first: a bad schema fails before any compute.
        let samplers = (0..req.n)
            .map(|i| self.sampler(req, seed_for_choice(req.sampling.seed, i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((samplers, budget))
    }

    /// Samples sequence `id`'s next token from the logits at batch index
    /// `idx`, and sends what it adds to the answer.
    fn advance(
        &self,
        ctx: &mut LlamaContext<'_>,
        id: usize,
        seq: &mut Sequence,
        idx: i32,
        timings: Option<&Arc<dyn TokenTimings>>,
    ) -> Outcome {
        if !seq.started {
            seq.started = true;
            if seq.events.send(Event::Started).is_err() {
                return Outcome::Cancelled;
            }
        }
        let vocab = self.model.vocab();
        let finish = 'choice: {
            if seq.generated >= seq.budget {
                break 'choice FinishReason::Length;
            }
            let Some(sampler) = seq.samplers.get_mut(seq.choice) else {
                return Outcome::Failed(internal("sampler", "missing"));
            };
            let token = sampler.sample(ctx, idx);
            let now = Instant::now();
            match seq.last_token.replace(now) {
                // A later choice's first token follows a rewind, not a gap
                // a reader waits through between tokens: neither is counted.
                None if seq.first_token.is_some() => {}
                None => {
                    let after = now - seq.queued_at;
                    seq.first_token = Some(after);
                    if let Some(t) = timings {
                        t.first_token(after);
                    }
                }
                Some(prev) => {
                    let gap = now - prev;
                    seq.gaps.push(gap);
                    if let Some(t) = timings {
                        t.inter_token(gap);
                    }
                }
            }
            if vocab.is_eog(token) {
                break 'choice FinishReason::Stop;
            }
            seq.generated += 1;
            let mut piece = Vec::with_capacity(32);
            vocab.token_to_piece_into(token, &mut piece, false, None);
            let stopped = seq.text.push(&piece);
            piece.zeroize();
            if let Some(delta) = seq.text.take_delta() {
                if seq
                    .events
                    .send(Event::Delta(seq.choice as u32, delta))
                    .is_err()
                {
                    return Outcome::Cancelled;
                }
            }
            if stopped {
                break 'choice FinishReason::Stop;
            }
            if seq.generated >= seq.budget {
                break 'choice FinishReason::Length;
            }
            seq.next = Some(token);
            return Outcome::Running;
        };
        // The choice ended.
        let choice = seq.choice as u32;
        if let Some(delta) = seq.text.finish() {
            if seq.events.send(Event::Delta(choice, delta)).is_err() {
                return Outcome::Cancelled;
            }
        }
        seq.usage.completion_tokens += seq.generated;
        if seq.events.send(Event::ChoiceDone(choice, finish)).is_err() {
            return Outcome::Cancelled;
        }
        seq.choice += 1;
        if seq.choice >= seq.samplers.len() {
            return Outcome::Done;
        }
        // The next choice: back to the end of the prompt. The answer's cells
        // are removed and the prompt's last token is evaluated again (in the
        // next step) for its logits.
        let last = seq.prompt.len() - 1;
        match ctx.clear_kv_cache_seq(Some(id as u32), Some(last as u32), None) {
            Ok(true) => {}
            _ => return Outcome::Failed(internal("kv", "could not rewind to the prompt")),
        }
        seq.fed = last;
        seq.pos = seq.prompt.len() as i32;
        seq.generated = 0;
        seq.next = None;
        seq.last_token = None;
        seq.text = TextAssembler::new(seq.stop.clone());
        Outcome::Running
    }

    fn sampler(&self, req: &GenerationRequest, seed: u32) -> Result<LlamaSampler, BackendError> {
        let s = &req.sampling;
        let n_vocab = self.model.n_vocab();
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
        if let Some(grammar) = self.grammar(&req.format)? {
            let g = LlamaSampler::grammar(self.model, &grammar, "root").map_err(|_| {
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
    fn grammar(&self, format: &OutputFormat) -> Result<Option<String>, BackendError> {
        let schema = match format {
            OutputFormat::Text => return Ok(None),
            OutputFormat::JsonObject => r#"{"type":"object"}"#,
            OutputFormat::JsonSchema(s) => s.as_str(),
        };
        llama_cpp_2::json_schema_to_grammar(schema).map(Some).map_err(|_| {
            BackendError::InvalidRequest(Rejection::unsupported(
                "response_format",
                "`response_format.json_schema.schema` is not a schema the embedded model can follow",
            ))
        })
    }
}

/// Choice `i` of a request samples with `seed + i` (staying below llama.cpp's
/// "random seed" marker `u32::MAX`), so every choice is reproducible.
fn seed_for_choice(seed: u32, i: u32) -> u32 {
    ((u64::from(seed) + u64::from(i)) % u64::from(u32::MAX)) as u32
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
