//! The server over a real socket (127.0.0.1:0) through the product's own
//! `serve::bind` / `Bound::run`: the round trip, the bad-input matrix over raw
//! HTTP (status, JSON detail, and the server stays up), graceful shutdown,
//! TLS with a self-signed certificate, per-peer rate limits and connection
//! handling. What the tests share: a secure request over reqwest.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod connections;
mod round_trip;
mod tls;

use crate::common::*;

/// A secure request over reqwest (what a real HTTP client does).
async fn post(client: &reqwest::Client, base: &str, sealed: &Sealed) -> (u16, Vec<u8>) {
    let r = client
        .post(format!("{base}/v1/chat/secure_completion"))
        .header("content-type", "application/octet-stream")
        .header("x-payload-id", &sealed.id)
        .header("x-public-key", &sealed.public_key_header)
        .body(sealed.body.clone())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}
