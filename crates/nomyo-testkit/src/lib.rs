//! What the integration tests of several NOMYO crates share: a log sink for
//! the canary tests ([`log`]), a driver for a command on a pseudo-terminal
//! ([`pty`]), readers of a process's descriptors and TCP sockets under
//! `/proc` ([`procfs`]) and the independent Python peers ([`python`]).
//!
//! A dev-dependency only: nothing here is product code, and it panics on
//! anything unexpected, as a test should.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod log;
pub mod procfs;
pub mod pty;
pub mod python;
