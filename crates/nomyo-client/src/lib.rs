//! # nomyo-client
//!
//! The Rust client for NOMYO end-to-end encrypted inference (protocol v1,
//! docs/PROTOCOL.md §3): OpenAI chat completions sealed with AES-256-GCM and
//! RSA-OAEP-SHA256 to the server's key, answered sealed to the client's key.
//!
//! What it does beyond the reference Python client (`nomyo` 0.2.9):
//!
//! - **Server key verification.** With [pins](ClientBuilder::pin) the server
//!   key must match one of them; otherwise it is trusted on first use and
//!   recorded in a [known-servers file](KnownServers) (like ssh's
//!   `known_hosts`); a changed key is refused with
//!   [`Error::ServerKeyChanged`], saying how to accept it.
//! - **Protocol v2 keys trusted through the server key.** A NOMYO server
//!   rotates its HPKE keys (forward secrecy) and signs each key list with
//!   its long-lived v1 key (`Nomyo-Keys-Signature`, RSA-PSS-SHA256). The
//!   client verifies that signature with the v1 key, itself verified as
//!   above, so rotations need no new record and a v1 pin covers v2; a bad
//!   signature is [`Error::KeysSignature`]. Unsigned lists (third-party EHBP
//!   servers) are pinned or recorded by their config fingerprint instead.
//! - **One fetch of the server key** per client, refetched only when the
//!   server rotates it, and **one connection pool** (HTTP/2 where offered).
//! - **Retries** with jittered exponential backoff that honour `Retry-After`,
//!   resending the same sealed bytes.
//! - **Password-protected key directories** that are never overwritten.
//! - **Plaintext in locked memory**: the request is serialised into a
//!   [`SecretBuf`], the answer is decrypted into one,
//!   and a [`ChatCompletion`] wipes its strings when dropped.
//!
//! A complete round trip (this example runs as a test: a `nomyo_server`
//! with an instant echo backend stands in for a NOMYO endpoint):
//!
//! ```
//! # use std::sync::Arc;
//! # use nomyo_server::backend::{Backend, BackendError, ChatRequest as Plain};
//! # struct Echo;
//! # #[async_trait::async_trait]
//! # impl Backend for Echo {
//! #     fn name(&self) -> &str { "echo" }
//! #     fn models(&self) -> Vec<String> { vec!["echo".into()] }
//! #     async fn chat(&self, r: Plain) -> Result<serde_json::Value, BackendError> {
//! #         let last = r.body["messages"][0]["content"].as_str().unwrap_or("").to_owned();
//! #         Ok(serde_json::json!({"object": "chat.completion", "model": "echo",
//! #             "choices": [{"index": 0, "finish_reason": "stop",
//! #                 "message": {"role": "assistant", "content": format!("echo: {last}")}}]}))
//! #     }
//! # }
//! # async fn start_server() -> (String, nomyo_client::Fingerprint) {
//! #     use nomyo_core::keys::{PrivateKey, RsaBits};
//! #     let key = PrivateKey::generate(RsaBits::B2048).unwrap();
//! #     let fp = key.public_key().fingerprint();
//! #     let state = nomyo_server::AppState::builder(nomyo_server::keystore::KeyStore::ephemeral(key))
//! #         .backend("echo", Arc::new(Echo)).build().unwrap();
//! #     let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #     let url = format!("http://{}", l.local_addr().unwrap());
//! #     tokio::spawn(async move { axum::serve(l, nomyo_server::app(state)).await });
//! #     (url, fp)
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), nomyo_client::Error> {
//! # let (url, server_fingerprint) = start_server().await;
//! use nomyo_client::{ChatMessage, ChatRequest, Client};
//!
//! let client = Client::builder()
//!     .base_url(&url) // e.g. https://api.nomyo.ai
//!     .allow_http(true) // this demo server is local plain HTTP
//!     .pin(server_fingerprint) // only this server key is accepted
//!     .build()?;
//! let request = ChatRequest::new("echo").message(ChatMessage::user("Hello!"));
//! let answer = client.create(&request).await?;
//! assert_eq!(answer.text(), Some("echo: Hello!"));
//! assert_eq!(answer.metadata.is_encrypted, Some(true));
//! assert_eq!(answer.metadata.security_tier.as_deref(), Some("standard"));
//! # Ok(()) }
//! ```
//!
//! Against a real endpoint, with an API key and a tier:
//!
//! ```no_run
//! use nomyo_client::{ChatMessage, ChatRequest, Client};
//! use nomyo_core::{SecretString, SecurityTier};
//!
//! # async fn run() -> Result<(), nomyo_client::Error> {
//! let client = Client::builder()
//!     .base_url("https://api.nomyo.ai")
//!     .api_key(SecretString::from(std::env::var("NOMYO_API_KEY").unwrap_or_default()))
//!     .security_tier(SecurityTier::High)
//!     .build()?;
//! let answer = client
//!     .create(&ChatRequest::new("Qwen/Qwen3-0.6B").message(ChatMessage::user("Hello!")))
//!     .await?;
//! println!("{}", answer.text().unwrap_or_default());
//! # Ok(()) }
//! ```
//!
//! `examples/chat.rs` is a small command-line program on top of this.
//!
//! Errors mirror the Python client's exception classes; see [`Error`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod attest;
mod builder;
mod client;
mod error;
mod keys;
mod request;
mod retry;
mod server_keys;
mod transport;
pub mod trust;
pub mod types;
mod v1;
mod v2;

pub use builder::ClientBuilder;
pub use client::{Client, MODELS_PATH, PUBLIC_KEY_PATH, SECURE_COMPLETION_PATH};
pub use error::{ApiError, Downgrade, Error, KnownBy, Result};
pub use keys::KeySource;
pub use nomyo_core::chat::ModelList;
pub use nomyo_core::HEADER_REQUEST_ID;
pub use request::RequestOptions;
pub use retry::Backoff;
pub use server_keys::{HpkeKeys, ServerKey};
pub use trust::{KnownServers, TrustDecision};
pub use types::{
    ChatCompletion, ChatMessage, ChatRequest, Choice, Content, CudaDevice, FunctionCall,
    FunctionDefinition, MemoryProtectionInfo, Metadata, ModelInfo, Tool, ToolCall, Usage,
};
pub use v1::UnopenedAnswer;
pub use v2::{
    ChatCompletionChunk, ChunkChoice, ChunkStream, Delta, Protocol, COMPLETIONS_PATH,
    HPKE_KEYS_PATH,
};

/// Re-exported from the core, so that users need not depend on it.
pub use nomyo_core::{Fingerprint, PrivateKey, PublicKey, SecretBuf, SecretString, SecurityTier};
/// Re-exported: [`ChatRequest`] implements it, to wipe a prompt after use.
pub use zeroize::Zeroize;
