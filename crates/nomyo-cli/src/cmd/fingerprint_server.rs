//! `nomyo fingerprint --server URL` (needs the HTTP client).

use crate::exit::{CliError, CliResult, Code};

pub fn run(_url: &str, _allow_http: bool) -> CliResult {
    Err(CliError::new(Code::Other, "fingerprint --server is not available yet"))
}
