//! `NativeClient` and `ChunkIterator`: requests sent through one
//! `nomyo_client::Client`, their answers and streamed chunks handed to
//! Python as dicts.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use nomyo_client::{
    ChatCompletion, ChatCompletionChunk, ChatRequest, ChunkStream, Client, Error, Fingerprint,
    KnownServers, Protocol, RequestOptions, SecurityTier, Zeroize,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::Mutex;

use crate::bridge::{bridge, Failure};
use crate::errors::to_py_err;
use crate::keys::ClientKeys;
use crate::secret;

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

/// One `nomyo_client::Client`: its connection pool, server key and client
/// key are reused by every request.
#[pyclass(frozen, module = "nomyo_rs._native")]
pub(crate) struct NativeClient {
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
        req.stream = None;
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
pub(crate) struct ChunkIterator {
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
