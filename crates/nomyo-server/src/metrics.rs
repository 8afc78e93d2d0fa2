//! Prometheus metrics (`GET /metrics`, OpenMetrics text format, which
//! Prometheus scrapes natively). Labels have bounded values only: matched
//! route templates, status codes, backend names from the config, error kinds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (`/v1/chat/secure_completion`) or `unmatched`.
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route template or `unmatched`.
    pub route: String,
}

/// Labels of a backend error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// Backend name from the config.
    pub backend: String,
    /// `timeout`, `unavailable`, `failed`, `rejected`, `unknown_model`, `internal`.
    pub kind: &'static str,
}

/// Labels of a backend's token timings.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Backend name from the config.
    pub backend: String,
}

/// Per-token timings of the backends that generate tokens themselves (the
/// embedded engine), by backend. Cloning shares the same series.
#[derive(Clone, Debug)]
pub struct TokenMetrics {
    /// Time from a request's arrival at the backend to its first token.
    pub time_to_first_token: Family<TokenLabels, Histogram>,
    /// Gaps between consecutive tokens of one request.
    pub inter_token: Family<TokenLabels, Histogram>,
    /// Time a request waited in the backend's queue.
    pub queue_wait: Family<TokenLabels, Histogram>,
}

fn token_histogram() -> Histogram {
    // 0.5 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

impl Default for TokenMetrics {
    fn default() -> Self {
        let family =
            || Family::<TokenLabels, Histogram>::new_with_constructor(token_histogram as fn() -> _);
        Self {
            time_to_first_token: family(),
            inter_token: family(),
            queue_wait: family(),
        }
    }
}

impl TokenMetrics {
    /// The sink a backend named `backend` reports to.
    pub fn sink(&self, backend: &str) -> std::sync::Arc<dyn nomyo_backend::TokenTimings> {
        std::sync::Arc::new(TokenSink {
            metrics: self.clone(),
            labels: TokenLabels {
                backend: backend.to_owned(),
            },
        })
    }
}

struct TokenSink {
    metrics: TokenMetrics,
    labels: TokenLabels,
}

impl nomyo_backend::TokenTimings for TokenSink {
    fn queued(&self, wait: std::time::Duration) {
        self.metrics
            .queue_wait
            .get_or_create(&self.labels)
            .observe(wait.as_secs_f64());
    }
    fn first_token(&self, after: std::time::Duration) {
        self.metrics
            .time_to_first_token
            .get_or_create(&self.labels)
            .observe(after.as_secs_f64());
    }
    fn inter_token(&self, gap: std::time::Duration) {
        self.metrics
            .inter_token
            .get_or_create(&self.labels)
            .observe(gap.as_secs_f64());
    }
}

/// Labels of a refused secure request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `replay`, `rate_limited`, `saturated`, `unauthorized`, `decryption`.
    pub reason: &'static str,
}

/// Labels of one endpoint of an upstream pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The pool's backend name from the config.
    pub backend: String,
    /// The endpoint's URL without user info or query.
    pub endpoint: String,
}

/// Labels of one endpoint's finished requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointOutcomeLabels {
    /// The pool's backend name from the config.
    pub backend: String,
    /// The endpoint's URL without user info or query.
    pub endpoint: String,
    /// `ok`, `rejected` (a client error), `failed` (before any answer byte;
    /// failed over), `cut` (a stream failed after its first chunk),
    /// `cancelled` (the caller went away).
    pub outcome: &'static str,
}

/// Per-endpoint metrics of upstream pools ([`crate::pool::PoolBackend`]).
/// Cloning shares the same series; the state builder registers them.
#[derive(Clone, Debug, Default)]
pub struct EndpointMetrics {
    /// Requests in flight per endpoint.
    pub in_flight: Family<EndpointLabels, Gauge>,
    /// Finished attempts per endpoint and outcome.
    pub requests: Family<EndpointOutcomeLabels, Counter>,
    /// Breaker state per endpoint: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<EndpointLabels, Gauge>,
    /// Times each endpoint's breaker opened.
    pub breaker_opened: Family<EndpointLabels, Counter>,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Latency by route.
    pub latency: Family<RouteLabels, Histogram>,
    /// Backend errors by backend and kind.
    pub backend_errors: Family<BackendLabels, Counter>,
    /// Refusals of the secure route by reason.
    pub refusals: Family<RefusalLabels, Counter>,
    /// Secure requests waiting for a slot.
    pub queue_depth: Gauge,
    /// Secure requests being processed.
    pub in_flight: Gauge,
    /// Key rotations since start.
    pub key_rotations: Counter,
    /// Protocol v2 HPKE key rotations since start.
    pub hpke_key_rotations: Counter,
    /// Secret buffers that could not be locked in RAM since start.
    pub lock_failures: Gauge,
    /// Entries in the replay window.
    pub replay_entries: Gauge,
    /// Per-endpoint metrics of upstream pools.
    pub endpoints: EndpointMetrics,
    /// Per-token timings of the embedded engine.
    pub tokens: TokenMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        Self::with_endpoints(EndpointMetrics::default())
    }

    /// A fresh registry with every metric registered, the pools' endpoint
    /// metrics being `endpoints` (shared with the pools that update them).
    pub fn with_endpoints(endpoints: EndpointMetrics) -> Self {
        let mut registry = Registry::with_prefix("nomyo");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let backend_errors = Family::<BackendLabels, Counter>::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let queue_depth = Gauge::default();
        let in_flight = Gauge::default();
        let key_rotations = Counter::default();
        let hpke_key_rotations = Counter::default();
        let lock_failures = Gauge::default();
        let replay_entries = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "backend_errors",
            "Inference backend errors by backend and kind",
            backend_errors.clone(),
        );
        registry.register(
            "secure_refusals",
            "Secure requests refused by policy, by reason",
            refusals.clone(),
        );
        registry.register(
            "queue_depth",
            "Secure requests waiting for a processing slot",
            queue_depth.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Secure requests being processed",
            in_flight.clone(),
        );
        registry.register(
            "key_rotations",
            "Server key rotations since start",
            key_rotations.clone(),
        );
        registry.register(
            "hpke_key_rotations",
            "Protocol v2 HPKE key rotations since start",
            hpke_key_rotations.clone(),
        );
        registry.register(
            "secret_lock_failures",
            "Secret buffers that could not be locked in RAM since start",
            lock_failures.clone(),
        );
        registry.register(
            "replay_window_entries",
            "Request ids and packages remembered in the replay window",
            replay_entries.clone(),
        );
        registry.register(
            "upstream_endpoint_in_flight",
            "Requests in flight per upstream pool endpoint",
            endpoints.in_flight.clone(),
        );
        registry.register(
            "upstream_endpoint_requests",
            "Finished requests per upstream pool endpoint, by outcome",
            endpoints.requests.clone(),
        );
        registry.register(
            "upstream_endpoint_breaker_state",
            "Circuit breaker per upstream pool endpoint: 0 closed, 1 open, 2 half-open",
            endpoints.breaker_state.clone(),
        );
        let tokens = TokenMetrics::default();
        registry.register(
            "backend_time_to_first_token_seconds",
            "Time from a request's arrival at a token-generating backend (the embedded model) to its first token",
            tokens.time_to_first_token.clone(),
        );
        registry.register(
            "backend_inter_token_seconds",
            "Gaps between consecutive tokens of one request, token-generating backends",
            tokens.inter_token.clone(),
        );
        registry.register(
            "backend_queue_wait_seconds",
            "Time a request waited in a token-generating backend's queue",
            tokens.queue_wait.clone(),
        );
        registry.register(
            "upstream_endpoint_breaker_opened",
            "Times the circuit breaker of an upstream pool endpoint opened",
            endpoints.breaker_opened.clone(),
        );
        Self {
            endpoints,
            tokens,
            registry,
            requests,
            latency,
            backend_errors,
            refusals,
            queue_depth,
            in_flight,
            key_rotations,
            hpke_key_rotations,
            lock_failures,
            replay_entries,
        }
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
