//! Loading the embedded engine for `nomyo serve` (its default backend). Without the
//! `engine` feature there is no in-process model.
//!
//! Contract used by `serve.rs`: `backend(settings)` returns the embedded model
//! as a `Backend`, or an error a person can act on. The model loads in the
//! background: the backend reports not-ready (and `/health` says so) until then.
//!
//! Without `--model`, the model file is looked up in this order (see
//! `nomyo_engine::paths`): `$NOMYO_MODEL_FILE`; `./models/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (where `scripts/fetch-model.sh` puts it in a checkout);
//! `$XDG_DATA_HOME/nomyo/models/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (`~/.local/share/nomyo/models/...` by default).

use std::path::PathBuf;
use std::sync::Arc;

use nomyo_server::backend::Backend;

use crate::exit::{CliError, CliResult, Code};

/// What `nomyo serve` passes to the embedded engine.
#[derive(Clone, Debug, Default)]
pub struct EmbeddedSettings {
    /// `--model FILE.gguf`; `None` = the default model location.
    pub model: Option<PathBuf>,
    /// Inference threads; `None` = the engine's safe default.
    pub threads: Option<usize>,
    /// Tokens one request may use (context per sequence); `None` = the
    /// model's, within the engine's KV cache budget.
    pub context: Option<u32>,
    /// Requests decoding at once; `None` = the engine's default.
    pub parallel: Option<usize>,
}

/// What the embedded model runs with, for `nomyo serve`'s start line.
#[derive(Clone, Debug)]
pub struct EmbeddedInfo {
    /// The model file.
    pub model: PathBuf,
    /// Tokens one request may use (resolved: flag or the model's).
    pub context: u32,
    /// Inference threads (resolved).
    pub threads: usize,
    /// Requests decoding at once (resolved).
    pub parallel: usize,
}

/// The embedded model as a backend; it starts loading in the background.
#[cfg(test)]
pub fn backend(settings: &EmbeddedSettings) -> CliResult<Arc<dyn Backend>> {
    backend_described(settings).map(|(b, _)| b)
}

/// The embedded model as a backend (it starts loading in the background),
/// with the model, context and threads it runs with.
#[cfg(feature = "engine")]
pub fn backend_described(
    settings: &EmbeddedSettings,
) -> CliResult<(Arc<dyn Backend>, EmbeddedInfo)> {
    use nomyo_engine::{paths, Engine, EngineConfig, EngineError};

    let path = match &settings.model {
        Some(p) => p.clone(),
        None => paths::find_default_model().map_err(|searched| {
            let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
            CliError::new(
                Code::Other,
                format!(
                    "no model file found (looked for {}).\nFetch the default model with `{}` \
                     (from the repository) or give --model FILE.gguf",
                    list.join(", "),
                    paths::FETCH_SCRIPT
                ),
            )
        })?,
    };
    let mut config = EngineConfig::new(path.clone());
    config.threads = settings.threads;
    config.context_size = settings.context;
    config.parallel = settings.parallel;
    let threads = settings.threads.unwrap_or(nomyo_engine::DEFAULT_THREADS);
    match Engine::start(config) {
        Ok(engine) => {
            let engine = Arc::new(engine);
            exit_if_load_fails(Arc::clone(&engine));
            let info = EmbeddedInfo {
                model: path,
                context: engine.context_size(),
                threads,
                parallel: engine.parallel(),
            };
            Ok((engine, info))
        }
        Err(e @ EngineError::Config(_)) => Err(CliError::usage(e.to_string())),
        Err(e) => Err(CliError::new(Code::Other, e.to_string())),
    }
}

/// The model loads in the background, after `nomyo serve` has started
/// listening. If it fails (a truncated or corrupt GGUF, too little memory),
/// nothing could ever be served: exit non-zero, as a backend that fails at
/// start-up does, so that a supervisor sees the failure instead of a server
/// that answers 503 forever. The engine has printed the reason on stderr.
#[cfg(feature = "engine")]
fn exit_if_load_fails(engine: Arc<nomyo_engine::Engine>) {
    let watcher = std::thread::Builder::new()
        .name("nomyo-engine-load".into())
        .spawn(move || {
            if futures::executor::block_on(engine.wait_ready()).is_err() {
                eprintln!("nomyo serve: exiting: the embedded model failed to load");
                std::process::exit(Code::Other as i32);
            }
        });
    if let Err(e) = watcher {
        tracing::warn!(error = %e, "cannot watch the embedded model's loading");
    }
}

/// Without the `engine` feature there is no in-process model.
#[cfg(not(feature = "engine"))]
pub fn backend_described(
    _settings: &EmbeddedSettings,
) -> CliResult<(Arc<dyn Backend>, EmbeddedInfo)> {
    Err(CliError::new(
        Code::Other,
        "this build has no embedded model (feature `engine`); give --upstream URL",
    ))
}

#[cfg(all(test, feature = "engine"))]
mod tests {
    use super::*;

    #[test]
    fn missing_model_file_names_the_fetch_script() {
        let settings = EmbeddedSettings {
            model: Some("/nonexistent/dir/model.gguf".into()),
            threads: None,
            context: None,
            parallel: None,
        };
        let err = backend(&settings).err().expect("missing model");
        assert_eq!(err.code, Code::Other);
        assert!(
            err.message.contains("scripts/fetch-model.sh"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("/nonexistent/dir/model.gguf"),
            "{}",
            err.message
        );
    }

    #[test]
    fn zero_threads_is_a_usage_error() {
        let settings = EmbeddedSettings {
            model: Some("/nonexistent/dir/model.gguf".into()),
            threads: Some(0),
            context: None,
            parallel: None,
        };
        let err = backend(&settings).err().expect("bad threads");
        assert_eq!(err.code, Code::Usage);
    }
}
