//! The HTTP surface (docs/CLI.md §11.1), one module per
//! protocol: [`v1`] (`/pki/public_key`, `/v1/chat/secure_completion`) and
//! [`ops`] (`/v1/models`, `/health`, `/metrics`). Protocol v2 (EHBP:
//! `POST /v1/chat/completions`, `GET /.well-known/hpke-keys`) is one more
//! module whose `routes()` is merged in [`crate::app`]; its routes do not
//! collide with v1's.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::AppState;

pub mod ops;
pub mod v1;
pub mod v2;

/// Unknown route: 404 `{"detail": "not found"}`.
pub(crate) async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

/// Known route, wrong method: 405 `{"detail": ...}`.
pub(crate) async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// Counts every request by route template and status, observes latency and
/// logs one line per request at debug level (route, status, time: never
/// headers or bodies).
pub(crate) async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let m = st.metrics();
    m.requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            status,
        })
        .inc();
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::debug!(
        %method,
        route = %route,
        status,
        elapsed_ms = elapsed.as_secs_f64() * 1e3,
        "request done"
    );
    resp
}
