//! The server's integration tests, one module per concern, in one test
//! binary (one link instead of one per file): run one file's tests with
//! `cargo test -p nomyo-server --test server attacks::`. The tests that
//! install a process-wide log subscriber (`canary`, `readiness`) are test
//! binaries of their own.

mod abuse;
mod access_log;
mod attacks;
mod attestation;
mod common;
mod exposure;
mod hostile;
mod http2;
mod in_process;
mod nodelay;
mod pool;
mod rejections;
mod replicas;
mod socket;
mod startup;
mod throughput;
mod tsm;
mod upstream_stream;
mod v2;
