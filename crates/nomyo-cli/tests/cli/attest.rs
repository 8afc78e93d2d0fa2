//! `nomyo attest`, and the commands that require attestation, against a
//! real `nomyo serve`: without a TPM every step fails with the reason and
//! nothing is sent; on a software TPM (swtpm) every step passes and each
//! answer's quote is checked; unreadable trust inputs are usage errors.

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
            s["detail"]
                .as_str()
                .unwrap()
                .contains("offers no attestation (404)"),
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

/// `nomyo serve --tpm` on a software TPM: `nomyo attest` passes with the
/// TPM's CA and a policy of its PCR values, and exits 4 for another CA or
/// another policy; `chat --require-attestation` is answered, its quote
/// checked against the attested key, and the key is on record.
#[test]
fn a_server_on_a_software_tpm_is_attested_end_to_end() {
    use nomyo_testkit::swtpm::swtpm;
    use std::sync::atomic::Ordering;
    let (Some(tpm), Some(other)) = (swtpm(), swtpm()) else {
        return; // skipped (swtpm is not installed), reason printed
    };
    let home = tempfile::tempdir().unwrap();
    let up = upstream();
    let srv = started(serve_cmd_open(
        &up.url,
        &[
            "--ephemeral-key",
            "--key-bits",
            "2048",
            "--tpm",
            &tpm.tcti(),
        ],
    ));
    let known = home.path().join("known_servers");
    let ca: Vec<String> = tpm
        .ca_certificates()
        .iter()
        .flat_map(|p| ["--tpm-ca".to_owned(), p.display().to_string()])
        .collect();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--server",
            &srv.url,
            "--known-servers",
            known.to_str().unwrap(),
        ];
        args.extend(extra);
        attest(home.path(), &args)
    };
    let ca_args: Vec<&str> = ca.iter().map(String::as_str).collect();

    // Every step passes; the PCR policy was not asked for.
    let mut args = ca_args.clone();
    args.push("--json");
    let o = run(&args);
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["verdict"], "pass", "{v}");
    let status = |v: &serde_json::Value, name: &str| {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for step in [
        "ek_chain",
        "credential_activation",
        "quote_signature",
        "nonce",
        "key_binding",
    ] {
        assert_eq!(status(&v, step), "pass", "{step}: {v}");
    }
    assert_eq!(status(&v, "pcr_policy"), "not requested");
    let ak = v["ak_fingerprint"].as_str().unwrap().to_owned();
    assert!(
        std::fs::read_to_string(&known)
            .unwrap()
            .contains(&format!("ak={ak}")),
        "the verified key is on record"
    );

    // A policy of the PCR values the server quotes passes; another fails.
    let nonce = "00".repeat(16);
    let (code, body) = support::http_get(
        srv.addr(),
        &format!("/.well-known/nomyo-attestation?nonce={nonce}"),
    );
    assert_eq!(code, 200, "{body}");
    let evidence: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pcrs = evidence["pcr_values"]["sha256"].as_object().unwrap();
    let good: String = pcrs
        .iter()
        .map(|(i, v)| format!("\"{i}\" = [\"{}\"]\n", v.as_str().unwrap()))
        .collect();
    let good_policy = home.path().join("good.toml");
    std::fs::write(&good_policy, format!("[tpm.pcrs.sha256]\n{good}")).unwrap();
    let mut args = ca_args.clone();
    args.extend(["--policy", good_policy.to_str().unwrap()]);
    assert_exit(&run(&args), 0);
    let bad_policy = home.path().join("bad.toml");
    std::fs::write(
        &bad_policy,
        format!("[tpm.pcrs.sha256]\n\"0\" = [\"{}\"]\n", "ab".repeat(32)),
    )
    .unwrap();
    let mut args = ca_args.clone();
    args.extend(["--policy", bad_policy.to_str().unwrap(), "--json"]);
    let o = run(&args);
    assert_exit(&o, 4);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(status(&v, "pcr_policy"), "fail", "{v}");
    assert_eq!(status(&v, "quote_signature"), "pass", "{v}");

    // Another TPM's CA: the EK chain fails. No CA: unverified. Both exit 4.
    let other_ca: Vec<String> = other
        .ca_certificates()
        .iter()
        .flat_map(|p| ["--tpm-ca".to_owned(), p.display().to_string()])
        .collect();
    let mut args: Vec<&str> = other_ca.iter().map(String::as_str).collect();
    args.push("--json");
    let o = run(&args);
    assert_exit(&o, 4);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(status(&v, "ek_chain"), "fail", "{v}");
    let o = run(&["--json"]);
    assert_exit(&o, 4);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(status(&v, "ek_chain"), "unverified", "{v}");

    // chat --require-attestation is answered, each answer's quote checked.
    let before = up.posts.load(Ordering::SeqCst);
    let o = nomyo()
        .args([
            "chat",
            "--base-url",
            &srv.url,
            "-m",
            "tiny",
            "--require-attestation",
        ])
        .args(&ca_args)
        .args([
            "--known-servers",
            known.to_str().unwrap(),
            "--json",
            "hello",
        ])
        .env("HOME", home.path())
        .env_remove("NOMYO_API_KEY")
        .env_remove("NOMYO_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(up.posts.load(Ordering::SeqCst), before + 1);
    let answer: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let block = &answer["_metadata"]["tpm_attestation"];
    assert_eq!(block["is_available"], true, "{answer}");
}
