//! # nomyo-proxy
//!
//! A plain OpenAI-compatible HTTP API on loopback that forwards every request
//! end-to-end encrypted to a NOMYO endpoint, so that any application built on
//! an OpenAI SDK (Python `openai`, LangChain, the JS SDK, curl) switches to
//! encrypted inference by changing its base URL, and nothing else.
//!
//! The proxy is a thin axum app on top of [`nomyo_client::Client`]: the
//! client seals each request (protocol v2 when the server publishes
//! `/.well-known/hpke-keys`, v1 otherwise, with [`nomyo_client::Protocol::Auto`],
//! the default; auto never sends the `high` or `maximum` tier over v1 and
//! never falls back to v1 for a server recorded as speaking v2: such a
//! request is a security error, 502 `nomyo_security_error`),
//! verifies the server key (pins or the known-servers file), and opens the
//! answer; the proxy only translates between the OpenAI wire shapes and the
//! client's calls:
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/chat/completions` | `chat.completion` JSON, or with `"stream": true` server-sent events `data: {chunk}` ending with `data: [DONE]` |
//! | `GET /v1/models` | `{"object": "list", "data": [{"id", "object": "model", ...}]}` |
//! | `GET /v1/models/{model}` | one entry of that list, or 404 |
//! | `GET /health` | `{"status": "ok"}` |
//!
//! Errors are OpenAI-shaped (`{"error": {"message", "type", "param", "code"}}`)
//! with the status the endpoint answered (401, 403, 404, 429 with
//! `Retry-After`, 400, 5xx), so the SDKs raise their own exception types.
//! Failures only the proxy sees (pin mismatch, changed server key, a
//! response that fails decryption) are `502` with type `nomyo_security_error`
//! and `x-should-retry: false`.
//!
//! A v1 server cannot stream: a streamed request to one is answered with a
//! well-formed event stream built from the complete answer (one content
//! chunk per choice, one finishing chunk, the usage chunk when
//! `stream_options.include_usage` asks for it, then `data: [DONE]`).
//!
//! Safe by default: see [`check_listen`] (loopback only unless explicitly
//! allowed, and then only with an access token) and [`ProxyState`] (without
//! an access token, only requests addressed to a loopback host name and, for
//! POST, only `application/json` bodies are accepted: a web page cannot
//! drive the proxy by DNS rebinding or a cross-site form post). Nothing of a
//! prompt or a completion is logged; debug logs carry request ids, sizes,
//! statuses and timings.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = nomyo_client::Client::builder()
//!     .base_url("https://api.nomyo.ai")
//!     .protocol(nomyo_client::Protocol::Auto)
//!     .build()?;
//! let state = nomyo_proxy::ProxyState::new(client);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:12436").await?;
//! nomyo_proxy::serve(listener, state, std::future::pending()).await?;
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod error;
mod routes;
mod sse;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use nomyo_client::Client;
use nomyo_client::{SecretString, SecurityTier};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use error::ProxyError;

/// Where `nomyo proxy` listens by default: loopback, port 12436, beside the
/// server's 12434 (and off 8080, where llama-server and others listen).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:12436";

/// The per-request tier header: `standard`, `high` or `maximum`.
pub const TIER_HEADER: &str = "x-nomyo-tier";

/// Largest request body accepted (the reference client refuses plaintext
/// over 10 MiB; JSON escaping can add a little).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// What the proxy's handlers share: the client and the local policy.
///
/// Cheap to clone (the client is reference-counted).
#[derive(Clone)]
pub struct ProxyState {
    pub(crate) client: Client,
    /// SHA-256 of the local access token callers must present as
    /// `Authorization: Bearer ...` (none: loopback callers need none).
    access_token_hash: Option<[u8; 32]>,
    /// The tier when the request names none ([`TIER_HEADER`]); `None` =
    /// the client's own setting (the server's default when unset).
    pub(crate) default_tier: Option<SecurityTier>,
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState")
            .field("client", &self.client)
            .field("access_token", &self.access_token_hash.is_some())
            .field("default_tier", &self.default_tier)
            .finish()
    }
}

impl ProxyState {
    /// A proxy forwarding through `client` (configure its base URL, API key,
    /// pins, protocol and retries on the client).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            access_token_hash: None,
            default_tier: None,
        }
    }

    /// Requires callers to present this token as `Authorization: Bearer
    /// TOKEN` (the OpenAI SDKs' `api_key`). Needed to listen beyond
    /// loopback; with it, the loopback host-name check is not applied.
    pub fn access_token(mut self, token: &SecretString) -> Self {
        self.access_token_hash = Some(Sha256::digest(token.expose_secret().as_bytes()).into());
        self
    }

    /// The tier for requests without an [`TIER_HEADER`] header.
    pub fn default_tier(mut self, tier: SecurityTier) -> Self {
        self.default_tier = Some(tier);
        self
    }

    /// Whether callers must present an access token.
    pub fn has_access_token(&self) -> bool {
        self.access_token_hash.is_some()
    }

    /// The client requests go through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Checks a presented `Authorization` header value against the access
    /// token in constant time. `true` when no token is configured.
    pub(crate) fn authorised(&self, authorization: Option<&[u8]>) -> bool {
        let Some(expected) = &self.access_token_hash else {
            return true;
        };
        let Some(token) = authorization.and_then(|v| v.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token).into();
        presented.ct_eq(expected).into()
    }
}

/// The proxy as an axum router (tests drive it in-process).
pub fn app(state: ProxyState) -> Router {
    routes::router(state)
}

/// Why the proxy refuses an address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenError {
    /// A non-loopback address without the explicit opt-in.
    NotLoopback(SocketAddr),
    /// A non-loopback address without an access token.
    NoAccessToken(SocketAddr),
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenError::NotLoopback(a) => write!(
                f,
                "refusing to listen on {a}: it is not a loopback address, so other machines \
                 could use your API key through the proxy; listen on 127.0.0.1, or pass \
                 --allow-remote together with an access token (--access-token-file F or \
                 --access-token-env VAR)"
            ),
            ListenError::NoAccessToken(a) => write!(
                f,
                "refusing to listen on {a} without an access token: give --access-token-file F \
                 or --access-token-env VAR (callers then send it as their API key)"
            ),
        }
    }
}

impl std::error::Error for ListenError {}

/// Loopback only, unless `allow_remote` is set *and* callers must present an
/// access token.
pub fn check_listen(
    addr: SocketAddr,
    allow_remote: bool,
    has_access_token: bool,
) -> Result<(), ListenError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !allow_remote {
        return Err(ListenError::NotLoopback(addr));
    }
    if !has_access_token {
        return Err(ListenError::NoAccessToken(addr));
    }
    Ok(())
}

/// Serves the proxy on `listener` until `shutdown` completes; in-flight
/// requests then finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ProxyState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Streamed answers are many small writes: without TCP_NODELAY, Nagle's
    // algorithm and the caller's delayed ACK hold each one back ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_policy() {
        let lo: SocketAddr = "127.0.0.1:12436".parse().unwrap();
        let lo6: SocketAddr = "[::1]:12436".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:12436".parse().unwrap();
        let lan: SocketAddr = "192.168.1.5:12436".parse().unwrap();
        assert!(check_listen(lo, false, false).is_ok());
        assert!(check_listen(lo6, false, false).is_ok());
        assert_eq!(
            check_listen(any, false, true),
            Err(ListenError::NotLoopback(any))
        );
        assert_eq!(
            check_listen(lan, true, false),
            Err(ListenError::NoAccessToken(lan))
        );
        assert!(check_listen(lan, true, true).is_ok());
        assert!(ListenError::NotLoopback(any)
            .to_string()
            .contains("--allow-remote"));
    }

    #[test]
    fn access_token_is_checked() {
        let client = Client::builder()
            .base_url("http://127.0.0.1:1")
            .allow_http(true)
            .build()
            .unwrap();
        let open = ProxyState::new(client.clone());
        assert!(open.authorised(None));
        let st = ProxyState::new(client).access_token(&SecretString::from("s3cret"));
        assert!(st.authorised(Some(b"Bearer s3cret")));
        assert!(!st.authorised(Some(b"Bearer s3cre")));
        assert!(!st.authorised(Some(b"s3cret")));
        assert!(!st.authorised(None));
        assert!(!format!("{st:?}").contains("s3cret"));
    }
}
