//! nomyo-core's integration tests, one module per concern, in one test
//! binary (one link instead of one per file): run one file's tests with
//! `cargo test -p nomyo-core --test core tamper::`. `secure_memory_mappings`
//! counts the whole process's memory mappings and is a test binary of its
//! own.

#[cfg(feature = "cvm")]
mod cvm;
mod ehbp_vectors;
mod hpke_python_vectors;
mod key_files;
mod tamper;
mod vectors;
