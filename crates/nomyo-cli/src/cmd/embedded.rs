//! Loading the embedded engine for `nomyo serve` (issue 5). Without the
//! `engine` feature there is no in-process model.
//!
//! Contract used by `serve.rs`: `backend(settings)` returns the embedded model
//! as a `Backend`, or an error a person can act on.

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
}

/// The embedded model as a backend (placeholder until the engine crate exists).
pub fn backend(_settings: &EmbeddedSettings) -> CliResult<Arc<dyn Backend>> {
    Err(CliError::new(
        Code::Other,
        "this build has no embedded model (feature `engine`); give --upstream URL",
    ))
}
