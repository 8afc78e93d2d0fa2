//! Running the endpoint: building the state from [`Settings`], binding
//! (plain or TLS through rustls), rotation on SIGHUP, graceful shutdown on
//! SIGTERM / ctrl-c.
//!
//! The split into [`prepare`], [`bind`] and [`Bound::run`] lets the caller
//! print `listening on ...` exactly when the socket accepts connections, with
//! the real port when it asked for port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use hyper_util::rt::TokioTimer;

use crate::attestation::Attestation;
use crate::backend::Backend;
use crate::config::{BackendSpec, KeySetting, Settings, TlsFiles};
use crate::hpke_keys::{HpkeKeySet, HpkeKeyStore};
use crate::keystore::{KeyOrigin, KeyStore};
use crate::policy::ModelSet;
use crate::state::AppState;

/// Why the server could not start, for a person.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The server key could not be loaded, generated or saved.
    #[error("server key: {0}")]
    Key(#[source] nomyo_core::Error),
    /// A backend could not be set up.
    #[error("backend '{name}': {message}")]
    Backend {
        /// Backend name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The TPM could not be opened, or its attestation key not loaded or
    /// created (docs/PROTOCOL.md §14.1).
    #[error("TPM attestation: {0}")]
    Attestation(String),
    /// The configuration is inconsistent (tier names an unknown backend...).
    #[error("{0}")]
    Config(String),
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: cannot load certificate {cert} / key {key}: {message}")]
    Tls {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What the embedded-engine factory is asked to build.
#[derive(Clone, Debug)]
pub struct EmbeddedParams {
    /// Backend name.
    pub name: String,
    /// Model file (`--model`); `None` = the engine's default.
    pub model: Option<PathBuf>,
    /// Threads; `None` = the engine's default.
    pub threads: Option<usize>,
    /// Tokens one request may use (context per sequence); `None` = the
    /// model's, within the engine's KV cache budget.
    pub context: Option<u32>,
    /// Requests decoding at once; `None` = the engine's default.
    pub parallel: Option<usize>,
}

/// A state ready to serve, and how the key came to be.
#[derive(Debug)]
pub struct Prepared {
    /// The state for [`crate::app`].
    pub state: AppState,
    /// Whether the key was loaded, generated and saved, or is ephemeral.
    pub key_origin: KeyOrigin,
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS files.
    pub tls: Option<TlsFiles>,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
}

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
                let b = crate::pool::PoolBackend::connect(
                    name.clone(),
                    crate::pool::PoolConfig::new(vec![config]),
                    builder.endpoint_metrics(),
                )
                .await
                .map_err(|e| StartError::Backend {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
                let models = b.models();
                let set = if models.is_empty() {
                    ModelSet::Any
                } else {
                    ModelSet::from_names(models)
                };
                tracing::info!(backend = %name, configured_models = configured, "upstream backend ready");
                builder = builder.backend_with_models(name, Arc::new(b), set);
            }
            BackendSpec::Pool { name, config } => {
                let b = crate::pool::PoolBackend::connect(
                    name.clone(),
                    config,
                    builder.endpoint_metrics(),
                )
                .await
                .map_err(|e| StartError::Backend {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
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

/// A backend of [`prepare`]: an embedded model already opened (name, backend,
/// configured model names), or a spec built once the state builder exists.
enum Opened {
    Embedded(String, Arc<dyn Backend>, Option<Vec<String>>),
    Later(BackendSpec),
}

/// A bound socket, not yet serving (connections wait in the backlog).
pub struct Bound {
    listener: std::net::TcpListener,
    local: SocketAddr,
    tls: Option<RustlsConfig>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("local", &self.local)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Loads TLS (if any) and binds `addr`.
pub async fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<Bound, StartError> {
    let tls = match tls {
        None => None,
        Some(f) => Some(
            RustlsConfig::from_pem_file(&f.cert, &f.key)
                .await
                .map_err(|e| StartError::Tls {
                    cert: f.cert.clone(),
                    key: f.key.clone(),
                    message: e.to_string(),
                })?,
        ),
    };
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok(Bound {
        listener,
        local,
        tls,
    })
}

impl Bound {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local)
    }

    /// Serves `state` until `shutdown` completes, then stops accepting and
    /// gives in-flight requests up to `grace` to finish. Also runs the
    /// key/rate-limit housekeeping.
    pub async fn run<S>(self, state: AppState, grace: Duration, shutdown: S) -> std::io::Result<()>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let maintenance = state.spawn_maintenance();
        let handle = Handle::new();
        let h = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: finishing in-flight requests"
            );
            h.graceful_shutdown(Some(grace));
        });
        let service = crate::app(state).into_make_service_with_connect_info::<SocketAddr>();
        // TCP_NODELAY on every accepted connection: a streamed answer is many
        // small writes (a chunk a token), and with Nagle's algorithm each
        // one after the first waits for the client's delayed ACK (tens of
        // milliseconds a chunk). The upstream and client sockets set it too.
        let result = match self.tls {
            None => {
                let mut server = axum_server::from_tcp(self.listener)
                    .acceptor(NoDelayAcceptor::new())
                    .handle(handle);
                tune(server.http_builder());
                server.serve(service).await
            }
            Some(cfg) => {
                let acceptor = RustlsAcceptor::new(cfg).acceptor(NoDelayAcceptor::new());
                let mut server = axum_server::from_tcp(self.listener)
                    .acceptor(acceptor)
                    .handle(handle);
                tune(server.http_builder());
                server.serve(service).await
            }
        };
        maintenance.abort();
        result
    }
}

/// HTTP/2 streams one connection may open at once.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Largest HTTP/2 header list accepted (decoded), as HTTP/1's header limit.
pub const H2_MAX_HEADER_LIST: u32 = 64 * 1024;

/// Slow clients may not hold a connection open without sending headers;
/// HTTP/2 limits are explicit: streams per connection, header list size,
/// and the reset-flood guard (a client that opens and resets streams
/// faster than they are served, the "rapid reset" attack, gets GOAWAY).
fn tune(b: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>) {
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(256)
        .keep_alive_interval(Duration::from_secs(60))
        .keep_alive_timeout(Duration::from_secs(20));
}

/// Rotates the server key (see [`KeyStore::rotate`]) and the protocol v2
/// HPKE keys on every SIGHUP; a replica that follows its key directory
/// ([`AppState::follows_key_dir`]) reloads it instead. The handler is installed before this returns,
/// so a SIGHUP sent after it can never terminate the process.
#[cfg(unix)]
pub fn rotate_on_sighup(state: AppState) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if state.follows_key_dir() {
                match state.reload_keys().await {
                    Ok(changed) => tracing::info!(changed, "key directory reloaded (SIGHUP)"),
                    Err(e) => {
                        tracing::error!(error = %e, "reloading the key directory failed; keeping the current keys")
                    }
                }
                continue;
            }
            match state.rotate_key().await {
                Ok(fp) => {
                    tracing::info!(fingerprint = %fp, "server key rotated (SIGHUP); the previous key opens requests during its grace period")
                }
                Err(e) => {
                    tracing::error!(error = %e, "server key rotation failed; keeping the current key")
                }
            }
            match state.rotate_hpke_keys().await {
                Ok(r) => {
                    tracing::info!(key_ids = ?r.key_ids, retired = ?r.retired_ids, "HPKE keys rotated (SIGHUP)")
                }
                Err(e) => {
                    tracing::error!(error = %e, "HPKE key rotation failed; keeping the current keys")
                }
            }
        }
    }))
}
