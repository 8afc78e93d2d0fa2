//! `nomyo keygen` and `nomyo fingerprint` as a user sees them: exact stdout,
//! one- or two-line errors on stderr, exit codes (docs/CLI.md §2: 0 success,
//! 2 usage, 4 security failure, 1 anything else), file modes, and keys that
//! Python `cryptography` wrote (crates/nomyo-core/tests/vectors/pem/, made by
//! gen_vectors.py).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use nomyo_core::keys::{load_private_key_file, load_public_key_file, LoadOptions};
use nomyo_core::SecretString;
use support::{assert_exit, stderr, stdout};

fn nomyo(args: &[&str]) -> Output {
    nomyo_env(args, &[])
}

fn nomyo_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = support::nomyo();
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_API_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run nomyo")
}

/// An error for a person: `nomyo: ...`, one or two lines, no Debug dump.
#[track_caller]
fn assert_human_error(o: &Output) -> String {
    let e = stderr(o);
    assert!(e.starts_with("nomyo: "), "stderr: {e}");
    assert!(e.lines().count() <= 2, "more than two lines: {e}");
    assert!(
        !e.contains("Error {") && !e.contains("Io {"),
        "Debug output: {e}"
    );
    assert!(o.stdout.is_empty(), "stdout on error: {}", stdout(o));
    e
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn is_fingerprint(s: &str) -> bool {
    s.len() == 71
        && s.starts_with("sha256:")
        && s[7..]
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nomyo-core/tests/vectors/pem")
}

/// Python's fingerprint of a vector key, from fingerprints.txt.
fn python_fingerprint(name: &str) -> String {
    let text = std::fs::read_to_string(vectors_dir().join("fingerprints.txt")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
        .unwrap_or_else(|| panic!("no fingerprint for {name}"))
}

/// Copies a vector PEM into `dir` with mode 0600 (git stores 0644).
fn vector_key(dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(format!("{name}.pem"));
    std::fs::copy(vectors_dir().join(format!("{name}.pem")), &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    dst
}

fn vector_password() -> String {
    std::fs::read_to_string(vectors_dir().join("password.txt"))
        .unwrap()
        .trim_end_matches('\n')
        .to_owned()
}

#[test]
fn keygen_with_password_file_as_the_user_sees_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("client_keys");
    let pwfile = tmp.path().join("pw");
    std::fs::write(&pwfile, "s3cret pass phrase\nignored second line\n").unwrap();

    // The default: RSA-4096.
    let o = nomyo(&[
        "keygen",
        "--out",
        out.to_str().unwrap(),
        "--password-file",
        pwfile.to_str().unwrap(),
    ]);
    assert_exit(&o, 0);
    let d = out.display();
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0],
        format!("private key: {d}/private_key.pem (mode 0600, password-protected)")
    );
    assert_eq!(lines[1], format!("public key:  {d}/public_key.pem"));
    assert!(is_fingerprint(lines[2]), "{}", lines[2]);
    // No spinner and no noise when stderr is not a terminal.
    assert_eq!(stderr(&o), "");
    assert!(!text.contains("s3cret"));

    let private = out.join("private_key.pem");
    let public = out.join("public_key.pem");
    assert_eq!(mode(&private), 0o600);
    assert_eq!(mode(&public), 0o644);
    let pem = std::fs::read_to_string(&private).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));

    // The first line of the file is the password.
    let pw = SecretString::from("s3cret pass phrase".to_owned());
    let key = load_private_key_file(&private, Some(&pw), LoadOptions::default()).unwrap();
    assert_eq!(key.bits(), 4096);
    assert_eq!(key.public_key().fingerprint().to_string(), lines[2]);
    assert_eq!(
        load_public_key_file(&public)
            .unwrap()
            .fingerprint()
            .to_string(),
        lines[2]
    );

    // `nomyo fingerprint` of either file prints the same last line.
    let o = nomyo(&["fingerprint", public.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), format!("{}\n", lines[2]));
    let o = nomyo(&[
        "fingerprint",
        private.to_str().unwrap(),
        "--password-file",
        pwfile.to_str().unwrap(),
    ]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), format!("{}\n", lines[2]));
}

#[test]
fn keygen_no_password_and_password_env() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let o = nomyo(&[
        "keygen",
        "--out",
        a.to_str().unwrap(),
        "--no-password",
        "--bits",
        "2048",
    ]);
    assert_exit(&o, 0);
    assert!(stdout(&o)
        .lines()
        .next()
        .unwrap()
        .ends_with("(mode 0600, UNENCRYPTED)"));
    let pem = std::fs::read_to_string(a.join("private_key.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert_eq!(mode(&a.join("private_key.pem")), 0o600);

    let b = tmp.path().join("b");
    let o = nomyo_env(
        &[
            "keygen",
            "--out",
            b.to_str().unwrap(),
            "--password-env",
            "KEYGEN_TEST_PW",
            "--bits",
            "2048",
        ],
        &[("KEYGEN_TEST_PW", "from the environment")],
    );
    assert_exit(&o, 0);
    let pw = SecretString::from("from the environment".to_owned());
    let key = load_private_key_file(
        &b.join("private_key.pem"),
        Some(&pw),
        LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        key.public_key().fingerprint().to_string(),
        stdout(&o).lines().last().unwrap()
    );
}

#[test]
fn keygen_usage_errors_exit_2_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("k");
    let o_str = out.to_str().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "x\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["keygen", "--out", o_str], "--no-password"),
        (
            vec!["keygen", "--out", o_str, "--no-password", "--bits", "1024"],
            "--bits",
        ),
        (
            vec![
                "keygen",
                "--out",
                o_str,
                "--password-file",
                empty.to_str().unwrap(),
            ],
            "empty",
        ),
        (
            vec![
                "keygen",
                "--out",
                o_str,
                "--password-env",
                "NOMYO_TEST_UNSET_VAR",
            ],
            "NOMYO_TEST_UNSET_VAR",
        ),
    ];
    for (args, hint) in cases {
        let o = nomyo(&args);
        assert_exit(&o, 2);
        let e = assert_human_error(&o);
        assert!(e.contains(hint), "{args:?}: {e}");
        assert!(!out.exists(), "{args:?} created {o_str}");
    }
    // Clap's own usage errors: also exit 2.
    for args in [
        vec![
            "keygen",
            "--out",
            o_str,
            "--no-password",
            "--password-file",
            pw.to_str().unwrap(),
        ],
        vec!["keygen", "--frobnicate"],
        vec!["no-such-command"],
    ] {
        let o = nomyo(&args);
        assert_exit(&o, 2);
        assert!(!out.exists());
    }
}

#[test]
fn keygen_never_overwrites_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("k");
    let args = [
        "keygen",
        "--out",
        out.to_str().unwrap(),
        "--no-password",
        "--bits",
        "2048",
    ];
    let first = nomyo(&args);
    assert_exit(&first, 0);
    let before = std::fs::read(out.join("private_key.pem")).unwrap();

    let o = nomyo(&args);
    assert_ne!(o.status.code(), Some(0));
    let e = assert_human_error(&o);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(out.join("private_key.pem")).unwrap(), before);

    let mut forced = args.to_vec();
    forced.push("--force");
    let o = nomyo(&forced);
    assert_exit(&o, 0);
    assert_ne!(std::fs::read(out.join("private_key.pem")).unwrap(), before);
    assert_ne!(
        stdout(&o).lines().last(),
        stdout(&first).lines().last(),
        "--force made a new key"
    );
    assert_eq!(mode(&out.join("private_key.pem")), 0o600);
}

#[test]
fn fingerprint_of_python_keys_matches_python() {
    let tmp = tempfile::tempdir().unwrap();
    let pwfile = vectors_dir().join("password.txt");
    let pw = pwfile.to_str().unwrap();
    for (name, encrypted) in [
        ("rsa2048-pkcs8", false),
        ("rsa3072-pkcs1", false),
        ("rsa4096-pkcs8-best-available", true),
    ] {
        let key = vector_key(tmp.path(), name);
        let k = key.to_str().unwrap();
        let o = if encrypted {
            nomyo(&["fingerprint", k, "--password-file", pw])
        } else {
            nomyo(&["fingerprint", k])
        };
        assert_exit(&o, 0);
        assert_eq!(
            stdout(&o),
            format!("{}\n", python_fingerprint(name)),
            "{name}"
        );
        assert_eq!(stderr(&o), "");
    }
}

#[test]
fn fingerprint_security_failures_exit_4() {
    let tmp = tempfile::tempdir().unwrap();
    let password = vector_password();
    let key = vector_key(tmp.path(), "rsa4096-pkcs8-best-available");
    let k = key.to_str().unwrap();

    // Wrong password.
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, format!("{password}!\n")).unwrap();
    let o = nomyo(&["fingerprint", k, "--password-file", wrong.to_str().unwrap()]);
    assert_exit(&o, 4);
    let e = assert_human_error(&o);
    assert!(e.contains("wrong password") && e.contains(k), "{e}");
    assert!(!e.contains(&password), "password in: {e}");

    // No password for an encrypted key.
    let o = nomyo(&["fingerprint", k]);
    assert_exit(&o, 4);
    let e = assert_human_error(&o);
    assert!(e.contains("--password-file"), "{e}");

    // Group-readable private key: refused before it is read, naming chmod 600.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let pwfile = vectors_dir().join("password.txt");
    let o = nomyo(&[
        "fingerprint",
        k,
        "--password-file",
        pwfile.to_str().unwrap(),
    ]);
    assert_exit(&o, 4);
    let e = assert_human_error(&o);
    assert!(e.contains(&format!("chmod 600 {k}")), "{e}");

    // 1024-bit keys, private and public.
    for name in ["rsa1024-pkcs8", "rsa1024-pkcs1", "rsa1024-spki"] {
        let key = vector_key(tmp.path(), name);
        let o = nomyo(&["fingerprint", key.to_str().unwrap()]);
        assert_exit(&o, 4);
        let e = assert_human_error(&o);
        assert!(e.contains("1024") && e.contains("2048"), "{name}: {e}");
    }
}

#[test]
fn fingerprint_other_failures() {
    let tmp = tempfile::tempdir().unwrap();
    // No FILE and no --server.
    let o = nomyo(&["fingerprint"]);
    assert_exit(&o, 2);

    // Missing file: exit 1, naming the path.
    let missing = tmp.path().join("nope.pem");
    let o = nomyo(&["fingerprint", missing.to_str().unwrap()]);
    assert_exit(&o, 1);
    let e = assert_human_error(&o);
    assert!(e.contains("nope.pem"), "{e}");

    // Not a key at all.
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = nomyo(&["fingerprint", junk.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    let e = assert_human_error(&o);
    assert!(e.contains("junk.pem"), "{e}");

    // Legacy OpenSSL-encrypted PEM: refused with the command that converts it.
    let legacy = vector_key(tmp.path(), "rsa2048-pkcs1-legacy-openssl-encryption");
    let pwfile = vectors_dir().join("password.txt");
    let o = nomyo(&[
        "fingerprint",
        legacy.to_str().unwrap(),
        "--password-file",
        pwfile.to_str().unwrap(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    let e = assert_human_error(&o);
    assert!(e.contains("openssl pkcs8"), "{e}");
}

#[cfg(feature = "serve")]
#[test]
fn keygen_server_writes_a_replica_key_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server_keys");
    let d = dir.to_str().unwrap();
    // Replicas keep the HPKE keys beside the server key: no password.
    let o = nomyo(&["keygen", "--out", d, "--bits", "2048", "--server"]);
    assert_exit(&o, 2);
    assert!(!dir.exists(), "nothing written on a usage error");

    let keygen = [
        "keygen",
        "--out",
        d,
        "--bits",
        "2048",
        "--server",
        "--no-password",
    ];
    let o = nomyo(&keygen);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("HPKE keys:   "), "{out}");
    assert!(out.contains("key ids ["), "{out}");
    let hpke = dir.join("hpke_keys.key");
    assert_eq!(mode(&hpke), 0o600);
    assert_eq!(mode(&dir.join("private_key.pem")), 0o600);
    // What a replica loads is exactly what keygen wrote.
    let (set, generated) = nomyo_server::hpke_keys::HpkeKeySet::load_or_generate(&dir).unwrap();
    assert!(!generated);
    let ids = set.key_ids();
    assert!(out.contains(&format!("key ids {ids:?}")), "{out}");
    let before = std::fs::read(&hpke).unwrap();

    // Never overwritten without --force; replaced with it.
    let o = nomyo(&keygen);
    assert_exit(&o, 1);
    assert_human_error(&o);
    assert_eq!(std::fs::read(&hpke).unwrap(), before);
    let o = nomyo(&[&keygen[..], &["--force"]].concat());
    assert_exit(&o, 0);
    assert_ne!(std::fs::read(&hpke).unwrap(), before);
    assert_eq!(mode(&hpke), 0o600);
    // The new set's ids are not the old ones: clients holding the old
    // configs get 422 (unknown key) and refetch, never another key's 400.
    let (new, _) = nomyo_server::hpke_keys::HpkeKeySet::load_or_generate(&dir).unwrap();
    for id in new.key_ids() {
        assert!(
            !ids.contains(&id),
            "id {id} reused: {ids:?} -> {:?}",
            new.key_ids()
        );
    }
    // Nothing left beside the keys (the old file was shredded, not kept).
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["hpke_keys.key", "private_key.pem", "public_key.pem"]
    );
}
