//! Secrets named by the file: read from a file's first line or from an
//! environment variable, never written in the file itself.

use super::*;

/// Reads the first line of a secret file.
pub(super) fn secret_file(path: &Path, what: &'static str) -> Result<SecretString, ConfigError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                what,
                path: path.to_owned(),
                source,
            })?,
        );
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(invalid(format!("{what} {} is empty", path.display())));
    }
    Ok(SecretString::from(line.to_owned()))
}

pub(super) fn secret_env(var: &str, what: &str) -> Result<SecretString, ConfigError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
        Ok(_) => Err(invalid(format!(
            "environment variable {var} ({what}) is empty"
        ))),
        Err(_) => Err(invalid(format!(
            "environment variable {var} ({what}) is not set"
        ))),
    }
}

pub(super) fn optional_secret(
    file: Option<&Path>,
    env: Option<&str>,
    what: &'static str,
) -> Result<Option<SecretString>, ConfigError> {
    match (file, env) {
        (Some(f), None) => secret_file(f, what).map(Some),
        (None, Some(v)) => secret_env(v, what).map(Some),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(invalid(format!(
            "give the {what} either from a file or from an environment variable, not both"
        ))),
    }
}
