//! The shared state every handler sees, and its builder.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use nomyo_core::SecurityTier;
use tokio::sync::Semaphore;

use crate::backend::Backend;
use crate::error::ApiError;
use crate::hpke_keys::{HpkeKeySet, HpkeKeyStore, Rotation, SignedKeyList};
use crate::keystore::KeyStore;
use crate::limits::{ConcurrencyGate, Limits, ReplayCache};
use crate::metrics::Metrics;
use crate::policy::{
    ApiKeys, ModelSet, NamedBackend, RateLimit, Routing, TierRule, TrustedProxies,
};
use crate::replay::{RedisReplay, ReplayStore};

/// Who may read `GET /metrics`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Nobody (404).
    Off,
    /// Peers on the loopback interface only (404 for others): the default
    /// of `nomyo serve`.
    Loopback,
    /// Whoever sends `Authorization: Bearer TOKEN` (kept as its SHA-256,
    /// compared in constant time; 401 otherwise).
    Token([u8; 32]),
    /// Anyone (an operator's explicit `metrics = true`).
    Public,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetricsAccess::Off => "Off",
            MetricsAccess::Loopback => "Loopback",
            MetricsAccess::Token(_) => "Token",
            MetricsAccess::Public => "Public",
        })
    }
}

/// Shared server state; cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub keys: Arc<KeyStore>,
    /// Protocol v2 HPKE keys.
    pub hpke: Arc<HpkeKeyStore>,
    /// The published HPKE key list signed by the current RSA key (remade
    /// when either changes).
    pub signed_keys: std::sync::RwLock<Option<Arc<SignedKeyList>>>,
    /// Rotate the HPKE keys this often (`None` = never, except on SIGHUP).
    pub hpke_rotate_every: Option<Duration>,
    /// Tiers whose v2 requests must use the post-quantum suite.
    pub post_quantum_tiers: BTreeSet<SecurityTier>,
    /// Re-read the key directory this often (replica mode).
    pub key_reload_every: Option<Duration>,
    pub routing: Routing,
    pub api_keys: ApiKeys,
    pub rate: Option<RateLimit>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    pub gate: ConcurrencyGate,
    pub replay: ReplayStore,
    pub limits: Limits,
    pub metrics: Metrics,
    pub metrics_access: MetricsAccess,
    /// On a loopback listener: the host names answered besides `localhost`
    /// and loopback addresses (`None`: no `Host` check).
    pub loopback_hosts: Option<Vec<String>>,
    /// Request-body bytes in memory, in KiB permits
    /// (`max_buffered_body_bytes`).
    pub body_budget: Arc<Semaphore>,
    /// Bounds the RSA operations running at once on the blocking pool
    /// (one per core: more would only queue inside the CPU).
    pub crypto: Arc<Semaphore>,
    /// SHA-256 of the server key file's bytes at the last reload that read
    /// it without error (replica mode: an unchanged file is not parsed again).
    pub key_file_seen: std::sync::Mutex<Option<[u8; 32]>>,
    /// How many times a reload parsed the server key file (for tests).
    pub key_file_parses: Arc<std::sync::atomic::AtomicU64>,
    /// The TPM, if any (docs/PROTOCOL.md §14).
    pub attestation: crate::attestation::Attestation,
    /// Tiers refused (503) by a server without a TPM (`require_attestation`).
    pub attestation_tiers: BTreeSet<SecurityTier>,
    /// Tiers whose answers carry a quote (`attestation_per_answer`).
    pub quote_tiers: BTreeSet<SecurityTier>,
}

/// SHA-256 of a key file's bytes, read into locked memory that is erased
/// when dropped (the file holds the private key). `None` if it cannot be read
/// (the reload that follows reports why) or is implausibly large.
fn key_file_digest(path: &std::path::Path) -> Option<[u8; 32]> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let file = std::fs::File::open(path).ok()?;
    let mut buf = nomyo_core::SecretBuf::with_capacity(16 * 1024);
    let n = std::io::copy(&mut file.take(MAX + 1), &mut buf).ok()?;
    (n <= MAX).then(|| nomyo_core::Fingerprint::of_bytes(buf.expose_secret()).0)
}

impl AppState {
    /// Starts building a state around a key store.
    pub fn builder(keys: KeyStore) -> AppStateBuilder {
        AppStateBuilder {
            keys: Arc::new(keys),
            hpke: None,
            hpke_rotate_every: None,
            key_reload_every: None,
            post_quantum_tiers: BTreeSet::from([SecurityTier::Maximum]),
            backends: Vec::new(),
            tiers: None,
            api_keys: ApiKeys::open(),
            limits: Limits::default(),
            metrics_access: MetricsAccess::Public,
            loopback_hosts: None,
            crypto_threads: None,
            endpoint_metrics: crate::metrics::EndpointMetrics::default(),
            shared_replay: None,
            replay_journal: None,
            trusted_proxies: TrustedProxies::none(),
            attestation: crate::attestation::Attestation::none(),
            attestation_tiers: BTreeSet::new(),
            quote_tiers: BTreeSet::from(SecurityTier::ALL),
        }
    }

    /// The TPM, if any.
    pub fn attestation(&self) -> &crate::attestation::Attestation {
        &self.inner.attestation
    }

    /// Whether `tier` refuses requests on a server without a TPM.
    pub fn requires_attestation(&self, tier: SecurityTier) -> bool {
        self.inner.attestation_tiers.contains(&tier)
    }

    /// Whether answers on `tier` carry a quote (with a TPM).
    pub fn quotes_per_answer(&self, tier: SecurityTier) -> bool {
        self.inner.quote_tiers.contains(&tier)
    }

    /// The key store (for rotation).
    pub fn keys(&self) -> &Arc<KeyStore> {
        &self.inner.keys
    }

    /// The protocol v2 HPKE keys published now.
    pub fn hpke_keys(&self) -> HpkeKeySet {
        self.inner.hpke.current()
    }

    /// The protocol v2 HPKE key store (current and retired keys).
    pub fn hpke_store(&self) -> &Arc<HpkeKeyStore> {
        &self.inner.hpke
    }

    /// The published HPKE key list with its `Nomyo-Keys-Signature` by the
    /// current RSA key. Cached: signed again only when the HPKE keys or the
    /// RSA key changed since (the rotations re-sign at once; this is the
    /// backstop), on the blocking pool.
    pub async fn signed_hpke_keys(&self) -> Result<Arc<SignedKeyList>, ApiError> {
        let set = self.inner.hpke.current();
        let rsa = self.inner.keys.current();
        if let Some(c) = self.cached_signed_keys() {
            if c.is_for(&set, rsa.fingerprint()) {
                return Ok(c);
            }
        }
        let lifetime = self.signed_keys_lifetime();
        let signed = self
            .blocking(move || SignedKeyList::sign(&set, rsa.private_key(), lifetime))
            .await?
            .map_err(ApiError::Internal)?;
        Ok(self.store_signed_keys(signed))
    }

    /// How long a signed key list stays valid: the rotation period plus
    /// the grace period during which retired keys still open requests
    /// (24 h when the keys do not rotate on a schedule: the list is signed
    /// again when half of that has passed).
    fn signed_keys_lifetime(&self) -> Duration {
        signed_keys_lifetime(self.inner.hpke_rotate_every, self.inner.hpke.grace())
    }

    fn cached_signed_keys(&self) -> Option<Arc<SignedKeyList>> {
        self.inner
            .signed_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps `signed` unless a list signed meanwhile is the current one.
    fn store_signed_keys(&self, signed: SignedKeyList) -> Arc<SignedKeyList> {
        let signed = Arc::new(signed);
        let mut g = self
            .inner
            .signed_keys
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let set = self.inner.hpke.current();
        let rsa = self.inner.keys.current().fingerprint();
        match g.as_ref() {
            Some(c) if c.is_for(&set, rsa) && !signed.is_for(&set, rsa) => Arc::clone(c),
            _ => {
                tracing::debug!(signer = %signed.signer(), "HPKE key list signed");
                *g = Some(Arc::clone(&signed));
                signed
            }
        }
    }

    /// Signs the current key list again in the background when 40 % of its
    /// window has passed (the maintenance tick calls this every second), so
    /// that the half-way renewal on a fetch never happens and no GET waits
    /// for an RSA signature. Returns whether it signed.
    pub async fn renew_signed_keys_if_due(&self) -> bool {
        let due = match self.cached_signed_keys() {
            None => true,
            Some(c) => c.renewal_due_at(crate::hpke_keys::unix_now()),
        };
        if !due {
            return false;
        }
        let set = self.inner.hpke.current();
        let rsa = self.inner.keys.current();
        let lifetime = self.signed_keys_lifetime();
        match self
            .blocking(move || SignedKeyList::sign(&set, rsa.private_key(), lifetime))
            .await
        {
            Ok(Ok(signed)) => {
                self.store_signed_keys(signed);
                tracing::debug!("HPKE key list signed again ahead of its half-life");
                true
            }
            Ok(Err(e)) | Err(ApiError::Internal(e)) => {
                tracing::error!(error = %e, "renewing the key-list signature failed; retried on the next tick");
                false
            }
            Err(_) => false,
        }
    }

    /// Signs the current key list now (after a rotation), so that the
    /// first client to fetch it does not wait for the signature.
    async fn resign_hpke_keys(&self) {
        if let Err(e) = self.signed_hpke_keys().await {
            tracing::error!(error = %e, "signing the HPKE key list failed; retried on the next fetch");
        }
    }

    /// Whether v2 requests on `tier` must use the post-quantum suite (X-Wing).
    pub fn requires_post_quantum(&self, tier: SecurityTier) -> bool {
        self.inner.post_quantum_tiers.contains(&tier)
    }

    /// Rotates the HPKE keys now (new key ids, published at once; the
    /// previous keys open requests for the grace period, then are dropped and
    /// erased). File I/O runs on the blocking pool.
    pub async fn rotate_hpke_keys(&self) -> Result<Rotation, String> {
        let store = Arc::clone(&self.inner.hpke);
        let rotation = tokio::task::spawn_blocking(move || store.rotate())
            .await
            .map_err(|_| "HPKE key rotation task failed".to_owned())??;
        self.inner.metrics.hpke_key_rotations.inc();
        self.resign_hpke_keys().await;
        // Erase the retired keys as soon as their grace ends (the 1 s
        // maintenance tick is the backstop).
        let store = Arc::clone(&self.inner.hpke);
        let grace = store.grace();
        tokio::spawn(async move {
            tokio::time::sleep(grace + Duration::from_millis(1)).await;
            store.purge_expired();
        });
        Ok(rotation)
    }

    /// Whether this server follows its key directory (replica mode).
    pub fn follows_key_dir(&self) -> bool {
        self.inner.key_reload_every.is_some()
    }

    /// Re-reads the key directory and uses the keys another replica or an
    /// operator wrote there: a new server key and/or new HPKE keys become
    /// current, the previous ones open requests for their grace period.
    /// Never writes. Returns whether anything changed. File I/O and key
    /// parsing run on the blocking pool.
    ///
    /// The server key file is parsed again only when its bytes changed since
    /// the last reload that read it (compared by SHA-256; the bytes are read
    /// into locked memory and erased): most ticks cost one small file read,
    /// not an RSA key parse and check.
    pub async fn reload_keys(&self) -> Result<bool, String> {
        let keys = Arc::clone(&self.inner.keys);
        let hpke = Arc::clone(&self.inner.hpke);
        let last = *self
            .inner
            .key_file_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let parses = Arc::clone(&self.inner.key_file_parses);
        let (v1, v2, seen) = tokio::task::spawn_blocking(move || {
            // Hashed before the parse, which reads the file again: if it
            // changes in between, the next tick sees other bytes and parses
            // once more, so a change is never missed.
            let seen = keys.key_file().and_then(|p| key_file_digest(&p));
            let v1 = match (seen, last) {
                (Some(now), Some(before)) if now == before => Ok(None),
                _ => {
                    parses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    keys.reload()
                }
            };
            (v1, hpke.reload(), seen)
        })
        .await
        .map_err(|_| "key reload task failed".to_owned())?;
        if v1.is_ok() {
            *self
                .inner
                .key_file_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = seen;
        }
        let mut changed = false;
        let mut failed = Vec::new();
        match v1 {
            Ok(Some(fp)) => {
                self.inner.metrics.key_rotations.inc();
                tracing::info!(fingerprint = %fp, "server key reloaded from the key directory; the previous key opens requests during its grace period");
                changed = true;
            }
            Ok(None) => {}
            Err(e) => failed.push(format!("server key: {e}")),
        }
        match v2 {
            Ok(Some(r)) => {
                self.inner.metrics.hpke_key_rotations.inc();
                tracing::info!(key_ids = ?r.key_ids, retired = ?r.retired_ids, "HPKE keys reloaded from the key directory");
                changed = true;
                let store = Arc::clone(&self.inner.hpke);
                let grace = store.grace();
                tokio::spawn(async move {
                    tokio::time::sleep(grace + Duration::from_millis(1)).await;
                    store.purge_expired();
                });
            }
            Ok(None) => {}
            Err(e) => failed.push(format!("HPKE keys: {e}")),
        }
        if changed {
            self.resign_hpke_keys().await;
        }
        if failed.is_empty() {
            Ok(changed)
        } else {
            Err(failed.join("; "))
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether every caller is accepted (no API key configured).
    pub fn is_open(&self) -> bool {
        self.inner.api_keys.is_empty()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The routing table.
    pub fn routing(&self) -> &Routing {
        &self.inner.routing
    }

    /// Rotates the server key now (blocking work on the blocking pool) and
    /// returns the new fingerprint.
    pub async fn rotate_key(&self) -> nomyo_core::Result<nomyo_core::Fingerprint> {
        let keys = Arc::clone(&self.inner.keys);
        let fp = tokio::task::spawn_blocking(move || keys.rotate())
            .await
            .map_err(|_| nomyo_core::Error::Key("key rotation task failed".into()))??;
        self.inner.metrics.key_rotations.inc();
        // The v2 key list is vouched for by the current RSA key.
        self.resign_hpke_keys().await;
        Ok(fp)
    }

    /// Periodic housekeeping: drops retired keys past their grace period and
    /// idle rate-limit state, and rotates the HPKE keys on their schedule.
    /// Runs until the returned task is aborted.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let st = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let every = st.inner.hpke_rotate_every;
            let mut rotation = every.map(|d| {
                // Saved keys loaded at start are as old as their file.
                let first = d.saturating_sub(st.inner.hpke.current_age());
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + first, d);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            let mut reload = st.inner.key_reload_every.map(|d| {
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            loop {
                let follow = async {
                    match reload.as_mut() {
                        Some(i) => {
                            i.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let rotate = async {
                    match rotation.as_mut() {
                        Some(i) => {
                            i.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = rotate => {
                        if let Err(e) = st.rotate_hpke_keys().await {
                            tracing::error!(error = %e, "scheduled HPKE key rotation failed; keeping the current keys");
                        }
                        continue;
                    }
                    _ = follow => {
                        if let Err(e) = st.reload_keys().await {
                            tracing::error!(error = %e, "reloading the key directory failed; keeping the current keys");
                        }
                        continue;
                    }
                }
                st.inner.hpke.purge_expired();
                let dropped = st.inner.keys.purge_expired();
                if dropped > 0 {
                    tracing::info!(
                        dropped,
                        "retired server keys erased after their grace period"
                    );
                }
                if let Some(r) = &st.inner.rate {
                    r.retain_recent();
                }
                st.renew_signed_keys_if_due().await;
            }
        })
    }

    /// Runs `f` on the blocking pool, at most one job per core at once. The
    /// slot is held by the job itself, so a cancelled request cannot let
    /// more jobs pile up than there are cores.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.inner.crypto)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("crypto pool closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            f()
        })
        .await
        .map_err(|_| ApiError::Internal("crypto task failed".into()))
    }
}

/// Builds an [`AppState`].
pub struct AppStateBuilder {
    keys: Arc<KeyStore>,
    hpke: Option<HpkeKeyStore>,
    hpke_rotate_every: Option<Duration>,
    key_reload_every: Option<Duration>,
    post_quantum_tiers: BTreeSet<SecurityTier>,
    backends: Vec<NamedBackend>,
    tiers: Option<BTreeMap<SecurityTier, TierRule>>,
    api_keys: ApiKeys,
    limits: Limits,
    metrics_access: MetricsAccess,
    loopback_hosts: Option<Vec<String>>,
    crypto_threads: Option<usize>,
    endpoint_metrics: crate::metrics::EndpointMetrics,
    shared_replay: Option<RedisReplay>,
    replay_journal: Option<std::path::PathBuf>,
    trusted_proxies: TrustedProxies,
    attestation: crate::attestation::Attestation,
    attestation_tiers: BTreeSet<SecurityTier>,
    quote_tiers: BTreeSet<SecurityTier>,
}

impl std::fmt::Debug for AppStateBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppStateBuilder")
            .field("backends", &self.backends)
            .field("tiers", &self.tiers)
            .field("api_keys", &self.api_keys)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl AppStateBuilder {
    /// The per-endpoint metrics the built state exports: hand them to the
    /// [`crate::pool::PoolBackend`]s added to this builder.
    pub fn endpoint_metrics(&self) -> crate::metrics::EndpointMetrics {
        self.endpoint_metrics.clone()
    }

    /// Adds a backend serving the models it reports ([`Backend::models`];
    /// an empty list = any model name).
    pub fn backend(self, name: impl Into<String>, backend: Arc<dyn Backend>) -> Self {
        let models = backend.models();
        let set = if models.is_empty() {
            ModelSet::Any
        } else {
            ModelSet::from_names(models)
        };
        self.backend_with_models(name, backend, set)
    }

    /// Adds a backend serving exactly `models`.
    pub fn backend_with_models(
        mut self,
        name: impl Into<String>,
        backend: Arc<dyn Backend>,
        models: ModelSet,
    ) -> Self {
        self.backends.push(NamedBackend {
            name: name.into(),
            backend,
            models,
        });
        self
    }

    /// Sets one tier's rule. Once any tier is set, tiers never set are
    /// disabled (every model 403 there); with none set, every tier allows
    /// every backend and model.
    pub fn tier(mut self, tier: SecurityTier, rule: TierRule) -> Self {
        self.tiers
            .get_or_insert_with(BTreeMap::new)
            .insert(tier, rule);
        self
    }

    /// Sets all tier rules at once (`None` = every tier open).
    pub fn tiers(mut self, tiers: Option<BTreeMap<SecurityTier, TierRule>>) -> Self {
        self.tiers = tiers;
        self
    }

    /// Accepted API keys (none = open server).
    pub fn api_keys(mut self, keys: ApiKeys) -> Self {
        self.api_keys = keys;
        self
    }

    /// The protocol v2 HPKE keys, in memory only (default: a fresh X25519 +
    /// X-Wing set).
    pub fn hpke_keys(mut self, keys: HpkeKeySet) -> Self {
        self.hpke = Some(HpkeKeyStore::new(keys));
        self
    }

    /// The protocol v2 HPKE key store (with its directory and grace).
    pub fn hpke_store(mut self, store: HpkeKeyStore) -> Self {
        self.hpke = Some(store);
        self
    }

    /// Rotate the HPKE keys this often (default: never on a schedule).
    pub fn hpke_rotation(mut self, every: Option<Duration>) -> Self {
        self.hpke_rotate_every = every;
        self
    }

    /// Follow the key directory: re-read it this often and use the keys
    /// another replica or an operator wrote (default: never). See
    /// [`AppState::reload_keys`].
    pub fn key_reload(mut self, every: Option<Duration>) -> Self {
        self.key_reload_every = every;
        self
    }

    /// Whether v2 requests on `tier` must use the post-quantum suite
    /// (default: `maximum` does, the others do not).
    pub fn require_post_quantum(mut self, tier: SecurityTier, required: bool) -> Self {
        if required {
            self.post_quantum_tiers.insert(tier);
        } else {
            self.post_quantum_tiers.remove(&tier);
        }
        self
    }

    /// The tiers whose v2 requests must use the post-quantum suite.
    pub fn post_quantum_tiers(mut self, tiers: BTreeSet<SecurityTier>) -> Self {
        self.post_quantum_tiers = tiers;
        self
    }

    /// The TPM (docs/PROTOCOL.md §14; default: none).
    pub fn attestation(mut self, attestation: crate::attestation::Attestation) -> Self {
        self.attestation = attestation;
        self
    }

    /// The tiers whose requests a server without a TPM refuses with 503
    /// (`require_attestation`). Default: none here; `nomyo serve`'s
    /// configuration defaults to `maximum`.
    pub fn attestation_tiers(mut self, tiers: BTreeSet<SecurityTier>) -> Self {
        self.attestation_tiers = tiers;
        self
    }

    /// The tiers whose answers carry a quote when there is a TPM
    /// (`attestation_per_answer`; default: every tier).
    pub fn quote_tiers(mut self, tiers: BTreeSet<SecurityTier>) -> Self {
        self.quote_tiers = tiers;
        self
    }

    /// Limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether `GET /metrics` is served (default yes, to anyone: see
    /// [`Self::metrics_access`]).
    pub fn metrics_enabled(mut self, on: bool) -> Self {
        self.metrics_access = if on {
            MetricsAccess::Public
        } else {
            MetricsAccess::Off
        };
        self
    }

    /// Who may read `GET /metrics` (default: anyone; `nomyo serve`
    /// defaults to loopback peers).
    pub fn metrics_access(mut self, access: MetricsAccess) -> Self {
        self.metrics_access = access;
        self
    }

    /// Answer only requests whose `Host` is `localhost`, a loopback address
    /// or one of `extra` (403 otherwise): for a loopback listener, which a
    /// web page could otherwise reach through DNS rebinding (a name of its
    /// own that resolves to 127.0.0.1). Default: no check.
    pub fn loopback_hosts_only(mut self, extra: Vec<String>) -> Self {
        self.loopback_hosts = Some(extra);
        self
    }

    /// Keeps the replay window in a store shared by the replicas instead of
    /// in this process (see [`crate::replay`]).
    pub fn shared_replay(mut self, store: RedisReplay) -> Self {
        self.shared_replay = Some(store);
        self
    }

    /// Reverse proxies whose `X-Forwarded-For` names the client (for the
    /// per-caller rate limit and replay share of anonymous callers; default:
    /// none, every caller is its peer address).
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Keeps the local replay window in this file too, so that a restart
    /// does not reopen it ([`crate::replay_journal`]; ignored with a shared
    /// store). Opened (and compacted) by [`Self::build`].
    pub fn replay_journal(mut self, path: std::path::PathBuf) -> Self {
        self.replay_journal = Some(path);
        self
    }

    /// RSA operations at once (default: the number of cores).
    pub fn crypto_threads(mut self, n: usize) -> Self {
        self.crypto_threads = Some(n.max(1));
        self
    }

    /// Checks the configuration and builds the state.
    pub fn build(self) -> Result<AppState, String> {
        let routing = Routing::new(self.backends, self.tiers)?;
        let threads = self.crypto_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2)
        });
        let limits = self.limits;
        let hpke = self
            .hpke
            .unwrap_or_else(|| HpkeKeyStore::new(HpkeKeySet::generate()));
        // Signed once at start (a few milliseconds of RSA), not per request.
        let hpke_rotate_every = self.hpke_rotate_every.filter(|d| !d.is_zero());
        let lifetime = signed_keys_lifetime(hpke_rotate_every, hpke.grace());
        let signed = SignedKeyList::sign(&hpke.current(), self.keys.current().private_key(), lifetime)
            .map(Arc::new)
            .map_err(|e| tracing::error!(error = %e, "signing the HPKE key list failed; retried on the first fetch"))
            .ok();
        let metrics = Metrics::with_endpoints(self.endpoint_metrics);
        for b in routing.backends() {
            b.backend.observe_tokens(metrics.tokens.sink(&b.name));
        }
        Ok(AppState {
            inner: Arc::new(Inner {
                keys: self.keys,
                hpke: Arc::new(hpke),
                signed_keys: std::sync::RwLock::new(signed),
                hpke_rotate_every,
                key_reload_every: self.key_reload_every.filter(|d| !d.is_zero()),
                post_quantum_tiers: self.post_quantum_tiers,
                routing,
                api_keys: self.api_keys,
                rate: RateLimit::new(limits.rate_per_minute, limits.rate_burst),
                trusted_proxies: self.trusted_proxies,
                gate: ConcurrencyGate::new(&limits),
                replay: match self.shared_replay {
                    Some(shared) => {
                        ReplayStore::Shared(shared.with_share(crate::limits::replay_share(
                            limits.replay_capacity,
                            limits.replay_share_percent,
                        )))
                    }
                    None => {
                        let cache = ReplayCache::new(
                            limits.replay_window,
                            limits.replay_capacity,
                            limits.replay_share_percent,
                        );
                        match &self.replay_journal {
                            None => ReplayStore::Local(cache),
                            Some(path) => {
                                let (journal, restored) =
                                    crate::replay_journal::ReplayJournal::open(path)?;
                                let n = restored.len();
                                for (key, left) in restored {
                                    cache.restore(key, left);
                                }
                                tracing::info!(
                                    file = %path.display(),
                                    restored = n,
                                    "replay window journaled to disk; entries of the last window restored"
                                );
                                ReplayStore::Persistent(cache, journal)
                            }
                        }
                    }
                },
                metrics,
                metrics_access: self.metrics_access,
                loopback_hosts: self.loopback_hosts,
                crypto: Arc::new(Semaphore::new(threads)),
                body_budget: Arc::new(Semaphore::new(
                    limits.max_buffered_body_bytes.div_ceil(1024).max(1),
                )),
                key_file_seen: std::sync::Mutex::new(None),
                key_file_parses: Arc::default(),
                attestation: self.attestation,
                attestation_tiers: self.attestation_tiers,
                quote_tiers: self.quote_tiers,
                limits,
            }),
        })
    }
}

/// Validity of a signed key list: the rotation period (24 h without a
/// schedule) plus the grace period.
fn signed_keys_lifetime(rotate_every: Option<Duration>, grace: Duration) -> Duration {
    rotate_every.unwrap_or(Duration::from_secs(24 * 3600)) + grace
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, ChatRequest};
    use crate::keystore::KeySource;
    use nomyo_core::keys::{save_key_pair, PrivateKey, RsaBits};
    use serde_json::Value;
    use std::sync::atomic::Ordering;

    /// Never called: `reload_keys` does not route requests.
    struct NoBackend;

    #[async_trait::async_trait]
    impl Backend for NoBackend {
        fn name(&self) -> &str {
            "none"
        }
        fn models(&self) -> Vec<String> {
            vec!["m".into()]
        }
        async fn chat(&self, _request: ChatRequest) -> Result<Value, BackendError> {
            Err(BackendError::ModelNotFound)
        }
    }

    #[tokio::test]
    async fn reload_parses_the_key_file_only_when_its_bytes_change() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _) = KeyStore::load_or_generate(KeySource {
            dir: dir.path().to_owned(),
            password: None,
            bits: RsaBits::B2048,
        })
        .unwrap();
        let first = keys.current().fingerprint();
        let st = AppState::builder(keys)
            .backend("none", Arc::new(NoBackend))
            .build()
            .unwrap();
        let parses = || st.inner.key_file_parses.load(Ordering::Relaxed);

        // The first tick reads and parses once; unchanged bytes are not parsed again.
        assert!(!st.reload_keys().await.unwrap());
        assert_eq!(parses(), 1);
        assert!(!st.reload_keys().await.unwrap());
        assert!(!st.reload_keys().await.unwrap());
        assert_eq!(parses(), 1, "unchanged file parsed again");
        assert_eq!(st.keys().current().fingerprint(), first);

        // A new key written there is picked up at the next tick...
        let fresh = PrivateKey::generate(RsaBits::B2048).unwrap();
        save_key_pair(dir.path(), &fresh, None, true).unwrap();
        assert!(st.reload_keys().await.unwrap());
        assert_eq!(parses(), 2);
        assert_eq!(
            st.keys().current().fingerprint(),
            fresh.public_key().fingerprint()
        );
        assert!(!st.reload_keys().await.unwrap());
        assert_eq!(parses(), 2);

        // ...and so is a file that stops parsing (reported each tick until fixed).
        std::fs::write(dir.path().join("private_key.pem"), b"not a key").unwrap();
        assert!(st.reload_keys().await.is_err());
        assert!(st.reload_keys().await.is_err());
        assert_eq!(parses(), 4, "a failed parse is not remembered as seen");
        save_key_pair(dir.path(), &fresh, None, true).unwrap();
        assert!(!st.reload_keys().await.unwrap(), "the same key again");
        assert_eq!(
            st.keys().current().fingerprint(),
            fresh.public_key().fingerprint()
        );
    }
}
