//! Routing over several upstream endpoints that serve the same models: the
//! [`PoolBackend`].
//!
//! Each endpoint is an [`UpstreamBackend`] (one per URL). A request goes to
//! the admissible endpoint with the fewest requests in flight (ties: round
//! robin), where admissible means: it serves the model, its circuit breaker
//! lets requests through, and it is below its concurrency cap.
//!
//! Health is tracked two ways:
//! - passively: `breaker_failures` consecutive failures (connect errors,
//!   timeouts, 5xx, 429/503, unreadable answers) open the endpoint's breaker
//!   for `breaker_cooldown`; after it, one trial request is let through
//!   (half-open): success closes the breaker, failure opens it again;
//! - actively: every `health_check_interval` each endpoint gets
//!   `GET {url}/models`; an answer below 500 closes its breaker, a connect
//!   error, timeout or 5xx opens it. Every endpoint is probed once when the
//!   pool is built, so an upstream that cannot be reached is not ready from
//!   the start.
//!
//! Readiness ([`Backend::is_ready`], `/health`): an endpoint is ready while
//! its breaker lets requests through and, with probes on, its last probe
//! answered; the pool is ready while any endpoint is. Endpoints going down
//! or coming back are logged (warn / info) with their URL, without user info
//! or query.
//!
//! Failover: a request whose endpoint fails before any answer byte reached the
//! client (a non-streamed request: any retryable failure, since the answer is
//! read whole before it is sealed; a streamed one: a failure before its first
//! chunk) is retried on another endpoint, each endpoint at most once. Once a
//! stream yielded its first chunk it is never retried: a later failure cuts it.
//! Client errors (400, 404, 422) are returned as they are, never retried.
//!
//! Metrics (`nomyo_upstream_endpoint_*`) are labelled by the pool's name and
//! each endpoint's URL with any user info and query removed.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::backend::Backend;
use crate::metrics::EndpointMetrics;
use crate::upstream::{UpstreamBackend, UpstreamConfig, UpstreamSetupError};

mod endpoint;
mod failover;

use endpoint::{Breaker, Endpoint, EndpointState, Inner};

/// How to build a pool.
#[derive(Debug)]
pub struct PoolConfig {
    /// One entry per endpoint (URL, API key, timeouts; `models` empty = ask it).
    pub endpoints: Vec<UpstreamConfig>,
    /// Requests in flight per endpoint; beyond it the endpoint is skipped, and
    /// when every endpoint is full the request gets 503. `0` = no cap.
    pub max_concurrency_per_endpoint: usize,
    /// Per-endpoint caps overriding `max_concurrency_per_endpoint`, in the
    /// order of `endpoints` (`None` or a missing entry = the pool's cap;
    /// `Some(0)` = no cap): a big GPU server next to a small one.
    pub endpoint_caps: Vec<Option<usize>>,
    /// Interval of the active probes; zero = no probes (passive tracking only).
    pub health_check_interval: Duration,
    /// Timeout of one probe.
    pub health_check_timeout: Duration,
    /// Consecutive failures that open an endpoint's breaker (at least 1).
    pub breaker_failures: u32,
    /// How long an open breaker stays open before a trial request.
    pub breaker_cooldown: Duration,
}

impl PoolConfig {
    /// Defaults for these endpoints: no cap, probes every 5 s (2 s timeout),
    /// breaker opens after 3 consecutive failures for 10 s.
    pub fn new(endpoints: Vec<UpstreamConfig>) -> Self {
        Self {
            endpoints,
            max_concurrency_per_endpoint: 0,
            endpoint_caps: Vec::new(),
            health_check_interval: Duration::from_secs(5),
            health_check_timeout: Duration::from_secs(2),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(10),
        }
    }
}

/// A backend routing over several OpenAI-compatible upstreams serving the
/// same models (see the module documentation).
pub struct PoolBackend {
    inner: Arc<Inner>,
    models: Vec<String>,
    probes: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PoolBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBackend")
            .field("name", &self.inner.name)
            .field(
                "endpoints",
                &self
                    .inner
                    .endpoints
                    .iter()
                    .map(|e| &e.label)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Drop for PoolBackend {
    fn drop(&mut self) {
        if let Some(p) = self.probes.take() {
            p.abort();
        }
    }
}

pub use crate::upstream::redact_url;

impl PoolBackend {
    /// Builds the pool: each endpoint without configured models is asked for
    /// its list (as [`UpstreamBackend::connect`] does), then probes start
    /// (on the current Tokio runtime) if enabled.
    pub async fn connect(
        name: impl Into<String>,
        cfg: PoolConfig,
        metrics: EndpointMetrics,
    ) -> Result<Self, UpstreamSetupError> {
        let name = name.into();
        if cfg.endpoints.is_empty() {
            return Err(UpstreamSetupError::BadUrl(String::new()));
        }
        let backends =
            futures::future::join_all(cfg.endpoints.into_iter().map(UpstreamBackend::connect))
                .await;
        let mut endpoints = Vec::new();
        for (i, b) in backends.into_iter().enumerate() {
            let backend = b?;
            let cap = cfg
                .endpoint_caps
                .get(i)
                .copied()
                .flatten()
                .unwrap_or(cfg.max_concurrency_per_endpoint);
            endpoints.push(Endpoint {
                label: redact_url(backend.base_url()),
                models: backend.models(),
                cap,
                backend,
            });
        }
        // The union; any endpoint accepting any model makes the pool do so.
        let models = if endpoints.iter().any(|e| e.models.is_empty()) {
            Vec::new()
        } else {
            let mut m: Vec<String> = endpoints.iter().flat_map(|e| e.models.clone()).collect();
            m.sort();
            m.dedup();
            m
        };
        let states = endpoints
            .iter()
            .map(|_| EndpointState {
                in_flight: 0,
                breaker: Breaker::Closed(0),
                probe_ok: true,
            })
            .collect();
        let inner = Arc::new(Inner {
            name,
            endpoints,
            state: Mutex::new((states, 0)),
            breaker_failures: cfg.breaker_failures.max(1),
            cooldown: cfg.breaker_cooldown,
            probing: !cfg.health_check_interval.is_zero(),
            metrics,
        });
        for i in 0..inner.endpoints.len() {
            inner
                .metrics
                .breaker_state
                .get_or_create(&inner.labels(i))
                .set(0);
            inner
                .metrics
                .in_flight
                .get_or_create(&inner.labels(i))
                .set(0);
        }
        // One probe of every endpoint now: an upstream that cannot be reached
        // is not ready from the start (its breaker opens).
        probe_all(&inner, cfg.health_check_timeout).await;
        let probes = (!cfg.health_check_interval.is_zero()).then(|| {
            tokio::spawn(probe_loop(
                Arc::downgrade(&inner),
                cfg.health_check_interval,
                cfg.health_check_timeout,
            ))
        });
        let ready = inner.ready_count();
        tracing::info!(backend = %inner.name, endpoints = inner.endpoints.len(), ready, "upstream pool built");
        Ok(Self {
            inner,
            models,
            probes,
        })
    }

    /// How many endpoints are ready now (see the module docs).
    pub fn endpoints_ready(&self) -> usize {
        self.inner.ready_count()
    }

    /// The endpoints' labels (URLs without credentials), in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .endpoints
            .iter()
            .map(|e| e.label.clone())
            .collect()
    }
}

async fn probe_loop(pool: Weak<Inner>, every: Duration, timeout: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        probe_all(&inner, timeout).await;
    }
}

/// Probes every endpoint at once and applies the verdicts.
async fn probe_all(inner: &Inner, timeout: Duration) {
    let results =
        futures::future::join_all(inner.endpoints.iter().map(|e| e.backend.probe(timeout))).await;
    for (i, r) in results.iter().enumerate() {
        inner.probed(i, r);
    }
}
