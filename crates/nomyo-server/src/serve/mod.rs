//! Running the endpoint: building the state from
//! [`Settings`](crate::config::Settings), binding (plain or TLS through
//! rustls), rotation on SIGHUP, graceful shutdown on SIGTERM / ctrl-c.
//!
//! The split into [`prepare`], [`bind`] and [`Bound::run`] lets the caller
//! print `listening on ...` exactly when the socket accepts connections, with
//! the real port when it asked for port 0.
//!
//! Start-up is in `prepare.rs`, the socket and the HTTP server in
//! `listen.rs`, the SIGHUP handler in `sighup.rs`; this file holds what
//! they share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::TlsFiles;
use crate::keystore::KeyOrigin;
use crate::state::AppState;

mod listen;
mod prepare;
#[cfg(unix)]
mod sighup;

pub use listen::{bind, Bound, H2_MAX_CONCURRENT_STREAMS, H2_MAX_HEADER_LIST};
pub use prepare::prepare;
#[cfg(unix)]
pub use sighup::rotate_on_sighup;

/// Why the server could not start, for a person.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The server key could not be loaded, generated or saved.
    #[error("server key: {0}")]
    Key(#[source] nomyo_core::Error),
    /// A backend could not be set up.
    #[error("backend '{name}': {message}")]
    Backend {
        /// Backend name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The TPM could not be opened, or its attestation key not loaded or
    /// created (docs/PROTOCOL.md §14.1).
    #[error("TPM attestation: {0}")]
    Attestation(String),
    /// The configuration is inconsistent (tier names an unknown backend...).
    #[error("{0}")]
    Config(String),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: cannot load certificate {cert} / key {key}: {message}")]
    Tls {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What the embedded-engine factory is asked to build.
#[derive(Clone, Debug)]
pub struct EmbeddedParams {
    /// Backend name.
    pub name: String,
    /// Model file (`--model`); `None` = the engine's default.
    pub model: Option<PathBuf>,
    /// Threads; `None` = the engine's default.
    pub threads: Option<usize>,
    /// Tokens one request may use (context per sequence); `None` = the
    /// model's, within the engine's KV cache budget.
    pub context: Option<u32>,
    /// Requests decoding at once; `None` = the engine's default.
    pub parallel: Option<usize>,
}

/// A state ready to serve, and how the key came to be.
#[derive(Debug)]
pub struct Prepared {
    /// The state for [`crate::app`].
    pub state: AppState,
    /// Whether the key was loaded, generated and saved, or is ephemeral.
    pub key_origin: KeyOrigin,
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS files.
    pub tls: Option<TlsFiles>,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
}
