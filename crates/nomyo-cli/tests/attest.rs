//! `nomyo attest` against a real `nomyo serve` without a TPM: every step
//! fails with the reason, the verdict is `fail`, and the exit code is 4;
//! unreadable trust inputs are usage errors.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::process::{Output, Stdio};

use support::{assert_exit, nomyo, serve_cmd_open, started, stderr, stdout, upstream};

fn attest(home: &Path, args: &[&str]) -> Output {
    nomyo()
        .arg("attest")
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("RUST_LOG")
        .env_remove("NOMYO_API_KEY")
        .env_remove("NOMYO_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_server_without_a_tpm_is_not_attested() {
    let home = tempfile::tempdir().unwrap();
    let up = upstream();
    let srv = started(serve_cmd_open(&up.url, &support::EPHEMERAL_KEY));
    let o = attest(home.path(), &["--server", &srv.url, "--json"]);
    assert_exit(&o, 4);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["verdict"], "fail", "{v}");
    let steps = v["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "ek_chain",
            "credential_activation",
            "quote_signature",
            "nonce",
            "key_binding",
            "pcr_policy"
        ]
    );
    for s in steps {
        assert_eq!(s["status"], "fail", "{s}");
        assert!(
            s["detail"].as_str().unwrap().contains("no TPM attestation"),
            "{s}"
        );
    }
    assert!(stderr(&o).contains("is not attested"), "{}", stderr(&o));

    // Text output names each step and the verdict.
    let o = attest(home.path(), &["--server", &srv.url]);
    assert_exit(&o, 4);
    let text = stdout(&o);
    assert!(
        text.contains("credential_activation") && text.contains("verdict: fail"),
        "{text}"
    );
}

#[test]
fn unreadable_trust_inputs_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("missing.pem");
    let o = attest(
        home.path(),
        &[
            "--server",
            "http://127.0.0.1:9",
            "--tpm-ca",
            missing.to_str().unwrap(),
        ],
    );
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("EK root"), "{}", stderr(&o));
    let policy = home.path().join("policy.toml");
    std::fs::write(&policy, "[tpm.pcrs.sha256]\n\"0\" = [\"abcd\"]\n").unwrap();
    let o = attest(
        home.path(),
        &[
            "--server",
            "http://127.0.0.1:9",
            "--policy",
            policy.to_str().unwrap(),
        ],
    );
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("64 hex digits"), "{}", stderr(&o));
}
