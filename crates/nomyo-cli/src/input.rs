//! Secrets from files or environment variables, never from the command line
//! (docs/CLI.md §1).

use std::path::Path;

use nomyo_core::SecretString;
use zeroize::Zeroizing;

use crate::exit::{CliError, CliResult, Code};

/// Reads a secret from a file: the first line, without its line ending.
pub fn secret_from_file(path: &Path, what: &str) -> CliResult<SecretString> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        CliError::new(
            Code::Other,
            format!("cannot read {what} file {}: {e}", path.display()),
        )
    })?);
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(CliError::usage(format!(
            "{what} file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(line.to_owned()))
}

/// Reads a secret from an environment variable.
pub fn secret_from_env(var: &str, what: &str) -> CliResult<SecretString> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
        Ok(_) => Err(CliError::usage(format!(
            "environment variable {var} ({what}) is empty"
        ))),
        Err(_) => Err(CliError::usage(format!(
            "environment variable {var} ({what}) is not set"
        ))),
    }
}

/// Resolves `--X-file F` / `--X-env VAR` into an optional secret.
pub fn optional_secret(
    file: Option<&Path>,
    env: Option<&str>,
    what: &str,
) -> CliResult<Option<SecretString>> {
    match (file, env) {
        (Some(f), None) => secret_from_file(f, what).map(Some),
        (None, Some(v)) => secret_from_env(v, what).map(Some),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(CliError::usage(format!(
            "give the {what} either from a file or from an environment variable, not both"
        ))),
    }
}

/// The endpoint API key: `--api-key-file F` / `--api-key-env VAR`, else
/// `$NOMYO_API_KEY` when set (docs/CLI.md §4), else none.
pub fn api_key(file: Option<&Path>, env: Option<&str>) -> CliResult<Option<SecretString>> {
    match optional_secret(file, env, "API key")? {
        Some(k) => Ok(Some(k)),
        None => match std::env::var_os("NOMYO_API_KEY") {
            Some(v) if !v.is_empty() => Ok(Some(secret_from_env("NOMYO_API_KEY", "API key")?)),
            _ => Ok(None),
        },
    }
}
