//! Operations: `GET /v1/models`, `GET /health`, `GET /metrics`.

use std::net::SocketAddr;
use std::str::FromStr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use nomyo_core::chat::{Model, ModelList, MODELS_PATH};
use nomyo_core::SecurityTier;
use serde_json::json;

use crate::error::ApiError;
use crate::policy::bearer_matches;
use crate::state::{AppState, MetricsAccess};

/// The ops routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(MODELS_PATH, get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
}

/// Models the caller may use, each with the tiers that allow it. Needs the
/// API key when the server has keys; `X-Security-Tier` narrows the list to
/// one tier.
async fn models(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.inner
        .api_keys
        .authenticate(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))?;
    let only = match headers.get(nomyo_core::tier::HEADER_SECURITY_TIER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| SecurityTier::from_str(s).ok())
                .ok_or(ApiError::InvalidTier)?,
        ),
    };
    let data = st
        .routing()
        .listing(only)
        .into_iter()
        .map(|(id, tiers)| Model::new(id, tiers.iter().map(|t| t.as_str().to_owned()).collect()))
        .collect();
    Ok(Json(ModelList::new(data)).into_response())
}

/// 200 `{"status": "ok", ...}` when at least one backend is ready, else 503
/// with `"status": "unavailable"`. Readiness is the backends' own: an
/// upstream pool's follows its probes and breakers, the embedded model's its
/// loading. `backend_status` gives each backend's name (as configured) and
/// readiness; no addresses or secrets.
async fn health(State(st): State<AppState>) -> Response {
    let backends = st.routing().backends();
    let details: Vec<serde_json::Value> = backends
        .iter()
        .map(|b| json!({ "name": b.name, "ready": b.backend.is_ready() }))
        .collect();
    let ready = details.iter().filter(|d| d["ready"] == json!(true)).count();
    let body = json!({
        "status": if ready > 0 { "ok" } else { "unavailable" },
        // v1 (`/v1/chat/secure_completion`) and v2 (EHBP on the OpenAI
        // routes) are both always mounted (`crate::app`).
        "protocols": ["v1", "v2"],
        "backends": backends.len(),
        "backends_ready": ready,
        "backend_status": details,
        "key_fingerprint": st.keys().current().fingerprint().to_string(),
    });
    let status = if ready > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus / OpenMetrics text, to whom [`MetricsAccess`] allows.
async fn metrics(
    State(st): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    match st.inner.metrics_access {
        MetricsAccess::Public => {}
        MetricsAccess::Off => return ApiError::NotFound.into_response(),
        MetricsAccess::Loopback => {
            // In-process use (no socket) counts as local.
            if peer.is_some_and(|Extension(ConnectInfo(a))| !a.ip().is_loopback()) {
                return ApiError::NotFound.into_response();
            }
        }
        MetricsAccess::Token(hash) => {
            let auth = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
            if !bearer_matches(auth, &hash) {
                return ApiError::Unauthorized.into_response();
            }
        }
    }
    let inner = &st.inner;
    let m = &inner.metrics;
    m.queue_depth.set(inner.gate.queue_depth() as i64);
    m.lock_failures
        .set(nomyo_core::secure_memory::lock_failures() as i64);
    if let Some(n) = inner.replay.local_len() {
        m.replay_entries.set(n as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}
