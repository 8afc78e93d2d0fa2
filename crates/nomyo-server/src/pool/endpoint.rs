//! The pool's endpoints and what it knows of each: requests in flight,
//! the circuit breaker and the last probe's verdict, all under one lock;
//! picking an endpoint for a request ([`Inner::acquire`]) and recording how
//! each attempt and each probe went.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::BackendError;
use crate::metrics::{EndpointLabels, EndpointMetrics, EndpointOutcomeLabels};
use crate::upstream::UpstreamBackend;

/// The breakers' clock: tokio's, so that a test on a paused clock can move
/// past a cool-down instead of waiting for it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A circuit breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Breaker {
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
pub(super) struct EndpointState {
    pub(super) in_flight: usize,
    pub(super) breaker: Breaker,
    /// Whether the last probe answered (`true` before any, and with probes off).
    pub(super) probe_ok: bool,
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

pub(super) struct Endpoint {
    pub(super) backend: UpstreamBackend,
    /// URL without credentials, for logs and metric labels.
    pub(super) label: String,
    /// Models it serves; empty = any.
    pub(super) models: Vec<String>,
    /// Requests in flight at most; 0 = no cap.
    pub(super) cap: usize,
}

pub(super) struct Inner {
    pub(super) name: String,
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) state: Mutex<(Vec<EndpointState>, usize)>,
    pub(super) breaker_failures: u32,
    pub(super) cooldown: Duration,
    /// Whether active probes run (their verdict then gates readiness).
    pub(super) probing: bool,
    pub(super) metrics: EndpointMetrics,
}

/// How a finished attempt counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
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

/// A reserved slot on one endpoint: releases it and records the outcome on drop.
pub(super) struct Slot {
    pub(super) inner: Arc<Inner>,
    pub(super) idx: usize,
    pub(super) outcome: Outcome,
}

impl Slot {
    pub(super) fn set(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.finish(self.idx, self.outcome);
    }
}

impl Inner {
    pub(super) fn labels(&self, idx: usize) -> EndpointLabels {
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
    pub(super) fn acquire(
        self: &Arc<Self>,
        model: &str,
        tried: &[bool],
    ) -> Result<Slot, BackendError> {
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
    pub(super) fn probed(&self, idx: usize, result: &Result<(), String>) {
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
    pub(super) fn ready_count(&self) -> usize {
        let now = now();
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .0
            .iter()
            .filter(|s| s.ready(now, self.probing))
            .count()
    }
}
