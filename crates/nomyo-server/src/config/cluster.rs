//! `[hpke]` and `[cluster]`: v2 key rotation, and replicas that share a
//! replay window or a key directory.

use super::*;

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
    pub(super) fn overlay(self, top: HpkeConfig) -> HpkeConfig {
        HpkeConfig {
            rotate_every: top.rotate_every.or(self.rotate_every),
            grace: top.grace.or(self.grace),
        }
    }

    pub(super) fn resolve(&self) -> Result<(Option<Duration>, Duration), ConfigError> {
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
    pub(super) fn overlay(self, top: ClusterConfig) -> ClusterConfig {
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

    pub(super) fn resolve(self) -> Result<ClusterSettings, ConfigError> {
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
