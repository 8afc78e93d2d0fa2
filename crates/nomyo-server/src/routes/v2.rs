//! Protocol v2 (PROTOCOL.md, "v2"; EHBP v0.3.1): `GET /.well-known/hpke-keys`
//! and EHBP on `POST /v1/chat/completions`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use nomyo_core::v2::KEYS_CONTENT_TYPE;

use crate::state::AppState;

/// `GET /.well-known/hpke-keys`.
pub const HPKE_KEYS_PATH: &str = "/.well-known/hpke-keys";

/// The v2 routes.
pub fn routes() -> Router<AppState> {
    Router::new().route(HPKE_KEYS_PATH, get(hpke_keys))
}

/// The key configs, X25519 first, then X-Wing.
async fn hpke_keys(State(st): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, KEYS_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        st.hpke_keys().encoded().to_vec(),
    )
        .into_response()
}
