//! # nomyo-core
//!
//! The wire formats, cryptography, key handling and secure memory of NOMYO
//! end-to-end encrypted inference. This crate performs no network I/O, reads
//! no environment variables and prints nothing: the client, server, proxy and
//! CLI are built on top of it.
//!
//! - [`v1`]: the NOMYO v1 package (AES-256-GCM + RSA-OAEP-SHA256), both directions.
//! - [`v2`]: EHBP (HPKE, RFC 9180) with X25519 and the post-quantum X-Wing suite.
//! - [`keys`]: RSA key generation, PKCS#8 / PBES2 files, fingerprints.
//! - [`keys_signature`]: the server's RSA key signs its v2 key lists.
//! - [`secure_memory`]: locked, zeroed buffers and process hardening.
//! - [`wipe_alloc`]: freed memory is wiped (a global allocator, glibc's heap).
//! - [`chat`]: the OpenAI chat shapes (request, answer, chunk, `_metadata`)
//!   and the transformations between them.
//! - [`cvm`]: AMD SEV-SNP and Intel TDX attestation, verified offline
//!   (feature `cvm`, on by default).
//! - [`duration`]: the duration syntax of configuration files and flags (`30s`, `24h`).
//!
//! ```
//! use nomyo_core::{keys::{PrivateKey, RsaBits}, v1};
//! let server = PrivateKey::generate(RsaBits::B2048)?;
//! let package = v1::seal(br#"{"model":"m","messages":[]}"#, server.public_key())?;
//! let wire = package.to_json();
//! let opened = v1::open(&v1::Package::from_json(&wire)?, &server)?;
//! assert_eq!(opened.expose_secret(), br#"{"model":"m","messages":[]}"#);
//! # Ok::<(), nomyo_core::Error>(())
//! ```

// Tests may unwrap: a panic there is a test failure with a location.
#![cfg_attr(test, allow(clippy::unwrap_used))]

/// Header of a request's id: sent by clients, echoed (or made) by the
/// server and the proxy, and written in their logs (docs/CLI.md).
pub const HEADER_REQUEST_ID: &str = "x-request-id";

pub mod attest;
pub mod chat;
#[cfg(feature = "cvm")]
pub mod cvm;
pub mod duration;
pub mod error;
pub mod keys;
pub mod keys_signature;
pub mod secure_memory;
pub mod tier;
pub mod tpm;
pub mod v1;
pub mod v2;
pub mod wipe_alloc;

pub use error::{Error, Result};
pub use keys::{Fingerprint, PrivateKey, PublicKey};
pub use secure_memory::{MemoryProtection, SecretBuf};
pub use tier::SecurityTier;

/// Re-exported so that users of the core name one secret-string type.
pub use secrecy::{ExposeSecret, SecretString};
