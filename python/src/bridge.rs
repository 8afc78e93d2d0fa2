//! The extension's tokio runtime and the bridge from Rust futures to
//! asyncio: a request runs on the runtime without the GIL, and its outcome
//! is handed to a future of the caller's event loop.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use nomyo_client::Error;
use pyo3::exceptions::{PyRuntimeError, PyStopAsyncIteration};
use pyo3::prelude::*;
use pyo3::types::PyCFunction;
use pyo3::IntoPyObjectExt;

use crate::errors::to_py_err;

/// The module holding `_resolve` (sets an asyncio future's outcome).
const CLIENT: &str = "nomyo_rs._client";

/// Why a bridged future failed.
pub(crate) enum Failure {
    /// The client's error, raised as `nomyo`'s exception class.
    Client(Error),
    /// The end of a stream (`StopAsyncIteration`).
    End,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Client(e)
    }
}

/// The extension's tokio runtime: every request is sealed, sent and opened
/// on its threads, without the GIL.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("nomyo-rs")
                .build()
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the tokio runtime: {e}")))
}

/// Set by the `atexit` hook: from then on no runtime thread enters Python.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// Runtime threads inside (or waiting for) the interpreter.
static IN_PYTHON: AtomicUsize = AtomicUsize::new(0);

/// Registered with `atexit`: waits (without the GIL) until no runtime thread
/// is inside the interpreter, and keeps them out from then on. Without it a
/// thread handing over a result while the interpreter finalizes would be
/// stopped by the interpreter in the middle of Rust code.
#[pyfunction]
pub(crate) fn _shutdown(py: Python<'_>) {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while IN_PYTHON.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
}

/// Runs `fut` on the runtime and returns an asyncio future of the running
/// event loop that receives its outcome. Cancelling the asyncio future
/// aborts the task (dropping the request and its connection).
pub(crate) fn bridge<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let resolve = py.import(CLIENT)?.getattr("_resolve")?.unbind();
    let (loop_ref, future_ref) = (event_loop.unbind(), future.clone().unbind());
    let task = runtime()?.spawn(async move {
        let outcome = fut.await;
        IN_PYTHON.fetch_add(1, Ordering::SeqCst);
        if !SHUTTING_DOWN.load(Ordering::SeqCst) {
            Python::attach(|py| {
                let (ok, value) = match outcome {
                    Ok(v) => match v.into_py_any(py) {
                        Ok(obj) => (true, obj),
                        Err(e) => (false, e.into_value(py).into_any()),
                    },
                    Err(Failure::Client(e)) => (false, to_py_err(py, e).into_value(py).into_any()),
                    Err(Failure::End) => (
                        false,
                        PyStopAsyncIteration::new_err(()).into_value(py).into_any(),
                    ),
                };
                // A closed loop (the caller gave up) is not an error here.
                let _ = loop_ref
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (resolve, future_ref, ok, value));
            });
        }
        IN_PYTHON.fetch_sub(1, Ordering::SeqCst);
    });
    let abort = task.abort_handle();
    let on_done = PyCFunction::new_closure(py, None, None, move |args, _kwargs| -> PyResult<()> {
        if args.get_item(0)?.call_method0("cancelled")?.is_truthy()? {
            abort.abort();
        }
        Ok(())
    })?;
    future.call_method1("add_done_callback", (on_done,))?;
    Ok(future)
}
