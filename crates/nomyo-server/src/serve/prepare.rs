//! Start-up: the TPM or configfs-tsm, the embedded models, the server and
//! HPKE keys, the shared replay store and the backends, assembled into a
//! [`Prepared`] state.

use std::path::PathBuf;
use std::sync::Arc;

use crate::attestation::Attestation;
use crate::backend::Backend;
use crate::config::{BackendSpec, KeySetting, Settings};
use crate::hpke_keys::{HpkeKeySet, HpkeKeyStore};
use crate::keystore::{KeyOrigin, KeyStore};
use crate::policy::ModelSet;
use crate::state::AppState;

use super::{EmbeddedParams, Prepared, StartError};

/// Opens the TPM of `[attestation] tpm` (its AK saved in `ak_dir`), or the
/// configfs-tsm directory of `[attestation] tsm_dir`, on the blocking pool;
/// none configured: [`Attestation::none`].
async fn open_tpm(
    settings: &crate::config::AttestationSettings,
    ak_dir: Option<PathBuf>,
) -> Result<Attestation, StartError> {
    if let Some(dir) = settings.tsm_dir.clone() {
        let queue = settings.queue;
        let att = tokio::task::spawn_blocking(move || Attestation::open_tsm(&dir, queue))
            .await
            .map_err(|_| StartError::Attestation("the configfs-tsm task failed".into()))?
            .map_err(StartError::Attestation)?;
        tracing::info!(
            provider = att.tsm_source().map_or("", |(p, _)| p),
            "configfs-tsm attestation ready"
        );
        return Ok(att);
    }
    let Some(tcti) = settings.tpm.clone() else {
        return Ok(Attestation::none());
    };
    #[cfg(feature = "tpm")]
    {
        let queue = settings.queue;
        let started = std::time::Instant::now();
        let att =
            tokio::task::spawn_blocking(move || Attestation::open(&tcti, ak_dir.as_deref(), queue))
                .await
                .map_err(|_| StartError::Attestation("the TPM task failed".into()))?
                .map_err(StartError::Attestation)?;
        tracing::info!(
            ak = att.evidence().map_or("", |e| e.ak_fingerprint.as_str()),
            ms = started.elapsed().as_millis() as u64,
            "TPM attestation ready"
        );
        Ok(att)
    }
    #[cfg(not(feature = "tpm"))]
    {
        let _ = (tcti, ak_dir);
        Err(StartError::Attestation(
            "this build has no TPM support (nomyo-server feature `tpm`)".into(),
        ))
    }
}

/// Loads or generates the key (on the blocking pool), builds the backends
/// (`embedded` builds the in-process model, which the server crate does not
/// depend on) and the policy.
pub async fn prepare<F>(settings: Settings, mut embedded: F) -> Result<Prepared, StartError>
where
    F: FnMut(EmbeddedParams) -> Result<Arc<dyn Backend>, String>,
{
    let Settings {
        listen,
        key,
        key_grace,
        api_keys,
        tls,
        limits,
        metrics,
        shutdown_grace,
        backends,
        tiers,
        hpke_rotate_every,
        hpke_grace,
        post_quantum_tiers,
        cluster,
        trusted_proxies,
        allowed_hosts,
        replay_journal,
        attestation,
    } = settings;

    // Protocol v2 HPKE keys live beside the RSA key, unless that key is
    // password-protected (the raw HPKE files would then be the weaker link)
    // or ephemeral: then they are fresh in memory at every start.
    let ak_dir = match &key {
        KeySetting::Dir(src) => Some(src.dir.clone()),
        KeySetting::Ephemeral(_) => None,
    };
    let hpke_dir = match &key {
        KeySetting::Dir(src) if src.password.is_none() => Some(src.dir.clone()),
        _ => None,
    };
    if cluster.is_replica() && hpke_dir.is_none() {
        return Err(StartError::Config(
            "replicas ([cluster] key_reload_every or replay_redis_url) share one key directory, \
             but the protocol v2 HPKE keys are saved there only when the server key has no \
             password, so each replica would publish its own: drop the key password (protect \
             the directory or secret mount instead; `nomyo keygen --server --no-password`)"
                .into(),
        ));
    }
    // The embedded models are opened before the key: a model that cannot be
    // served stops the start-up before anything is written to the key
    // directory (a generated key, the HPKE keys, the replay journal).
    let mut opened = Vec::with_capacity(backends.len());
    for spec in backends {
        opened.push(match spec {
            BackendSpec::Embedded {
                name,
                model,
                threads,
                context,
                parallel,
                models,
            } => {
                let b = embedded(EmbeddedParams {
                    name: name.clone(),
                    model,
                    threads,
                    context,
                    parallel,
                })
                .map_err(|message| StartError::Backend {
                    name: name.clone(),
                    message,
                })?;
                Opened::Embedded(name, b, models)
            }
            other => Opened::Later(other),
        });
    }
    let (store, origin) = tokio::task::spawn_blocking(move || match key {
        KeySetting::Dir(src) => KeyStore::load_or_generate(src),
        KeySetting::Ephemeral(bits) => nomyo_core::keys::PrivateKey::generate(bits)
            .map(|k| (KeyStore::ephemeral(k), KeyOrigin::Ephemeral)),
    })
    .await
    .map_err(|_| StartError::Key(nomyo_core::Error::Key("key task failed".into())))?
    .map_err(StartError::Key)?;
    let store = store.with_grace(key_grace);
    let hpke = match hpke_dir {
        Some(dir) => {
            let d = dir.clone();
            let (set, generated) =
                tokio::task::spawn_blocking(move || HpkeKeySet::load_or_generate(&d))
                    .await
                    .map_err(|_| StartError::Key(nomyo_core::Error::Key("key task failed".into())))?
                    .map_err(|e| StartError::Key(nomyo_core::Error::Key(e)))?;
            let age = std::fs::metadata(dir.join(crate::hpke_keys::KEY_FILE))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            tracing::info!(generated, key_ids = ?set.key_ids(), age_secs = age.as_secs(), "protocol v2 HPKE keys ready (key directory)");
            HpkeKeyStore::new(set).with_dir(dir).with_age(age)
        }
        None => {
            tracing::info!("protocol v2 HPKE keys generated in memory (not saved)");
            HpkeKeyStore::new(HpkeKeySet::generate())
        }
    };
    let hpke = hpke.with_grace(hpke_grace);
    match hpke_rotate_every {
        Some(every) => tracing::info!(
            every_secs = every.as_secs_f64(),
            grace_secs = hpke_grace.as_secs_f64(),
            "HPKE keys rotate on a schedule"
        ),
        None => tracing::warn!(
            "HPKE key rotation is off: v2 has no forward secrecy beyond SIGHUP rotations"
        ),
    }

    if let Some(every) = cluster.key_reload_every {
        tracing::info!(
            every_secs = every.as_secs_f64(),
            "following the key directory (replica mode): keys written there by another replica or an operator are used; SIGHUP reloads"
        );
    }
    let shared_replay = match &cluster.replay_redis_url {
        None => None,
        Some(url) => Some(
            crate::replay::RedisReplay::connect(
                url,
                limits.replay_window,
                crate::replay::DEFAULT_TIMEOUT,
            )
            .await
            .map_err(StartError::Config)?
            .with_prefix(cluster.replay_redis_prefix.clone()),
        ),
    };

    let tpm = open_tpm(&attestation, ak_dir).await?;
    let mut builder = AppState::builder(store)
        .attestation(tpm)
        .attestation_tiers(attestation.required_tiers)
        .quote_tiers(attestation.quote_tiers)
        .hpke_store(hpke)
        .hpke_rotation(hpke_rotate_every)
        .key_reload(cluster.key_reload_every)
        .post_quantum_tiers(post_quantum_tiers)
        .api_keys(api_keys)
        .limits(limits)
        .metrics_access(metrics)
        .trusted_proxies(trusted_proxies)
        .tiers(tiers);
    // A loopback listener answers loopback host names only (DNS rebinding).
    if listen.ip().is_loopback() {
        builder = builder.loopback_hosts_only(allowed_hosts);
    }
    for spec in opened {
        let spec = match spec {
            Opened::Embedded(name, b, models) => {
                builder = match models {
                    Some(m) => builder.backend_with_models(name, b, ModelSet::from_names(m)),
                    None => builder.backend(name, b),
                };
                continue;
            }
            Opened::Later(spec) => spec,
        };
        match spec {
            BackendSpec::Upstream { name, config } => {
                // One URL is a pool of one: probed and behind a breaker, so
                // that readiness (`/health`, routing) follows the upstream.
                let configured = !config.models.is_empty();
                let b = connect_pool(
                    &name,
                    crate::pool::PoolConfig::new(vec![config]),
                    builder.endpoint_metrics(),
                )
                .await?;
                tracing::info!(backend = %name, configured_models = configured, "upstream backend ready");
                builder = builder.backend(name, Arc::new(b));
            }
            BackendSpec::Pool { name, config } => {
                let b = connect_pool(&name, config, builder.endpoint_metrics()).await?;
                builder = builder.backend(name, Arc::new(b));
            }
            BackendSpec::Embedded { name, .. } => {
                // Opened above.
                return Err(StartError::Backend {
                    name,
                    message: "embedded backend not opened".into(),
                });
            }
        }
    }
    if let Some(shared) = shared_replay {
        builder = builder.shared_replay(shared);
    } else if let Some(path) = replay_journal {
        builder = builder.replay_journal(path);
    }
    let state = builder.build().map_err(StartError::Config)?;
    Ok(Prepared {
        state,
        key_origin: origin,
        listen,
        tls,
        shutdown_grace,
    })
}

/// Connects the pool of backend `name` (an upstream is a pool of one).
async fn connect_pool(
    name: &str,
    config: crate::pool::PoolConfig,
    metrics: crate::metrics::EndpointMetrics,
) -> Result<crate::pool::PoolBackend, StartError> {
    crate::pool::PoolBackend::connect(name, config, metrics)
        .await
        .map_err(|e| StartError::Backend {
            name: name.to_owned(),
            message: e.to_string(),
        })
}

/// A backend of [`prepare`]: an embedded model already opened (name, backend,
/// configured model names), or a spec built once the state builder exists.
enum Opened {
    Embedded(String, Arc<dyn Backend>, Option<Vec<String>>),
    Later(BackendSpec),
}
