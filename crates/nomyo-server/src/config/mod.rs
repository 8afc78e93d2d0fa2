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

mod attestation;
mod backends;
mod cluster;
mod durations;
mod limits;
mod secrets;
#[cfg(test)]
mod tests;

pub use attestation::{AttestationConfig, AttestationSettings};
use backends::resolve_backend;
pub use backends::{BackendConfig, BackendKind, EndpointConfig, TierConfig};
pub use cluster::{ClusterConfig, ClusterSettings, HpkeConfig};
use durations::{de_secs, rename_seconds_keys};
pub use limits::LimitsConfig;
use secrets::{optional_secret, secret_env};

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

/// The duration syntax of the file and the command line (`"500ms"`,
/// `"30s"`, `"10m"`, `"24h"`, `"7d"`), shared with the client commands.
pub use nomyo_core::duration::parse_duration;

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
    /// `--parallel`: requests the embedded model decodes at once.
    pub parallel: Option<usize>,
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
    /// `[attestation]`: the TPM or configfs-tsm.
    #[serde(default)]
    pub attestation: AttestationConfig,
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
        /// Requests decoding at once; `None` = the engine's default.
        parallel: Option<usize>,
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
    /// The TPM and the tiers' attestation rules.
    pub attestation: AttestationSettings,
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
            parallel: top.parallel.or(self.parallel),
            limits: self.limits.overlay(top.limits),
            hpke: self.hpke.overlay(top.hpke),
            cluster: self.cluster.overlay(top.cluster),
            backends: top.backends.or(self.backends),
            tiers: top.tiers.or(self.tiers),
            attestation: self.attestation.overlay(top.attestation),
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
        let mut attestation = self.attestation.resolve()?;

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
                parallel: self.parallel,
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
                    for (setting, set) in [
                        (t.require_attestation, &mut attestation.required_tiers),
                        (t.attestation_per_answer, &mut attestation.quote_tiers),
                    ] {
                        match setting {
                            Some(true) => {
                                set.insert(tier);
                            }
                            Some(false) => {
                                set.remove(&tier);
                            }
                            None => {}
                        }
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
            attestation,
        })
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
