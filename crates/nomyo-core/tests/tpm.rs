//! `nomyo_core::tpm` against a real (software) TPM: quotes made by swtpm
//! through tpm2-tools verify, and tampered ones do not; credentials made
//! by our MakeCredential are activated by the TPM, and `tpm2_makecredential`'s
//! output parses.
//!
//! Each test starts its own `swtpm` (state in a temporary directory, on a
//! free port; killed when the test ends). Without swtpm or tpm2-tools the
//! tests print SKIPPED and pass, unless `NOMYO_REQUIRE_TPM=1` (CI), which
//! makes them fail (`scripts/sysdeps.sh install test` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nomyo_core::tpm::{
    extra_data_for, make_credential, verify_quote, HashAlg, MadeCredential, PcrValues, Public,
    VerifyError,
};

const TOOLS: &[&str] = &[
    "swtpm",
    "swtpm_setup",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_quote",
    "tpm2_pcrextend",
    "tpm2_pcrread",
    "tpm2_flushcontext",
    "tpm2_startauthsession",
    "tpm2_policysecret",
    "tpm2_activatecredential",
    "tpm2_makecredential",
];

/// A running swtpm; killed (and its state removed) on drop.
struct Swtpm {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// A free port whose successor is free too: the swtpm TCTI expects the
/// control channel on the next port.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports");
}

impl Swtpm {
    /// Starts one, or `None` (the test is skipped) when a tool is missing
    /// and `NOMYO_REQUIRE_TPM` is not 1.
    fn start() -> Option<Swtpm> {
        let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
        if !missing.is_empty() {
            if std::env::var_os("NOMYO_REQUIRE_TPM").is_some_and(|v| v == "1") {
                panic!(
                    "{} not installed but NOMYO_REQUIRE_TPM=1",
                    missing.join(", ")
                );
            }
            eprintln!(
                "SKIPPED: {} not installed (apt install swtpm swtpm-tools tpm2-tools)",
                missing.join(", ")
            );
            return None;
        }
        let mut dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let setup = Command::new("swtpm_setup")
            .args(["--tpm2", "--overwrite", "--tpmstate"])
            .arg(&state)
            .stdout(Stdio::null())
            .output()
            .expect("swtpm_setup runs");
        assert!(
            setup.status.success(),
            "swtpm_setup: {}",
            String::from_utf8_lossy(&setup.stderr)
        );
        // Another process may take the port between our probe and swtpm's
        // bind: try a few.
        for _ in 0..5 {
            let port = free_port_pair();
            let ctrl = port + 1;
            let child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", state.display()))
                .args([
                    "--server",
                    &format!("type=tcp,port={port},bindaddr=127.0.0.1"),
                ])
                .args([
                    "--ctrl",
                    &format!("type=tcp,port={ctrl},bindaddr=127.0.0.1"),
                ])
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("swtpm starts");
            let mut tpm = Swtpm { child, dir, port };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(tpm);
                }
                if tpm.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = tpm.child.kill();
            let _ = tpm.child.wait();
            // Take the directory back out of the dropped guard.
            dir = std::mem::replace(&mut tpm.dir, tempfile::tempdir().unwrap());
        }
        panic!("swtpm did not start");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a tpm2-tools command in the state directory against this TPM;
    /// returns whether it succeeded (and its stderr when it did not).
    fn try_run(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(self.dir.path())
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:host=127.0.0.1,port={}", self.port),
            )
            .output()
            .expect("tpm2-tools run");
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        self.try_run(args)
            .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
    }

    /// A socket swtpm has no resource manager: flush what a tool left loaded.
    fn flush(&self) {
        self.run(&["tpm2_flushcontext", "-t"]);
        self.run(&["tpm2_flushcontext", "-s"]);
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    fn create_ek(&self, alg: &str) {
        self.run(&["tpm2_createek", "-c", "ek.ctx", "-G", alg, "-u", "ek.pub"]);
        self.flush();
    }

    /// An AK under the EK: `ak-<suffix>.ctx`, `.pub` and `.name`.
    fn create_ak(&self, suffix: &str, args: &[&str]) {
        let (ctx, public, name) = (
            format!("ak-{suffix}.ctx"),
            format!("ak-{suffix}.pub"),
            format!("ak-{suffix}.name"),
        );
        let mut cmd = vec!["tpm2_createak", "-C", "ek.ctx", "-c", &ctx, "-u", &public];
        cmd.extend(["-n", &name]);
        cmd.extend(args);
        self.run(&cmd);
        self.flush();
    }

    /// `tpm2_activatecredential` with the EK's policy session; the
    /// recovered credential or the tool's error.
    fn activate(&self, ak: &str, cred_file: &Path) -> Result<Vec<u8>, String> {
        self.run(&[
            "tpm2_startauthsession",
            "--policy-session",
            "-S",
            "session.ctx",
        ]);
        self.run(&["tpm2_policysecret", "-S", "session.ctx", "-c", "e"]);
        let ctx = format!("ak-{ak}.ctx");
        let result = self.try_run(&[
            "tpm2_activatecredential",
            "-c",
            &ctx,
            "-C",
            "ek.ctx",
            "-i",
            cred_file.to_str().unwrap(),
            "-o",
            "activated.bin",
            "-P",
            "session:session.ctx",
        ]);
        self.flush();
        result.map(|_| self.read("activated.bin"))
    }
}

fn sha256_pcrs(values: &[u8], indices: &[u32]) -> PcrValues {
    let bank: BTreeMap<u32, Vec<u8>> = indices
        .iter()
        .zip(values.chunks(32))
        .map(|(i, v)| (*i, v.to_vec()))
        .collect();
    BTreeMap::from([(HashAlg::Sha256, bank)])
}

/// Quotes PCRs 0, 7, 10 (10 extended first, so not all zero) with the AK
/// `ak-<suffix>`; returns (attest, signature, pcr values).
fn quote(tpm: &Swtpm, suffix: &str, payload_id: &str) -> (Vec<u8>, Vec<u8>, PcrValues) {
    let scheme = match suffix {
        "pss" => "rsapss",
        "rsa" => "rsassa",
        _ => "ecdsa",
    };
    let q = hex::encode(extra_data_for(payload_id));
    let ctx = format!("ak-{suffix}.ctx");
    tpm.run(&[
        "tpm2_quote",
        "-c",
        &ctx,
        "-l",
        "sha256:0,7,10",
        "-q",
        &q,
        "-m",
        "quote.msg",
        "-s",
        "quote.sig",
        "-g",
        "sha256",
        "--scheme",
        scheme,
    ]);
    tpm.flush();
    tpm.run(&["tpm2_pcrread", "sha256:0,7,10", "-o", "pcrs.bin"]);
    let pcrs = tpm.read("pcrs.bin");
    assert_eq!(pcrs.len(), 96);
    (
        tpm.read("quote.msg"),
        tpm.read("quote.sig"),
        sha256_pcrs(&pcrs, &[0, 7, 10]),
    )
}

#[test]
fn swtpm_quotes_verify_and_tampered_ones_do_not() {
    let Some(tpm) = Swtpm::start() else { return };
    tpm.create_ek("rsa");
    tpm.create_ak("ecc", &["-G", "ecc", "-g", "sha256", "-s", "ecdsa"]);
    tpm.create_ak("rsa", &["-G", "rsa", "-g", "sha256", "-s", "rsassa"]);
    tpm.create_ak("pss", &["-G", "rsa", "-g", "sha256", "-s", "rsapss"]);
    tpm.run(&["tpm2_pcrextend", &format!("10:sha256={}", "ab".repeat(32))]);
    let id = "chatcmpl-7d1f0c1e-payload";
    let extra = extra_data_for(id);

    for ak in ["ecc", "rsa", "pss"] {
        let ak_pub = tpm.read(&format!("ak-{ak}.pub"));
        let (attest, sig, pcrs) = quote(&tpm, ak, id);
        let parsed = verify_quote(&ak_pub, &attest, &sig, &extra, Some(&pcrs))
            .unwrap_or_else(|e| panic!("{ak}: {e}"));
        assert_eq!(parsed.extra_data, extra);
        let sel = &parsed.quote.pcr_select;
        assert_eq!(sel.len(), 1);
        assert_eq!(sel[0].indices().collect::<Vec<_>>(), vec![0, 7, 10]);
        assert_ne!(pcrs[&HashAlg::Sha256][&10], vec![0; 32]);
        // The Name tpm2_createak printed is the one we compute.
        let name = Public::from_tpm2b(&ak_pub).unwrap().name();
        assert_eq!(name, tpm.read(&format!("ak-{ak}.name")));

        // Without PCR values: the signature and extraData still count.
        assert!(verify_quote(&ak_pub, &attest, &sig, &extra, None).is_ok());
        // Another answer's quote.
        assert_eq!(
            verify_quote(&ak_pub, &attest, &sig, &extra_data_for("other"), None),
            Err(VerifyError::ExtraDataMismatch)
        );
        // A flipped byte anywhere in the signature value, or in the quote.
        let mut bad_sig = sig.clone();
        let last = bad_sig.len() - 1;
        bad_sig[last] ^= 1;
        assert_eq!(
            verify_quote(&ak_pub, &attest, &bad_sig, &extra, None),
            Err(VerifyError::SignatureInvalid),
            "{ak}"
        );
        let mut bad_attest = attest.clone();
        bad_attest[20] ^= 1;
        assert_eq!(
            verify_quote(&ak_pub, &bad_attest, &sig, &extra, None),
            Err(VerifyError::SignatureInvalid)
        );
        // Wrong, missing and unquoted PCR values.
        let mut wrong = pcrs.clone();
        wrong
            .get_mut(&HashAlg::Sha256)
            .unwrap()
            .insert(7, vec![1; 32]);
        assert_eq!(
            verify_quote(&ak_pub, &attest, &sig, &extra, Some(&wrong)),
            Err(VerifyError::PcrDigestMismatch)
        );
        let mut missing = pcrs.clone();
        missing.get_mut(&HashAlg::Sha256).unwrap().remove(&10);
        assert!(matches!(
            verify_quote(&ak_pub, &attest, &sig, &extra, Some(&missing)),
            Err(VerifyError::PcrValueMissing { index: 10, .. })
        ));
        let mut extra_pcr = pcrs.clone();
        extra_pcr
            .get_mut(&HashAlg::Sha256)
            .unwrap()
            .insert(3, vec![0; 32]);
        assert!(matches!(
            verify_quote(&ak_pub, &attest, &sig, &extra, Some(&extra_pcr)),
            Err(VerifyError::PcrNotQuoted { index: 3, .. })
        ));
        let mut short = pcrs.clone();
        short
            .get_mut(&HashAlg::Sha256)
            .unwrap()
            .insert(0, vec![0; 20]);
        assert!(matches!(
            verify_quote(&ak_pub, &attest, &sig, &extra, Some(&short)),
            Err(VerifyError::PcrValueLength { index: 0, .. })
        ));
        // Truncated inputs.
        for cut in [0, 1, attest.len() / 2, attest.len() - 1] {
            assert!(verify_quote(&ak_pub, &attest[..cut], &sig, &extra, None).is_err());
        }
        for cut in [0, 3, sig.len() - 1] {
            assert!(matches!(
                verify_quote(&ak_pub, &attest, &sig[..cut], &extra, None),
                Err(VerifyError::Signature(_))
            ));
        }
        for cut in [0, 10, ak_pub.len() - 1] {
            assert!(matches!(
                verify_quote(&ak_pub[..cut], &attest, &sig, &extra, None),
                Err(VerifyError::AkPublic(_))
            ));
        }
    }

    // Another AK (of either type) did not sign it.
    let (attest, sig, _) = quote(&tpm, "ecc", id);
    let other_ecc = {
        tpm.create_ak("ecc2", &["-G", "ecc", "-g", "sha256", "-s", "ecdsa"]);
        tpm.read("ak-ecc2.pub")
    };
    assert_eq!(
        verify_quote(&other_ecc, &attest, &sig, &extra, None),
        Err(VerifyError::SignatureInvalid)
    );
    assert_eq!(
        verify_quote(&tpm.read("ak-rsa.pub"), &attest, &sig, &extra, None),
        Err(VerifyError::SignatureSchemeMismatch)
    );
    // The EK is not a signing key.
    assert_eq!(
        verify_quote(&tpm.read("ek.pub"), &attest, &sig, &extra, None),
        Err(VerifyError::AkNotRestrictedSigning)
    );
}

#[test]
fn our_credentials_activate_in_swtpm() {
    let Some(tpm) = Swtpm::start() else { return };
    for ek in ["rsa", "ecc"] {
        tpm.create_ek(ek);
        tpm.create_ak(ek, &["-G", "ecc", "-g", "sha256", "-s", "ecdsa"]);
        tpm.create_ak("other", &["-G", "rsa", "-g", "sha256", "-s", "rsassa"]);
        let ek_pub = tpm.read("ek.pub");
        let name = tpm.read(&format!("ak-{ek}.name"));
        let credential = b"a 32-byte challenge for the AK..";
        let made =
            make_credential(&ek_pub, credential, &name).unwrap_or_else(|e| panic!("{ek}: {e}"));
        let file = tpm.path("ours.cred");
        std::fs::write(&file, made.to_tools_file()).unwrap();
        assert_eq!(
            tpm.activate(ek, &file)
                .unwrap_or_else(|e| panic!("{ek}: {e}")),
            credential,
            "{ek}"
        );
        // Only for the AK it names: another key in the same TPM fails the
        // integrity check.
        assert!(tpm.activate("other", &file).is_err(), "{ek}");
        // Tampered blob.
        let mut bad = made.to_tools_file();
        bad[20] ^= 1;
        std::fs::write(&file, bad).unwrap();
        assert!(tpm.activate(ek, &file).is_err(), "{ek}");
    }
}

#[test]
fn tpm2_makecredential_output_parses() {
    let Some(tpm) = Swtpm::start() else { return };
    tpm.create_ek("rsa");
    tpm.create_ak("a", &["-G", "ecc", "-g", "sha256", "-s", "ecdsa"]);
    let name = hex::encode(tpm.read("ak-a.name"));
    std::fs::write(tpm.path("secret.bin"), [0x42u8; 32]).unwrap();
    tpm.run(&[
        "tpm2_makecredential",
        "-T",
        "none",
        "-u",
        "ek.pub",
        "-s",
        "secret.bin",
        "-n",
        &name,
        "-o",
        "theirs.cred",
    ]);
    let theirs = tpm.read("theirs.cred");
    let parsed = MadeCredential::from_tools_file(&theirs).unwrap();
    // TPM2B_ID_OBJECT: TPM2B_DIGEST(HMAC-SHA-256) then the encrypted
    // TPM2B_DIGEST(32-byte secret); TPM2B_ENCRYPTED_SECRET: one RSA-2048 block.
    assert_eq!(&parsed.id_object[..4], &[0, 68, 0, 32]);
    assert_eq!(parsed.id_object.len(), 2 + 2 + 32 + 2 + 32);
    assert_eq!(parsed.encrypted_secret.len(), 2 + 256);
    assert_eq!(parsed.to_tools_file(), theirs);
    // Ours has the same shape for the same inputs.
    let ours = make_credential(&tpm.read("ek.pub"), &[0x42; 32], &tpm.read("ak-a.name")).unwrap();
    assert_eq!(ours.id_object.len(), parsed.id_object.len());
    assert_eq!(ours.encrypted_secret.len(), parsed.encrypted_secret.len());
    assert_eq!(ours.to_tools_file()[..12], theirs[..12]);
    // And theirs activates, as a check of this harness.
    assert_eq!(
        tpm.activate("a", &tpm.path("theirs.cred")).unwrap(),
        [0x42; 32]
    );
}
