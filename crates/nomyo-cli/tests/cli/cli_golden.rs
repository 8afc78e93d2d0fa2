//! Golden tests of what a person sees: `--help` of every command, usage
//! errors (exit 2), `completions`, `man` and `known-servers`. The cases are
//! the `tests/cmd/*.md` transcripts (`$ nomyo ...`, `? CODE`, then the
//! expected stdout and stderr; `...` elides lines, `[..]` part of a line).
//! `tests/cmd/*.md` hold for every build; `tests/cmd/full/` is the default
//! build's (features `serve` and `proxy`), `tests/cmd/client/` the
//! client-only build's (`--no-default-features`), whose help names neither.
//! After an intended change, `TRYCMD=overwrite cargo test -p nomyo-cli --test
//! cli cli_golden::` (and again with `--no-default-features`) rewrites them; review
//! the diff.

#[test]
fn cli_golden() {
    let cases = trycmd::TestCases::new();
    cases
        .register_bin("nomyo", trycmd::cargo::cargo_bin("nomyo"))
        // Nothing of the caller's environment in the output.
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .env("NOMYO_MODEL", "from-the-environment")
        .env("NOMYO_BASE_URL", "https://from-the-environment.example")
        .case("tests/cmd/*.md");
    #[cfg(all(feature = "serve", feature = "proxy"))]
    cases.case("tests/cmd/full/*.md");
    #[cfg(not(any(feature = "serve", feature = "proxy")))]
    cases.case("tests/cmd/client/*.md");
}

/// The bash completion script loads in bash and completes the commands
/// (skipped where bash is not installed).
#[test]
fn bash_completion_script_loads_and_completes() {
    use std::process::Command;
    if Command::new("bash").arg("--version").output().is_err() {
        eprintln!("bash not found: skipped");
        return;
    }
    let nomyo = trycmd::cargo::cargo_bin("nomyo");
    let script = Command::new(&nomyo)
        .args(["completions", "bash"])
        .output()
        .expect("run nomyo completions bash");
    assert!(script.status.success());
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("nomyo.bash");
    std::fs::write(&file, &script.stdout).expect("write the script");
    // Complete `nomyo kn` and `nomyo chat --tier ` as bash would.
    let probe = format!(
        "source '{}' || exit 9
         COMP_WORDS=(nomyo kn); COMP_CWORD=1; _nomyo nomyo kn nomyo; echo \"${{COMPREPLY[*]}}\"
         COMP_WORDS=(nomyo chat --tier ''); COMP_CWORD=3; _nomyo nomyo '' --tier; echo \"${{COMPREPLY[*]}}\"",
        file.display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bash failed: {out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("known-servers"), "{stdout}");
    assert_eq!(
        lines.get(1).copied(),
        Some("standard high maximum"),
        "{stdout}"
    );
}
