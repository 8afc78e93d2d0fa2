//! Loading the embedded engine for `nomyo serve` (issue 5). Without the
//! `engine` feature there is no in-process model.

use crate::exit::{CliError, CliResult, Code};

/// Placeholder until the engine crate exists.
pub fn unavailable() -> CliResult {
    Err(CliError::new(
        Code::Other,
        "this build has no embedded model (feature `engine`); give --upstream URL",
    ))
}
