//! `nomyo attest` against a real `nomyo serve` without a TPM: every step
//! fails with the reason, the verdict is `fail`, and the exit code is 4;
//! unreadable trust inputs are usage errors.

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

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

#[test]
fn chat_requiring_attestation_sends_nothing_to_a_server_without_a_tpm() {
    use std::sync::atomic::Ordering;
    let home = tempfile::tempdir().unwrap();
    let up = upstream();
    let srv = started(serve_cmd_open(&up.url, &support::EPHEMERAL_KEY));
    let chat = |extra: &[&str]| {
        nomyo()
            .args(["chat", "--base-url", &srv.url, "-m", "tiny"])
            .args(extra)
            .arg("a prompt that must not leave")
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NOMYO_API_KEY")
            .env_remove("NOMYO_BASE_URL")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = chat(&["--require-attestation"]);
    assert_exit(&o, 4);
    assert!(
        stderr(&o).contains("is not attested") && stderr(&o).contains("refusing to send"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        up.posts.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    // Attestation cannot authenticate v1 answers: a usage error.
    let o = chat(&["--require-attestation", "--protocol", "v1"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("needs protocol v2"), "{}", stderr(&o));
    // Without the flag the same chat is answered.
    let o = chat(&[]);
    assert_exit(&o, 0);
    assert_eq!(up.posts.load(Ordering::SeqCst), 1);
}

#[test]
fn the_library_requiring_attestation_refuses_every_request_kind() {
    use nomyo_client::attest::AttestOptions;
    use nomyo_client::{ChatMessage, ChatRequest, Client, Error, KnownServers, Protocol};
    use std::sync::atomic::Ordering;
    let up = upstream();
    let srv = started(serve_cmd_open(&up.url, &support::EPHEMERAL_KEY));
    let client = |protocol| {
        Client::builder()
            .base_url(&srv.url)
            .known_servers(KnownServers::Off)
            .protocol(protocol)
            .require_attestation(AttestOptions::default())
            .build()
            .unwrap()
    };
    let request = ChatRequest::new("tiny").message(ChatMessage::user("must not leave"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = client(Protocol::Auto);
        let e = c.create(&request).await.unwrap_err();
        assert!(
            matches!(e, Error::NotAttested { .. }) && e.is_security(),
            "{e}"
        );
        let Err(e) = c.create_stream(&request).await else {
            panic!("a stream was opened")
        };
        assert!(matches!(e, Error::NotAttested { .. }), "{e}");
        // Protocol v1 is refused outright, whole and unopened.
        let c = client(Protocol::V1);
        let e = c.create(&request).await.unwrap_err();
        assert!(matches!(e, Error::AttestationNeedsV2 { .. }), "{e}");
        let e = c
            .create_unopened(&request, &Default::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::AttestationNeedsV2 { .. }), "{e}");
    });
    assert_eq!(
        up.posts.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

#[cfg(feature = "proxy")]
#[test]
fn the_proxy_requiring_attestation_never_listens_for_an_unattested_server() {
    let home = tempfile::tempdir().unwrap();
    let up = upstream();
    let srv = started(serve_cmd_open(&up.url, &support::EPHEMERAL_KEY));
    let o = nomyo()
        .args(["proxy", "--base-url", &srv.url, "--listen", "127.0.0.1:0"])
        .arg("--require-attestation")
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("NOMYO_API_KEY")
        .env_remove("NOMYO_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&o, 4);
    let err = stderr(&o);
    assert!(err.contains("is not attested"), "{err}");
    assert!(!err.contains("listening"), "{err}");
}
