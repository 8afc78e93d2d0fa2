//! The shared state every handler sees: [`AppState`], what it holds, and
//! its accessors. It is built by [`AppStateBuilder`] (`builder.rs`); the key
//! lifecycle (signed key list, rotation, replica reload) is in `keys.rs`,
//! the periodic housekeeping in `maintenance.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nomyo_core::SecurityTier;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::hpke_keys::{HpkeKeySet, HpkeKeyStore, SignedKeyList};
use crate::keystore::KeyStore;
use crate::limits::{ConcurrencyGate, Limits};
use crate::metrics::Metrics;
use crate::policy::{ApiKeys, RateLimit, Routing, TrustedProxies};
use crate::replay::ReplayStore;

mod builder;
mod keys;
mod maintenance;

pub use builder::AppStateBuilder;

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

impl AppState {
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

    /// Whether v2 requests on `tier` must use the post-quantum suite (X-Wing).
    pub fn requires_post_quantum(&self, tier: SecurityTier) -> bool {
        self.inner.post_quantum_tiers.contains(&tier)
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
