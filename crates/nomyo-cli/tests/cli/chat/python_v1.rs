//! `nomyo chat` against the independent Python v1 server.

use super::*;

/// `nomyo chat` against an independent v1 server written in Python from
/// docs/PROTOCOL.md (crates/nomyo-client/tests/python/v1_server.py).
#[test]
fn chat_with_an_independent_python_v1_server() {
    let Some(py) = nomyo_testkit::python::with_cryptography() else {
        return;
    };
    let script = nomyo_testkit::python::v1_server_script();
    let mut cmd = Command::new(py);
    cmd.args([script.as_str(), "--bits", "2048"]);
    let server = started(cmd);

    let env = Env::new();
    let base = [
        "chat",
        "--protocol",
        "v1",
        "--base-url",
        &server.url,
        "--allow-http",
        "-m",
        "any",
    ];
    let chat = |rest: &[&str]| env.run(&[&base[..], rest].concat());
    let o = chat(&["--tier", "high", "--json", "hello from the CLI"]);
    assert_exit(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("\"content\": \"python saw: hello from the CLI\""),
        "{out}"
    );
    assert!(out.contains("\"security_tier\": \"high\""), "{out}");
    assert!(
        out.contains("\"encryption_algorithm\": \"hybrid-aes256-rsa4096\""),
        "{out}"
    );
    // The key it presented is now on record; a pin of it works too.
    let known = std::fs::read_to_string(env.known_servers()).unwrap();
    let fp = known
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(str::split_whitespace)
        .find_map(|f| f.strip_prefix("v1=sha256:"))
        .map(|hex| format!("sha256:{hex}"))
        .unwrap();
    let o = chat(&["--pin", &fp, "again"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "python saw: again\n");
}
