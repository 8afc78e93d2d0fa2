//! Confidential-VM evidence through Linux's configfs-tsm interface
//! (`Documentation/ABI/testing/configfs-tsm-report`): one interface for AMD
//! SEV-SNP (`provider` `sev_guest`) and Intel TDX (`tdx_guest`).
//!
//! The server makes one report entry of its own
//! (`<dir>/nomyo-<pid>-<random>`, removed on drop) and, for each report:
//! writes the 64 bytes of report data to `inblob`, reads `outblob` (the
//! SEV-SNP report, or the TDX quote) and `auxblob` (SEV-SNP's certificate
//! table, when the host supplies one), and checks with `generation` that
//! no other writer changed the entry in between (retrying when one did), and
//! that the report carries the report data it asked for. Reports are made one
//! at a time, on the blocking pool.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default configfs-tsm report directory.
pub const DEFAULT_TSM_DIR: &str = "/sys/kernel/config/tsm/report";

/// The report data: its length, and the values of the route and of an
/// answer (shared with the client that checks them).
pub use nomyo_core::attest::{answer_report_data, route_report_data, REPORT_DATA_LEN};

/// What kind of confidential VM made the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsmKind {
    /// AMD SEV-SNP: `outblob` is an `ATTESTATION_REPORT` (SEV-SNP ABI
    /// specification, table 22), `auxblob` its certificate table.
    SevSnp,
    /// Intel TDX: `outblob` is a DCAP quote (version 4) of a TD report.
    Tdx,
}

impl TsmKind {
    /// The kind a configfs-tsm `provider` names; `None` for others.
    pub fn of_provider(provider: &str) -> Option<Self> {
        match provider {
            "sev_guest" => Some(Self::SevSnp),
            "tdx_guest" => Some(Self::Tdx),
            _ => None,
        }
    }

    /// The wire name (`sev-snp`, `tdx`).
    pub fn name(self) -> &'static str {
        match self {
            Self::SevSnp => "sev-snp",
            Self::Tdx => "tdx",
        }
    }

    /// Where the report data sits in `outblob`: SEV-SNP's `REPORT_DATA` at
    /// 0x50; in a TDX v4 quote, after the 48-byte header, at 520 in the TD
    /// report body.
    fn report_data_offset(self) -> usize {
        match self {
            Self::SevSnp => 0x50,
            Self::Tdx => 48 + 520,
        }
    }
}

/// One report.
#[derive(Clone, Debug)]
pub struct TsmReport {
    /// The report (SEV-SNP) or quote (TDX).
    pub outblob: Vec<u8>,
    /// SEV-SNP's certificate table (empty when the host supplies none).
    pub auxblob: Vec<u8>,
    /// The entry's `generation` the report was made at.
    pub generation: u64,
}

/// The server's configfs-tsm report entry.
#[derive(Debug)]
pub struct Tsm {
    entry: PathBuf,
    provider: String,
    kind: TsmKind,
}

/// How often a report is retried when another writer changed the entry.
const ATTEMPTS: usize = 3;
/// How long to wait for `generation` to move after `inblob` is written (the
/// kernel moves it at once; a slower provider gets this long).
const GENERATION_WAIT: Duration = Duration::from_secs(5);

fn read_trimmed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl Tsm {
    /// Makes a report entry under `dir` (a configfs-tsm report directory)
    /// and reads its provider. Blocks: call it from a blocking context.
    pub fn open(dir: &Path) -> Result<Self, String> {
        if !dir.is_dir() {
            return Err(format!(
                "{} is not a configfs-tsm report directory (is configfs mounted, and is this a \
                 confidential VM with the sev-guest or tdx-guest driver?)",
                dir.display()
            ));
        }
        let nonce = rand::random::<[u8; 4]>();
        let entry = dir.join(format!(
            "nomyo-{}-{}",
            std::process::id(),
            hex::encode(nonce)
        ));
        std::fs::create_dir(&entry)
            .map_err(|e| format!("cannot make the report entry {}: {e}", entry.display()))?;
        let tsm = Self::at(entry)?;
        tracing::debug!(entry = %tsm.entry.display(), provider = %tsm.provider, "configfs-tsm report entry made");
        Ok(tsm)
    }

    fn at(entry: PathBuf) -> Result<Self, String> {
        // configfs fills the entry's attributes in when it is made; a
        // provider file that is not there yet is waited for briefly.
        let provider_file = entry.join("provider");
        let mut waited = Duration::ZERO;
        while !provider_file.exists() && waited < GENERATION_WAIT {
            std::thread::sleep(Duration::from_millis(10));
            waited += Duration::from_millis(10);
        }
        let provider = read_trimmed(&provider_file).inspect_err(|_| {
            let _ = std::fs::remove_dir(&entry);
        })?;
        let Some(kind) = TsmKind::of_provider(&provider) else {
            let _ = std::fs::remove_dir(&entry);
            return Err(format!(
                "configfs-tsm provider {provider:?} is not supported (sev_guest or tdx_guest)"
            ));
        };
        Ok(Self {
            entry,
            provider,
            kind,
        })
    }

    /// The provider's name (`sev_guest`, `tdx_guest`).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The evidence kind.
    pub fn kind(&self) -> TsmKind {
        self.kind
    }

    fn generation(&self) -> Result<u64, String> {
        read_trimmed(&self.entry.join("generation"))?
            .parse()
            .map_err(|_| "configfs-tsm generation is not a number".to_owned())
    }

    /// A report carrying `report_data`. Blocks: call it from a blocking
    /// context, one at a time.
    pub fn report(&self, report_data: &[u8; REPORT_DATA_LEN]) -> Result<TsmReport, String> {
        for _ in 0..ATTEMPTS {
            let before = self.generation()?;
            std::fs::write(self.entry.join("inblob"), report_data)
                .map_err(|e| format!("cannot write the report data: {e}"))?;
            // The kernel counts the write at once; wait for a provider that
            // does it later, up to GENERATION_WAIT.
            let mut waited = Duration::ZERO;
            let mut written = self.generation()?;
            while written == before && waited < GENERATION_WAIT {
                std::thread::sleep(Duration::from_millis(2));
                waited += Duration::from_millis(2);
                written = self.generation()?;
            }
            if written != before + 1 {
                tracing::debug!(
                    before,
                    written,
                    "configfs-tsm entry written by another writer; again"
                );
                continue;
            }
            let outblob = std::fs::read(self.entry.join("outblob"))
                .map_err(|e| format!("the provider made no report: {e}"))?;
            let auxblob = match std::fs::read(self.entry.join("auxblob")) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(format!("cannot read auxblob: {e}")),
            };
            if self.generation()? != written {
                tracing::debug!("configfs-tsm entry changed while its report was read; again");
                continue;
            }
            let at = self.kind.report_data_offset();
            if outblob.get(at..at + REPORT_DATA_LEN) != Some(&report_data[..]) {
                return Err(format!(
                    "the {} report does not carry the report data written ({} bytes)",
                    self.kind.name(),
                    outblob.len()
                ));
            }
            return Ok(TsmReport {
                outblob,
                auxblob,
                generation: written,
            });
        }
        Err("the configfs-tsm entry kept changing under another writer".into())
    }
}

impl Drop for Tsm {
    fn drop(&mut self) {
        // configfs removes the attributes with the entry; in an ordinary
        // directory (tests) this fails and the directory stays.
        let _ = std::fs::remove_dir(&self.entry);
    }
}
