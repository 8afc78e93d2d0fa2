//! The `nomyo serve` configuration: the TOML file (`--config FILE`, annotated
//! example: `nomyo.example.toml` at the repository root), the overlay of
//! command-line flags (flags win over the file, the file over defaults), and
//! its resolution into typed [`Settings`].
//!
//! The file names secrets only by path or environment variable; they are read
//! during [`FileConfig::resolve`] and kept as hashes (API keys) or
//! `SecretString`s (passwords, upstream keys).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nomyo_core::keys::RsaBits;
use nomyo_core::{ExposeSecret, SecretString, SecurityTier};
use secrecy::zeroize::Zeroizing;
use serde::Deserialize;

use crate::hpke_keys;
use crate::keystore::{KeySource, DEFAULT_GRACE};
use crate::limits::Limits;
use crate::policy::{hash_key, ApiKeys, ModelSet, TierRule, TrustedProxies};
use crate::pool::PoolConfig;
use crate::state::MetricsAccess;
use crate::upstream::UpstreamConfig;

/// Default listen address (docs/CLI.md §7).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:12434";
/// Default key directory.
pub const DEFAULT_KEY_DIR: &str = "server_keys";

/// A configuration problem, said so that a person can fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (positions and key names only).
        message: String,
    },
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// `[limits]`. Every field optional; absent = the default of [`Limits`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body in bytes (413).
    pub max_body_bytes: Option<usize>,
    /// Secure requests processed at once.
    pub max_concurrency: Option<usize>,
    /// Secure requests that may wait for a slot (then 503).
    pub max_queue: Option<usize>,
    /// Longest wait for a slot, seconds (then 503).
    /// TOML key `queue_timeout` (a duration such as `"30s"`; the older
    /// `queue_timeout_secs` still loads, with a warning).
    #[serde(rename = "queue_timeout", default, deserialize_with = "de_secs")]
    pub queue_timeout_secs: Option<u64>,
    /// Longest a whole secure request may take, seconds (504).
    /// TOML key `request_timeout` (a duration such as `"30s"`; the older
    /// `request_timeout_secs` still loads, with a warning).
    #[serde(rename = "request_timeout", default, deserialize_with = "de_secs")]
    pub request_timeout_secs: Option<u64>,
    /// Longest the request body may take to arrive, seconds (408).
    /// TOML key `body_timeout` (a duration such as `"30s"`; the older
    /// `body_timeout_secs` still loads, with a warning).
    #[serde(rename = "body_timeout", default, deserialize_with = "de_secs")]
    pub body_timeout_secs: Option<u64>,
    /// Most request-body bytes held in memory at once over all requests
    /// (503 beyond). Default 268435456 (256 MiB) or 4 × max_body_bytes,
    /// whichever is more; at least max_body_bytes.
    pub max_buffered_body_bytes: Option<usize>,
    /// Requests per minute per API key; 0 = unlimited (429).
    pub rate_limit_per_minute: Option<u32>,
    /// Burst for the rate limit; 0 = same as the rate.
    pub rate_limit_burst: Option<u32>,
    /// Seconds an `X-Payload-ID` and its package stay used (409 on reuse).
    /// TOML key `replay_window` (a duration such as `"30s"`; the older
    /// `replay_window_secs` still loads, with a warning).
    #[serde(rename = "replay_window", default, deserialize_with = "de_secs")]
    pub replay_window_secs: Option<u64>,
    /// Most entries in the replay window.
    pub replay_max_entries: Option<usize>,
    /// `--replay-journal`: the file that keeps the local replay window across
    /// restarts, or `"off"`. Default: `replay_window.log` in the key
    /// directory (off with an ephemeral key, a shared store, or in replica
    /// mode, where replicas would share one file).
    pub replay_journal: Option<String>,
    /// The largest share of `replay_max_entries`, in percent (1–100), one
    /// caller may hold (429 beyond it). Default 25.
    pub replay_share_percent: Option<u8>,
    /// A streamed answer whose backend produces nothing for this many
    /// seconds is cut. Default 120.
    /// TOML key `stream_idle_timeout` (a duration such as `"30s"`; the older
    /// `stream_idle_timeout_secs` still loads, with a warning).
    #[serde(rename = "stream_idle_timeout", default, deserialize_with = "de_secs")]
    pub stream_idle_timeout_secs: Option<u64>,
    /// A streamed answer whose client reads nothing for this many seconds is
    /// cut and its processing slot given back. Default 30.
    /// TOML key `stream_write_timeout` (a duration such as `"30s"`; the older
    /// `stream_write_timeout_secs` still loads, with a warning).
    #[serde(rename = "stream_write_timeout", default, deserialize_with = "de_secs")]
    pub stream_write_timeout_secs: Option<u64>,
}

impl LimitsConfig {
    fn overlay(self, top: LimitsConfig) -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: top.max_body_bytes.or(self.max_body_bytes),
            max_concurrency: top.max_concurrency.or(self.max_concurrency),
            max_queue: top.max_queue.or(self.max_queue),
            queue_timeout_secs: top.queue_timeout_secs.or(self.queue_timeout_secs),
            request_timeout_secs: top.request_timeout_secs.or(self.request_timeout_secs),
            body_timeout_secs: top.body_timeout_secs.or(self.body_timeout_secs),
            max_buffered_body_bytes: top.max_buffered_body_bytes.or(self.max_buffered_body_bytes),
            rate_limit_per_minute: top.rate_limit_per_minute.or(self.rate_limit_per_minute),
            rate_limit_burst: top.rate_limit_burst.or(self.rate_limit_burst),
            replay_window_secs: top.replay_window_secs.or(self.replay_window_secs),
            replay_max_entries: top.replay_max_entries.or(self.replay_max_entries),
            replay_share_percent: top.replay_share_percent.or(self.replay_share_percent),
            replay_journal: top.replay_journal.or(self.replay_journal),
            stream_idle_timeout_secs: top
                .stream_idle_timeout_secs
                .or(self.stream_idle_timeout_secs),
            stream_write_timeout_secs: top
                .stream_write_timeout_secs
                .or(self.stream_write_timeout_secs),
        }
    }

    fn resolve(&self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let secs = |v: Option<u64>, def: Duration, name: &str| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(def),
                Some(0) => Err(invalid(format!("limits.{name} must be at least 1"))),
                // Far beyond any sane setting, and far from overflowing a
                // deadline (`Instant` + window) or Redis's millisecond TTLs.
                Some(s) if s > MAX_LIMIT_SECS => Err(invalid(format!(
                    "limits.{name} must be at most 7d ({MAX_LIMIT_SECS} seconds)"
                ))),
                Some(s) => Ok(Duration::from_secs(s)),
            }
        };
        let l = Limits {
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            max_concurrency: self.max_concurrency.unwrap_or(d.max_concurrency),
            max_queue: self.max_queue.unwrap_or(d.max_queue),
            queue_timeout: secs(self.queue_timeout_secs, d.queue_timeout, "queue_timeout")?,
            request_timeout: secs(
                self.request_timeout_secs,
                d.request_timeout,
                "request_timeout",
            )?,
            body_timeout: secs(self.body_timeout_secs, d.body_timeout, "body_timeout")?,
            max_buffered_body_bytes: self.max_buffered_body_bytes.unwrap_or(
                d.max_buffered_body_bytes
                    .max(self.max_body_bytes.unwrap_or(0).saturating_mul(4)),
            ),
            rate_per_minute: self.rate_limit_per_minute.unwrap_or(d.rate_per_minute),
            rate_burst: self.rate_limit_burst.unwrap_or(d.rate_burst),
            replay_window: secs(self.replay_window_secs, d.replay_window, "replay_window")?,
            replay_capacity: self.replay_max_entries.unwrap_or(d.replay_capacity),
            replay_share_percent: self.replay_share_percent.unwrap_or(d.replay_share_percent),
            stream_idle_timeout: secs(
                self.stream_idle_timeout_secs,
                d.stream_idle_timeout,
                "stream_idle_timeout",
            )?,
            stream_write_timeout: secs(
                self.stream_write_timeout_secs,
                d.stream_write_timeout,
                "stream_write_timeout",
            )?,
        };
        if !(1..=100).contains(&l.replay_share_percent) {
            return Err(invalid("limits.replay_share_percent must be 1 to 100"));
        }
        if l.max_body_bytes < 1024 {
            return Err(invalid("limits.max_body_bytes must be at least 1024"));
        }
        if l.max_buffered_body_bytes < l.max_body_bytes {
            return Err(invalid(
                "limits.max_buffered_body_bytes must be at least limits.max_body_bytes",
            ));
        }
        if l.max_concurrency == 0 {
            return Err(invalid("limits.max_concurrency must be at least 1"));
        }
        if l.replay_capacity < 2 {
            return Err(invalid("limits.replay_max_entries must be at least 2"));
        }
        Ok(l)
    }
}

/// The longest time any `[limits]` setting in seconds may be.
const MAX_LIMIT_SECS: u64 = 7 * 24 * 3600;

/// `[hpke]`: the protocol v2 keys' rotation. Durations are written
/// `"500ms"`, `"30s"`, `"10m"`, `"24h"`, `"7d"`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HpkeConfig {
    /// `--hpke-rotate-every`: new HPKE keys this often; `"off"` = only on
    /// SIGHUP. Default `"24h"`.
    pub rotate_every: Option<String>,
    /// `--hpke-grace`: how long a rotated-out HPKE key still opens requests
    /// before it is erased. Default `"10m"`; shorter than `rotate_every`.
    pub grace: Option<String>,
}

impl HpkeConfig {
    fn overlay(self, top: HpkeConfig) -> HpkeConfig {
        HpkeConfig {
            rotate_every: top.rotate_every.or(self.rotate_every),
            grace: top.grace.or(self.grace),
        }
    }

    fn resolve(&self) -> Result<(Option<Duration>, Duration), ConfigError> {
        let every = match self.rotate_every.as_deref().map(str::trim) {
            None => Some(hpke_keys::DEFAULT_ROTATE_EVERY),
            Some("off" | "never") => None,
            Some(s) => match parse_duration(s) {
                Some(d) if !d.is_zero() => Some(d),
                _ => {
                    return Err(invalid(format!(
                        "hpke.rotate_every '{s}' is not a duration like \"24h\", \"30m\" or \"off\""
                    )))
                }
            },
        };
        let grace = match self.grace.as_deref() {
            None => hpke_keys::DEFAULT_GRACE,
            Some(s) => parse_duration(s).ok_or_else(|| {
                invalid(format!(
                    "hpke.grace '{s}' is not a duration like \"10m\" or \"30s\""
                ))
            })?,
        };
        if let Some(every) = every {
            if grace >= every {
                return Err(invalid(format!(
                    "hpke.grace ({}) must be shorter than hpke.rotate_every ({})",
                    self.grace.as_deref().unwrap_or("10m"),
                    self.rotate_every.as_deref().unwrap_or("24h"),
                )));
            }
        }
        Ok((every, grace))
    }
}

/// `[cluster]`: several replicas behind one load balancer, sharing one key
/// directory (a shared volume or a secret mount) and one replay window.
/// (`Debug` leaves out the store URL, which may hold a password.)
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `--key-reload-every`: re-read the key directory this often and use
    /// the keys another replica or an operator wrote there (`"off"` = never).
    /// When set, SIGHUP reloads instead of rotating, and the HPKE keys rotate
    /// on a schedule only if `[hpke] rotate_every` is set explicitly (on the
    /// one replica that rotates). Default off.
    pub key_reload_every: Option<String>,
    /// `--replay-redis-url`: keep the replay window in this Redis/Valkey
    /// (`redis://[:PASSWORD@]HOST:PORT[/DB]`, `rediss://` for TLS), shared
    /// by every replica. Prefer `replay_redis_url_env` when the URL holds a
    /// password.
    pub replay_redis_url: Option<String>,
    /// `--replay-redis-url-env`: environment variable holding that URL.
    pub replay_redis_url_env: Option<String>,
    /// Key prefix in the shared store (several deployments in one Redis).
    /// Default `"nomyo:replay:"`.
    pub replay_redis_prefix: Option<String>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("key_reload_every", &self.key_reload_every)
            .field(
                "replay_redis_url",
                &self.replay_redis_url.as_ref().map(|_| "[REDACTED]"),
            )
            .field("replay_redis_url_env", &self.replay_redis_url_env)
            .field("replay_redis_prefix", &self.replay_redis_prefix)
            .finish()
    }
}

impl ClusterConfig {
    fn overlay(self, top: ClusterConfig) -> ClusterConfig {
        // The URL given either way on top replaces the file's, given either way.
        let (replay_redis_url, replay_redis_url_env) =
            if top.replay_redis_url.is_some() || top.replay_redis_url_env.is_some() {
                (top.replay_redis_url, top.replay_redis_url_env)
            } else {
                (self.replay_redis_url, self.replay_redis_url_env)
            };
        ClusterConfig {
            key_reload_every: top.key_reload_every.or(self.key_reload_every),
            replay_redis_url,
            replay_redis_url_env,
            replay_redis_prefix: top.replay_redis_prefix.or(self.replay_redis_prefix),
        }
    }

    fn resolve(self) -> Result<ClusterSettings, ConfigError> {
        let key_reload_every = match self.key_reload_every.as_deref().map(str::trim) {
            None | Some("off" | "never") => None,
            Some(s) => match parse_duration(s) {
                Some(d) if d >= Duration::from_millis(100) => Some(d),
                _ => {
                    return Err(invalid(format!(
                        "cluster.key_reload_every '{s}' is not a duration of at least 100ms like \"10s\" or \"off\""
                    )))
                }
            },
        };
        let replay_redis_url = match (self.replay_redis_url, self.replay_redis_url_env) {
            (Some(url), None) => Some(SecretString::from(url)),
            (None, Some(var)) => Some(secret_env(&var, "replay store URL")?),
            (None, None) => None,
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give the replay store URL either directly or from an environment variable, not both",
                ))
            }
        };
        if let Some(url) = &replay_redis_url {
            let u = url.expose_secret();
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(invalid(
                    "the replay store URL must start with redis:// or rediss://",
                ));
            }
        }
        let replay_redis_prefix = self
            .replay_redis_prefix
            .unwrap_or_else(|| crate::replay::DEFAULT_PREFIX.to_owned());
        if replay_redis_prefix.is_empty() || replay_redis_prefix.len() > 128 {
            return Err(invalid(
                "cluster.replay_redis_prefix must be 1 to 128 characters",
            ));
        }
        Ok(ClusterSettings {
            key_reload_every,
            replay_redis_url,
            replay_redis_prefix,
        })
    }
}

impl ClusterSettings {
    /// Whether this server is one of several replicas (it follows the key
    /// directory or shares the replay window).
    pub fn is_replica(&self) -> bool {
        self.key_reload_every.is_some() || self.replay_redis_url.is_some()
    }
}

/// The resolved `[cluster]` settings.
#[derive(Debug, Default)]
pub struct ClusterSettings {
    /// Re-read the key directory this often (`None` = never).
    pub key_reload_every: Option<Duration>,
    /// The shared replay store, if any (a secret: it may hold a password).
    pub replay_redis_url: Option<SecretString>,
    /// Key prefix in the shared store.
    pub replay_redis_prefix: String,
}

/// The duration syntax of the file and the command line (`"500ms"`,
/// `"30s"`, `"10m"`, `"24h"`, `"7d"`), shared with the client commands.
pub use nomyo_core::duration::parse_duration;

/// What kind of backend a `[[backends]]` entry is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// An OpenAI-compatible server (`url`).
    #[default]
    Upstream,
    /// The in-process model (`model`).
    Embedded,
}

/// One `[[backends.endpoints]]` entry: an upstream endpoint of a pool with
/// its own key, models and cap.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Base URL with the API prefix (`http://10.0.0.7:8000/v1`).
    pub url: String,
    /// File whose first line is this endpoint's API key (default: the
    /// backend's key).
    pub api_key_file: Option<PathBuf>,
    /// Environment variable holding this endpoint's API key.
    pub api_key_env: Option<String>,
    /// Models this endpoint serves (default: the backend's `models`, else
    /// asked from the endpoint at start-up).
    pub models: Option<Vec<String>>,
    /// Requests in flight at most on this endpoint (default: the backend's
    /// `max_concurrency_per_endpoint`; 0 = no cap).
    pub max_concurrency: Option<usize>,
}

/// One `[[backends]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Name used by `[tiers.*].backends`, logs and metrics.
    pub name: String,
    /// `upstream` (default) or `embedded`.
    #[serde(rename = "type", default)]
    pub kind: BackendKind,
    /// Upstream: base URL with the API prefix (`http://127.0.0.1:8080/v1`).
    pub url: Option<String>,
    /// Upstream pool: several base URLs serving the same models (instead of
    /// `url`); requests go to the least busy healthy one, with failover.
    pub urls: Option<Vec<String>>,
    /// Upstream pool: endpoints with their own settings (instead of `url` /
    /// `urls`): `[[backends.endpoints]]` with `url` and optionally
    /// `api_key_file`/`api_key_env`, `models`, `max_concurrency` (each
    /// defaults to the backend's). Requests for a model go only to the
    /// endpoints serving it.
    pub endpoints: Option<Vec<EndpointConfig>>,
    /// Upstream pool: requests in flight per endpoint (absent = no cap).
    pub max_concurrency_per_endpoint: Option<usize>,
    /// Upstream pool: seconds between active probes (`GET {url}/models`);
    /// 0 = none. Default 5.
    /// TOML key `health_check_interval` (a duration such as `"30s"`; the older
    /// `health_check_interval_secs` still loads, with a warning).
    #[serde(
        rename = "health_check_interval",
        default,
        deserialize_with = "de_secs"
    )]
    pub health_check_interval_secs: Option<u64>,
    /// Upstream pool: consecutive failures that open an endpoint's circuit
    /// breaker. Default 3.
    pub breaker_failures: Option<u32>,
    /// Upstream pool: seconds an open breaker waits before a trial request.
    /// Default 10.
    /// TOML key `breaker_cooldown` (a duration such as `"30s"`; the older
    /// `breaker_cooldown_secs` still loads, with a warning).
    #[serde(rename = "breaker_cooldown", default, deserialize_with = "de_secs")]
    pub breaker_cooldown_secs: Option<u64>,
    /// Upstream: file whose first line is the upstream API key.
    pub api_key_file: Option<PathBuf>,
    /// Upstream: environment variable holding the upstream API key.
    pub api_key_env: Option<String>,
    /// Models served; absent = ask the upstream (`GET {url}/models`), or the
    /// embedded engine, at start-up.
    pub models: Option<Vec<String>>,
    /// Upstream: whole-request timeout, seconds.
    /// TOML key `timeout` (a duration such as `"30s"`; the older
    /// `timeout_secs` still loads, with a warning).
    #[serde(rename = "timeout", default, deserialize_with = "de_secs")]
    pub timeout_secs: Option<u64>,
    /// Upstream: connect timeout, seconds.
    /// TOML key `connect_timeout` (a duration such as `"30s"`; the older
    /// `connect_timeout_secs` still loads, with a warning).
    #[serde(rename = "connect_timeout", default, deserialize_with = "de_secs")]
    pub connect_timeout_secs: Option<u64>,
    /// Embedded: the GGUF model file.
    pub model: Option<PathBuf>,
    /// Embedded: inference threads.
    pub threads: Option<usize>,
    /// Embedded: tokens one request may use (context per sequence).
    pub context: Option<u32>,
}

/// One `[tiers.NAME]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Backends that may serve this tier (absent = all).
    pub backends: Option<Vec<String>>,
    /// Models allowed on this tier; `"*"` = every model its backends serve.
    pub models: Vec<String>,
    /// Protocol v2 requests on this tier must use the post-quantum suite
    /// (X-Wing); X25519 gets 403. Default: true for `maximum`, false otherwise.
    pub require_post_quantum: Option<bool>,
}

/// The TOML file, and the flags overlaid on it. Every field is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--key-dir`.
    pub key_dir: Option<PathBuf>,
    /// `--key-password-file`.
    pub key_password_file: Option<PathBuf>,
    /// `--key-password-env`.
    pub key_password_env: Option<String>,
    /// `--key-bits` (for generated keys).
    pub key_bits: Option<u32>,
    /// `--no-password`: a server key generated here is saved unencrypted.
    /// Generating one off a terminal needs this or a key password; an
    /// existing unencrypted key loads without it.
    pub no_password: Option<bool>,
    /// `--ephemeral-key`: a fresh key in memory only, never saved.
    pub ephemeral_key: Option<bool>,
    /// `--key-grace`: seconds a rotated-out key still opens requests.
    /// TOML key `key_grace` (a duration such as `"30s"`; the older
    /// `key_grace_secs` still loads, with a warning).
    #[serde(rename = "key_grace", default, deserialize_with = "de_secs")]
    pub key_grace_secs: Option<u64>,
    /// `--api-key-file`: one accepted API key per line.
    pub api_key_file: Option<PathBuf>,
    /// Accepted API keys as SHA-256 (`sha256:HEX`).
    pub api_key_hashes: Option<Vec<String>>,
    /// `--tls-cert` (PEM chain).
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key` (PEM).
    pub tls_key: Option<PathBuf>,
    /// `GET /metrics`: `false` (`--no-metrics`) never; `true` to anyone
    /// (public); absent: to loopback peers only, unless a metrics token is
    /// set (then to whoever presents it).
    pub metrics: Option<bool>,
    /// `--metrics-token-file`: file whose first line is the bearer token
    /// `GET /metrics` requires.
    pub metrics_token_file: Option<PathBuf>,
    /// `--metrics-token-env`: environment variable holding that token.
    pub metrics_token_env: Option<String>,
    /// `--trusted-proxy`: reverse proxies (addresses or CIDR networks) whose
    /// `X-Forwarded-For` names the client, for anonymous callers' rate
    /// limit and replay share.
    pub trusted_proxies: Option<Vec<String>>,
    /// `--allowed-host`: host names a loopback listener answers besides
    /// `localhost` and loopback addresses (DNS-rebinding guard).
    pub allowed_hosts: Option<Vec<String>>,
    /// `--shutdown-grace`: seconds in-flight requests get on SIGTERM.
    /// TOML key `shutdown_grace` (a duration such as `"30s"`; the older
    /// `shutdown_grace_secs` still loads, with a warning).
    #[serde(rename = "shutdown_grace", default, deserialize_with = "de_secs")]
    pub shutdown_grace_secs: Option<u64>,
    /// `--model`: the embedded model file (when no backend is configured).
    pub model: Option<PathBuf>,
    /// `--threads`: embedded inference threads.
    pub threads: Option<usize>,
    /// `--context`: tokens one request may use with the embedded model
    /// (context per sequence); absent = the model's, within the KV budget.
    pub context: Option<u32>,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[hpke]`: protocol v2 key rotation.
    #[serde(default)]
    pub hpke: HpkeConfig,
    /// `[cluster]`: replicas sharing keys and the replay window.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// `[[backends]]` (`--upstream URL` replaces them).
    pub backends: Option<Vec<BackendConfig>>,
    /// `[tiers.standard]`, `[tiers.high]`, `[tiers.maximum]`.
    pub tiers: Option<BTreeMap<String, TierConfig>>,
}

/// The TLS files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// Where the server key comes from.
#[derive(Debug)]
pub enum KeySetting {
    /// A key directory (loaded, or generated and saved on first start).
    Dir(KeySource),
    /// A fresh in-memory key of this size.
    Ephemeral(RsaBits),
}

/// A backend to build.
#[derive(Debug)]
pub enum BackendSpec {
    /// An OpenAI-compatible upstream.
    Upstream {
        /// Name.
        name: String,
        /// Connection settings.
        config: UpstreamConfig,
    },
    /// Several OpenAI-compatible upstreams serving the same models.
    Pool {
        /// Name.
        name: String,
        /// Endpoints and routing settings.
        config: PoolConfig,
    },
    /// The embedded model (built by the CLI, which owns the engine).
    Embedded {
        /// Name.
        name: String,
        /// Model file; `None` = the engine's default.
        model: Option<PathBuf>,
        /// Threads; `None` = the engine's default.
        threads: Option<usize>,
        /// Context per sequence; `None` = the model's (within the KV budget).
        context: Option<u32>,
        /// Models to advertise; `None` = what the engine reports.
        models: Option<Vec<String>>,
    },
}

/// The resolved, validated settings.
#[derive(Debug)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Server key.
    pub key: KeySetting,
    /// Grace period of a rotated-out key.
    pub key_grace: Duration,
    /// Accepted API keys (empty = open server).
    pub api_keys: ApiKeys,
    /// TLS, if any.
    pub tls: Option<TlsFiles>,
    /// Limits.
    pub limits: Limits,
    /// Who may read `/metrics`.
    pub metrics: MetricsAccess,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Host names a loopback listener answers besides loopback names.
    pub allowed_hosts: Vec<String>,
    /// The file that keeps the local replay window across restarts.
    pub replay_journal: Option<PathBuf>,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
    /// Backends, in order.
    pub backends: Vec<BackendSpec>,
    /// Tier rules (`None` = every tier allows everything).
    pub tiers: Option<BTreeMap<SecurityTier, TierRule>>,
    /// Rotate the HPKE keys this often (`None`: only on SIGHUP).
    pub hpke_rotate_every: Option<Duration>,
    /// How long a rotated-out HPKE key still opens requests.
    pub hpke_grace: Duration,
    /// Tiers whose v2 requests must use the post-quantum suite.
    pub post_quantum_tiers: BTreeSet<SecurityTier>,
    /// Replicas: key directory following, shared replay store.
    pub cluster: ClusterSettings,
}

/// Reads the first line of a secret file.
fn secret_file(path: &Path, what: &'static str) -> Result<SecretString, ConfigError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                what,
                path: path.to_owned(),
                source,
            })?,
        );
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(invalid(format!("{what} {} is empty", path.display())));
    }
    Ok(SecretString::from(line.to_owned()))
}

fn secret_env(var: &str, what: &str) -> Result<SecretString, ConfigError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
        Ok(_) => Err(invalid(format!(
            "environment variable {var} ({what}) is empty"
        ))),
        Err(_) => Err(invalid(format!(
            "environment variable {var} ({what}) is not set"
        ))),
    }
}

fn optional_secret(
    file: Option<&Path>,
    env: Option<&str>,
    what: &'static str,
) -> Result<Option<SecretString>, ConfigError> {
    match (file, env) {
        (Some(f), None) => secret_file(f, what).map(Some),
        (None, Some(v)) => secret_env(v, what).map(Some),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(invalid(format!(
            "give the {what} either from a file or from an environment variable, not both"
        ))),
    }
}

/// The keys that took a number of seconds under a `…_secs` name, and the
/// name that takes a duration (`"30s"`, `"10m"`, `"24h"`) now: `(table, old,
/// new)`, table `""` for the top level and `"backends"` for each
/// `[[backends]]` entry.
const SECONDS_KEYS: &[(&str, &str, &str)] = &[
    ("", "key_grace_secs", "key_grace"),
    ("", "shutdown_grace_secs", "shutdown_grace"),
    ("limits", "queue_timeout_secs", "queue_timeout"),
    ("limits", "request_timeout_secs", "request_timeout"),
    ("limits", "body_timeout_secs", "body_timeout"),
    ("limits", "replay_window_secs", "replay_window"),
    ("limits", "stream_idle_timeout_secs", "stream_idle_timeout"),
    (
        "limits",
        "stream_write_timeout_secs",
        "stream_write_timeout",
    ),
    (
        "backends",
        "health_check_interval_secs",
        "health_check_interval",
    ),
    ("backends", "breaker_cooldown_secs", "breaker_cooldown"),
    ("backends", "timeout_secs", "timeout"),
    ("backends", "connect_timeout_secs", "connect_timeout"),
];

/// Renames the older `…_secs` keys of a parsed file to their duration
/// names; one warning for each. Both names in one table is an error.
fn rename_seconds_keys(table: &mut toml::Table) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    let mut rename = |t: &mut toml::Table, prefix: &str, old: &str, new: &str| {
        let Some(v) = t.remove(old) else {
            return Ok(());
        };
        if t.contains_key(new) {
            return Err(format!(
                "{prefix}{new} and {prefix}{old} both given: keep {new} (a duration such as \"30s\")"
            ));
        }
        let example = match &v {
            toml::Value::Integer(n) => format!("{new} = \"{n}s\""),
            _ => format!("{new} = \"30s\""),
        };
        warnings.push(format!(
            "configuration key {prefix}{old} is deprecated; write {prefix}{example} instead (durations: 500ms, 30s, 10m, 24h, 7d)"
        ));
        t.insert(new.to_owned(), v);
        Ok(())
    };
    for (section, old, new) in SECONDS_KEYS {
        match *section {
            "" => rename(table, "", old, new)?,
            "backends" => {
                if let Some(toml::Value::Array(entries)) = table.get_mut("backends") {
                    for entry in entries.iter_mut() {
                        if let toml::Value::Table(t) = entry {
                            rename(t, "[[backends]] ", old, new)?;
                        }
                    }
                }
            }
            name => {
                if let Some(toml::Value::Table(t)) = table.get_mut(name) {
                    rename(t, &format!("{name}."), old, new)?;
                }
            }
        }
    }
    Ok(warnings)
}

/// Deserialises a duration setting kept in whole seconds: `"30s"`, `"10m"`,
/// `"24h"`, `"7d"`, or a number of seconds.
fn de_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Secs;
    impl serde::de::Visitor<'_> for Secs {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"30s\", \"10m\" or \"24h\", or a number of seconds")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
            let d = parse_duration(v).ok_or_else(|| {
                E::custom(format!(
                    "\"{v}\" is not a duration (500ms, 30s, 10m, 24h, 7d)"
                ))
            })?;
            if d.subsec_nanos() != 0 {
                return Err(E::custom(format!(
                    "\"{v}\": this setting takes whole seconds (e.g. \"1s\", \"30s\")"
                )));
            }
            Ok(d.as_secs())
        }
    }
    d.deserialize_any(Secs).map(Some)
}

impl FileConfig {
    /// Reads and parses a TOML file (unknown keys are errors: a typo must not
    /// silently disable a limit).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            what: "config file",
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text. Each older `…_secs` key is logged as a warning
    /// that names the key to use instead.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let (config, warnings) = Self::from_toml_with_warnings(text)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(config)
    }

    /// Parses TOML text, and says which older `…_secs` keys it used (one
    /// sentence each, naming the key that replaces it).
    pub fn from_toml_with_warnings(text: &str) -> Result<(Self, Vec<String>), String> {
        let direct = |text: &str| {
            toml::from_str(text).map_err(|e| e.message().to_owned() + &span_hint(text, e.span()))
        };
        let Ok(mut table) = text.parse::<toml::Table>() else {
            return direct(text).map(|c| (c, Vec::new()));
        };
        let warnings = rename_seconds_keys(&mut table)?;
        if warnings.is_empty() {
            // The text itself, so that errors keep their line numbers.
            return direct(text).map(|c| (c, warnings));
        }
        let config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| e.message().to_owned())?;
        Ok((config, warnings))
    }

    /// `top`'s fields win where set (flags over the file).
    pub fn overlay(self, top: FileConfig) -> FileConfig {
        // A key password on top replaces `no_password` below, and the other
        // way round: the two never meet from different layers.
        let top_password = top.key_password_file.is_some() || top.key_password_env.is_some();
        let top_no_password = top.no_password == Some(true);
        FileConfig {
            listen: top.listen.or(self.listen),
            key_dir: top.key_dir.or(self.key_dir),
            key_password_file: top
                .key_password_file
                .or(self.key_password_file.filter(|_| !top_no_password)),
            key_password_env: top
                .key_password_env
                .or(self.key_password_env.filter(|_| !top_no_password)),
            no_password: top
                .no_password
                .or(self.no_password.filter(|_| !top_password)),
            key_bits: top.key_bits.or(self.key_bits),
            ephemeral_key: top.ephemeral_key.or(self.ephemeral_key),
            key_grace_secs: top.key_grace_secs.or(self.key_grace_secs),
            api_key_file: top.api_key_file.or(self.api_key_file),
            api_key_hashes: top.api_key_hashes.or(self.api_key_hashes),
            tls_cert: top.tls_cert.or(self.tls_cert),
            tls_key: top.tls_key.or(self.tls_key),
            metrics: top.metrics.or(self.metrics),
            metrics_token_file: top.metrics_token_file.or(self.metrics_token_file),
            metrics_token_env: top.metrics_token_env.or(self.metrics_token_env),
            trusted_proxies: top.trusted_proxies.or(self.trusted_proxies),
            allowed_hosts: top.allowed_hosts.or(self.allowed_hosts),
            shutdown_grace_secs: top.shutdown_grace_secs.or(self.shutdown_grace_secs),
            model: top.model.or(self.model),
            threads: top.threads.or(self.threads),
            context: top.context.or(self.context),
            limits: self.limits.overlay(top.limits),
            hpke: self.hpke.overlay(top.hpke),
            cluster: self.cluster.overlay(top.cluster),
            backends: top.backends.or(self.backends),
            tiers: top.tiers.or(self.tiers),
        }
    }

    /// Validates everything and reads the secrets it names.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let listen_s = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = SocketAddr::from_str(listen_s).map_err(|_| {
            invalid(format!(
                "listen address '{listen_s}' is not IP:PORT (e.g. 127.0.0.1:12434)"
            ))
        })?;

        let bits = match self.key_bits.unwrap_or(4096) {
            2048 => RsaBits::B2048,
            3072 => RsaBits::B3072,
            4096 => RsaBits::B4096,
            other => {
                return Err(invalid(format!(
                    "key_bits must be 2048, 3072 or 4096, not {other}"
                )))
            }
        };
        let password = optional_secret(
            self.key_password_file.as_deref(),
            self.key_password_env.as_deref(),
            "server key password",
        )?;
        if self.no_password == Some(true) && password.is_some() {
            return Err(invalid(
                "no_password/--no-password conflicts with the key password (key_password_file, key_password_env): keep one",
            ));
        }
        let key = if self.ephemeral_key.unwrap_or(false) {
            if self.key_dir.is_some() || password.is_some() {
                return Err(invalid(
                    "an ephemeral key is never saved: drop key_dir/--key-dir and the key password, or drop --ephemeral-key",
                ));
            }
            KeySetting::Ephemeral(bits)
        } else {
            KeySetting::Dir(KeySource {
                dir: self
                    .key_dir
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_DIR)),
                password,
                bits,
            })
        };
        let key_grace = self
            .key_grace_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_GRACE);

        let mut api_keys = ApiKeys::open();
        if let Some(path) = &self.api_key_file {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                ConfigError::Read {
                    what: "API key file",
                    path: path.clone(),
                    source,
                }
            })?);
            if api_keys.add_keys_from_text(&text) == 0 {
                return Err(invalid(format!(
                    "API key file {} holds no key (one key per line)",
                    path.display()
                )));
            }
        }
        for (i, h) in self.api_key_hashes.iter().flatten().enumerate() {
            api_keys
                .add_hash(h)
                .map_err(|m| invalid(format!("api_key_hashes[{i}]: {m}")))?;
        }

        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(invalid("TLS needs both --tls-cert and --tls-key")),
        };

        let metrics_token = optional_secret(
            self.metrics_token_file.as_deref(),
            self.metrics_token_env.as_deref(),
            "metrics token",
        )?;
        let metrics = match (self.metrics, metrics_token) {
            (Some(false), Some(_)) => {
                return Err(invalid(
                    "metrics is off (metrics = false / --no-metrics) but a metrics token is set: drop one",
                ))
            }
            (Some(false), None) => MetricsAccess::Off,
            (_, Some(token)) => MetricsAccess::Token(hash_key(token.expose_secret())),
            (Some(true), None) => MetricsAccess::Public,
            (None, None) => MetricsAccess::Loopback,
        };
        let trusted_proxies =
            TrustedProxies::parse(self.trusted_proxies.as_deref().unwrap_or_default())
                .map_err(invalid)?;
        let limits = self.limits.resolve()?;
        let cluster = self.cluster.resolve()?;
        if cluster.key_reload_every.is_some() && !matches!(key, KeySetting::Dir(_)) {
            return Err(invalid(
                "cluster.key_reload_every follows a key directory: it cannot be used with an ephemeral key",
            ));
        }
        // A replica (it follows the shared key directory, or shares the
        // replay window) does not rotate the HPKE keys on its own schedule
        // unless told to (one replica rotates, the others follow): otherwise
        // every replica would write its own keys, with the same ids.
        let hpke = if cluster.is_replica() && self.hpke.rotate_every.is_none() {
            HpkeConfig {
                rotate_every: Some("off".into()),
                ..self.hpke
            }
        } else {
            self.hpke
        };
        let (hpke_rotate_every, hpke_grace) = hpke.resolve()?;
        let replay_journal = match self.limits.replay_journal.as_deref() {
            Some("off") => None,
            Some("") => return Err(invalid("limits.replay_journal is a file path or \"off\"")),
            Some(path) => Some(PathBuf::from(path)),
            None => match &key {
                KeySetting::Dir(src)
                    if cluster.replay_redis_url.is_none() && !cluster.is_replica() =>
                {
                    Some(src.dir.join(hpke_keys::REPLAY_JOURNAL_FILE))
                }
                _ => None,
            },
        };
        let mut post_quantum_tiers = BTreeSet::from([SecurityTier::Maximum]);

        let backends = match self.backends {
            Some(list) if !list.is_empty() => {
                let mut out = Vec::new();
                for b in list {
                    out.push(resolve_backend(b)?);
                }
                out
            }
            _ => vec![BackendSpec::Embedded {
                name: "embedded".into(),
                model: self.model,
                threads: self.threads,
                context: self.context,
                models: None,
            }],
        };

        let tiers = match self.tiers {
            None => None,
            Some(map) => {
                let mut out = BTreeMap::new();
                for (name, t) in map {
                    let tier = SecurityTier::from_str(&name).map_err(|_| {
                        invalid(format!(
                            "[tiers.{name}]: a tier is one of standard, high, maximum"
                        ))
                    })?;
                    match t.require_post_quantum {
                        Some(true) => {
                            post_quantum_tiers.insert(tier);
                        }
                        Some(false) => {
                            post_quantum_tiers.remove(&tier);
                        }
                        None => {}
                    }
                    if t.models.is_empty() {
                        return Err(invalid(format!(
                            "[tiers.{name}]: models is empty; list model names or \"*\""
                        )));
                    }
                    out.insert(
                        tier,
                        TierRule {
                            backends: t.backends.unwrap_or_default(),
                            models: ModelSet::from_names(t.models),
                        },
                    );
                }
                Some(out)
            }
        };

        Ok(Settings {
            listen,
            key,
            key_grace,
            api_keys,
            tls,
            limits,
            metrics,
            trusted_proxies,
            allowed_hosts: self.allowed_hosts.unwrap_or_default(),
            replay_journal,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs.unwrap_or(30)),
            backends,
            tiers,
            hpke_rotate_every,
            hpke_grace,
            post_quantum_tiers,
            cluster,
        })
    }
}

/// An endpoint given only by its URL (`url` / `urls`).
fn plain_endpoint(url: String) -> EndpointConfig {
    EndpointConfig {
        url,
        api_key_file: None,
        api_key_env: None,
        models: None,
        max_concurrency: None,
    }
}

fn resolve_backend(b: BackendConfig) -> Result<BackendSpec, ConfigError> {
    if b.name.is_empty() {
        return Err(invalid("a backend needs a name"));
    }
    match b.kind {
        BackendKind::Upstream => {
            let pool_settings = b.max_concurrency_per_endpoint.is_some()
                || b.health_check_interval_secs.is_some()
                || b.breaker_failures.is_some()
                || b.breaker_cooldown_secs.is_some();
            let (eps, pool) = match (b.url, b.urls, b.endpoints) {
                (Some(url), None, None) => (vec![plain_endpoint(url)], pool_settings),
                (None, Some(urls), None) if !urls.is_empty() => {
                    (urls.into_iter().map(plain_endpoint).collect(), true)
                }
                (None, None, Some(eps)) if !eps.is_empty() => (eps, true),
                (None, None, None) | (None, Some(_), None) | (None, None, Some(_)) => {
                    return Err(invalid(format!(
                        "backend '{}': an upstream needs url = \"http://HOST:PORT/v1\" (or urls = [...], or [[backends.endpoints]], for several)",
                        b.name
                    )))
                }
                _ => {
                    return Err(invalid(format!(
                        "backend '{}': give one of url, urls or [[backends.endpoints]], not several",
                        b.name
                    )))
                }
            };
            let api_key = optional_secret(
                b.api_key_file.as_deref(),
                b.api_key_env.as_deref(),
                "upstream API key",
            )?;
            let models = b.models.unwrap_or_default();
            let mut endpoints: Vec<UpstreamConfig> = Vec::with_capacity(eps.len());
            let mut caps = Vec::with_capacity(eps.len());
            for (i, ep) in eps.into_iter().enumerate() {
                let mut config = UpstreamConfig::new(ep.url);
                config.api_key = match optional_secret(
                    ep.api_key_file.as_deref(),
                    ep.api_key_env.as_deref(),
                    "upstream API key",
                )
                .map_err(|e| invalid(format!("backend '{}' endpoint {}: {e}", b.name, i + 1)))?
                {
                    Some(k) => Some(k),
                    None => api_key.clone(),
                };
                config.models = ep.models.unwrap_or_else(|| models.clone());
                if let Some(s) = b.timeout_secs {
                    config.timeout = Duration::from_secs(s.max(1));
                }
                if let Some(s) = b.connect_timeout_secs {
                    config.connect_timeout = Duration::from_secs(s.max(1));
                }
                endpoints.push(config);
                caps.push(ep.max_concurrency);
            }
            if !pool {
                if let Some(config) = endpoints.pop() {
                    return Ok(BackendSpec::Upstream {
                        name: b.name,
                        config,
                    });
                }
            }
            let mut config = PoolConfig::new(endpoints);
            config.endpoint_caps = caps;
            if let Some(n) = b.max_concurrency_per_endpoint {
                config.max_concurrency_per_endpoint = n;
            }
            if let Some(s) = b.health_check_interval_secs {
                config.health_check_interval = Duration::from_secs(s);
            }
            if let Some(n) = b.breaker_failures {
                config.breaker_failures = n.max(1);
            }
            if let Some(s) = b.breaker_cooldown_secs {
                config.breaker_cooldown = Duration::from_secs(s);
            }
            Ok(BackendSpec::Pool {
                name: b.name,
                config,
            })
        }
        BackendKind::Embedded => Ok(BackendSpec::Embedded {
            name: b.name,
            model: b.model,
            threads: b.threads,
            context: b.context,
            models: b.models,
        }),
    }
}

/// " (line L, column C)" for a TOML error span.
fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" (line {line}, column {col})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_password_and_no_password_from_different_layers_do_not_meet() {
        // A password flag over `no_password = true` in the file: encrypted.
        let file = FileConfig::from_toml("no_password = true\n").unwrap();
        let flags = FileConfig {
            key_password_env: Some("SERVE_KEY_PW".into()),
            ..Default::default()
        };
        let c = file.overlay(flags);
        assert_eq!(c.no_password, None);
        assert_eq!(c.key_password_env.as_deref(), Some("SERVE_KEY_PW"));
        // --no-password over a password in the file: unencrypted.
        let file = FileConfig::from_toml("key_password_file = \"/run/pw\"\n").unwrap();
        let flags = FileConfig {
            no_password: Some(true),
            ..Default::default()
        };
        let c = file.overlay(flags);
        assert_eq!(c.key_password_file, None);
        assert_eq!(c.no_password, Some(true));
        // Both in one layer: refused.
        let pw = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(pw.path(), "pw\n").unwrap();
        let both = FileConfig {
            no_password: Some(true),
            key_password_file: Some(pw.path().to_owned()),
            ..Default::default()
        };
        let err = both.resolve().unwrap_err().to_string();
        assert!(err.contains("no_password"), "{err}");
    }

    #[test]
    fn example_config_parses_and_resolves() {
        let text = include_str!("../../../nomyo.example.toml");
        let cfg = FileConfig::from_toml(text).unwrap();
        // The example names secret files that do not exist here; drop them.
        let cfg = FileConfig {
            key_password_file: None,
            key_password_env: None,
            api_key_file: None,
            tls_cert: None,
            tls_key: None,
            backends: cfg.backends.map(|bs| {
                bs.into_iter()
                    .map(|b| BackendConfig {
                        api_key_file: None,
                        api_key_env: None,
                        ..b
                    })
                    .collect()
            }),
            ..cfg
        };
        let s = cfg.resolve().unwrap();
        assert!(!s.backends.is_empty());
        let pool = s.backends.iter().find_map(|b| match b {
            BackendSpec::Pool { name, config } if name == "gpu-pool" => Some(config),
            _ => None,
        });
        let pool = pool.expect("the example has a pool");
        assert_eq!(pool.endpoints.len(), 2);
        assert_eq!(pool.max_concurrency_per_endpoint, 8);
        assert_eq!(pool.breaker_failures, 3);
        assert!(s.tiers.is_some());
        assert_eq!(s.hpke_rotate_every, Some(Duration::from_secs(86_400)));
        assert_eq!(s.hpke_grace, Duration::from_secs(600));
        assert_eq!(
            s.post_quantum_tiers,
            BTreeSet::from([SecurityTier::Maximum])
        );
    }

    #[test]
    fn upstream_url_stays_plain_urls_make_a_pool_both_is_an_error() {
        let backends = |extra: &str| {
            FileConfig::from_toml(&format!(
                "ephemeral_key = true\n[[backends]]\nname = \"u\"\n{extra}"
            ))
            .unwrap()
            .resolve()
            .map(|s| s.backends)
        };
        let one = backends("url = \"http://127.0.0.1:1/v1\"\n").unwrap();
        assert!(matches!(&one[..], [BackendSpec::Upstream { .. }]));
        let pool = backends("urls = [\"http://127.0.0.1:1/v1\", \"http://127.0.0.1:2/v1\"]\nhealth_check_interval_secs = 0\nbreaker_cooldown_secs = 7\n").unwrap();
        match &pool[..] {
            [BackendSpec::Pool { config, .. }] => {
                assert_eq!(config.endpoints.len(), 2);
                assert!(config.health_check_interval.is_zero());
                assert_eq!(config.breaker_cooldown, Duration::from_secs(7));
            }
            other => panic!("expected a pool: {other:?}"),
        }
        // A single url with pool settings: a pool of one.
        let one_pool =
            backends("url = \"http://127.0.0.1:1/v1\"\nmax_concurrency_per_endpoint = 2\n")
                .unwrap();
        assert!(matches!(&one_pool[..], [BackendSpec::Pool { .. }]));
        let both =
            backends("url = \"http://127.0.0.1:1/v1\"\nurls = [\"http://127.0.0.1:2/v1\"]\n")
                .unwrap_err();
        assert!(both.to_string().contains("not several"), "{both}");
        assert!(backends("urls = []\n").is_err());
        // [[backends.endpoints]]: per-endpoint keys, models and caps.
        std::env::set_var("NOMYO_TEST_EP_KEY", "k1");
        let eps = backends(
            "models = [\"m\"]\nmax_concurrency_per_endpoint = 2\n\
             [[backends.endpoints]]\nurl = \"http://127.0.0.1:1/v1\"\nmodels = [\"m\", \"x\"]\n\
             api_key_env = \"NOMYO_TEST_EP_KEY\"\nmax_concurrency = 9\n\
             [[backends.endpoints]]\nurl = \"http://127.0.0.1:2/v1\"\n",
        )
        .unwrap();
        match &eps[..] {
            [BackendSpec::Pool { config, .. }] => {
                assert_eq!(config.endpoints[0].models, vec!["m", "x"]);
                assert_eq!(config.endpoints[1].models, vec!["m"]);
                assert!(config.endpoints[0].api_key.is_some());
                assert!(config.endpoints[1].api_key.is_none());
                assert_eq!(config.endpoint_caps, vec![Some(9), None]);
                assert_eq!(config.max_concurrency_per_endpoint, 2);
                // Debug never shows the key.
                assert!(!format!("{config:?}").contains("k1"));
            }
            other => panic!("expected one pool, got {other:?}"),
        }
        let mixed = backends(
            "url = \"http://127.0.0.1:1/v1\"\n[[backends.endpoints]]\nurl = \"http://127.0.0.1:2/v1\"\n",
        )
        .unwrap_err();
        assert!(mixed.to_string().contains("not several"), "{mixed}");
        let unknown = FileConfig::from_toml(
            "[[backends]]\nname = \"p\"\n[[backends.endpoints]]\nurl = \"http://h/v1\"\ncap = 3\n",
        )
        .unwrap_err();
        assert!(unknown.contains("cap"), "{unknown}");
    }

    #[test]
    fn replicas_do_not_rotate_on_their_own_and_flags_replace_the_store_url() {
        let resolve = |t: &str| FileConfig::from_toml(t).unwrap().resolve().unwrap();
        // A single server rotates every 24 h by default...
        assert!(resolve("").hpke_rotate_every.is_some());
        // ...a replica (shared window or key following) only when told to.
        let shared = resolve("[cluster]\nreplay_redis_url = \"redis://127.0.0.1:1/0\"\n");
        assert!(shared.cluster.is_replica());
        assert_eq!(shared.hpke_rotate_every, None);
        let follower = resolve("[cluster]\nkey_reload_every = \"10s\"\n");
        assert_eq!(follower.hpke_rotate_every, None);
        let rotator = resolve(
            "[hpke]\nrotate_every = \"1h\"\n[cluster]\nkey_reload_every = \"10s\"\nreplay_redis_url = \"redis://h:1\"\n",
        );
        assert_eq!(rotator.hpke_rotate_every, Some(Duration::from_secs(3600)));
        // A URL on the command line replaces the file's, however each is given.
        std::env::set_var("NOMYO_TEST_REPLAY_URL", "redis://from-env:6379/0");
        let file =
            FileConfig::from_toml("[cluster]\nreplay_redis_url_env = \"NOMYO_TEST_REPLAY_URL\"\n")
                .unwrap();
        let flags = FileConfig {
            cluster: ClusterConfig {
                replay_redis_url: Some("redis://from-flag:6379/0".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let url = file
            .overlay(flags)
            .resolve()
            .unwrap()
            .cluster
            .replay_redis_url
            .unwrap();
        assert_eq!(url.expose_secret(), "redis://from-flag:6379/0");
        // Absurd windows are refused, not overflowed.
        let err = FileConfig::from_toml("[limits]\nreplay_window_secs = 9223372036854775807\n")
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most"), "{err}");
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let file = FileConfig::from_toml(
            "listen = \"127.0.0.1:1\"\nkey_bits = 2048\n[limits]\nmax_queue = 3\nmax_concurrency = 5\n",
        )
        .unwrap();
        let flags = FileConfig {
            listen: Some("127.0.0.1:2".into()),
            limits: LimitsConfig {
                max_queue: Some(7),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = file.overlay(flags).resolve().unwrap();
        assert_eq!(s.listen.port(), 2);
        assert_eq!(s.limits.max_queue, 7);
        assert_eq!(s.limits.max_concurrency, 5);
        assert_eq!(s.limits.max_body_bytes, Limits::default().max_body_bytes);
        assert!(matches!(s.key, KeySetting::Dir(ref k) if k.bits == RsaBits::B2048));
        // With no backend anywhere, the embedded model serves.
        assert!(matches!(s.backends[..], [BackendSpec::Embedded { .. }]));
    }

    #[test]
    fn the_embedded_context_comes_from_the_file_and_the_flag_wins() {
        let file = FileConfig::from_toml("context = 4096\nthreads = 2\n").unwrap();
        let s = file.resolve().unwrap();
        assert!(matches!(
            s.backends[..],
            [BackendSpec::Embedded {
                context: Some(4096),
                threads: Some(2),
                ..
            }]
        ));
        let file = FileConfig::from_toml("context = 4096\n").unwrap();
        let flags = FileConfig {
            context: Some(512),
            ..Default::default()
        };
        let s = file.overlay(flags).resolve().unwrap();
        assert!(matches!(
            s.backends[..],
            [BackendSpec::Embedded {
                context: Some(512),
                ..
            }]
        ));
        let s = FileConfig::from_toml(
            "[[backends]]\nname = \"local\"\ntype = \"embedded\"\ncontext = 1024\n",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert!(matches!(
            s.backends[..],
            [BackendSpec::Embedded {
                context: Some(1024),
                ..
            }]
        ));
        // Absent: the engine takes the model's.
        let s = FileConfig::default().resolve().unwrap();
        assert!(matches!(
            s.backends[..],
            [BackendSpec::Embedded { context: None, .. }]
        ));
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_a_position() {
        let e = FileConfig::from_toml("lisen = \"x\"\n").unwrap_err();
        assert!(e.contains("lisen") && e.contains("line 1"), "{e}");
        let bad = [
            "listen = \"nope\"",
            "key_bits = 1024",
            "tls_cert = \"c.pem\"",
            "[tiers.ultra]\nmodels = [\"*\"]",
            "[tiers.high]\nmodels = []",
            "[[backends]]\nname = \"a\"\n",
            "api_key_hashes = [\"sha256:12\"]",
            "[limits]\nmax_concurrency = 0",
            "[hpke]\nrotate_every = \"soon\"",
            "[hpke]\nrotate_every = \"0s\"",
            "[hpke]\ngrace = \"5 parsecs\"",
            "[hpke]\nrotate_every = \"1h\"\ngrace = \"2h\"",
            "[hpke]\nrotat_every = \"1h\"",
            "[tiers.high]\nmodels = [\"*\"]\nrequire_post_quantum = \"yes\"",
        ];
        for t in bad {
            let r = FileConfig::from_toml(t)
                .map_err(|e| e.to_string())
                .and_then(|c| c.resolve().map_err(|e| e.to_string()));
            assert!(r.is_err(), "accepted: {t}");
        }
    }

    #[test]
    fn access_replay_journal_and_stream_settings() {
        let s = FileConfig::default().resolve().unwrap();
        // Not public by default; the journal beside the key; streams bounded.
        assert_eq!(s.metrics, MetricsAccess::Loopback);
        assert_eq!(
            s.replay_journal,
            Some(PathBuf::from(DEFAULT_KEY_DIR).join("replay_window.log"))
        );
        assert!(s.trusted_proxies.is_empty() && s.allowed_hosts.is_empty());
        assert_eq!(s.limits.replay_share_percent, 25);
        assert_eq!(s.limits.stream_write_timeout, Duration::from_secs(30));
        assert_eq!(s.limits.stream_idle_timeout, Duration::from_secs(120));
        assert_eq!(s.limits.max_buffered_body_bytes, 256 * 1024 * 1024);

        let s = FileConfig::from_toml(
            "metrics = true
ephemeral_key = true
trusted_proxies = [\"10.0.0.0/8\"]
             allowed_hosts = [\"nomyo.internal\"]
             [limits]
replay_share_percent = 10
stream_write_timeout_secs = 5
             max_body_bytes = 134217728
",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(s.metrics, MetricsAccess::Public);
        assert_eq!(s.replay_journal, None, "an ephemeral key journals nothing");
        assert!(!s.trusted_proxies.is_empty());
        assert_eq!(s.allowed_hosts, ["nomyo.internal"]);
        assert_eq!(s.limits.replay_share_percent, 10);
        assert_eq!(s.limits.stream_write_timeout, Duration::from_secs(5));
        assert_eq!(s.limits.max_buffered_body_bytes, 4 * 134217728);

        let s = FileConfig::from_toml(
            "[limits]
replay_journal = \"off\"",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(s.replay_journal, None);
        for (bad, what) in [
            (
                "[limits]
replay_share_percent = 0",
                "replay_share_percent",
            ),
            (
                "[limits]
replay_share_percent = 101",
                "replay_share_percent",
            ),
            ("trusted_proxies = [\"proxy.example\"]", "trusted_proxies"),
            (
                "[limits]
stream_idle_timeout = \"0s\"",
                "stream_idle_timeout",
            ),
            (
                "[limits]
max_buffered_body_bytes = 2048",
                "max_buffered_body_bytes",
            ),
        ] {
            let err = FileConfig::from_toml(bad)
                .unwrap()
                .resolve()
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{bad}: {err}");
        }
    }

    #[test]
    fn hpke_rotation_and_post_quantum_tiers() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("h"), None);
        // Defaults: daily rotation, 10 minutes of grace, maximum requires PQ.
        let s = FileConfig::default().resolve().unwrap();
        assert_eq!(s.hpke_rotate_every, Some(Duration::from_secs(86_400)));
        assert_eq!(s.hpke_grace, Duration::from_secs(600));
        assert_eq!(
            s.post_quantum_tiers,
            BTreeSet::from([SecurityTier::Maximum])
        );
        // Configured, and flags over the file.
        let file = FileConfig::from_toml(
            "[hpke]\nrotate_every = \"1h\"\ngrace = \"30s\"\n\
             [tiers.maximum]\nmodels = [\"*\"]\nrequire_post_quantum = false\n\
             [tiers.high]\nmodels = [\"*\"]\nrequire_post_quantum = true\n\
             [tiers.standard]\nmodels = [\"*\"]\n",
        )
        .unwrap();
        let flags = FileConfig {
            hpke: HpkeConfig {
                grace: Some("2m".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = file.clone().overlay(flags).resolve().unwrap();
        assert_eq!(s.hpke_rotate_every, Some(Duration::from_secs(3600)));
        assert_eq!(s.hpke_grace, Duration::from_secs(120));
        assert_eq!(s.post_quantum_tiers, BTreeSet::from([SecurityTier::High]));
        let off = FileConfig::from_toml("[hpke]\nrotate_every = \"off\"\ngrace = \"0s\"")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(
            (off.hpke_rotate_every, off.hpke_grace),
            (None, Duration::ZERO)
        );
    }

    #[test]
    fn duration_keys_take_durations_and_the_older_secs_keys_still_load() {
        let (c, warnings) = FileConfig::from_toml_with_warnings(
            "shutdown_grace = \"1m\"
key_grace = 45
[limits]
queue_timeout = \"10s\"
replay_window = \"2h\"
request_timeout_secs = 120
[[backends]]
name = \"u\"
url = \"http://127.0.0.1:1/v1\"
timeout = \"5m\"
connect_timeout_secs = 3
",
        )
        .unwrap();
        assert_eq!(c.shutdown_grace_secs, Some(60));
        assert_eq!(c.key_grace_secs, Some(45));
        assert_eq!(c.limits.queue_timeout_secs, Some(10));
        assert_eq!(c.limits.replay_window_secs, Some(7200));
        assert_eq!(c.limits.request_timeout_secs, Some(120));
        let b = &c.backends.as_ref().unwrap()[0];
        assert_eq!(b.timeout_secs, Some(300));
        assert_eq!(b.connect_timeout_secs, Some(3));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("limits.request_timeout_secs")
                && warnings[0].contains("limits.request_timeout = \"120s\""),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("[[backends]] connect_timeout = \"3s\""),
            "{warnings:?}"
        );
        // No warning for a file in the current names.
        let (_, none) =
            FileConfig::from_toml_with_warnings("[limits]\nqueue_timeout = \"5s\"\n").unwrap();
        assert!(none.is_empty());
        for (bad, what) in [
            ("[limits]\nqueue_timeout = \"500ms\"\n", "whole seconds"),
            ("[limits]\nqueue_timeout = \"soon\"\n", "not a duration"),
            ("shutdown_grace = -1\n", "negative"),
            (
                "[limits]\nqueue_timeout = \"5s\"\nqueue_timeout_secs = 5\n",
                "both given",
            ),
            ("[limits]\nqueue_timeout_sec = 5\n", "unknown field"),
        ] {
            let err = FileConfig::from_toml(bad).unwrap_err();
            assert!(err.contains(what), "{bad}: {err}");
        }
    }
}
