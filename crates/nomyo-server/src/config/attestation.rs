//! `[attestation]`: the TPM (docs/PROTOCOL.md §14) and its queue.

use super::*;

/// The `[attestation]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// `--tpm`: the TPM's TCTI, e.g. `device:/dev/tpmrm0` or
    /// `swtpm:host=127.0.0.1,port=2321` (absent: no TPM attestation).
    pub tpm: Option<String>,
    /// Quotes and activations that may wait for the TPM; beyond, 503.
    /// Default 32.
    pub queue: Option<usize>,
}

impl AttestationConfig {
    /// `top`'s fields win where set.
    pub fn overlay(self, top: AttestationConfig) -> AttestationConfig {
        AttestationConfig {
            tpm: top.tpm.or(self.tpm),
            queue: top.queue.or(self.queue),
        }
    }
}

/// The resolved attestation settings.
#[derive(Clone, Debug)]
pub struct AttestationSettings {
    /// The TPM's TCTI (`None`: no TPM).
    pub tpm: Option<String>,
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
        Ok(AttestationSettings {
            tpm,
            queue,
            required_tiers: BTreeSet::from([SecurityTier::Maximum]),
            quote_tiers: BTreeSet::from(SecurityTier::ALL),
        })
    }
}
