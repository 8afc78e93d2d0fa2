//! `nomyo attest verify`: real AMD SEV-SNP and Intel TDX evidence (the
//! vectors of nomyo-core's tests, with their licences) verified offline;
//! each tampered case refused with exit 4 and the failing step named.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use support::{assert_exit, nomyo_at_home, stderr, stdout};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nomyo-core/tests/vectors/cvm")
}

/// Inside the sample TDX collateral's validity (2025-06-19 to 2025-07-19).
const TDX_AT: &str = "2025-06-20T12:00:00Z";
/// Inside the out-of-date sample's (2026-02-18 to 2026-03-20).
const OUTDATED_AT: &str = "2026-02-20T00:00:00Z";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    }

    /// The Milan report, raw (as configfs-tsm's outblob gives it).
    fn milan_report(&self) -> Vec<u8> {
        let hex_text = std::fs::read_to_string(vectors().join("sev-snp/report_milan.hex")).unwrap();
        hex::decode(hex_text.trim()).unwrap()
    }
}

fn verify(home: &Path, args: &[&str]) -> Output {
    nomyo_at_home(home)
        .args(["attest", "verify"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `--sev-snp REPORT --vcek` the Milan VCEK, `args`, `--json`.
fn sev(home: &Path, report: &str, args: &[&str]) -> Output {
    let vcek = v("sev-snp/vcek_milan.der");
    let mut all = vec!["--sev-snp", report, "--vcek", &vcek];
    all.extend_from_slice(args);
    all.push("--json");
    verify(home, &all)
}

/// `--tdx-quote QUOTE --collateral JSON`, `args`, `--json`.
fn tdx(home: &Path, quote: &str, collateral: &str, args: &[&str]) -> Output {
    let mut all = vec!["--tdx-quote", quote, "--collateral", collateral];
    all.extend_from_slice(args);
    all.push("--json");
    verify(home, &all)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(o).trim()).unwrap()
}

fn status<'a>(v: &'a serde_json::Value, step: &str) -> &'a str {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == step)
        .unwrap_or_else(|| panic!("no step {step}: {v}"))["status"]
        .as_str()
        .unwrap()
}

fn v(rel: &str) -> String {
    vectors().join(rel).display().to_string()
}

#[test]
fn the_milan_report_verifies_and_each_tampering_is_refused() {
    let f = Files::new();
    let raw = f.milan_report();
    let report = f.put("report.bin", &raw);
    let (vcek, milan, turin) = (
        v("sev-snp/vcek_milan.der"),
        v("sev-snp/cert_chain_milan"),
        v("sev-snp/cert_chain_turin"),
    );
    let home = f.dir.path();

    let o = sev(home, &report, &["--chain", &milan]);
    assert_exit(&o, 0);
    let doc = json(&o);
    assert_eq!(doc["verdict"], "pass", "{doc}");
    assert_eq!(doc["product_line"], "Milan");
    let measurement = doc["report"]["measurement"].as_str().unwrap().to_owned();
    let report_data = doc["report"]["report_data"].as_str().unwrap().to_owned();
    assert_eq!(measurement.len(), 96);
    assert_eq!(status(&doc, "measurement"), "not requested");
    // The text document prints the measurement for the operator.
    let o = verify(home, &["--sev-snp", &report, "--vcek", &vcek]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains(&format!("measurement: {measurement}")),
        "{}",
        stdout(&o)
    );

    // The Turin chain refuses the Milan VCEK.
    let o = sev(home, &report, &["--chain", &turin]);
    assert_exit(&o, 4);
    assert_eq!(status(&json(&o), "vcek"), "fail");
    assert!(stderr(&o).contains("vcek fail"), "{}", stderr(&o));

    // One flipped byte in the signed part: the report data, the
    // measurement, the policy, the chip id.
    for at in [0x08, 0x50, 0x90, 0x1a0] {
        let mut bad = raw.clone();
        bad[at] ^= 0x01;
        let p = f.put("bad.bin", &bad);
        let o = sev(home, &p, &["--chain", &milan]);
        assert_exit(&o, 4);
        let doc = json(&o);
        assert_eq!(doc["verdict"], "fail");
        assert_eq!(
            status(&doc, "report_signature"),
            "fail",
            "byte {at:#x}: {doc}"
        );
    }

    // The binding: the report data the caller expects.
    let o = sev(home, &report, &["--report-data", &report_data]);
    assert_exit(&o, 0);
    assert_eq!(status(&json(&o), "report_data"), "pass");
    let other = format!("{}00", &report_data[..126]);
    let o = sev(home, &report, &["--report-data", &other]);
    assert_exit(&o, 4);
    assert_eq!(status(&json(&o), "report_data"), "fail");

    // A policy: the measurement allowlist and the minimum TCB.
    let allow = f.put(
        "allow.toml",
        format!("[sev_snp]\nmeasurements = [\"{measurement}\"]\nmin_tcb = {{ bootloader = 3, tee = 0, snp = 8, microcode = 115 }}\nvmpl = 0\n").as_bytes(),
    );
    let o = sev(home, &report, &["--policy", &allow]);
    assert_exit(&o, 0);
    let doc = json(&o);
    for step in ["measurement", "min_tcb", "vmpl"] {
        assert_eq!(status(&doc, step), "pass", "{step}: {doc}");
    }
    let deny = f.put(
        "deny.toml",
        format!("[sev_snp]\nmeasurements = [\"{}\"]\nmin_tcb = {{ bootloader = 3, tee = 0, snp = 9, microcode = 115 }}\n", "00".repeat(48)).as_bytes(),
    );
    let o = sev(home, &report, &["--policy", &deny]);
    assert_exit(&o, 4);
    let doc = json(&o);
    assert_eq!(status(&doc, "measurement"), "fail");
    assert_eq!(status(&doc, "min_tcb"), "fail");
}

#[test]
fn tdx_quotes_verify_as_of_a_time_and_report_their_tcb_status() {
    let f = Files::new();
    let home = f.dir.path();
    let (quote, collateral) = (v("tdx/tdx_quote"), v("tdx/tdx_quote_collateral.json"));

    let o = tdx(home, &quote, &collateral, &["--at", TDX_AT]);
    assert_exit(&o, 0);
    let doc = json(&o);
    assert_eq!(doc["verdict"], "pass", "{doc}");
    assert_eq!(doc["tcb_status"], "UpToDate");
    assert_eq!(doc["td"]["mrtd"].as_str().unwrap().len(), 96);

    // A time outside the collateral's validity.
    let o = tdx(home, &quote, &collateral, &["--at", "2030-01-01T00:00:00Z"]);
    assert_exit(&o, 4);
    assert_eq!(status(&json(&o), "collateral_validity"), "fail");

    // A flipped byte in the TD report (MRTD at 48 + 136).
    let mut bad = std::fs::read(vectors().join("tdx/tdx_quote")).unwrap();
    bad[48 + 136] ^= 0x01;
    let p = f.put("bad-quote", &bad);
    let o = tdx(home, &p, &collateral, &["--at", TDX_AT]);
    assert_exit(&o, 4);
    assert_eq!(status(&json(&o), "quote_signature"), "fail");

    // The out-of-date platform: named, refused, accepted only by a policy
    // that lists its status.
    let (old, old_collateral) = (
        v("tdx/tdx_quote_outdated"),
        v("tdx/tdx_quote_outdated_collateral.json"),
    );
    let o = verify(
        home,
        &[
            "--tdx-quote",
            &old,
            "--collateral",
            &old_collateral,
            "--at",
            OUTDATED_AT,
        ],
    );
    assert_exit(&o, 4);
    let text = stdout(&o);
    assert!(text.contains("tcb status: TcbNotSupported"), "{text}");
    assert!(stderr(&o).contains("tcb_status fail"), "{}", stderr(&o));
    let accept = f.put(
        "accept.toml",
        b"[tdx]\naccepted_tcb_statuses = [\"UpToDate\", \"TcbNotSupported\"]\n",
    );
    let o = tdx(
        home,
        &old,
        &old_collateral,
        &["--at", OUTDATED_AT, "--policy", &accept],
    );
    assert_exit(&o, 0);
    assert_eq!(json(&o)["tcb_status"], "TcbNotSupported");

    // An SGX quote is not a TDX quote.
    let o = tdx(
        home,
        &v("tdx/sgx_quote"),
        &v("tdx/sgx_quote_collateral.json"),
        &[],
    );
    assert_exit(&o, 4);
    assert_eq!(status(&json(&o), "quote_format"), "fail");
}

#[test]
fn unusable_inputs_are_usage_errors() {
    let f = Files::new();
    let home = f.dir.path();
    let quote = v("tdx/tdx_quote");
    let collateral = v("tdx/tdx_quote_collateral.json");
    for (args, want) in [
        (
            vec![
                "--tdx-quote",
                &quote,
                "--collateral",
                &collateral,
                "--at",
                "yesterday",
            ],
            "--at",
        ),
        (
            vec!["--tdx-quote", &quote, "--collateral", "/nonexistent/c.json"],
            "cannot read the TDX collateral",
        ),
        (
            vec!["--tdx-quote", &quote, "--collateral", &quote],
            "TDX collateral",
        ),
        (
            vec!["--sev-snp", "/nonexistent/r.bin", "--vcek", &quote],
            "cannot read the SEV-SNP report",
        ),
        (
            vec![
                "--tdx-quote",
                &quote,
                "--collateral",
                &collateral,
                "--report-data",
                "zz",
            ],
            "--report-data",
        ),
        (vec!["--tdx-quote", &quote], "--collateral"),
        (vec!["--sev-snp", &quote], "--vcek"),
        (vec![], "--tdx-quote"),
    ] {
        let o = verify(home, &args);
        assert_exit(&o, 2);
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}
