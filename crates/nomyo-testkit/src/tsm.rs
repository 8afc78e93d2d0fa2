//! A directory laid out like Linux's configfs-tsm report directory, with a
//! stand-in for the kernel's provider: a thread that answers each `inblob`
//! written in an entry with an `outblob` carrying that report data, and
//! moves `generation` on, as the kernel does.
//!
//! The reports are real evidence from real hardware (nomyo-core's test
//! vectors) with the report data replaced: `sev_guest` gives an AMD Milan
//! guest's SEV-SNP report and, in `auxblob`, a certificate table with that
//! chip's VCEK and AMD's Milan ASK and ARK; `tdx_guest` gives a TDX quote
//! (v4). The chain verifies; the report's signature cannot (its report data
//! is not what the hardware signed): they test the binding of report data
//! and the client's steps, not a vendor's signature.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A configfs-tsm report directory with a stand-in provider.
pub struct FakeTsm {
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeTsm {
    /// `provider` as the kernel names it; with `tamper`, every report
    /// carries other report data than was written.
    pub fn start(provider: &'static str, tamper: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (root, halt) = (dir.path().to_owned(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || provide(&root, provider, tamper, &halt));
        Self {
            dir,
            stop,
            thread: Some(thread),
        }
    }

    /// The report directory (`--tsm-dir`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for FakeTsm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the report data sits: SEV-SNP report 0x50, TDX v4 quote 48 + 520.
pub fn report_data_offset(provider: &str) -> usize {
    if provider == "sev_guest" {
        0x50
    } else {
        48 + 520
    }
}

/// The Milan guest's SEV-SNP report (1184 bytes).
pub fn milan_report() -> Vec<u8> {
    let text = include_str!("../../nomyo-core/tests/vectors/cvm/sev-snp/report_milan.hex");
    let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    hex.chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            digit(pair[0]) << 4 | digit(pair[1])
        })
        .collect()
}

/// The Milan chip's VCEK (DER).
pub const MILAN_VCEK: &[u8] =
    include_bytes!("../../nomyo-core/tests/vectors/cvm/sev-snp/vcek_milan.der");

/// A certificate table as the host gives a guest (GHCB extended report:
/// 24-byte entries of GUID, offset, length, an all-zero entry, then the
/// certificates): the Milan VCEK, ASK and ARK.
pub fn milan_cert_table() -> Vec<u8> {
    let pem = include_str!("../../nomyo-core/tests/vectors/cvm/sev-snp/cert_chain_milan");
    let chain = pem_certificates(pem);
    let (ask, ark) = (&chain[0], &chain[1]);
    // VCEK, ASK, ARK GUIDs (RFC 4122 byte order).
    let entries: [(&str, &[u8]); 3] = [
        ("63da758de6644564adc5f4b93be8accd", MILAN_VCEK),
        ("4ab7b379bbac4fe4a02f05aef327c782", ask),
        ("c0b406a4a803495297433fb6014cd0ae", ark),
    ];
    let header = 24 * (entries.len() + 1);
    let mut table = Vec::new();
    let mut body = Vec::new();
    for (guid, der) in entries {
        let g: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&guid[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect();
        table.extend_from_slice(&g);
        table.extend_from_slice(&((header + body.len()) as u32).to_le_bytes());
        table.extend_from_slice(&(der.len() as u32).to_le_bytes());
        body.extend_from_slice(der);
    }
    table.extend_from_slice(&[0u8; 24]);
    table.extend_from_slice(&body);
    table
}

/// The DER certificates of a PEM text.
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|block| block.split("-----END CERTIFICATE-----").next())
        .map(|b64| {
            let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .unwrap_or_default()
        })
        .collect()
}

/// Replaces `path`'s content at once, as a kernel attribute changes (a
/// reader never sees it empty or half written).
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn provide(root: &Path, provider: &str, tamper: bool, stop: &AtomicBool) {
    let mut seen: HashMap<PathBuf, (Vec<u8>, SystemTime)> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        for entry in std::fs::read_dir(root).unwrap().flatten() {
            let e = entry.path();
            if !e.is_dir() {
                continue;
            }
            if !e.join("provider").exists() {
                put(&e.join("generation"), b"0\n");
                put(&e.join("provider"), format!("{provider}\n").as_bytes());
            }
            let Ok(inblob) = std::fs::read(e.join("inblob")) else {
                continue;
            };
            let Ok(modified) = std::fs::metadata(e.join("inblob")).and_then(|m| m.modified())
            else {
                continue;
            };
            if inblob.len() != 64 || seen.get(&e) == Some(&(inblob.clone(), modified)) {
                continue;
            }
            let (mut report, aux) = if provider == "sev_guest" {
                (milan_report(), milan_cert_table())
            } else {
                (
                    include_bytes!("../../nomyo-core/tests/vectors/cvm/tdx/tdx_quote").to_vec(),
                    Vec::new(),
                )
            };
            let at = report_data_offset(provider);
            report[at..at + 64].copy_from_slice(&inblob);
            if tamper {
                report[at] ^= 1;
            }
            put(&e.join("outblob"), &report);
            if !aux.is_empty() {
                put(&e.join("auxblob"), &aux);
            }
            let generation: u64 = std::fs::read_to_string(e.join("generation"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            put(
                &e.join("generation"),
                format!("{}\n", generation + 1).as_bytes(),
            );
            seen.insert(e, (inblob, modified));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
