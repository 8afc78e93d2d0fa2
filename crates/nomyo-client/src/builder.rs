//! [`ClientBuilder`]: the configuration of a [`Client`], checked once.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use nomyo_core::keys::PrivateKey;
use nomyo_core::{Fingerprint, SecretString, SecurityTier};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Certificate, Url};
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::attest::{AttestOptions, Required};
use crate::client::{Client, Inner};
use crate::error::{Error, Result};
use crate::keys::{ClientKeyCell, KeySource};
use crate::request::X_SECURITY_TIER;
use crate::retry::Backoff;
use crate::server_keys::ServerKeys;
use crate::transport::Transport;
use crate::trust::{KnownServers, Trust};
use crate::v1::V1;
use crate::v2::{Protocol, V2};
use nomyo_core::chat::MODELS_PATH;
use nomyo_core::v1::{PUBLIC_KEY_PATH, SECURE_COMPLETION_PATH};
use nomyo_core::v2::{CHAT_COMPLETIONS_PATH, HPKE_KEYS_PATH};

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }
}

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
    protocol: Protocol,
    v2_kem: Option<nomyo_core::v2::keys::Kem>,
    attestation: Option<AttestOptions>,
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
            .field("require_attestation", &self.attestation.is_some())
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
            protocol: Protocol::default(),
            v2_kem: None,
            attestation: None,
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
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Protocol v2: use only the server's key config with this KEM (default:
    /// X-Wing if offered, else X25519). For benchmarks and tests of one suite.
    pub fn v2_kem(mut self, kem: nomyo_core::v2::keys::Kem) -> Self {
        self.v2_kem = Some(kem);
        self
    }

    /// Requires the server's TPM attestation before anything is sent: the
    /// first request runs [`Client::attest`] with these options and, unless
    /// every step passes, fails with [`Error::NotAttested`]; the verdict is
    /// kept for the client's life. Attestation needs protocol v2: a client
    /// that would speak v1 fails with [`Error::AttestationNeedsV2`].
    pub fn require_attestation(mut self, options: AttestOptions) -> Self {
        self.attestation = Some(options);
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
        let keys_url = endpoint(HPKE_KEYS_PATH)?;
        let completions_url = endpoint(CHAT_COMPLETIONS_PATH)?;

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

        let trust = Trust {
            pins: self.pins,
            known,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                transport: Transport {
                    origin,
                    http,
                    headers,
                    timeout: self.timeout,
                    max_retries: self.max_retries,
                    backoff: self.backoff,
                },
                keys: ServerKeys::new(key_url, keys_url, trust, self.v2_kem),
                client_key: ClientKeyCell::new(self.key_source),
                attestation: self.attestation.map(Required::new),
                v1: V1 { chat_url },
                v2: V2 { completions_url },
                protocol: self.protocol,
                auto: OnceCell::new(),
                models_url,
                tier: self.tier,
            }),
        })
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

#[cfg(test)]
mod tests {
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
}
