//! `nomyo_rs._native`: the Rust client (`nomyo_client`) for Python.
//!
//! The Python layer (`nomyo_rs/__init__.py`) gives it the interface of the
//! reference client `nomyo` 0.2.9. Everything secret stays here: the request
//! dict is converted straight into a `ChatRequest` (no JSON text in Python),
//! sealed, sent and its answer opened on the extension's tokio runtime
//! without the GIL; Python receives only the final answer dict (or, when
//! streaming, each chunk dict).
//!
//! Errors become the exception classes of `nomyo_rs._exceptions` (the same
//! names, bases and status codes as `nomyo`'s).

use pyo3::prelude::*;
use secrecy::SecretString;

mod bridge;
mod client;
mod errors;
mod keys;

use bridge::_shutdown;
use client::{ChunkIterator, NativeClient};
use keys::ClientKeys;

fn secret(s: Option<String>) -> Option<SecretString> {
    s.filter(|s| !s.is_empty()).map(SecretString::from)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ClientKeys>()?;
    m.add_class::<NativeClient>()?;
    m.add_class::<ChunkIterator>()?;
    let shutdown = wrap_pyfunction!(_shutdown, m)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (&shutdown,))?;
    m.add_function(shutdown)?;
    Ok(())
}
