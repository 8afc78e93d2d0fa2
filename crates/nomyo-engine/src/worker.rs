//! The inference thread: owns llama.cpp's model and context, loads the model,
//! then runs queued requests one at a time.
//!
//! Everything llama.cpp does happens on this one OS thread (plus llama.cpp's own
//! compute threads), never on the tokio reactor. Requests wait in a bounded
//! queue in front of it ([`crate::Engine`] refuses new ones when it is full), so
//! a request waits at most for the requests queued before it, each of which is
//! bounded by its `max_tokens` and the context size.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

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

use nomyo_backend::{BackendError, Rejection};

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

/// Sequences the context holds at once (one request at a time).
const SEQUENCES: u32 = 1;

/// What the worker needs to start.
pub(crate) struct WorkerConfig {
    pub model_path: PathBuf,
    pub threads: i32,
    /// Tokens per sequence (one request: prompt plus answer).
    pub context_size: u32,
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
            shared.set_state(State::Failed);
            // Answer whatever is queued, and anything that still arrives.
            for job in jobs {
                let _ = job.events.send(Event::Failed(BackendError::Internal(
                    "embedded model failed to load".into(),
                )));
            }
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

    // One sequence at a time: the context is the per-sequence context times
    // the sequences run at once (one).
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.context_size * SEQUENCES))
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size)
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads)
        .with_n_seq_max(SEQUENCES);
    let mut ctx = match backend().and_then(|b| {
        model
            .new_context(b, ctx_params)
            .map_err(|e| format!("could not create a context: {e}"))
    }) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("nomyo: the embedded model could not be started: {msg}");
            shared.set_state(State::Failed);
            for job in jobs {
                let _ = job.events.send(Event::Failed(BackendError::Internal(
                    "embedded model failed to start".into(),
                )));
            }
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
        "embedded model ready"
    );
    shared.set_state(State::Ready);

    let gen = Generator {
        model: &model,
        template: &template,
        batch_size: config.batch_size,
        context: config.context_size as usize,
    };
    for job in jobs {
        if job.events.is_closed() {
            tracing::debug!(request_id = %job.request_id, "request cancelled while queued");
            continue;
        }
        let wait_ms = job.queued_at.elapsed().as_millis() as u64;
        let t0 = Instant::now();
        let events = job.events.clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            gen.run(&mut ctx, &job.request, &job.events)
        }));
        ctx.clear_kv_cache();
        match outcome {
            Ok(Ok(Some(usage))) => {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                tracing::debug!(
                    request_id = %job.request_id,
                    wait_ms,
                    run_ms = ms as u64,
                    prompt_tokens = usage.prompt_tokens,
                    completion_tokens = usage.completion_tokens,
                    "embedded completion"
                );
                let _ = events.send(Event::Done(usage));
            }
            Ok(Ok(None)) => {
                tracing::debug!(request_id = %job.request_id, "request cancelled by the client");
            }
            Ok(Err(e)) => {
                tracing::debug!(request_id = %job.request_id, error = %e, "embedded completion failed");
                let _ = events.send(Event::Failed(e));
            }
            Err(_) => {
                tracing::error!(request_id = %job.request_id, "inference panicked");
                let _ = events.send(Event::Failed(BackendError::Internal(
                    "inference panicked".into(),
                )));
            }
        }
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
    batch_size: u32,
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

impl Generator<'_> {
    /// Runs one request. `Ok(None)` when the client went away.
    fn run(
        &self,
        ctx: &mut LlamaContext<'_>,
        req: &GenerationRequest,
        events: &UnboundedSender<Event>,
    ) -> Result<Option<Usage>, BackendError> {
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
        let result = self.run_tokens(ctx, req, &tokens, events);
        wipe(&mut tokens);
        result
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

    /// Evaluates `tokens[from..]` at positions `from..`, logits for the last one.
    /// Returns the batch index of the last token's logits.
    fn feed(
        &self,
        ctx: &mut LlamaContext<'_>,
        tokens: &[LlamaToken],
        from: usize,
    ) -> Result<i32, BackendError> {
        let chunk_len = self.batch_size as usize;
        let mut last_idx = 0;
        let mut batch = LlamaBatch::new(chunk_len, 1);
        let mut start = from;
        while start < tokens.len() {
            let end = (start + chunk_len).min(tokens.len());
            batch.clear();
            for (i, t) in tokens[start..end].iter().enumerate() {
                let pos = (start + i) as i32;
                let last = start + i == tokens.len() - 1;
                batch
                    .add(*t, pos, &[0], last)
                    .map_err(|e| internal("batch", e))?;
            }
            ctx.decode(&mut batch).map_err(|e| internal("decode", e))?;
            last_idx = batch.n_tokens() - 1;
            start = end;
        }
        Ok(last_idx)
    }

    fn run_tokens(
        &self,
        ctx: &mut LlamaContext<'_>,
        req: &GenerationRequest,
        prompt: &[LlamaToken],
        events: &UnboundedSender<Event>,
    ) -> Result<Option<Usage>, BackendError> {
        let n_ctx = self.context.min(ctx.n_ctx() as usize);
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
        let vocab = self.model.vocab();
        // Samplers first: a bad schema fails before any compute.
        let mut samplers = (0..req.n)
            .map(|i| self.sampler(req, seed_for_choice(req.sampling.seed, i)))
            .collect::<Result<Vec<_>, _>>()?;

        let mut logits_idx = self.feed(ctx, prompt, 0)?;
        if events.send(Event::Started).is_err() {
            return Ok(None);
        }

        let mut usage = Usage {
            prompt_tokens: prompt.len() as u32,
            completion_tokens: 0,
        };
        let mut batch = LlamaBatch::new(1, 1);
        let mut piece = Vec::with_capacity(32);
        for (choice, sampler) in samplers.iter_mut().enumerate() {
            let choice = choice as u32;
            if choice > 0 {
                // Back to the end of the prompt: drop the previous choice and
                // re-evaluate the prompt's last token to get its logits again.
                let removed = ctx
                    .clear_kv_cache_seq(Some(0), Some(prompt.len() as u32 - 1), None)
                    .map_err(|e| internal("kv", e))?;
                if !removed {
                    return Err(internal("kv", "could not rewind to the prompt"));
                }
                logits_idx = self.feed(ctx, prompt, prompt.len() - 1)?;
            }
            let mut text = TextAssembler::new(req.stop.clone());
            let mut pos = prompt.len() as i32;
            let mut generated = 0u32;
            let finish = loop {
                if events.is_closed() {
                    return Ok(None);
                }
                if generated >= budget {
                    break FinishReason::Length;
                }
                let token = sampler.sample(ctx, logits_idx);
                if vocab.is_eog(token) {
                    break FinishReason::Stop;
                }
                generated += 1;
                piece.clear();
                vocab.token_to_piece_into(token, &mut piece, false, None);
                let stopped = text.push(&piece);
                piece.zeroize();
                if let Some(delta) = text.take_delta() {
                    if events.send(Event::Delta(choice, delta)).is_err() {
                        return Ok(None);
                    }
                }
                if stopped {
                    break FinishReason::Stop;
                }
                if generated >= budget {
                    break FinishReason::Length;
                }
                batch.clear();
                batch
                    .add(token, pos, &[0], true)
                    .map_err(|e| internal("batch", e))?;
                ctx.decode(&mut batch).map_err(|e| internal("decode", e))?;
                logits_idx = 0;
                pos += 1;
            };
            if let Some(delta) = text.finish() {
                if events.send(Event::Delta(choice, delta)).is_err() {
                    return Ok(None);
                }
            }
            usage.completion_tokens += generated;
            if events.send(Event::ChoiceDone(choice, finish)).is_err() {
                return Ok(None);
            }
        }
        Ok(Some(usage))
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
