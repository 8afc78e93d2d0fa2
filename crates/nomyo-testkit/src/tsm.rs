//! A directory laid out like Linux's configfs-tsm report directory, with a
//! stand-in for the kernel's provider: a thread that answers each `inblob`
//! written in an entry with an `outblob` shaped like an SEV-SNP report
//! (`sev_guest`) or a TDX quote (`tdx_guest`) carrying that report data,
//! and moves `generation` on, as the kernel does. The reports are not
//! signed: they test the binding of report data, not a vendor's signature.

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
                let mut r = vec![0u8; 0x4A0];
                r[..4].copy_from_slice(&2u32.to_le_bytes());
                (r, b"certificate table".to_vec())
            } else {
                let mut q = vec![0u8; 1024];
                q[..2].copy_from_slice(&4u16.to_le_bytes());
                (q, Vec::new())
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
