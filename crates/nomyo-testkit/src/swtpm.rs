//! A software TPM of a test's own: swtpm with an EK certificate from a
//! local CA made for the test (`swtpm_setup --create-ek-cert` with
//! `swtpm_localca`), on a free port, killed on drop. Without swtpm a test is
//! skipped with a printed reason, unless NOMYO_REQUIRE_TPM=1 (then it fails).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running swtpm with an EK certificate, killed (and its state removed)
/// on drop.
pub struct SwTpm {
    child: Child,
    /// The TPM's state and the local CA (removed on drop).
    dir: tempfile::TempDir,
    /// Its TPM port (the control port is the next one).
    pub port: u16,
}

impl SwTpm {
    /// The TCTI string for it.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The local CA's PEM certificates, root first then the issuing CA:
    /// what the EK certificate chains to (`nomyo attest --tpm-ca`).
    pub fn ca_certificates(&self) -> [PathBuf; 2] {
        let ca = self.dir.path().join("ca");
        [
            ca.join("swtpm-localca-rootca-cert.pem"),
            ca.join("issuercert.pem"),
        ]
    }
}

impl Drop for SwTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `tool` is on the PATH.
pub fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A fresh swtpm, or `None` (with the reason printed) when swtpm is not
/// installed and NOMYO_REQUIRE_TPM is not 1.
pub fn swtpm() -> Option<SwTpm> {
    let required = std::env::var("NOMYO_REQUIRE_TPM").is_ok_and(|v| v == "1");
    for tool in ["swtpm", "swtpm_setup", "swtpm_localca"] {
        if !on_path(tool) {
            assert!(
                !required,
                "NOMYO_REQUIRE_TPM=1 but {tool} is not installed (scripts/sysdeps.sh install test)"
            );
            eprintln!("skipped: {tool} is not installed (scripts/sysdeps.sh install test)");
            return None;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path();
    std::fs::create_dir_all(t.join("state")).unwrap();
    std::fs::create_dir_all(t.join("ca")).unwrap();
    std::fs::write(
        t.join("localca.conf"),
        format!(
            "statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n",
            ca = t.join("ca").display()
        ),
    )
    .unwrap();
    std::fs::write(
        t.join("setup.conf"),
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {}\ncreate_certs_tool_options = /etc/swtpm-localca.options\n",
            t.join("localca.conf").display()
        ),
    )
    .unwrap();
    let setup = Command::new("swtpm_setup")
        .args(["--tpm2", "--tpmstate"])
        .arg(t.join("state"))
        .args([
            "--create-ek-cert",
            "--create-platform-cert",
            "--overwrite",
            "--config",
        ])
        .arg(t.join("setup.conf"))
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "swtpm_setup failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    // A free pair of ports (server, control), retried if taken meanwhile.
    for _ in 0..20 {
        let port = free_port_pair();
        let mut child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", t.join("state").display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port}"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={}", port + 1))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break; // port taken: try another
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(SwTpm { child, dir, port });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("swtpm did not start");
}

fn free_port_pair() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
