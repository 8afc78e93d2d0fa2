//! `[attestation]`: the source of evidence, a TPM (docs/PROTOCOL.md §14)
//! or a confidential VM's configfs-tsm (§15), and its queue.

use super::*;

/// The `[attestation]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// `--tpm`: the TPM's TCTI, e.g. `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321` (absent: no TPM attestation).
    pub tpm: Option<String>,
    /// `--attestation`: `none`, `tpm` or `tsm` (absent: `tpm` when `tpm`
    /// is given, else `none`).
    pub source: Option<String>,
    /// `--tsm-dir`: the configfs-tsm report directory (with `source =
    /// "tsm"`; default `/sys/kernel/config/tsm/report`).
    pub tsm_dir: Option<PathBuf>,
    /// Quotes, activations or reports that may wait; beyond, 503.
    /// Default 32.
    pub queue: Option<usize>,
}

impl AttestationConfig {
    /// `top`'s fields win where set.
    pub fn overlay(self, top: AttestationConfig) -> AttestationConfig {
        AttestationConfig {
            tpm: top.tpm.or(self.tpm),
            source: top.source.or(self.source),
            tsm_dir: top.tsm_dir.or(self.tsm_dir),
            queue: top.queue.or(self.queue),
        }
    }
}

/// The resolved attestation settings.
#[derive(Clone, Debug)]
pub struct AttestationSettings {
    /// The TPM's TCTI (`None`: no TPM).
    pub tpm: Option<String>,
    /// The configfs-tsm report directory (`None`: no configfs-tsm).
    pub tsm_dir: Option<PathBuf>,
    /// Length of the TPM's queue.
    pub queue: usize,
    /// Tiers a server without a TPM refuses (`require_attestation`).
    pub required_tiers: BTreeSet<SecurityTier>,
    /// Tiers whose answers carry a quote (`attestation_per_answer`).
    pub quote_tiers: BTreeSet<SecurityTier>,
}

impl AttestationConfig {
    /// Checks the table; the tier sets start at their defaults (`maximum`
    /// requires attestation; every tier quotes per answer).
    pub(super) fn resolve(self) -> Result<AttestationSettings, ConfigError> {
        let tpm = match self.tpm {
            Some(t) if t.trim().is_empty() => None,
            other => other,
        };
        let queue = self.queue.unwrap_or(crate::attestation::DEFAULT_QUEUE);
        if queue == 0 {
            return Err(invalid("attestation.queue must be at least 1"));
        }
        let source = self.source.as_deref().map(str::trim);
        let tsm_dir = match (source, &tpm) {
            (None | Some("tpm"), Some(_)) | (None | Some("none"), None) => {
                if self.tsm_dir.is_some() {
                    return Err(invalid(
                        "attestation.tsm_dir (--tsm-dir) needs attestation = \"tsm\" (--attestation tsm)",
                    ));
                }
                None
            }
            (Some("tpm"), None) => {
                return Err(invalid(
                    "attestation = \"tpm\" (--attestation tpm) needs the TPM's TCTI: --tpm TCTI",
                ))
            }
            (Some("none" | "tsm"), Some(_)) => {
                return Err(invalid(
                    "--tpm (attestation.tpm) needs attestation = \"tpm\"; it conflicts with none and tsm",
                ))
            }
            (Some("tsm"), None) => Some(
                self.tsm_dir
                    .unwrap_or_else(|| PathBuf::from(crate::attestation::tsm::DEFAULT_TSM_DIR)),
            ),
            (Some(other), _) => {
                return Err(invalid(format!(
                    "attestation {other:?} is not one of none, tpm, tsm"
                )))
            }
        };
        Ok(AttestationSettings {
            tpm,
            tsm_dir,
            queue,
            required_tiers: BTreeSet::from([SecurityTier::Maximum]),
            quote_tiers: BTreeSet::from(SecurityTier::ALL),
        })
    }
}
