//! The embedded engine's integration tests, in one test binary: run one
//! file's tests with `cargo test -p nomyo-engine --test engine real_model::`.

mod batching;
mod load_failure;
mod real_model;
