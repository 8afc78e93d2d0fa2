//! `nomyo serve --attestation tsm --tsm-dir DIR`: a confidential VM's
//! configfs-tsm reports (docs/PROTOCOL.md §15), here from a directory laid
//! out like configfs-tsm with a stand-in provider (this machine has no
//! SEV-SNP or TDX).

// The server under test is a real `nomyo serve` (feature `serve`).
#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::support;

use nomyo_testkit::tsm::FakeTsm;
use support::{assert_exit, http_get, serve_cmd_open, started, stderr, upstream, EPHEMERAL_KEY};

#[test]
fn serve_with_tsm_names_its_provider_and_serves_bound_reports() {
    let up = upstream();
    let fake = FakeTsm::start("sev_guest", false);
    let mut cmd = serve_cmd_open(&up.url, &EPHEMERAL_KEY);
    cmd.args(["--attestation", "tsm", "--tsm-dir"])
        .arg(fake.path());
    let serve = started(cmd);
    assert!(
        serve.wait_stderr("attestation=\"tsm sev_guest\"", Duration::from_secs(10)),
        "{}",
        serve.stderr.lock().unwrap()
    );
    let (status, body) = http_get(
        serve.addr(),
        &format!("/.well-known/nomyo-attestation?nonce={}", "ab".repeat(16)),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "sev-snp");
    assert_eq!(v["provider"], "sev_guest");
    assert_eq!(v["report_data"].as_str().unwrap().len(), 128);

    // The client verifies TPM evidence only: this server is not attested
    // for it (exit 4), and says so.
    let home = tempfile::tempdir().unwrap();
    let o = support::nomyo()
        .args(["attest", "--server", &serve.url])
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("NOMYO_BASE_URL")
        .output()
        .unwrap();
    assert_exit(&o, 4);
    assert!(stderr(&o).contains("is not attested"), "{}", stderr(&o));
}

#[test]
fn tsm_settings_that_cannot_work_exit_2_or_1_with_the_reason() {
    let up = upstream();
    // --tpm with --attestation tsm: a usage error.
    let o = serve_cmd_open(&up.url, &EPHEMERAL_KEY)
        .args(["--attestation", "tsm", "--tpm", "device:/dev/tpmrm0"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(
        stderr(&o).contains("conflicts with none and tsm"),
        "{}",
        stderr(&o)
    );
    // A directory that is not configfs-tsm: the server does not start.
    let o = serve_cmd_open(&up.url, &EPHEMERAL_KEY)
        .args(["--attestation", "tsm", "--tsm-dir", "/nonexistent/tsm"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not a configfs-tsm report directory"),
        "{}",
        stderr(&o)
    );
}
