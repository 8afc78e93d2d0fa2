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
mod resolve;
mod secrets;
mod settings;
#[cfg(test)]
mod tests;

pub use attestation::{AttestationConfig, AttestationSettings};
use backends::resolve_backend;
pub use backends::{BackendConfig, BackendKind, EndpointConfig, TierConfig};
pub use cluster::{ClusterConfig, ClusterSettings, HpkeConfig};
use durations::{de_secs, rename_seconds_keys};
pub use limits::LimitsConfig;
use secrets::{optional_secret, secret_env};
pub use settings::{BackendSpec, KeySetting, Settings, TlsFiles};

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
