//! # nomyo-server
//!
//! The secure endpoint as a library: [`app`]`(state) -> Router`, its policy
//! ([`policy`]: API keys, rate limits, tiers and models), its limits
//! ([`limits`]: body size, concurrency with a bounded queue, replay window),
//! its key store ([`keystore`]: load, first-start generation, rotation), the
//! [`backend::Backend`] trait with the OpenAI-compatible [`upstream`]
//! implementation, the TOML [`config`], and [`serve`] (sockets, TLS, signals).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use nomyo_core::keys::{PrivateKey, RsaBits};
//! use nomyo_server::{app, keystore::KeyStore, state::AppState, upstream::*};
//!
//! let key = PrivateKey::generate(RsaBits::B4096)?;
//! let upstream = UpstreamBackend::connect(UpstreamConfig::new("http://127.0.0.1:8080/v1")).await?;
//! let state = AppState::builder(KeyStore::ephemeral(key))
//!     .backend("llama", Arc::new(upstream))
//!     .build()?;
//! let router = app(state);
//! # let _ = router; Ok(()) }
//! ```

// Tests may unwrap: a panic there is a test failure with a location.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access;
pub mod attestation;
pub mod backend;
pub mod config;
pub mod error;
pub mod hpke_keys;
pub mod key_ring;
pub mod keystore;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod pool;
pub mod replay;
pub mod replay_journal;
pub mod routes;
pub mod serve;
pub mod state;
pub mod upstream;

use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::ApiError;
pub use state::AppState;

/// The whole HTTP surface for `state`.
///
/// Routes are grouped by protocol ([`routes::v1`], [`routes::ops`]); a v2
/// route set (EHBP on `POST /v1/chat/completions` and
/// `GET /.well-known/hpke-keys`) merges in beside v1 without touching it.
/// Every response, including unknown routes, wrong methods and panics, is
/// JSON `{"detail": ...}` on error.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(routes::v1::routes())
        .merge(routes::ops::routes())
        .merge(routes::v2::routes())
        .merge(routes::attestation::routes())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::host_check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::observe,
        ))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                // The panic payload is not logged: it is not ours to trust.
                tracing::error!("request handler panicked");
                axum::response::IntoResponse::into_response(ApiError::Internal(
                    "handler panicked".into(),
                ))
            },
        ))
        // Outermost: every response, panics and refusals included, gets its
        // request id and its access line.
        .layer(axum::middleware::from_fn(access::access_log))
        .with_state(state)
}
