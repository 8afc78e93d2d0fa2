//! Starting the engine: the settings and the model file checked, the
//! model's shape and sampling defaults read from its metadata, the context
//! per sequence resolved, and the inference thread spawned to load it.

use std::path::Path;
use std::sync::atomic::AtomicU8;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use crate::worker::{self, WorkerConfig};
use crate::{
    context, params, Engine, EngineConfig, EngineError, Shared, State, DEFAULT_PARALLEL,
    DEFAULT_THREADS, MAX_PARALLEL,
};

/// Tokens per llama.cpp batch during prompt evaluation.
const BATCH_SIZE: u32 = 512;

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
