//! The client facade: [`Client`] holds each layer's state and hands every
//! call down, each layer getting the ones under it as arguments:
//! `transport.rs` (the connection pool and the one retry loop) →
//! `server_keys.rs` (fetch, trust, refresh) → `attest/` → the protocol
//! sessions, `v1.rs` and `v2/`. The builder is in `builder.rs`.

use std::fmt;
use std::sync::Arc;

use nomyo_core::keys::PublicKey;
use nomyo_core::SecurityTier;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use tokio::sync::OnceCell;

use crate::attest::{AttestOptions, Required, Verification};
use crate::error::{Error, Result};
use crate::keys::ClientKeyCell;
use crate::request::{RequestOptions, X_SECURITY_TIER};
use crate::server_keys::{HpkeKeys, ServerKey, ServerKeys};
use crate::transport::Transport;
use crate::types::{ChatCompletion, ChatRequest, ModelInfo};
use crate::v1::{UnopenedAnswer, V1};
use crate::v2::{ChunkStream, Protocol, V2};

// The wire paths live in nomyo-core; re-exported as this crate's API.
pub use nomyo_core::chat::MODELS_PATH;
pub use nomyo_core::v1::{PUBLIC_KEY_PATH, SECURE_COMPLETION_PATH};

/// Largest model list read.
const MAX_MODELS_BYTES: usize = 1024 * 1024;

/// A NOMYO v1 client: seals OpenAI chat requests to the server's key and
/// opens the answers.
///
/// Cheap to clone: clones share one connection pool (HTTP/2 where the server
/// offers it), one client key and one cached server key.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// Each layer's state, lowest first.
pub(crate) struct Inner {
    pub(crate) transport: Transport,
    pub(crate) keys: ServerKeys,
    pub(crate) client_key: ClientKeyCell,
    /// Set when the server must be attested before anything is sent.
    pub(crate) attestation: Option<Required>,
    pub(crate) v1: V1,
    pub(crate) v2: V2,
    pub(crate) protocol: Protocol,
    /// Under [`Protocol::Auto`]: whether the server speaks v2, decided once.
    pub(crate) auto: OnceCell<bool>,
    /// `GET /v1/models`.
    pub(crate) models_url: Url,
    /// The client's default tier (also in the transport's headers),
    /// checked against the tier the server says, inside the sealed answer,
    /// that it served.
    pub(crate) tier: Option<SecurityTier>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, trust) = (&self.inner.transport, &self.inner.keys.trust);
        f.debug_struct("Client")
            .field("origin", &t.origin)
            .field("authenticated", &t.headers.contains_key(AUTHORIZATION))
            .field("security_tier", &t.headers.get(X_SECURITY_TIER))
            .field("max_retries", &t.max_retries)
            .field("key_source", &self.inner.client_key.source)
            .field("pins", &trust.pins)
            .field("known_servers", &trust.known)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The tier a request asks for: its own option, else the client's.
    fn requested_tier(&self, options: &RequestOptions) -> Option<SecurityTier> {
        options.security_tier.or(self.inner.tier)
    }

    /// Whether a request with these options may go over protocol v1 once
    /// the client speaks v1: under [`Protocol::Auto`](crate::Protocol::Auto)
    /// a tier above `standard` may not ([`Error::TierNeedsV2`]); with
    /// [`Protocol::V1`](crate::Protocol::V1) chosen explicitly, any may.
    /// [`Client::create`] checks it; callers can check it before preparing.
    pub fn check_v1_allowed(&self, options: &RequestOptions) -> Result<()> {
        match self.requested_tier(options) {
            Some(tier)
                if tier > SecurityTier::Standard && self.inner.protocol == Protocol::Auto =>
            {
                Err(Error::TierNeedsV2 {
                    origin: self.inner.transport.origin.clone(),
                    tier,
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether the one-time warning about protocol v1 for this server is
    /// still due (v1 answers are only as safe as the TLS path: a middleman
    /// who terminates TLS can swap `X-Public-Key` and read the answer). The
    /// first call for an origin returns `true` and records `warned=v1` in
    /// the known-servers file; later calls return `false`. Without a
    /// known-servers file (pins, or [`KnownServers::Off`](crate::KnownServers::Off)) it is always due.
    pub fn take_v1_warning(&self) -> Result<bool> {
        self.inner
            .keys
            .trust
            .take_v1_warning(&self.inner.transport.origin)
    }

    /// The server's origin (`scheme://host[:port]`), as recorded in the
    /// known-servers file.
    pub fn origin(&self) -> &str {
        &self.inner.transport.origin
    }

    /// Loads or generates the client key and fetches and verifies the
    /// server key, concurrently. Optional: the first request does it too.
    pub async fn prepare(&self) -> Result<Arc<ServerKey>> {
        let (_, server) = tokio::try_join!(self.inner.client_key.get(), self.server_key())?;
        Ok(server)
    }

    /// The client's public key (generating or loading the key pair on first use).
    pub async fn client_public_key(&self) -> Result<PublicKey> {
        Ok(self.inner.client_key.get().await?.key.public_key().clone())
    }

    /// The models the server offers the caller (`GET /v1/models`, with the
    /// API key and tier headers). Not part of protocol v1: servers other than
    /// `nomyo serve` may not offer it. The list travels in clear (over TLS).
    pub async fn models(&self) -> Result<Vec<ModelInfo>> {
        let t = &self.inner.transport;
        let mut headers = t.headers.clone();
        headers.remove(CONTENT_TYPE);
        let body = t
            .retrier()
            .send(
                || {
                    t.http
                        .get(self.inner.models_url.clone())
                        .headers(headers.clone())
                },
                MAX_MODELS_BYTES,
            )
            .await?;
        serde_json::from_slice::<nomyo_core::chat::ModelList>(&body)
            .map(|l| l.data)
            .map_err(|_| {
                Error::InvalidResponse("GET /v1/models did not return an OpenAI model list".into())
            })
    }

    /// One encrypted chat completion (docs/PROTOCOL.md §3).
    ///
    /// The request is serialised into locked memory, sealed with a fresh
    /// AES-256 key and nonce to the cached server key, and sent; retries
    /// resend the same sealed bytes. The answer is strictly parsed (version
    /// and algorithms checked before decrypting) and opened with the client
    /// key. `_metadata` gets `payload_id`, `processed_at`, `is_encrypted` and
    /// `encryption_algorithm`, as the Python client adds them.
    ///
    /// If the server answers 400 and now publishes a different key (it
    /// rotated), the new key is verified like a first one and the request is
    /// sealed again to it, once.
    pub async fn create(&self, request: &ChatRequest) -> Result<ChatCompletion> {
        self.create_with(request, &RequestOptions::default()).await
    }

    /// [`Client::create`] with per-request options.
    pub async fn create_with(
        &self,
        request: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<ChatCompletion> {
        if self.uses_v2().await? {
            self.ensure_attested().await?;
            let i = &self.inner;
            return i
                .v2
                .create(
                    &i.transport,
                    &i.keys,
                    i.attestation.as_ref(),
                    request,
                    options,
                    self.requested_tier(options),
                )
                .await;
        }
        self.refuse_v1_if_attestation_required()?;
        self.send_v1(request, options).await?.open().await
    }

    /// Sends one v1 request like [`Client::create_with`] and returns its
    /// answer received but not yet decrypted: read whole, strictly parsed as
    /// a v1 package (version and algorithms checked) whose `payload_id`, when
    /// it has one, is the request's. [`UnopenedAnswer::open`] decrypts and
    /// checks it as `create` does.
    ///
    /// For load generators: a v1 client pays one RSA-4096 private-key
    /// operation per answer, as much as the server per request, so opening
    /// one answer in N lets one client core drive a server to its limit.
    /// An answer not opened has not been authenticated: use it for timing
    /// only. Protocol v1 only (a client that speaks v2 gets
    /// [`Error::InvalidInput`]).
    pub async fn create_unopened(
        &self,
        request: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<UnopenedAnswer> {
        if self.uses_v2().await? {
            return Err(Error::InvalidInput(
                "an unopened answer is a protocol v1 feature; this client speaks v2".into(),
            ));
        }
        self.refuse_v1_if_attestation_required()?;
        self.send_v1(request, options).await
    }

    async fn send_v1(
        &self,
        request: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<UnopenedAnswer> {
        self.check_v1_allowed(options)?;
        let i = &self.inner;
        i.v1.send(
            &i.transport,
            &i.keys,
            &i.client_key,
            request,
            options,
            self.requested_tier(options),
        )
        .await
    }

    /// A streamed v2 chat completion: `"stream": true` is set, the request
    /// sealed and sent, and each sealed response frame decrypted as it
    /// arrives. The stream is complete only when `data: [DONE]` was
    /// decrypted; a body that ends before it, or any frame that fails,
    /// yields an error (and then nothing more).
    ///
    /// Needs protocol v2 (or [`Protocol::Auto`] against a v2 server): v1
    /// cannot stream.
    pub async fn create_stream(&self, request: &ChatRequest) -> Result<ChunkStream> {
        self.create_stream_with(request, &RequestOptions::default())
            .await
    }

    /// [`Client::create_stream`] with per-request options.
    pub async fn create_stream_with(
        &self,
        request: &ChatRequest,
        options: &RequestOptions,
    ) -> Result<ChunkStream> {
        if !self.uses_v2().await? {
            return Err(Error::InvalidInput(
                "streaming needs protocol v2; protocol v1 cannot stream".into(),
            ));
        }
        self.ensure_attested().await?;
        let i = &self.inner;
        i.v2.stream(
            &i.transport,
            &i.keys,
            i.attestation.as_ref(),
            request,
            options,
            self.requested_tier(options),
        )
        .await
    }

    /// Whether requests use protocol v2 (for [`Protocol::Auto`]: probes
    /// `/.well-known/hpke-keys` once and caches the answer).
    pub async fn uses_v2(&self) -> Result<bool> {
        let i = &self.inner;
        match i.protocol {
            Protocol::V1 => Ok(false),
            Protocol::V2 => Ok(true),
            Protocol::Auto => i
                .auto
                .get_or_try_init(|| async {
                    let v2 = i.keys.probe_v2(&i.transport).await?;
                    if v2 {
                        tracing::debug!(origin = %i.transport.origin, "auto: protocol v2");
                    } else {
                        tracing::debug!(origin = %i.transport.origin, "auto: protocol v1");
                    }
                    Ok(v2)
                })
                .await
                .copied(),
        }
    }

    /// The server's key: fetched from `GET /pki/public_key` and verified
    /// (pins, or the known-servers file) the first time, cached afterwards.
    pub async fn server_key(&self) -> Result<Arc<ServerKey>> {
        self.inner.keys.server_key(&self.inner.transport).await
    }

    /// The server's v2 key configs: fetched and verified the first time,
    /// cached afterwards.
    pub async fn hpke_keys(&self) -> Result<Arc<HpkeKeys>> {
        self.inner.keys.hpke_keys(&self.inner.transport).await
    }

    /// Fetches the server's evidence for a fresh nonce and verifies it: a
    /// TPM's (docs/PROTOCOL.md §14.7) or a confidential VM's (§16.4). The
    /// v1 key is the one the client trusts (pins or the known-servers
    /// file); the v2 key list, when the server has one, is the one the
    /// client would seal to. An error is returned only when those keys
    /// cannot be had; evidence that is missing or wrong fails steps
    /// instead.
    pub async fn attest(&self, options: &AttestOptions) -> Result<Verification> {
        crate::attest::attest(&self.inner.transport, &self.inner.keys, options).await
    }

    /// With [`ClientBuilder::require_attestation`](crate::ClientBuilder::require_attestation):
    /// attests the server once (concurrent first requests wait for one
    /// check) and fails unless every step passed. A failed check is not
    /// kept: the next request checks again. Without the requirement, does
    /// nothing. Requests call it; call it first to fail early.
    pub async fn ensure_attested(&self) -> Result<()> {
        match &self.inner.attestation {
            Some(required) => {
                required
                    .ensure(&self.inner.transport, &self.inner.keys)
                    .await
            }
            None => Ok(()),
        }
    }

    /// With an attestation requirement, protocol v1 is refused
    /// ([`Error::AttestationNeedsV2`]).
    pub fn refuse_v1_if_attestation_required(&self) -> Result<()> {
        match self.inner.attestation {
            Some(_) => Err(Error::AttestationNeedsV2 {
                origin: self.inner.transport.origin.clone(),
            }),
            None => Ok(()),
        }
    }
}
