//! The client's integration tests, one module per concern, in one test
//! binary (one link instead of one per file): run one file's tests with
//! `cargo test -p nomyo-client --test client double::`. `no_proxy` sets
//! proxy variables for the whole process and is a test binary of its own.

// The v1 server double, shared with `no_proxy`.
use nomyo_testkit::v1_double as common;

mod double;
mod python_interop;
mod server;
mod tls;
mod v2;
