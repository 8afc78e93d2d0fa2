//! [`AppStateBuilder`]: the options of a state, checked and assembled by
//! [`AppStateBuilder::build`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use nomyo_core::SecurityTier;
use tokio::sync::Semaphore;

use crate::backend::Backend;
use crate::hpke_keys::{HpkeKeySet, HpkeKeyStore, SignedKeyList};
use crate::keystore::KeyStore;
use crate::limits::{ConcurrencyGate, Limits, ReplayCache};
use crate::metrics::Metrics;
use crate::policy::{
    ApiKeys, ModelSet, NamedBackend, RateLimit, Routing, TierRule, TrustedProxies,
};
use crate::replay::{RedisReplay, ReplayStore};

use super::keys::signed_keys_lifetime;
use super::{AppState, Inner, MetricsAccess};

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
