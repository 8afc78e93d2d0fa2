//! Step 7: the decrypted request checked ([`chat_request`]) and routed to
//! a tier and a backend, under the tier's post-quantum and attestation
//! rules.

use nomyo_core::{SecretBuf, SecurityTier};
use serde_json::{Map, Value};

use super::{refuse_post_quantum, refuse_unattested};
use crate::error::ApiError;
use crate::policy::Route;
use crate::state::AppState;

/// Parses and checks the decrypted request (docs/PROTOCOL.md §1.6;
/// the same JSON in v2): a JSON object with a non-empty string `model`, a
/// non-empty array `messages` and a boolean `stream` if any (`true` only
/// where streaming is allowed). Everything else is passed through to the
/// backend as it is. Public for the fuzz target `chat_request`.
pub fn chat_request(
    plaintext: &SecretBuf,
    allow_stream: bool,
) -> Result<Map<String, Value>, ApiError> {
    let body: Map<String, Value> = serde_json::from_slice(plaintext.expose_secret())
        .map_err(|_| ApiError::InvalidChatRequest("the decrypted payload is not a JSON object"))?;
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => {}
        _ => {
            return Err(ApiError::InvalidChatRequest(
                "model must be a non-empty string",
            ))
        }
    }
    match body.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => {}
        _ => {
            return Err(ApiError::InvalidChatRequest(
                "messages must be a non-empty array",
            ))
        }
    }
    match body.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) if !allow_stream => return Err(ApiError::StreamingUnsupported),
        Some(Value::Bool(true)) => {}
        Some(_) => return Err(ApiError::InvalidChatRequest("stream must be a boolean")),
    }
    Ok(body)
}

/// A checked plaintext request and where it goes.
pub(crate) struct Routed {
    pub(crate) body: Map<String, Value>,
    pub(crate) model: String,
    pub(crate) route: Route,
    /// Whether the request's plaintext sat in locked memory (the truth for
    /// this request's `_metadata.memory_protection.memory_locking`).
    pub(crate) memory_locked: bool,
}

/// Step 7: the plaintext request checked ([`chat_request`]; the plaintext
/// buffer is wiped here), its tier and model (403/404, a wrong model named
/// with the ones served), and the post-quantum rule for the tier the model
/// chose when the header named none (403).
pub(crate) fn route(
    st: &AppState,
    plaintext: SecretBuf,
    allow_stream: bool,
    tier_header: Option<SecurityTier>,
    post_quantum: bool,
) -> Result<Routed, ApiError> {
    let body = chat_request(&plaintext, allow_stream)?;
    let memory_locked = plaintext.is_locked();
    drop(plaintext);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let route = st
        .inner
        .routing
        .route(&model, tier_header)
        .map_err(|e| crate::routes::with_served_models(st, &model, e))?;
    refuse_post_quantum(st, Some(route.tier), post_quantum)?;
    refuse_unattested(st, Some(route.tier))?;
    Ok(Routed {
        body,
        model,
        route,
        memory_locked,
    })
}
