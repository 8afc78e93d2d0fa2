//! Exit codes (docs/CLI.md §2) and the error type every subcommand returns.

use std::fmt;
use std::process::ExitCode;

/// The documented exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(dead_code)] // Auth and Server are used by chat and fingerprint --server.
pub enum Code {
    /// Anything else.
    Other = 1,
    /// Usage error.
    Usage = 2,
    /// Authentication or authorisation (401/403).
    Auth = 3,
    /// Security failure: decryption, pin mismatch, changed server key, refused key file.
    Security = 4,
    /// Server or network failure after retries.
    Server = 5,
}

/// An error for a person: one or two lines, and the exit code.
pub struct CliError {
    /// Exit code.
    pub code: Code,
    /// What went wrong and, where possible, what to do.
    pub message: String,
}

impl CliError {
    /// Builds an error.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Code::Usage, message)
    }
    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code as u8)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<nomyo_core::Error> for CliError {
    fn from(e: nomyo_core::Error) -> Self {
        let code = if e.is_security() {
            Code::Security
        } else {
            match e {
                nomyo_core::Error::BadFingerprint(_) | nomyo_core::Error::BadTier(_) => Code::Usage,
                _ => Code::Other,
            }
        };
        CliError::new(code, e.to_string())
    }
}

/// Result alias for subcommands.
pub type CliResult<T = ()> = Result<T, CliError>;
