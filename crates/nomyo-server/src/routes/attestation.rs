//! TPM attestation routes (docs/PROTOCOL.md §14.3, §14.4):
//! `GET /.well-known/nomyo-attestation?nonce=HEX`, platform evidence bound
//! to the server's current keys, and
//! `POST /.well-known/nomyo-attestation/activate`, TPM2_ActivateCredential
//! for a client's MakeCredential. No authentication, like the key routes.
//! Without a TPM both answer 404; a full TPM queue 503 + `Retry-After: 1`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

pub use nomyo_core::tpm::{ACTIVATE_PATH, ATTESTATION_PATH};
/// Largest `/activate` body.
pub const MAX_ACTIVATE_BODY: usize = 4096;
use nomyo_core::tpm::NONCE_LEN as NONCE_BYTES;

/// Both attestation routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(ATTESTATION_PATH, get(evidence))
        .route(ACTIVATE_PATH, post(activate))
}

fn json_response(v: &Value) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        v.to_string(),
    )
        .into_response()
}

/// The `nonce` query parameter: 16 to 64 bytes as hex, either case.
fn nonce(uri: &Uri) -> Result<Vec<u8>, ApiError> {
    let bad = ApiError::InvalidAttestationRequest("nonce must be 16 to 64 bytes as hex");
    let value = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("nonce="))
        .ok_or(ApiError::InvalidAttestationRequest(
            "missing nonce query parameter (16 to 64 bytes as hex)",
        ))?;
    if value.len() > 2 * NONCE_BYTES.end() {
        return Err(bad);
    }
    let bytes = hex::decode(value).map_err(|_| bad)?;
    if !NONCE_BYTES.contains(&bytes.len()) {
        return Err(ApiError::InvalidAttestationRequest(
            "nonce must be 16 to 64 bytes as hex",
        ));
    }
    Ok(bytes)
}

async fn evidence(State(st): State<AppState>, uri: Uri) -> Response {
    let run = async {
        if !st.attestation().is_available() {
            return Err(ApiError::NoAttestation);
        }
        let nonce = nonce(&uri)?;
        let v1 = st.keys().current();
        let v2 = st.signed_hpke_keys().await?;
        st.attestation()
            .platform_evidence(&nonce, v1.private_key().public_key().spki_der(), v2.body())
            .await
    };
    match run.await {
        Ok(v) => json_response(&v),
        Err(e) => e.into_response(),
    }
}

/// Reads a JSON body of at most [`MAX_ACTIVATE_BODY`] bytes.
async fn small_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let too_large = ApiError::PayloadTooLarge {
        limit: MAX_ACTIVATE_BODY,
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_ACTIVATE_BODY as u64)
    {
        return Err(too_large);
    }
    let limited = http_body_util::Limited::new(body, MAX_ACTIVATE_BODY);
    match tokio::time::timeout(std::time::Duration::from_secs(10), limited.collect()).await {
        Err(_) => Err(ApiError::BodyTimeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large),
        Ok(Err(_)) => Err(ApiError::UnreadableBody),
        Ok(Ok(c)) => Ok(c.to_bytes().to_vec()),
    }
}

fn b64_field(v: &Value, name: &'static str) -> Result<Vec<u8>, ApiError> {
    v.get(name)
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .filter(|b| !b.is_empty())
        .ok_or(ApiError::InvalidAttestationRequest(
            "expected {\"credential_blob_b64\": ..., \"encrypted_secret_b64\": ...} (base64)",
        ))
}

async fn activate(State(st): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let run = async {
        if !st.attestation().is_available() {
            return Err(ApiError::NoAttestation);
        }
        let bytes = small_body(&headers, body).await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ApiError::InvalidAttestationRequest("the body is not a JSON object"))?;
        let blob = b64_field(&v, "credential_blob_b64")?;
        let secret = b64_field(&v, "encrypted_secret_b64")?;
        let credential = st.attestation().activate(blob, secret).await?;
        Ok(json!({
            "secret_b64": base64::engine::general_purpose::STANDARD.encode(credential),
        }))
    };
    match run.await {
        Ok(v) => json_response(&v),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(q: &str) -> Uri {
        format!("{ATTESTATION_PATH}?{q}").parse().unwrap()
    }

    #[test]
    fn nonce_is_16_to_64_bytes_of_hex() {
        assert_eq!(
            nonce(&uri(&format!("nonce={}", "ab".repeat(16)))).unwrap(),
            vec![0xab; 16]
        );
        assert_eq!(
            nonce(&uri(&format!("nonce={}", "AB".repeat(64)))).unwrap(),
            vec![0xab; 64]
        );
        assert_eq!(
            nonce(&uri(&format!("x=1&nonce={}", "0f".repeat(20))))
                .unwrap()
                .len(),
            20
        );
        for bad in [
            "nonce=".to_owned(),
            "nonce=".to_owned() + &"ab".repeat(15),
            "nonce=".to_owned() + &"ab".repeat(65),
            "nonce=".to_owned() + &"zz".repeat(16),
            "nonce=".to_owned() + &"a".repeat(33),
            "other=1".to_owned(),
        ] {
            let e = nonce(&uri(&bad)).unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
        let no_query: Uri = ATTESTATION_PATH.parse().unwrap();
        assert!(nonce(&no_query).is_err());
    }
}
