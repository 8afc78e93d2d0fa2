//! The client facade: [`Client`], its per-request options and what both
//! protocols share. The builder is in `builder.rs`, the server's keys in
//! `server_keys.rs`, the protocols in `v1.rs` and `v2.rs`, retries in
//! `transport.rs`.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use nomyo_core::keys::PublicKey;
use nomyo_core::SecurityTier;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use tokio::sync::{Mutex, OnceCell};

use crate::builder::ClientBuilder;
use crate::error::{Error, Result};
use crate::keys::{ClientKey, KeySource};
use crate::retry::Backoff;
use crate::server_keys::ServerKey;
use crate::transport::Retrier;
use crate::trust::Trust;
use crate::types::{ChatCompletion, ChatRequest, ModelInfo};

// The wire paths live in nomyo-core; re-exported as this crate's API.
pub use nomyo_core::chat::MODELS_PATH;
pub use nomyo_core::v1::{PUBLIC_KEY_PATH, SECURE_COMPLETION_PATH};

pub(crate) const X_SECURITY_TIER: HeaderName =
    HeaderName::from_static(nomyo_core::tier::HEADER_SECURITY_TIER);

/// Largest model list read.
const MAX_MODELS_BYTES: usize = 1024 * 1024;

/// Per-request options.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RequestOptions {
    /// Overrides the client's security tier for this request.
    pub security_tier: Option<SecurityTier>,
    /// Sent as `X-Request-Id` (the server keeps it in its access log when it
    /// is at most 128 characters of `[A-Za-z0-9._-]`).
    pub request_id: Option<String>,
}

impl RequestOptions {
    /// Sets the security tier for this request.
    pub fn security_tier(mut self, tier: SecurityTier) -> Self {
        self.security_tier = Some(tier);
        self
    }

    /// Sets the request id sent as `X-Request-Id` (one id from the caller
    /// through the server's logs).
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// The `X-Request-Id` header of this request, when its id is one.
    pub(crate) fn request_id_header(&self) -> Option<HeaderValue> {
        self.request_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
    }
}

/// A NOMYO v1 client: seals OpenAI chat requests to the server's key and
/// opens the answers.
///
/// Cheap to clone: clones share one connection pool (HTTP/2 where the server
/// offers it), one client key and one cached server key.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) origin: String,
    pub(crate) key_url: Url,
    pub(crate) chat_url: Url,
    pub(crate) models_url: Url,
    pub(crate) http: reqwest::Client,
    /// Content-Type, Authorization (marked sensitive), X-Security-Tier.
    pub(crate) headers: HeaderMap,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) timeout: Duration,
    /// The client's default tier (also in `headers`), checked against the
    /// tier the server says, inside the sealed answer, that it served.
    pub(crate) tier: Option<SecurityTier>,
    pub(crate) key_source: KeySource,
    pub(crate) client_key: OnceCell<Arc<ClientKey>>,
    pub(crate) server_key: RwLock<Option<Arc<ServerKey>>>,
    /// Serialises fetches of the server key, so that concurrent first
    /// requests fetch it once.
    pub(crate) server_key_fetch: Mutex<()>,
    pub(crate) trust: Trust,
    /// Protocol v2 state: the key configs and the protocol decision.
    pub(crate) v2: crate::v2::V2State,
    /// Set when the server must be attested before anything is sent.
    pub(crate) attestation: Option<crate::attest::Required>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Client")
            .field("origin", &i.origin)
            .field("authenticated", &i.headers.contains_key(AUTHORIZATION))
            .field("security_tier", &i.headers.get(X_SECURITY_TIER))
            .field("max_retries", &i.max_retries)
            .field("key_source", &i.key_source)
            .field("pins", &i.trust.pins)
            .field("known_servers", &i.trust.known)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// The tier a request asks for: its own option, else the client's.
    pub(crate) fn requested_tier(&self, options: &RequestOptions) -> Option<SecurityTier> {
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
                if tier > SecurityTier::Standard
                    && self.inner.v2.protocol() == crate::v2::Protocol::Auto =>
            {
                Err(Error::TierNeedsV2 {
                    origin: self.inner.origin.clone(),
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
        self.inner.trust.take_v1_warning(&self.inner.origin)
    }

    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The server's origin (`scheme://host[:port]`), as recorded in the
    /// known-servers file.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Loads or generates the client key and fetches and verifies the
    /// server key, concurrently. Optional: the first request does it too.
    pub async fn prepare(&self) -> Result<Arc<ServerKey>> {
        let (_, server) = tokio::try_join!(self.client_key(), self.server_key())?;
        Ok(server)
    }

    /// The client's public key (generating or loading the key pair on first use).
    pub async fn client_public_key(&self) -> Result<PublicKey> {
        Ok(self.client_key().await?.key.public_key().clone())
    }

    /// The models the server offers the caller (`GET /v1/models`, with the
    /// API key and tier headers). Not part of protocol v1: servers other than
    /// `nomyo serve` may not offer it. The list travels in clear (over TLS).
    pub async fn models(&self) -> Result<Vec<ModelInfo>> {
        let mut headers = self.inner.headers.clone();
        headers.remove(CONTENT_TYPE);
        let body = self
            .retrier()
            .send(
                || {
                    self.inner
                        .http
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

    pub(crate) async fn client_key(&self) -> Result<Arc<ClientKey>> {
        self.inner
            .client_key
            .get_or_try_init(|| async {
                let source = self.inner.key_source.clone();
                let key = tokio::task::spawn_blocking(move || source.load())
                    .await
                    .map_err(|_| {
                        Error::ClientKey(nomyo_core::Error::Key(
                            "key generation was interrupted".into(),
                        ))
                    })??;
                ClientKey::new(key).map(Arc::new)
            })
            .await
            .cloned()
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
            return self.create_v2(request, options).await;
        }
        self.refuse_v1_if_attestation_required()?;
        self.create_v1(request, options).await
    }

    /// The transport's one retry loop, with this client's retry settings.
    pub(crate) fn retrier(&self) -> Retrier<'_> {
        Retrier {
            origin: &self.inner.origin,
            timeout: self.inner.timeout,
            max_retries: self.inner.max_retries,
            backoff: &self.inner.backoff,
        }
    }
}

/// Whether a served tier (from the sealed `_metadata`) is at least the one
/// asked for, when more than `standard` was asked for.
pub(crate) fn check_served_tier(
    requested: Option<SecurityTier>,
    served: Option<&str>,
) -> Result<()> {
    let Some(requested) = requested.filter(|t| *t > SecurityTier::Standard) else {
        return Ok(());
    };
    let served = served.and_then(|s| s.parse::<SecurityTier>().ok());
    match served {
        Some(s) if s >= requested => Ok(()),
        _ => Err(Error::TierDowngrade { requested, served }),
    }
}

/// Parses a decrypted answer (either protocol) as a chat completion.
pub(crate) fn parse_completion(plaintext: &[u8]) -> Result<ChatCompletion> {
    serde_json::from_slice(plaintext).map_err(|e| {
        // Never serde's message: it can quote the decrypted text.
        Error::InvalidResponse(format!(
            "the decrypted answer is not a chat completion (JSON error at line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tier_tests {
    use super::*;

    #[test]
    fn a_lower_or_missing_served_tier_is_refused_when_more_than_standard_was_asked() {
        use SecurityTier::*;
        assert!(check_served_tier(None, None).is_ok());
        assert!(check_served_tier(Some(Standard), None).is_ok());
        assert!(check_served_tier(Some(Standard), Some("standard")).is_ok());
        assert!(check_served_tier(Some(High), Some("high")).is_ok());
        assert!(check_served_tier(Some(High), Some("maximum")).is_ok());
        assert!(check_served_tier(Some(Maximum), Some("maximum")).is_ok());
        for (asked, served) in [
            (High, Some("standard")),
            (Maximum, Some("high")),
            (Maximum, None),
            (High, Some("HIGH; maximum")),
        ] {
            let err = check_served_tier(Some(asked), served).unwrap_err();
            assert!(err.is_security(), "{asked:?} {served:?}");
            assert!(matches!(err, Error::TierDowngrade { .. }));
        }
    }
}
