//! Protocol v2 (EHBP) driven in-process, with `nomyo_core::v2` as the client:
//! key discovery, both suites plain and streamed, tampering, reordering,
//! key ids, the post-quantum tier, plaintext refusal, replay, key rotation
//! and the signed key list. What the tests share: the published key configs
//! and a server for model `m`.

#![allow(clippy::unwrap_used)]

mod refusals;
mod rotation;
mod round_trip;
mod signed_keys;
mod streaming;
mod tiers;

use crate::common::*;

use nomyo_core::v2::keys::KeyConfig;
use nomyo_server::app;

async fn key_configs(app: &axum::Router) -> Vec<KeyConfig> {
    KeyConfig::parse_list(&fetch_hpke_keys(app).await).unwrap()
}

/// An in-process server for model `m` and its published key configs.
async fn m_server() -> (axum::Router, Vec<KeyConfig>) {
    let app = app(state_with(&["m"]).build().unwrap());
    let configs = key_configs(&app).await;
    (app, configs)
}
