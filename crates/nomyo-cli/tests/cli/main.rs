//! The `nomyo` command's integration tests, one module per concern, in
//! one test binary (one link instead of one per file): run one file's tests
//! with `cargo test -p nomyo-cli --test cli chat_session::`. Tests that need
//! `nomyo serve`, `nomyo proxy` or the embedded engine are compiled only with
//! the `serve`, `proxy` or `engine` feature (`#![cfg(feature = "serve")]` at
//! the top of their module), so the client-only build
//! (`--no-default-features`) runs all the rest.

mod attest;
mod attest_verify;
mod bench;
mod chat;
mod chat_session;
mod cli_golden;
mod config_examples;
mod defaults;
mod faults;
mod key_password;
mod keygen_fingerprint;
mod known_servers;
mod known_servers_cmd;
mod memory_canary;
mod mitm;
mod models;
mod proxy_canary;
mod serve_context;
mod serve_logs;
mod serve_parallel;
mod serve_tsm;
mod soak;
mod support;
mod v1_warning;
