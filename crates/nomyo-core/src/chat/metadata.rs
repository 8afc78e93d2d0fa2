//! The `_metadata` object the server adds to every answer (docs/PROTOCOL.md
//! §1.7), and what the clients add to it.

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
