//! [`FileConfig::resolve`]: validation of the merged configuration, the
//! reading of the secrets it names, and its turning into [`Settings`].

use super::*;

impl FileConfig {
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
