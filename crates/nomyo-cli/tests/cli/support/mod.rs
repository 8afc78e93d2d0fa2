//! Shared by the CLI's integration tests: an OpenAI-compatible upstream
//! double (instant, or slow/holding on request, streamed answers sent chunk
//! by chunk) and the HTTP plumbing to write other doubles, a real `nomyo
//! serve` process, `nomyo bench` commands, checks of a finished command's
//! output, and readers for a server's metrics and `/proc` figures.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod command;
mod double;
mod probe;
mod serve;

// Every `support::name` the tests use; a build without some features uses
// none of a module's items (as `dead_code` above).
#[allow(unused_imports)]
pub use self::{command::*, double::*, probe::*, serve::*};

/// A tokio runtime for a test that drives the Rust client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The embedded model's file (`scripts/fetch-model.sh` puts it there), or
/// `None` with a SKIPPED line when it is missing; with
/// `NOMYO_REQUIRE_MODEL=1` (as CI sets) a missing model fails the test.
pub fn model() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var("NOMYO_REQUIRE_MODEL").as_deref() != Ok("1"),
        "model {} missing (NOMYO_REQUIRE_MODEL=1)",
        p.display()
    );
    eprintln!(
        "SKIPPED: {} missing: run scripts/fetch-model.sh",
        p.display()
    );
    None
}
