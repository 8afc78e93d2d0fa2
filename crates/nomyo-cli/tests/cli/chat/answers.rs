//! What `nomyo chat` prints when it works: answers, `--json`, prompts from
//! stdin, environment variables, first-use trust, the ephemeral client key
//! and password-protected key directories.

use super::*;

#[cfg(feature = "serve")]
#[test]
fn answers_json_stdin_env_and_first_use_trust() {
    let (_up, s, env) = setup();
    let dir = key_dir(&env, None);

    // The text answer; the model is the server's only one; first contact is recorded.
    let prompt = format!("what did you see? {MARKER}");
    let o = env.chat(&s, &dir, &[&prompt]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "upstream saw the prompt: yes\n");
    let err = stderr(&o);
    assert!(
        err.contains("first contact with") && err.contains("trusting its key sha256:"),
        "{err}"
    );
    let known = std::fs::read_to_string(env.known_servers()).unwrap();
    let origin = s.url.trim_end_matches('/');
    let record = known
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap_or_default();
    assert!(
        record.starts_with(&format!("{origin} v1=sha256:")),
        "{known}"
    );

    // `fingerprint --server` shows the same key, and records nothing.
    let o = env.run(&["fingerprint", "--server", &s.url, "--allow-http"]);
    assert_exit(&o, 0);
    let fp = record
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_start_matches("v1=");
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(format!("v1 {fp}").as_str()));
    assert!(lines.all(|l| l.starts_with("v2 ")), "{out}");
    // A loopback server needs no --allow-http (nothing leaves the host);
    // any other plain-HTTP server does.
    let o = env.run(&["fingerprint", "--server", &s.url]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), out);
    let o = env.run(&["fingerprint", "--server", "http://192.0.2.1:9"]);
    assert_exit(&o, 2);
    assert!(human_error(&o).contains("--allow-http"));

    // Second contact: silent, key known.
    let o = env.chat(
        &s,
        &dir,
        &[
            "-m",
            "tiny",
            "--seed",
            "3",
            "--max-tokens",
            "9",
            "--temperature",
            "0.1",
            &prompt,
        ],
    );
    assert_exit(&o, 0);
    assert_eq!(stderr(&o), "");

    // --json: the whole response with _metadata.
    let o = env.chat(&s, &dir, &["--json", "--tier", "high", &prompt]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    for needle in [
        "\"_metadata\"",
        "\"payload_id\"",
        "\"security_tier\": \"high\"",
        "\"is_encrypted\": true",
        "\"encryption_algorithm\": \"hybrid-aes256-rsa4096\"",
        "\"memory_protection\"",
        "\"total_tokens\": 8",
        "upstream saw the prompt: yes",
    ] {
        assert!(out.contains(needle), "{needle} missing in {out}");
    }

    // The prompt from stdin, with `-` and with no argument.
    for args in [chat_args(&s, &dir, &["-"]), chat_args(&s, &dir, &[])] {
        let o = env.run_stdin(&args, &format!("piped {MARKER}\n"));
        assert_exit(&o, 0);
        assert_eq!(stdout(&o), "upstream saw the prompt: yes\n");
    }
    let o = env.run_stdin(&chat_args(&s, &dir, &["-"]), "  \n");
    assert_exit(&o, 2);
    assert!(human_error(&o).contains("empty"));

    // NOMYO_BASE_URL and NOMYO_MODEL instead of flags.
    let o = env.run_env(
        &[
            "chat",
            "--allow-http",
            "--key-dir",
            dir.to_str().unwrap(),
            &prompt,
        ],
        &[("NOMYO_BASE_URL", &s.url), ("NOMYO_MODEL", "tiny")],
    );
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "upstream saw the prompt: yes\n");
}

#[cfg(feature = "serve")]
#[test]
fn ephemeral_client_key_by_default() {
    let (_up, s, env) = setup();
    let o = env.run(&["chat", "--base-url", &s.url, "--allow-http", MARKER]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "upstream saw the prompt: yes\n");
    // Nothing written but the known-servers record: the key lived in memory.
    let entries: Vec<_> = std::fs::read_dir(env.home.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, [".config"]);
    let config: Vec<_> = std::fs::read_dir(env.home.path().join(".config/nomyo"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(config, ["known_servers"]);
}

#[cfg(feature = "serve")]
#[test]
fn password_protected_key_directories() {
    let (_up, s, env) = setup();
    let dir = key_dir(&env, Some("open sesame"));
    let before = std::fs::read(dir.join("private_key.pem")).unwrap();
    let pw = env.home.path().join("pw");

    let o = env.chat(&s, &dir, &["--password-file", pw.to_str().unwrap(), MARKER]);
    assert_exit(&o, 0);
    let o = env.chat_env(
        &s,
        &dir,
        &["--password-env", "KEYPW", MARKER],
        &[("KEYPW", "open sesame")],
    );
    assert_exit(&o, 0);

    let o = env.chat_env(
        &s,
        &dir,
        &["--password-env", "KEYPW", "hi"],
        &[("KEYPW", "nope")],
    );
    assert_exit(&o, 4);
    assert!(human_error(&o).contains("wrong password"));
    let o = env.chat(&s, &dir, &["hi"]);
    assert_exit(&o, 4);
    assert!(human_error(&o).contains("password-protected"));
    assert_eq!(
        std::fs::read(dir.join("private_key.pem")).unwrap(),
        before,
        "never overwritten"
    );

    // An empty directory with a password: chat creates an encrypted key.
    let fresh = env.home.path().join("fresh");
    let o = env.chat(
        &s,
        &fresh,
        &["--password-file", pw.to_str().unwrap(), MARKER],
    );
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("created a new client key pair"));
    let pem = std::fs::read_to_string(fresh.join("private_key.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
}
