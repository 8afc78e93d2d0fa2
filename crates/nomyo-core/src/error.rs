//! The core's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the core.
///
/// Messages are written for the person who reads them and never contain
/// secret material (keys, passwords, plaintext). Every cryptographic failure
/// while opening is the single opaque [`Error::DecryptionFailed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The package is not well-formed (bad JSON, missing field, bad base64,
    /// wrong length). The message names the field, never its content.
    #[error("malformed package: {0}")]
    Malformed(String),

    /// The package names a protocol version we do not speak (downgrade guard).
    #[error("unsupported protocol version '{found}'; expected '{expected}'")]
    UnsupportedVersion {
        /// What the package said (truncated).
        found: String,
        /// What we accept.
        expected: &'static str,
    },

    /// The package names an algorithm we do not accept (downgrade guard).
    #[error("unsupported {field} '{found}'; expected '{expected}'")]
    UnsupportedAlgorithm {
        /// Which field (`algorithm`, `key_algorithm`, `payload_algorithm`).
        field: &'static str,
        /// What the package said (truncated).
        found: String,
        /// What we accept.
        expected: &'static str,
    },

    /// Authentication tag, OAEP padding or key mismatch: deliberately one
    /// opaque error, so that it cannot serve as an oracle.
    #[error("decryption failed")]
    DecryptionFailed,

    /// Sealing failed (should not happen with valid keys).
    #[error("encryption failed")]
    EncryptionFailed,

    /// The plaintext exceeds the protocol limit.
    #[error("payload too large: {size} bytes (limit {limit})")]
    PayloadTooLarge {
        /// Actual size.
        size: usize,
        /// Limit.
        limit: usize,
    },

    /// A key could not be parsed or is not acceptable.
    #[error("{0}")]
    Key(String),

    /// The key file is encrypted and no password was given.
    #[error("the private key {0} is password-protected; give its password (--password-file or --password-env)")]
    PasswordRequired(String),

    /// The password does not open the key file.
    #[error("wrong password for the private key {0} (or the file is corrupt)")]
    WrongPassword(String),

    /// The RSA key is too small.
    #[error("RSA key of {bits} bits refused: at least {min} bits are required")]
    KeyTooSmall {
        /// Size found.
        bits: usize,
        /// Minimum accepted.
        min: usize,
    },

    /// A private key file is readable by group or others.
    #[error("refusing to use {path}: it is readable by group or others (mode {mode:04o}); run `chmod 600 {path}`")]
    InsecurePermissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },

    /// A private key file belongs to another user than the one running
    /// this process (that user could read or replace the key).
    #[error("refusing to use {path}: it is owned by uid {owner}, not by this process's user (uid {uid}); run `chown {uid} {path}`")]
    ForeignOwner {
        /// The file.
        path: String,
        /// The file's owner.
        owner: u32,
        /// This process's effective user id.
        uid: u32,
    },

    /// Saving would overwrite existing keys.
    #[error(
        "{0} already exists; refusing to overwrite an existing key (use --force to replace it)"
    )]
    AlreadyExists(String),

    /// A fingerprint string is not `sha256:` + 64 hex digits.
    #[error("invalid fingerprint '{0}': expected sha256: followed by 64 hex digits")]
    BadFingerprint(String),

    /// A security tier name is not one of standard, high, maximum.
    #[error("invalid security tier '{0}': must be one of standard, high, maximum")]
    BadTier(String),

    /// File system error, with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether this error is a security failure (decryption, refused key file,
    /// wrong password, downgrade), which the CLI maps to exit code 4.
    pub fn is_security(&self) -> bool {
        matches!(
            self,
            Error::DecryptionFailed
                | Error::UnsupportedVersion { .. }
                | Error::UnsupportedAlgorithm { .. }
                | Error::InsecurePermissions { .. }
                | Error::ForeignOwner { .. }
                | Error::WrongPassword(_)
                | Error::PasswordRequired(_)
                | Error::KeyTooSmall { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Truncates attacker-controlled text before it is echoed in an error.
pub(crate) fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(32)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 32 {
        out.push('…');
    }
    out
}

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
