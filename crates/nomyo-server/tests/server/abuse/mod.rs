//! Abuse of the server's own rules, each test named after the attack and
//! driving the real server (`serve::bind` + `run` on 127.0.0.1): `maximum`
//! asked for over RSA (v1), a cancelled or failed request sent again to run
//! the backend twice, slow clients holding every processing slot, and one
//! caller filling the replay store for everyone.
//!
//! What the tests share lives here; the tests are grouped by the rule they
//! abuse: [`maximum_over_v1`], [`resend`], [`slow`] and [`replay_store`].

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use http::{Method, Request, StatusCode};
use nomyo_core::v2::keys::{Kem, KeyConfig};
use nomyo_core::SecurityTier;
use nomyo_server::limits::Limits;
use nomyo_server::policy::ApiKeys;
use nomyo_server::AppState;
use nomyo_testkit::backend::{text_chunk, Double};
use serde_json::Value;

mod maximum_over_v1;
mod replay_store;
mod resend;
mod slow;

/// The real server on 127.0.0.1:0 (kept for the whole test process).
async fn serve(state: AppState) -> SocketAddr {
    let (addr, stop, _task) = serve_real(state, None).await;
    std::mem::forget(stop);
    addr
}

fn echo(models: &[&str]) -> (nomyo_server::state::AppStateBuilder, Arc<Double>) {
    let backend = echo_backend(models);
    let b = AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(server_key()))
        .backend("echo", backend.clone());
    (b, backend)
}

/// Sends a sealed v1 request over HTTP/1.1; returns status and body.
async fn post_v1(
    addr: SocketAddr,
    s: &Sealed,
    api_key: Option<&str>,
    tier: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut r = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/secure_completion"))
        .header("content-type", "application/octet-stream")
        .header("x-payload-id", &s.id)
        .header("x-public-key", &s.public_key_header)
        .body(s.body.clone());
    if let Some(k) = api_key {
        r = r.bearer_auth(k);
    }
    if let Some(t) = tier {
        r = r.header("x-security-tier", t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap().to_vec())
}

async fn h2_connect(addr: SocketAddr, window: Option<u32>) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut b = h2::client::Builder::new();
    if let Some(w) = window {
        b.initial_window_size(w);
    }
    let (send, conn) = b.handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.unwrap()
}

/// A v1 request as an HTTP/2 request head (the body is sent separately).
fn v1_head(s: &Sealed) -> Request<()> {
    Request::builder()
        .method(Method::POST)
        .uri("http://localhost/v1/chat/secure_completion")
        .header("content-type", "application/octet-stream")
        .header("x-payload-id", &s.id)
        .header("x-public-key", &s.public_key_header)
        .body(())
        .unwrap()
}

async fn x25519_config(addr: SocketAddr) -> KeyConfig {
    let b = reqwest::get(format!("http://{addr}/.well-known/hpke-keys"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    KeyConfig::parse_list(&b)
        .unwrap()
        .into_iter()
        .find(|c| c.kem == Kem::X25519)
        .unwrap()
}

/// A v2 streamed chat request sealed to `config`: (enc hex, body).
fn v2_stream_request(config: &KeyConfig, prompt: &str) -> (String, Vec<u8>) {
    let mut req = chat("m", prompt);
    req["stream"] = Value::Bool(true);
    let sealed = seal_v2(config, &req);
    let body = sealed.body();
    (sealed.enc_hex, body)
}

/// Polls `f` until it is true or `within` has passed.
async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
