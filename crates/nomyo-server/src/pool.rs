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
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use crate::backend::{Backend, BackendError, ChatRequest, ChunkStream};
use crate::metrics::{EndpointLabels, EndpointMetrics, EndpointOutcomeLabels};
use crate::upstream::{UpstreamBackend, UpstreamConfig, UpstreamSetupError};

/// The breakers' clock: tokio's, so that a test on a paused clock can move
/// past a cool-down instead of waiting for it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

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

/// A circuit breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breaker {
    /// Requests pass; this many consecutive failures so far.
    Closed(u32),
    /// Requests are refused until then.
    Open(Instant),
    /// One trial request is (`true`) or may be (`false`) in flight.
    HalfOpen(bool),
}

impl Breaker {
    fn gauge(self) -> i64 {
        match self {
            Breaker::Closed(_) => 0,
            Breaker::Open(_) => 1,
            Breaker::HalfOpen(_) => 2,
        }
    }
}

/// Mutable per-endpoint state, under the pool's lock.
#[derive(Debug)]
struct EndpointState {
    in_flight: usize,
    breaker: Breaker,
    /// Whether the last probe answered (`true` before any, and with probes off).
    probe_ok: bool,
}

impl EndpointState {
    /// Whether this endpoint can take a request now (see the module docs).
    fn ready(&self, now: Instant, probing: bool) -> bool {
        match self.breaker {
            Breaker::Closed(_) | Breaker::HalfOpen(_) => true,
            Breaker::Open(until) => now >= until && (!probing || self.probe_ok),
        }
    }
}

struct Endpoint {
    backend: UpstreamBackend,
    /// URL without credentials, for logs and metric labels.
    label: String,
    /// Models it serves; empty = any.
    models: Vec<String>,
    /// Requests in flight at most; 0 = no cap.
    cap: usize,
}

struct Inner {
    name: String,
    endpoints: Vec<Endpoint>,
    state: Mutex<(Vec<EndpointState>, usize)>,
    breaker_failures: u32,
    cooldown: Duration,
    /// Whether active probes run (their verdict then gates readiness).
    probing: bool,
    metrics: EndpointMetrics,
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

/// How a finished attempt counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered.
    Ok,
    /// The endpoint answered with a client error (not its fault, not retried).
    Rejected,
    /// Failed before any answer byte (counts against the breaker; retried).
    Failed,
    /// A stream failed after its first chunk (counts against the breaker).
    Cut,
    /// The caller went away.
    Cancelled,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Cut => "cut",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Whether an endpoint's error is its own failure (retry elsewhere, count
/// against its breaker) rather than a verdict on the request.
fn is_endpoint_failure(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::Unavailable { .. } | BackendError::Timeout | BackendError::Upstream(_)
    )
}

/// Keeps an endpoint's failure: the first one that may have reached the
/// endpoint (anything but `Unavailable`) in `reached`, the latest in `last`.
fn remember_failure(
    e: BackendError,
    reached: &mut Option<BackendError>,
    last: &mut Option<BackendError>,
) {
    if reached.is_none() && !matches!(e, BackendError::Unavailable { .. }) {
        *reached = Some(e);
    } else {
        *last = Some(e);
    }
}

/// A reserved slot on one endpoint: releases it and records the outcome on drop.
struct Slot {
    inner: Arc<Inner>,
    idx: usize,
    outcome: Outcome,
}

impl Slot {
    fn set(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.finish(self.idx, self.outcome);
    }
}

impl Inner {
    fn labels(&self, idx: usize) -> EndpointLabels {
        EndpointLabels {
            backend: self.name.clone(),
            endpoint: self.endpoints[idx].label.clone(),
        }
    }

    fn set_breaker(&self, st: &mut EndpointState, idx: usize, b: Breaker) {
        let was_open = matches!(st.breaker, Breaker::Open(_));
        if was_open && matches!(b, Breaker::Closed(_)) {
            tracing::info!(backend = %self.name, endpoint = %self.endpoints[idx].label, "upstream endpoint ready again");
        }
        st.breaker = b;
        self.metrics
            .breaker_state
            .get_or_create(&self.labels(idx))
            .set(b.gauge());
        if matches!(b, Breaker::Open(_)) && !was_open {
            self.metrics
                .breaker_opened
                .get_or_create(&self.labels(idx))
                .inc();
            tracing::warn!(
                backend = %self.name,
                endpoint = %self.endpoints[idx].label,
                cooldown_ms = self.cooldown.as_millis() as u64,
                "upstream endpoint not ready: breaker opened"
            );
        }
    }

    /// Picks and reserves an endpoint for `model` among those not in `tried`.
    fn acquire(self: &Arc<Self>, model: &str, tried: &[bool]) -> Result<Slot, BackendError> {
        let now = now();
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (states, rr) = &mut *guard;
        let n = states.len();
        let mut best: Option<usize> = None;
        let mut any_healthy = false;
        let mut soonest: Option<Duration> = None;
        for k in 0..n {
            let i = (*rr + k) % n;
            if tried[i] {
                continue;
            }
            let ep = &self.endpoints[i];
            if !ep.models.is_empty() && !ep.models.iter().any(|m| m == model) {
                continue;
            }
            let st = &states[i];
            let passes = match st.breaker {
                Breaker::Closed(_) => true,
                Breaker::Open(until) => {
                    if now >= until {
                        true
                    } else {
                        let left = until - now;
                        soonest = Some(soonest.map_or(left, |s| s.min(left)));
                        false
                    }
                }
                Breaker::HalfOpen(trial) => !trial,
            };
            if !passes {
                continue;
            }
            any_healthy = true;
            if ep.cap != 0 && st.in_flight >= ep.cap {
                continue;
            }
            if best.is_none_or(|b| st.in_flight < states[b].in_flight) {
                best = Some(i);
            }
        }
        let Some(i) = best else {
            // Nothing admissible: all full (retry soon) or all broken (retry
            // when the first cool-down ends).
            let retry = if any_healthy {
                Duration::from_secs(1)
            } else {
                soonest
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_secs(1))
            };
            return Err(BackendError::Unavailable {
                retry_after: Some(Duration::from_secs(retry.as_secs_f64().ceil() as u64)),
            });
        };
        *rr = (i + 1) % n;
        let st = &mut states[i];
        st.in_flight += 1;
        match st.breaker {
            Breaker::Open(_) => self.set_breaker(st, i, Breaker::HalfOpen(true)),
            Breaker::HalfOpen(false) => st.breaker = Breaker::HalfOpen(true),
            _ => {}
        }
        drop(guard);
        self.metrics.in_flight.get_or_create(&self.labels(i)).inc();
        Ok(Slot {
            inner: Arc::clone(self),
            idx: i,
            outcome: Outcome::Cancelled,
        })
    }

    fn finish(&self, idx: usize, outcome: Outcome) {
        self.metrics
            .in_flight
            .get_or_create(&self.labels(idx))
            .dec();
        self.metrics
            .requests
            .get_or_create(&EndpointOutcomeLabels {
                backend: self.name.clone(),
                endpoint: self.endpoints[idx].label.clone(),
                outcome: outcome.label(),
            })
            .inc();
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut guard.0[idx];
        st.in_flight = st.in_flight.saturating_sub(1);
        match (outcome, st.breaker) {
            (Outcome::Ok | Outcome::Rejected, Breaker::Closed(_) | Breaker::HalfOpen(_)) => {
                self.set_breaker(st, idx, Breaker::Closed(0));
            }
            (Outcome::Failed | Outcome::Cut, Breaker::Closed(n)) => {
                let n = n + 1;
                let b = if n >= self.breaker_failures {
                    Breaker::Open(now() + self.cooldown)
                } else {
                    Breaker::Closed(n)
                };
                self.set_breaker(st, idx, b);
            }
            (Outcome::Failed | Outcome::Cut, Breaker::HalfOpen(_)) => {
                self.set_breaker(st, idx, Breaker::Open(now() + self.cooldown));
            }
            // The trial was abandoned: let another one through.
            (Outcome::Cancelled, Breaker::HalfOpen(true)) => st.breaker = Breaker::HalfOpen(false),
            _ => {}
        }
    }

    /// Applies a probe's verdict (`Err`: the failure's kind, for the log).
    fn probed(&self, idx: usize, result: &Result<(), String>) {
        let healthy = result.is_ok();
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut guard.0[idx];
        if let Err(e) = result {
            // Logged once per outage at warn, then at debug while it lasts.
            if st.probe_ok {
                tracing::warn!(backend = %self.name, endpoint = %self.endpoints[idx].label, error = %e, "upstream endpoint unreachable: health probe failed");
            } else {
                tracing::debug!(backend = %self.name, endpoint = %self.endpoints[idx].label, error = %e, "health probe failed");
            }
        }
        st.probe_ok = healthy;
        match (healthy, st.breaker) {
            (true, Breaker::Open(_) | Breaker::HalfOpen(false)) => {
                tracing::debug!(backend = %self.name, endpoint = %self.endpoints[idx].label, "probe ok: endpoint breaker closed");
                self.set_breaker(st, idx, Breaker::Closed(0));
            }
            (false, Breaker::Closed(_) | Breaker::HalfOpen(false)) => {
                self.set_breaker(st, idx, Breaker::Open(now() + self.cooldown));
            }
            (false, Breaker::Open(_)) => {
                // Still down: keep it out for another cool-down.
                st.breaker = Breaker::Open(now() + self.cooldown);
            }
            _ => {}
        }
    }

    /// How many endpoints are ready now.
    fn ready_count(&self) -> usize {
        let now = now();
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .0
            .iter()
            .filter(|s| s.ready(now, self.probing))
            .count()
    }
}

fn copy_request(r: &ChatRequest) -> ChatRequest {
    ChatRequest {
        body: r.body.clone(),
        tier: r.tier,
        request_id: r.request_id.clone(),
    }
}

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

#[async_trait::async_trait]
impl Backend for PoolBackend {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    fn is_ready(&self) -> bool {
        self.inner.ready_count() > 0
    }

    async fn chat(&self, request: ChatRequest) -> Result<Value, BackendError> {
        let mut tried = vec![false; self.inner.endpoints.len()];
        let mut last: Option<BackendError> = None;
        // The first failure of an endpoint that may have received the
        // request (a time-out, a reset, a 5xx): once one did, the pool never
        // answers `Unavailable` (which gives the request's replay claim
        // back), whatever the endpoints tried after it say.
        let mut reached: Option<BackendError> = None;
        loop {
            let mut slot = match self.inner.acquire(request.model(), &tried) {
                Ok(s) => s,
                Err(e) => return Err(reached.or(last).unwrap_or(e)),
            };
            tried[slot.idx] = true;
            let ep = &self.inner.endpoints[slot.idx];
            match ep.backend.chat(copy_request(&request)).await {
                Ok(v) => {
                    slot.outcome = Outcome::Ok;
                    return Ok(v);
                }
                Err(e) if is_endpoint_failure(&e) => {
                    slot.outcome = Outcome::Failed;
                    tracing::debug!(backend = %self.inner.name, endpoint = %ep.label, request_id = %request.request_id, error = ?e, "endpoint failed; trying another");
                    remember_failure(e, &mut reached, &mut last);
                }
                Err(e) => {
                    slot.outcome = Outcome::Rejected;
                    return Err(e);
                }
            }
        }
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChunkStream, BackendError> {
        let mut tried = vec![false; self.inner.endpoints.len()];
        let mut last: Option<BackendError> = None;
        // The first failure of an endpoint that may have received the
        // request (a time-out, a reset, a 5xx): once one did, the pool never
        // answers `Unavailable` (which gives the request's replay claim
        // back), whatever the endpoints tried after it say.
        let mut reached: Option<BackendError> = None;
        loop {
            let mut slot = match self.inner.acquire(request.model(), &tried) {
                Ok(s) => s,
                Err(e) => return Err(reached.or(last).unwrap_or(e)),
            };
            tried[slot.idx] = true;
            let ep = &self.inner.endpoints[slot.idx];
            let first = match ep.backend.chat_stream(copy_request(&request)).await {
                Ok(mut stream) => match stream.next().await {
                    Some(Ok(chunk)) => Ok(Some((chunk, stream))),
                    None => Ok(None),
                    Some(Err(e)) => Err(e),
                },
                Err(e) => Err(e),
            };
            match first {
                Ok(None) => {
                    slot.outcome = Outcome::Ok;
                    return Ok(Box::pin(futures::stream::empty()));
                }
                Ok(Some((chunk, rest))) => {
                    // From here on the answer is the client's: no retry.
                    let state = (Some(chunk), rest, slot);
                    return Ok(Box::pin(futures::stream::unfold(
                        state,
                        |(first, mut rest, mut slot)| async move {
                            if let Some(c) = first {
                                return Some((Ok(c), (None, rest, slot)));
                            }
                            match rest.next().await {
                                Some(Ok(c)) => Some((Ok(c), (None, rest, slot))),
                                Some(Err(e)) => {
                                    slot.outcome = if is_endpoint_failure(&e) {
                                        Outcome::Cut
                                    } else {
                                        Outcome::Rejected
                                    };
                                    // Ends the stream after this item.
                                    let done: ChunkStream = Box::pin(futures::stream::empty());
                                    Some((Err(e), (None, done, slot)))
                                }
                                None => {
                                    if slot.outcome == Outcome::Cancelled {
                                        slot.set(Outcome::Ok);
                                    }
                                    None
                                }
                            }
                        },
                    )));
                }
                Err(e) if is_endpoint_failure(&e) => {
                    slot.outcome = Outcome::Failed;
                    tracing::debug!(backend = %self.inner.name, endpoint = %ep.label, request_id = %request.request_id, error = ?e, "endpoint failed before its first chunk; trying another");
                    remember_failure(e, &mut reached, &mut last);
                }
                Err(e) => {
                    slot.outcome = Outcome::Rejected;
                    return Err(e);
                }
            }
        }
    }
}
