//! The client: builder, key caches, the request path and retries.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nomyo_core::keys::{PrivateKey, PublicKey};
use nomyo_core::{v1, Fingerprint, SecretBuf, SecretString, SecurityTier};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Certificate, Url};
use secrecy::ExposeSecret;
use tokio::sync::{Mutex, OnceCell};

use crate::error::{Error, Result};
use crate::keys::{ClientKey, KeySource};
use crate::retry::Backoff;
use crate::transport::{read_limited, Outcome, Retrier};
use crate::trust::{KnownServers, Trust, TrustDecision};
use crate::types::{ChatCompletion, ChatRequest, ModelInfo};

// The wire paths live in nomyo-core; re-exported as this crate's API.
pub use nomyo_core::v1::{PUBLIC_KEY_PATH, SECURE_COMPLETION_PATH};
/// `GET` path of the model list (docs/CLI.md §11.1).
pub const MODELS_PATH: &str = "/v1/models";

const X_PAYLOAD_ID: HeaderName = HeaderName::from_static(nomyo_core::v1::HEADER_PAYLOAD_ID);
const X_PUBLIC_KEY: HeaderName = HeaderName::from_static(nomyo_core::v1::HEADER_PUBLIC_KEY);
pub(crate) const X_SECURITY_TIER: HeaderName =
    HeaderName::from_static(nomyo_core::tier::HEADER_SECURITY_TIER);

/// Largest success body read: a 10 MiB plaintext (the protocol limit) is
/// about 13.4 MiB as base64 in a package.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Largest public-key body read (an 8192-bit PEM is under 1.5 KiB).
const MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest model list read.
const MAX_MODELS_BYTES: usize = 1024 * 1024;

/// Builds a [`Client`].
///
/// Only the base URL is required. Defaults: no API key, no security tier
/// header (the server picks), 2 retries with 1 s / 2 s backoff, a 10 s
/// connect timeout and a 900 s request timeout (the Python client's), an
/// ephemeral RSA-4096 client key, no pins, trust on first use with
/// `~/.config/nomyo/known_servers`, and [`Protocol::Auto`](crate::Protocol::Auto)
/// (v2 when the server offers it, with its downgrade guards).
///
/// ```
/// use nomyo_client::{Client, Error};
/// // Plain HTTP is refused at build time, before any network I/O:
/// let err = Client::builder().base_url("http://example.com").build().unwrap_err();
/// assert!(matches!(err, Error::InsecureUrl { .. }));
/// // ... unless explicitly allowed (local development only),
/// let client = Client::builder()
///     .base_url("http://192.0.2.7:12434")
///     .allow_http(true)
///     .build()?;
/// assert_eq!(client.origin(), "http://192.0.2.7:12434");
/// // or the host is loopback (an OpenAI-style ".../v1" suffix is dropped).
/// let client = Client::builder()
///     .base_url("http://127.0.0.1:12434/v1")
///     .build()?;
/// assert_eq!(client.origin(), "http://127.0.0.1:12434");
/// # Ok::<(), Error>(())
/// ```
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    api_key: Option<SecretString>,
    tier: Option<SecurityTier>,
    max_retries: u32,
    backoff: Backoff,
    timeout: Duration,
    connect_timeout: Duration,
    allow_http: bool,
    key_source: KeySource,
    pins: Vec<Fingerprint>,
    known_servers: KnownServers,
    root_certificates: Vec<Certificate>,
    protocol: crate::v2::Protocol,
    v2_kem: Option<nomyo_core::v2::keys::Kem>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("tier", &self.tier)
            .field("max_retries", &self.max_retries)
            .field("allow_http", &self.allow_http)
            .field("key_source", &self.key_source)
            .field("pins", &self.pins)
            .field("known_servers", &self.known_servers)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            base_url: None,
            api_key: None,
            tier: None,
            max_retries: 2,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(900),
            connect_timeout: Duration::from_secs(10),
            allow_http: false,
            key_source: KeySource::default(),
            pins: Vec::new(),
            known_servers: KnownServers::default(),
            root_certificates: Vec::new(),
            protocol: crate::v2::Protocol::default(),
            v2_kem: None,
        }
    }
}

impl ClientBuilder {
    /// The server's base URL, e.g. `https://api.nomyo.ai` (a path prefix is kept).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The API key, sent as `Authorization: Bearer ...`.
    pub fn api_key(mut self, key: SecretString) -> Self {
        self.api_key = Some(key);
        self
    }

    /// The security tier sent as `X-Security-Tier` on every request.
    pub fn security_tier(mut self, tier: SecurityTier) -> Self {
        self.tier = Some(tier);
        self
    }

    /// Retries after 429/500/502/503/504 and network errors (default 2).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The spacing of retries.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Time limit for one attempt, from sending to the last byte of the
    /// answer (default 900 s: generation can be slow). A timed-out request is
    /// not retried (the server may still be working on it).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Time limit for establishing a connection (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Accept a plain `http://` base URL that is not loopback. For local
    /// development only: the API key and the server's key then travel
    /// unprotected, and whoever controls the network can substitute the
    /// server key (pins still hold). A loopback URL (127.0.0.0/8, `[::1]`,
    /// `localhost` when it resolves only to those) needs no consent: that
    /// traffic never leaves the machine.
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Where the client key comes from (default: ephemeral RSA-4096).
    pub fn key_source(mut self, source: KeySource) -> Self {
        self.key_source = source;
        self
    }
    /// Use (and, when empty, create) the key directory `dir`; `password`
    /// opens an encrypted key and encrypts a new one. Existing keys are
    /// never overwritten.
    pub fn key_dir(
        self,
        dir: impl Into<std::path::PathBuf>,
        password: Option<SecretString>,
    ) -> Self {
        self.key_source(KeySource::Directory {
            dir: dir.into(),
            password,
            create: true,
        })
    }
    /// Use a key the application already holds.
    pub fn client_key(self, key: Arc<PrivateKey>) -> Self {
        self.key_source(KeySource::Key(key))
    }
    /// Accept the server key with this fingerprint. With one or more pins,
    /// the known-servers file is not consulted and any other key is refused.
    pub fn pin(mut self, fingerprint: Fingerprint) -> Self {
        self.pins.push(fingerprint);
        self
    }
    /// Several pins at once (e.g. the current and the next key).
    pub fn pins(mut self, fingerprints: impl IntoIterator<Item = Fingerprint>) -> Self {
        self.pins.extend(fingerprints);
        self
    }
    /// Where first-use trust is recorded when no pins are set.
    pub fn known_servers(mut self, known: KnownServers) -> Self {
        self.known_servers = known;
        self
    }
    /// Trust this certificate authority (PEM) in addition to the system's.
    pub fn root_certificate_pem(mut self, pem: &[u8]) -> Result<Self> {
        let cert = Certificate::from_pem(pem)
            .map_err(|_| Error::Config("not a PEM certificate".into()))?;
        self.root_certificates.push(cert);
        Ok(self)
    }

    /// The protocol to speak (default [`Protocol::Auto`](crate::Protocol::Auto),
    /// with its downgrade guards); see [`Protocol`](crate::Protocol).
    pub fn protocol(mut self, protocol: crate::v2::Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Protocol v2: use only the server's key config with this KEM (default:
    /// X-Wing if offered, else X25519). For benchmarks and tests of one suite.
    pub fn v2_kem(mut self, kem: nomyo_core::v2::keys::Kem) -> Self {
        self.v2_kem = Some(kem);
        self
    }

    /// Checks the configuration and builds the client. Performs no network
    /// I/O: keys are generated and fetched on first use (or by
    /// [`Client::prepare`]).
    pub fn build(self) -> Result<Client> {
        let raw = self
            .base_url
            .ok_or_else(|| Error::Config("no base URL configured".into()))?;
        let url =
            Url::parse(raw.trim()).map_err(|e| Error::Config(format!("invalid base URL: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::Config(
                "the base URL must not contain credentials; give the API key separately".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::Config(
                "the base URL must not have a query or fragment".into(),
            ));
        }
        let loopback = url.scheme() == "http" && is_loopback_host(&url);
        match url.scheme() {
            "https" => {}
            "http" if loopback => {
                tracing::debug!(url = %url, "plain HTTP to a loopback address");
            }
            "http" if self.allow_http => {
                tracing::info!(url = %url, "using plain HTTP: for local development only");
            }
            "http" => {
                return Err(Error::InsecureUrl {
                    url: url.to_string(),
                })
            }
            other => {
                return Err(Error::Config(format!(
                    "unsupported URL scheme '{}': use https://",
                    crate::error::sanitize(other)
                )))
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::Config("the base URL has no host".into()));
        }
        let origin = url.origin().ascii_serialization();
        let base = server_base(&url);
        let endpoint = |path: &str| {
            Url::parse(&format!("{base}{path}"))
                .map_err(|e| Error::Config(format!("invalid base URL: {e}")))
        };
        let key_url = endpoint(PUBLIC_KEY_PATH)?;
        let chat_url = endpoint(SECURE_COMPLETION_PATH)?;
        let models_url = endpoint(MODELS_PATH)?;
        let v2 = crate::v2::V2State::new(
            endpoint(crate::v2::HPKE_KEYS_PATH)?,
            endpoint(crate::v2::COMPLETIONS_PATH)?,
            self.protocol,
            self.v2_kem,
        );

        let known = if self.pins.is_empty() {
            self.known_servers.path()?
        } else {
            None
        };

        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Some(key) = &self.api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret())).map_err(
                |_| {
                    Error::Config(
                        "the API key contains characters not allowed in an HTTP header".into(),
                    )
                },
            )?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if let Some(tier) = self.tier {
            headers.insert(X_SECURITY_TIER, HeaderValue::from_static(tier.as_str()));
        }

        let mut http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // A redirect could move the request to another origin or to
            // plain HTTP; a NOMYO server has no reason to redirect.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!(self.allow_http || loopback))
            .user_agent(concat!("nomyo-rs/", env!("CARGO_PKG_VERSION")));
        if !self.root_certificates.is_empty() {
            http = http.tls_certs_merge(self.root_certificates);
        }
        if loopback {
            // Plain HTTP allowed only because it stays on this machine: not
            // through an HTTP_PROXY / ALL_PROXY from the environment, and
            // `localhost` is not left to a resolver between this check and
            // the connection.
            http = http.no_proxy();
            if let Some(host) = url
                .host_str()
                .filter(|h| h.eq_ignore_ascii_case("localhost"))
            {
                let port = url.port_or_known_default().unwrap_or(80);
                http = http.resolve_to_addrs(host, &localhost_addrs(port));
            }
        }
        let http = http
            .build()
            .map_err(|e| Error::Config(format!("cannot set up the HTTP client: {e}")))?;

        Ok(Client {
            inner: Arc::new(Inner {
                origin,
                key_url,
                chat_url,
                models_url,
                http,
                headers,
                max_retries: self.max_retries,
                backoff: self.backoff,
                tier: self.tier,
                timeout: self.timeout,
                key_source: self.key_source,
                client_key: OnceCell::new(),
                server_key: RwLock::new(None),
                server_key_fetch: Mutex::new(()),
                trust: Trust {
                    pins: self.pins,
                    known,
                },
                v2,
            }),
        })
    }
}

/// The server's v1 public key, verified and cached by the client.
#[derive(Clone, Debug)]
pub struct ServerKey {
    key: PublicKey,
    fingerprint: Fingerprint,
    trust: TrustDecision,
}

impl ServerKey {
    /// The key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }
    /// Its `sha256:` fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    /// How it came to be trusted.
    pub fn trust(&self) -> &TrustDecision {
        &self.trust
    }
}

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
    key_url: Url,
    chat_url: Url,
    models_url: Url,
    pub(crate) http: reqwest::Client,
    /// Content-Type, Authorization (marked sensitive), X-Security-Tier.
    pub(crate) headers: HeaderMap,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) timeout: Duration,
    /// The client's default tier (also in `headers`), checked against the
    /// tier the server says, inside the sealed answer, that it served.
    pub(crate) tier: Option<SecurityTier>,
    key_source: KeySource,
    client_key: OnceCell<Arc<ClientKey>>,
    server_key: RwLock<Option<Arc<ServerKey>>>,
    /// Serialises fetches of the server key, so that concurrent first
    /// requests fetch it once.
    server_key_fetch: Mutex<()>,
    pub(crate) trust: Trust,
    /// Protocol v2 state: the key configs and the protocol decision.
    pub(crate) v2: crate::v2::V2State,
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
    /// known-servers file (pins, or [`KnownServers::Off`]) it is always due.
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

    /// The server's key: fetched from `GET /pki/public_key` and verified
    /// (pins, or the known-servers file) the first time, cached afterwards.
    pub async fn server_key(&self) -> Result<Arc<ServerKey>> {
        if let Some(k) = self.cached_server_key() {
            return Ok(k);
        }
        let _guard = self.inner.server_key_fetch.lock().await;
        if let Some(k) = self.cached_server_key() {
            return Ok(k);
        }
        let key = self.fetch_server_public_key().await?;
        let fingerprint = key.fingerprint();
        let trust = self.inner.trust.verify(&self.inner.origin, fingerprint)?;
        tracing::debug!(origin = %self.inner.origin, %fingerprint, ?trust, "server key verified");
        Ok(self.cache_server_key(key, fingerprint, trust))
    }

    /// Makes a verified server key the cached one and returns it.
    fn cache_server_key(
        &self,
        key: PublicKey,
        fingerprint: Fingerprint,
        trust: TrustDecision,
    ) -> Arc<ServerKey> {
        let k = Arc::new(ServerKey {
            key,
            fingerprint,
            trust,
        });
        *self
            .inner
            .server_key
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(k.clone());
        k
    }

    fn cached_server_key(&self) -> Option<Arc<ServerKey>> {
        self.inner
            .server_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a 400: has the server rotated its key? Refetches it once; a new
    /// key is verified like a first one (pins, or the known-servers file,
    /// where a changed key is [`Error::ServerKeyChanged`]) and replaces the
    /// cached one. `Ok(None)` when the key is unchanged.
    pub(crate) async fn refresh_server_key(
        &self,
        stale: &Arc<ServerKey>,
    ) -> Result<Option<Arc<ServerKey>>> {
        let _guard = self.inner.server_key_fetch.lock().await;
        if let Some(current) = self.cached_server_key() {
            if !Arc::ptr_eq(&current, stale) {
                // Another request refreshed it meanwhile.
                return Ok(Some(current));
            }
        }
        let key = self.fetch_server_public_key().await?;
        let fingerprint = key.fingerprint();
        if fingerprint == stale.fingerprint {
            return Ok(None);
        }
        let trust = self.inner.trust.verify(&self.inner.origin, fingerprint)?;
        tracing::info!(origin = %self.inner.origin, old = %stale.fingerprint, new = %fingerprint, "server key rotated");
        Ok(Some(self.cache_server_key(key, fingerprint, trust)))
    }

    /// The models the server offers the caller (`GET /v1/models`, with the
    /// API key and tier headers). Not part of protocol v1: servers other than
    /// `nomyo serve` may not offer it. The list travels in clear (over TLS).
    pub async fn models(&self) -> Result<Vec<ModelInfo>> {
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<ModelInfo>,
        }
        let mut headers = self.inner.headers.clone();
        headers.remove(CONTENT_TYPE);
        let body = self
            .send_with_retries(
                || {
                    self.inner
                        .http
                        .get(self.inner.models_url.clone())
                        .headers(headers.clone())
                },
                MAX_MODELS_BYTES,
            )
            .await?;
        serde_json::from_slice::<List>(&body)
            .map(|l| l.data)
            .map_err(|_| {
                Error::InvalidResponse("GET /v1/models did not return an OpenAI model list".into())
            })
    }

    async fn fetch_server_public_key(&self) -> Result<PublicKey> {
        let started = Instant::now();
        let body = self
            .send_with_retries(
                || self.inner.http.get(self.inner.key_url.clone()),
                MAX_KEY_BYTES,
            )
            .await?;
        let pem = std::str::from_utf8(&body)
            .map_err(|_| Error::InvalidServerKey("the key is not PEM text".into()))?;
        let key = PublicKey::from_pem(pem).map_err(|e| Error::InvalidServerKey(e.to_string()))?;
        tracing::debug!(
            bits = key.bits(),
            ms = started.elapsed().as_millis() as u64,
            "server key fetched"
        );
        Ok(key)
    }

    async fn client_key(&self) -> Result<Arc<ClientKey>> {
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
            return self.create_v2(request, options).await;
        }
        self.check_v1_allowed(options)?;
        if request.extra.get("stream").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::InvalidInput(
                "streaming (\"stream\": true) is not supported by protocol v1".into(),
            ));
        }
        let mut plaintext = SecretBuf::with_capacity(4096);
        serde_json::to_writer(&mut plaintext, request)
            .map_err(|_| Error::InvalidInput("the request cannot be serialised as JSON".into()))?;

        let (client_key, mut server_key) = tokio::try_join!(self.client_key(), self.server_key())?;

        let mut headers = self.inner.headers.clone();
        headers.insert(X_PUBLIC_KEY, client_key.header.clone());
        if let Some(tier) = options.security_tier {
            headers.insert(X_SECURITY_TIER, HeaderValue::from_static(tier.as_str()));
        }
        if let Some(id) = options.request_id_header() {
            headers.insert(HeaderName::from_static("x-request-id"), id);
        }

        let mut resealed = false;
        loop {
            let payload_id = uuid::Uuid::new_v4().to_string();
            let started = Instant::now();
            let package =
                v1::seal(plaintext.expose_secret(), &server_key.key).map_err(|e| match e {
                    nomyo_core::Error::PayloadTooLarge { .. } => Error::InvalidInput(e.to_string()),
                    other => Error::Security(other),
                })?;
            let body = Bytes::from(package.to_json());
            tracing::debug!(%payload_id, plaintext_bytes = plaintext.len(), body_bytes = body.len(), "request sealed");
            let mut h = headers.clone();
            h.insert(
                X_PAYLOAD_ID,
                HeaderValue::from_str(&payload_id)
                    .map_err(|_| Error::Config("bad payload id".into()))?,
            );
            let sent = self
                .send_with_retries(
                    || {
                        self.inner
                            .http
                            .post(self.inner.chat_url.clone())
                            .headers(h.clone())
                            .body(body.clone())
                    },
                    MAX_RESPONSE_BYTES,
                )
                .await;
            match sent {
                Ok(answer) => {
                    let key = client_key.key.clone();
                    let id = payload_id.clone();
                    let answer_len = answer.len();
                    let completion =
                        tokio::task::spawn_blocking(move || open_response(&answer, &id, &key))
                            .await
                            .map_err(|_| {
                                Error::InvalidResponse("decryption was interrupted".into())
                            })??;
                    tracing::debug!(%payload_id, answer_bytes = answer_len, ms = started.elapsed().as_millis() as u64, "completion received");
                    check_served_tier(
                        self.requested_tier(options),
                        completion.metadata.security_tier.as_deref(),
                    )?;
                    return Ok(completion);
                }
                Err(Error::InvalidRequest(api)) if !resealed => {
                    match self.refresh_server_key(&server_key).await {
                        Ok(Some(new_key)) => {
                            server_key = new_key;
                            resealed = true;
                        }
                        Ok(None) => return Err(Error::InvalidRequest(api)),
                        Err(e) if e.is_security() => return Err(e),
                        // The refetch itself failed: report the original answer.
                        Err(_) => return Err(Error::InvalidRequest(api)),
                    }
                }
                Err(e) => return Err(e),
            }
        }
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

    /// Sends the request `make` builds, retrying 429/5xx and network errors
    /// with backoff; returns the body of a 200 answer.
    async fn send_with_retries(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Bytes> {
        let mut attempts = self.retrier().attempts();
        loop {
            let attempt = attempts.number();
            let outcome = match make().send().await {
                Err(e) => Outcome::Network(e),
                Ok(resp) if resp.status().as_u16() != 200 => {
                    tracing::debug!(status = resp.status().as_u16(), attempt, "answer");
                    Outcome::refused(resp, attempt).await
                }
                Ok(resp) => {
                    tracing::debug!(status = 200, attempt, "answer");
                    match read_limited(resp, limit).await {
                        Ok((body, false)) => Outcome::Done(body),
                        Ok((_, true)) => Outcome::Fail(Error::InvalidResponse(format!(
                            "the answer is larger than {limit} bytes"
                        ))),
                        Err(e) => Outcome::Network(e),
                    }
                }
            };
            if let ControlFlow::Break(result) = attempts.after(outcome).await {
                return result;
            }
        }
    }
}

/// Whether `url`'s host is a loopback address: 127.0.0.0/8, `::1`, or the
/// name `localhost` (exactly; not `localhost.`, which a resolver may send to
/// DNS). Plain HTTP to such a host never leaves the machine, so it needs no
/// `allow_http`: the client connects to `localhost` at 127.0.0.1 and `::1`
/// itself (RFC 6761) without asking a resolver, and never through an HTTP
/// proxy from the environment.
pub fn is_loopback_host(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    host.eq_ignore_ascii_case("localhost")
}

/// The addresses the client uses for the name `localhost` (RFC 6761): the
/// loopback addresses, never a resolver's answer.
fn localhost_addrs(port: u16) -> [std::net::SocketAddr; 2] {
    [
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
        std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
    ]
}

/// The server's base: the URL without trailing slashes and without one
/// trailing `/v1` (OpenAI clients are configured with `.../v1`; the NOMYO
/// routes are found from the server's root).
fn server_base(url: &Url) -> String {
    let s = url.as_str().trim_end_matches('/');
    let path = url.path().trim_end_matches('/');
    match s.strip_suffix("/v1") {
        Some(rest) if path.ends_with("/v1") => rest.trim_end_matches('/').to_owned(),
        _ => s.to_owned(),
    }
}

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

/// Opens a 200 answer: strict package parse (the downgrade guard), payload-id
/// check, decryption, chat-completion parse, client-side `_metadata`.
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

fn open_response(body: &[u8], payload_id: &str, key: &PrivateKey) -> Result<ChatCompletion> {
    let package = v1::Package::from_json(body).map_err(Error::Security)?;
    if package
        .payload_id
        .as_deref()
        .is_some_and(|id| id != payload_id)
    {
        return Err(Error::ResponseMismatch(
            "the answer's payload_id is not the one this request sent",
        ));
    }
    let plaintext = v1::open(&package, key).map_err(Error::Security)?;
    let mut completion = parse_completion(plaintext.expose_secret())?;
    drop(plaintext);
    let meta = &mut completion.metadata;
    // The encrypted (authenticated) _metadata is the one to trust; the outer
    // package fields are not authenticated.
    if meta
        .payload_id
        .as_deref()
        .is_some_and(|id| id != payload_id)
    {
        return Err(Error::ResponseMismatch(
            "the decrypted answer belongs to another request (payload_id mismatch)",
        ));
    }
    meta.payload_id = Some(payload_id.to_owned());
    if meta.processed_at.is_none() {
        meta.processed_at = package.processed_at;
    }
    meta.is_encrypted = Some(true);
    meta.encryption_algorithm = Some(v1::ALGORITHM.to_owned());
    Ok(completion)
}

#[cfg(test)]
mod tier_tests {
    use super::*;

    /// Plain HTTP without consent only to what cannot leave the machine:
    /// loopback addresses and the exact name `localhost` (which the client
    /// maps to loopback itself); `localhost.` may go to DNS, so it is not.
    #[test]
    fn loopback_hosts_are_addresses_or_the_exact_name_localhost() {
        for (url, loopback) in [
            ("http://127.0.0.1:1", true),
            ("http://127.9.8.7:1", true),
            ("http://[::1]:1", true),
            ("http://localhost:1", true),
            ("http://LocalHost:1/v1", true),
            ("http://localhost.:1", false),
            ("http://localhost.example:1", false),
            ("http://10.0.0.1:1", false),
            ("http://[::2]:1", false),
            ("http://192.0.2.1:1", false),
        ] {
            assert_eq!(
                is_loopback_host(&Url::parse(url).unwrap()),
                loopback,
                "{url}"
            );
        }
        let [v4, v6] = localhost_addrs(12434);
        assert!(v4.ip().is_loopback() && v6.ip().is_loopback());
        assert_eq!((v4.port(), v6.port()), (12434, 12434));
    }

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
