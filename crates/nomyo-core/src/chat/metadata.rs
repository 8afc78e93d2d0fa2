//! The `_metadata` object the server adds to every answer (docs/PROTOCOL.md
//! §1.7), and what the clients add to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{lenient_opt_i64, Extra};

/// The `_metadata` object (docs/PROTOCOL.md §1.7): what the server
/// reports (every field but `encryption_algorithm`), plus what the clients
/// set or add (`payload_id`, `processed_at`, `is_encrypted`,
/// `encryption_algorithm`), as the Python client does. Any other field (v2's
/// `protocol` and `hpke`) is kept in `extra`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The request's `X-Payload-ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_id: Option<String>,
    /// Unix seconds when the server processed the request.
    #[serde(
        default,
        deserialize_with = "lenient_opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub processed_at: Option<i64>,
    /// Always `true` for this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_encrypted: Option<bool>,
    /// `hybrid-aes256-rsa4096` for v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
    /// `success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<String>,
    /// The tier that served the request (`standard`, `high`, `maximum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_tier: Option<String>,
    /// The server's memory protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_protection: Option<MemoryProtectionInfo>,
    /// The server's GPU, hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_device: Option<CudaDevice>,
    /// The TPM's quote for this answer (docs/PROTOCOL.md §14.2), or
    /// `{"is_available": false}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_attestation: Option<TpmAttestation>,
    /// A confidential VM's report for this answer (docs/PROTOCOL.md §15.2),
    /// from a server with configfs-tsm evidence; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<CvmAttestation>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `_metadata.memory_protection`: what the server reports about its memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryProtectionInfo {
    /// `linux`, `windows`, `darwin`, ...
    #[serde(default)]
    pub platform: String,
    /// Whether `mlock` succeeded.
    #[serde(default)]
    pub memory_locking: bool,
    /// Whether buffers are zeroed.
    #[serde(default)]
    pub secure_zeroing: bool,
    /// Whether core dumps are suppressed.
    #[serde(default)]
    pub core_dump_prevention: bool,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `_metadata.cuda_device`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CudaDevice {
    /// Whether a GPU is available.
    #[serde(default)]
    pub available: bool,
    /// SHA-256 hex of the device name, or empty.
    #[serde(default)]
    pub device_hash: String,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `_metadata.tpm_attestation` (docs/PROTOCOL.md §14.2): a TPM quote whose
/// `extraData` is [`crate::tpm::extra_data_for`] of the answer's payload id,
/// or only `is_available: false` (no TPM, or a tier that does not quote per
/// answer). [`crate::tpm::verify_quote`] checks the quote.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TpmAttestation {
    /// Whether the rest is there.
    #[serde(default)]
    pub is_available: bool,
    /// The quoted PCRs: `sha256:0,7,10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcr_banks: Option<String>,
    /// bank → PCR index → hex value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcr_values: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// Base64 of the signed `TPMS_ATTEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote_b64: Option<String>,
    /// Base64 of the `TPMT_SIGNATURE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_b64: Option<String>,
    /// Base64 of the AK's `TPM2B_PUBLIC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aik_pubkey_b64: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `_metadata.attestation` (docs/PROTOCOL.md §15.2): a confidential VM's
/// report (SEV-SNP) or quote (TDX) whose report data is
/// [`crate::tpm::extra_data_for`] of the answer's payload id, padded with
/// zeros to 64 bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CvmAttestation {
    /// `sev-snp` or `tdx`.
    pub kind: String,
    /// The configfs-tsm provider: `sev_guest` or `tdx_guest`.
    #[serde(default)]
    pub provider: String,
    /// Base64 of the report (SEV-SNP `ATTESTATION_REPORT`) or quote (TDX).
    pub report_b64: String,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Extra,
}

impl TpmAttestation {
    /// `{"is_available": false}`.
    pub fn unavailable() -> Self {
        Self::default()
    }
}
