//! TPM attestation (docs/PROTOCOL.md §14) against a software TPM of each
//! test's own: swtpm with an EK certificate from a local CA made for the
//! test (`swtpm_setup --create-ek-cert` with `swtpm_localca`), on a free
//! port, killed on drop.
//! Without swtpm the TPM tests are skipped with a printed reason, unless
//! NOMYO_REQUIRE_TPM=1 (then they fail). The tier rule without a TPM needs
//! no TPM and always runs. What the tests share: the requests to the
//! attestation routes.

#![allow(clippy::unwrap_used)]

/// The tests that drive a TPM (feature `tpm`).
#[cfg(feature = "tpm")]
mod with_tpm;
mod without_tpm;

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post_json(path: &str, v: &Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}
