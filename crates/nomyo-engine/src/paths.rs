//! Where the default model lives.
//!
//! Lookup order when no `--model FILE` is given (first existing file wins):
//!
//! 1. `$NOMYO_MODEL_FILE` (a path to a GGUF file), when set;
//! 2. `./models/SmolLM2-135M-Instruct.Q4_1.gguf` (relative to the current
//!    directory: running from a checkout of the repository, where
//!    `scripts/fetch-model.sh` puts it);
//! 3. `$XDG_DATA_HOME/nomyo/models/SmolLM2-135M-Instruct.Q4_1.gguf`
//!    (`$XDG_DATA_HOME` defaults to `~/.local/share`), for installed binaries:
//!    `scripts/fetch-model.sh ~/.local/share/nomyo/models` puts it there.
//!
//! `$NOMYO_MODEL_FILE`, when set, is used even if the file is missing, so that a typo
//! is reported rather than silently replaced by another model.

use std::path::{Path, PathBuf};

/// The default model's file name.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The script that fetches the default model (relative to the repository root).
pub const FETCH_SCRIPT: &str = "scripts/fetch-model.sh";
/// Environment variable naming a model file. (Not `NOMYO_MODEL`: that is
/// the model *name* `nomyo chat` and `nomyo bench` send, as `-m` does.)
pub const MODEL_ENV: &str = "NOMYO_MODEL_FILE";

/// The places searched for the default model, in order (see the module docs).
pub fn default_model_candidates() -> Vec<PathBuf> {
    candidates_from(
        std::env::var_os(MODEL_ENV).map(PathBuf::from),
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn candidates_from(
    env_model: Option<PathBuf>,
    xdg_data: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Vec<PathBuf> {
    if let Some(p) = env_model.filter(|p| !p.as_os_str().is_empty()) {
        return vec![p];
    }
    let mut out = vec![Path::new("models").join(DEFAULT_MODEL_FILE)];
    let data = xdg_data
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".local/share")));
    if let Some(d) = data {
        out.push(d.join("nomyo/models").join(DEFAULT_MODEL_FILE));
    }
    out
}

/// The default model file: the first candidate that exists, or `Err` with every
/// place that was searched.
pub fn find_default_model() -> Result<PathBuf, Vec<PathBuf>> {
    let candidates = default_model_candidates();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_variable_alone_when_set() {
        let c = candidates_from(
            Some("/m/x.gguf".into()),
            Some("/d".into()),
            Some("/h".into()),
        );
        assert_eq!(c, vec![PathBuf::from("/m/x.gguf")]);
    }

    #[test]
    fn repository_then_xdg_data_home() {
        let c = candidates_from(None, Some("/d".into()), Some("/h".into()));
        assert_eq!(
            c,
            vec![
                PathBuf::from("models").join(DEFAULT_MODEL_FILE),
                PathBuf::from("/d/nomyo/models").join(DEFAULT_MODEL_FILE),
            ]
        );
    }

    #[test]
    fn home_fallback_and_relative_xdg_ignored() {
        let c = candidates_from(Some("".into()), Some("rel".into()), Some("/h".into()));
        assert_eq!(
            c[1],
            PathBuf::from("/h/.local/share/nomyo/models").join(DEFAULT_MODEL_FILE)
        );
    }
}
