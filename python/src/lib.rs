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

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use nomyo_client::{
    ChatCompletion, ChatCompletionChunk, ChatRequest, ChunkStream, Client, Error, Fingerprint,
    KnownServers, Protocol, RequestOptions, SecurityTier, Zeroize,
};
use nomyo_core::keys::{LoadOptions, PrivateKey, RsaBits};
use pyo3::exceptions::{PyFileExistsError, PyRuntimeError, PyStopAsyncIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict};
use pyo3::IntoPyObjectExt;
use secrecy::SecretString;
use tokio::sync::Mutex;

/// The module holding the exception classes (pure Python, like `nomyo`'s).
const EXCEPTIONS: &str = "nomyo_rs._exceptions";
/// The module holding `_resolve` (sets an asyncio future's outcome).
const CLIENT: &str = "nomyo_rs._client";

/// How an exception of `nomyo_rs._exceptions` is constructed: with a
/// message, or as an `APIError` with (message, status_code, error_details).
enum ExcArgs {
    Message(String),
    Api(String, Option<u16>, Option<serde_json::Value>),
}

/// Builds an exception of class `class` of `nomyo_rs._exceptions`.
fn py_exception(py: Python<'_>, class: &str, args: ExcArgs) -> PyErr {
    let made = py
        .import(EXCEPTIONS)
        .and_then(|m| m.getattr(class))
        .and_then(|c| match args {
            ExcArgs::Message(m) => c.call1((m,)),
            ExcArgs::Api(m, status, details) => {
                let details = match details {
                    Some(v) if v.is_object() => Some(pythonize::pythonize(py, &v)?),
                    _ => None,
                };
                c.call1((m, status, details))
            }
        });
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// Maps a client error to `nomyo`'s exception classes.
///
/// | nomyo_client::Error | Python | status |
/// |---|---|---|
/// | InvalidRequest | InvalidRequestError | 400 |
/// | Authentication | AuthenticationError | 401 |
/// | Forbidden | ForbiddenError | 403 |
/// | NotFound | APIError | 404 |
/// | RateLimit | RateLimitError | 429 |
/// | Server (500) | ServerError | 500 |
/// | Server (502, 504) | APIError | 502, 504 |
/// | ServiceUnavailable | ServiceUnavailableError | 503 |
/// | Api (409, 413, ...) | APIError | its status |
/// | Connection, Timeout | APIConnectionError | — |
/// | every security failure (pins, changed keys, downgrades, attestation, TLS, decryption), InsecureUrl, KnownServers | SecurityError | — |
/// | Config, InvalidInput, ClientKey (not a security failure) | ValueError | — |
/// | InvalidResponse and anything else | APIError | — |
fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    use ExcArgs::{Api, Message};
    let text = e.to_string();
    if e.is_security() || matches!(e, Error::InsecureUrl { .. } | Error::KnownServers { .. }) {
        return py_exception(py, "SecurityError", Message(text));
    }
    let api = |class: &str, prefix: &str, fallback: &str| {
        let a = e.api_error();
        let detail = a
            .map(|a| a.detail())
            .filter(|d| !d.is_empty())
            .unwrap_or(fallback);
        py_exception(
            py,
            class,
            Api(
                format!("{prefix}{detail}"),
                e.status(),
                a.and_then(|a| a.details().cloned()),
            ),
        )
    };
    match &e {
        Error::InvalidRequest(_) => api("InvalidRequestError", "Bad request: ", "Unknown error"),
        Error::Authentication(_) => api(
            "AuthenticationError",
            "",
            "Invalid API key or authentication failed",
        ),
        Error::Forbidden(_) => api(
            "ForbiddenError",
            "Forbidden: ",
            "Model not allowed for the requested security tier",
        ),
        Error::NotFound(_) => api(
            "APIError",
            "Endpoint not found: ",
            "Secure inference not enabled",
        ),
        Error::RateLimit { .. } => api("RateLimitError", "Rate limit exceeded: ", "unknown"),
        Error::Server(a) if a.status() == 500 => api("ServerError", "Server error: ", "unknown"),
        Error::ServiceUnavailable(_) => api(
            "ServiceUnavailableError",
            "Service unavailable: ",
            "unknown",
        ),
        Error::Server(a) | Error::Api(a) => {
            let prefix = format!("Unexpected status code: {} ", a.status());
            api("APIError", &prefix, "unknown")
        }
        Error::Connection { .. } | Error::Timeout { .. } => {
            py_exception(py, "APIConnectionError", Message(text))
        }
        Error::Config(_) | Error::InvalidInput(_) | Error::ClientKey(_) => {
            PyValueError::new_err(text)
        }
        _ => py_exception(py, "APIError", Api(text, None, None)),
    }
}

/// Why a bridged future failed.
enum Failure {
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
fn _shutdown(py: Python<'_>) {
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
fn bridge<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
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

/// An answer still in Rust memory (wiped when dropped); it becomes a dict
/// only when handed to Python.
struct Answer(ChatCompletion);

impl<'py> IntoPyObject<'py> for Answer {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(pythonize::pythonize(py, &self.0)?)
    }
}

/// One streamed chunk, converted to a dict when handed to Python.
struct Chunk(ChatCompletionChunk);

impl<'py> IntoPyObject<'py> for Chunk {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(pythonize::pythonize(py, &self.0)?)
    }
}

fn secret(s: Option<String>) -> Option<SecretString> {
    s.filter(|s| !s.is_empty()).map(SecretString::from)
}

fn parse_tier(tier: Option<&str>) -> PyResult<Option<SecurityTier>> {
    match tier {
        None => Ok(None),
        Some(t @ ("standard" | "high" | "maximum")) => t
            .parse()
            .map(Some)
            .map_err(|_| PyValueError::new_err(format!("Invalid security_tier: '{t}'"))),
        Some(t) => Err(PyValueError::new_err(format!(
            "Invalid security_tier: '{t}'. Must be one of: standard, high, maximum"
        ))),
    }
}

/// An RSA client key pair held in Rust memory (`SecureCompletionClient`'s
/// keys). The private key never reaches Python.
#[pyclass(frozen, module = "nomyo_rs._native")]
struct ClientKeys {
    key: Arc<PrivateKey>,
}

#[pymethods]
impl ClientKeys {
    /// Generates an RSA-4096 key pair; with `key_dir`, saves it as
    /// `key_dir/private_key.pem` (PKCS#8, encrypted with `password` when
    /// given, mode 0600) and `key_dir/public_key.pem` (0644), `nomyo`'s
    /// layout and formats. Existing key files are never overwritten
    /// (FileExistsError).
    #[staticmethod]
    #[pyo3(signature = (key_dir=None, password=None))]
    fn generate(
        py: Python<'_>,
        key_dir: Option<PathBuf>,
        password: Option<String>,
    ) -> PyResult<Self> {
        let password = secret(password);
        py.detach(|| {
            let key = PrivateKey::generate(RsaBits::B4096)
                .map_err(|e| PyValueError::new_err(format!("key generation failed: {e}")))?;
            if let Some(dir) = key_dir {
                nomyo_core::keys::save_key_pair(&dir, &key, password.as_ref(), false).map_err(
                    |e| match e {
                        nomyo_core::Error::AlreadyExists(p) => PyFileExistsError::new_err(format!(
                            "{p} exists; existing keys are never overwritten (load them with load_keys)"
                        )),
                        e => PyValueError::new_err(format!("cannot save the keys: {e}")),
                    },
                )?;
            }
            Ok(Self { key: Arc::new(key) })
        })
    }

    /// Loads a PEM private key (PKCS#8, encrypted PKCS#8 or PKCS#1) and,
    /// when given, checks that the public key file matches it. Raises
    /// ValueError("Failed to load private key: ...") like `nomyo`.
    #[staticmethod]
    #[pyo3(signature = (private_key_path, public_key_path=None, password=None))]
    fn load(
        py: Python<'_>,
        private_key_path: PathBuf,
        public_key_path: Option<PathBuf>,
        password: Option<String>,
    ) -> PyResult<Self> {
        let password = secret(password);
        py.detach(|| {
            let key = nomyo_core::keys::load_private_key_file(
                &private_key_path,
                password.as_ref(),
                LoadOptions::default(),
            )
            .map_err(|e| PyValueError::new_err(format!("Failed to load private key: {e}")))?;
            if let Some(p) = public_key_path {
                let public = nomyo_core::keys::load_public_key_file(&p).map_err(|e| {
                    PyValueError::new_err(format!("Failed to load public key: {e}"))
                })?;
                if &public != key.public_key() {
                    return Err(PyValueError::new_err(format!(
                        "{} does not belong to the private key {}",
                        p.display(),
                        private_key_path.display()
                    )));
                }
            }
            if key.bits() < 2048 {
                return Err(PyValueError::new_err(format!(
                    "Key size {} is too small. Minimum recommended size is 2048 bits.",
                    key.bits()
                )));
            }
            Ok(Self { key: Arc::new(key) })
        })
    }

    /// The public key, PEM (SubjectPublicKeyInfo).
    #[getter]
    fn public_key_pem(&self) -> String {
        self.key.public_key().to_pem()
    }

    /// The key size in bits.
    #[getter]
    fn key_size(&self) -> usize {
        self.key.bits()
    }

    /// The public key's fingerprint, `sha256:<hex>`.
    #[getter]
    fn fingerprint(&self) -> String {
        self.key.public_key().fingerprint().to_string()
    }
}

/// One `nomyo_client::Client`: its connection pool, server key and client
/// key are reused by every request.
#[pyclass(frozen, module = "nomyo_rs._native")]
struct NativeClient {
    client: Client,
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (
        base_url, *, allow_http=false, api_key=None, max_retries=2, protocol="auto",
        key_dir=None, key_password=None, client_key=None, pins=None, known_servers=None,
        security_tier=None, require_attestation=false, ek_roots=None,
        attestation_policy=None, tdx_collateral=None, timeout=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        base_url: String,
        allow_http: bool,
        api_key: Option<String>,
        max_retries: u32,
        protocol: &str,
        key_dir: Option<PathBuf>,
        key_password: Option<String>,
        client_key: Option<PyRef<'_, ClientKeys>>,
        pins: Option<Vec<String>>,
        known_servers: Option<PathBuf>,
        security_tier: Option<&str>,
        require_attestation: bool,
        ek_roots: Option<PathBuf>,
        attestation_policy: Option<PathBuf>,
        tdx_collateral: Option<PathBuf>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let err = |e: Error| to_py_err(py, e);
        let protocol: Protocol = protocol.parse().map_err(|_| {
            PyValueError::new_err(format!(
                "Invalid protocol: '{protocol}'. Must be one of: auto, v2, v1"
            ))
        })?;
        let mut b = Client::builder()
            .base_url(base_url)
            .allow_http(allow_http)
            .max_retries(max_retries)
            .protocol(protocol);
        if let Some(key) = secret(api_key) {
            b = b.api_key(key);
        }
        if let Some(t) = parse_tier(security_tier)? {
            b = b.security_tier(t);
        }
        if let Some(k) = client_key {
            b = b.client_key(k.key.clone());
        } else if let Some(dir) = key_dir {
            b = b.key_dir(dir, secret(key_password));
        }
        let mut fingerprints = Vec::new();
        for p in pins.unwrap_or_default() {
            let f: Fingerprint = p.parse().map_err(|_| {
                PyValueError::new_err(format!(
                    "not a server key fingerprint: '{p}' (expected sha256:<64 hex digits>)"
                ))
            })?;
            fingerprints.push(f);
        }
        b = b.pins(fingerprints);
        if let Some(path) = known_servers {
            b = b.known_servers(KnownServers::File(path));
        }
        if require_attestation {
            let mut options = nomyo_client::attest::AttestOptions::default();
            if let Some(path) = ek_roots {
                options = options.ek_roots_pem_file(&path).map_err(err)?;
            }
            if let Some(path) = attestation_policy {
                let policy =
                    nomyo_client::attest::Policy::load(&path).map_err(PyValueError::new_err)?;
                options = options.policy(policy);
            }
            if let Some(path) = tdx_collateral {
                options = options.tdx_collateral_file(&path).map_err(err)?;
            }
            b = b.require_attestation(options);
        }
        if let Some(t) = timeout {
            if !(t.is_finite() && t > 0.0) {
                return Err(PyValueError::new_err(
                    "timeout must be a positive number of seconds",
                ));
            }
            b = b.timeout(std::time::Duration::from_secs_f64(t));
        }
        let client = b.build().map_err(err)?;
        Ok(Self { client })
    }

    /// The server's origin (scheme, host, port).
    #[getter]
    fn origin(&self) -> &str {
        self.client.origin()
    }

    /// Sends `request` (a dict: model, messages and any OpenAI parameter)
    /// sealed; resolves to the answer dict, `_metadata` included. With
    /// `stream`, resolves to a `ChunkIterator` (protocol v2).
    #[pyo3(signature = (request, security_tier=None, stream=false))]
    fn create<'py>(
        &self,
        py: Python<'py>,
        request: &Bound<'py, PyDict>,
        security_tier: Option<&str>,
        stream: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut options = RequestOptions::default();
        if let Some(t) = parse_tier(security_tier)? {
            options = options.security_tier(t);
        }
        let mut req: ChatRequest = pythonize::depythonize(request.as_any())
            .map_err(|e| PyValueError::new_err(format!("invalid request: {e}")))?;
        req.extra.remove("stream");
        let client = self.client.clone();
        if stream {
            return bridge(py, async move {
                let result = client.create_stream_with(&req, &options).await;
                req.zeroize();
                let stream = result?;
                Ok(ChunkIterator {
                    stream: Arc::new(Mutex::new(Some(stream))),
                })
            });
        }
        bridge(py, async move {
            let result = client.create_with(&req, &options).await;
            req.zeroize();
            Ok(Answer(result?))
        })
    }

    /// Fetches (or returns the cached) server key: resolves to its PEM.
    fn server_public_key<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client.clone();
        bridge(py, async move {
            let key = client.prepare().await?;
            Ok(key.public_key().to_pem())
        })
    }
}

/// The chunks of a streamed answer, each a dict, as an async iterator.
/// Dropping it (or `aclose()`) before the end drops the stream, which closes
/// the connection and so cancels the request.
#[pyclass(frozen, module = "nomyo_rs._native")]
struct ChunkIterator {
    stream: Arc<Mutex<Option<ChunkStream>>>,
}

#[pymethods]
impl ChunkIterator {
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = self.stream.clone();
        bridge(py, async move {
            let mut guard = stream.lock().await;
            let Some(s) = guard.as_mut() else {
                return Err(Failure::End);
            };
            match s.next().await {
                Some(Ok(chunk)) => Ok(Chunk(chunk)),
                Some(Err(e)) => {
                    *guard = None;
                    Err(Failure::Client(e))
                }
                None => {
                    *guard = None;
                    Err(Failure::End)
                }
            }
        })
    }

    /// Stops the stream (closing its connection); further iteration ends.
    fn aclose<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = self.stream.clone();
        bridge(py, async move {
            stream.lock().await.take();
            Ok(())
        })
    }
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
