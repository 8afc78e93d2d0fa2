//! What the integration tests of several NOMYO crates share: key fixtures
//! ([`keys`]), a log sink for the canary tests ([`log`]), a driver for a
//! command on a pseudo-terminal ([`pty`]), readers of a process's
//! descriptors and TCP sockets under `/proc` ([`procfs`]), the independent
//! Python peers ([`python`]), a software TPM ([`swtpm`]), with the feature
//! `backend` the one backend double (`backend`) and, with the feature
//! `server`, the in-process server's helpers (`server`) and a scriptable v1
//! server double for the client (`v1_double`).
//!
//! A dev-dependency only: nothing here is product code, and it panics on
//! anything unexpected, as a test should.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "backend")]
pub mod backend;
pub mod keys;
pub mod log;
pub mod procfs;
pub mod pty;
pub mod python;
#[cfg(feature = "server")]
pub mod server;
pub mod swtpm;
pub mod tsm;
#[cfg(feature = "server")]
pub mod v1_double;
