//! Client errors as Python exceptions: `nomyo`'s classes from
//! `nomyo_rs._exceptions`, with the same names, bases and status codes.

use nomyo_client::Error;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The module holding the exception classes (pure Python, like `nomyo`'s).
const EXCEPTIONS: &str = "nomyo_rs._exceptions";

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
pub(crate) fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
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
