//! `[[backends]]` and `[tiers.NAME]`: where decrypted requests go, resolved
//! into [`BackendSpec`]s.

use super::*;

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
    /// Embedded: requests decoding at once.
    pub parallel: Option<usize>,
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
    /// A server without a TPM refuses requests on this tier (503).
    /// Default: true for `maximum`, false otherwise (docs/PROTOCOL.md §14.6).
    pub require_attestation: Option<bool>,
    /// With a TPM, every answer on this tier carries a quote for its
    /// payload id (`_metadata.tpm_attestation`). Default: true.
    pub attestation_per_answer: Option<bool>,
}

/// An endpoint given only by its URL (`url` / `urls`).
pub(super) fn plain_endpoint(url: String) -> EndpointConfig {
    EndpointConfig {
        url,
        api_key_file: None,
        api_key_env: None,
        models: None,
        max_concurrency: None,
    }
}

pub(super) fn resolve_backend(b: BackendConfig) -> Result<BackendSpec, ConfigError> {
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
            parallel: b.parallel,
            models: b.models,
        }),
    }
}
