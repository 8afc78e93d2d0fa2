//! Loading the model on the inference thread: llama.cpp's global backend,
//! the GGUF file (with progress on stderr when it takes a while), its chat
//! template, and a warm-up decode.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::template::{ChatTemplate, CHATML_TEMPLATE};

use super::WorkerConfig;

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
pub(super) struct Progress {
    start: Instant,
    last_decile: i32,
    printed: bool,
}

impl Progress {
    pub(super) const QUIET_FOR: std::time::Duration = std::time::Duration::from_millis(500);

    fn update(&mut self, fraction: f32) {
        let decile = (fraction * 10.0).floor() as i32;
        if decile > self.last_decile && self.start.elapsed() >= Self::QUIET_FOR {
            self.last_decile = decile;
            self.printed = true;
            eprintln!("nomyo: loading model... {}%", decile * 10);
        }
    }
}

pub(super) struct Loaded {
    pub(super) model: LlamaModel,
    pub(super) template: ChatTemplate,
    pub(super) progress_printed: bool,
}

pub(super) fn load(config: &WorkerConfig) -> Result<Loaded, String> {
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

pub(super) fn warm_up(model: &LlamaModel, ctx: &mut LlamaContext<'_>) {
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
