//! The HTTP surface (docs/CLI.md §11.1), one module per
//! protocol: [`v1`] (`/pki/public_key`, `/v1/chat/secure_completion`) and
//! [`ops`] (`/v1/models`, `/health`, `/metrics`). Protocol v2 (EHBP:
//! `POST /v1/chat/completions`, `GET /.well-known/hpke-keys`) is one more
//! module whose `routes()` is merged in [`crate::app`]; its routes do not
//! collide with v1's.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::AppState;

pub mod attestation;
pub mod ops;
pub mod pipeline;
pub mod v1;
pub mod v2;

/// Unknown route: 404 `{"detail": "not found"}`.
pub(crate) async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

/// An unknown model (from routing, or a backend's 404) as the 404 that names
/// the model and the served ones (whole only inside v2's sealed answer).
pub(crate) fn with_served_models(st: &AppState, model: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::UnknownModel => {
            let mut served = std::collections::BTreeSet::new();
            for b in st.inner.routing.backends() {
                if let crate::policy::ModelSet::Only(names) = &b.models {
                    served.extend(names.iter().cloned());
                }
            }
            ApiError::ModelNotFound {
                model: model.to_owned(),
                served: served.into_iter().collect(),
            }
        }
        other => other,
    }
}

/// Known route, wrong method: 405 `{"detail": ...}`.
pub(crate) async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// Counts every request by route template and status, observes latency and
/// logs one line per request at debug level (route, status, time: never
/// headers or bodies).
pub(crate) async fn observe(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    let m = st.metrics();
    m.requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            status,
        })
        .inc();
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::debug!(
        %method,
        route = %route,
        status,
        elapsed_ms = elapsed.as_secs_f64() * 1e3,
        "request done"
    );
    resp
}

/// Whether `host` (a `Host` value, with or without a port) names the
/// loopback interface, or one of `extra`.
pub(crate) fn is_loopback_host(host: &str, extra: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if host.parse::<std::net::IpAddr>().is_ok() {
        // A bare address (an IPv6 one has colons of its own).
        host
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || extra.iter().any(|e| e.eq_ignore_ascii_case(name))
}

/// On a loopback listener, refuses (403) a request whose `Host` (or
/// HTTP/2 `:authority`) is not a loopback name: a web page that resolves a
/// name of its own to 127.0.0.1 (DNS rebinding) cannot drive the server.
/// A request naming no host at all (never a browser's) passes.
pub(crate) async fn host_check(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(extra) = &st.inner.loopback_hosts {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        // No host at all is not a browser (browsers always send one): the
        // check is about web pages; in-process callers send none.
        if host.is_some_and(|h| !is_loopback_host(h, extra)) {
            tracing::debug!("refused: Host is not a loopback name");
            st.metrics().refused("host");
            return ApiError::HostNotAllowed.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_host_names() {
        let extra = vec!["nomyo.internal".to_owned()];
        for h in [
            "localhost",
            "LOCALHOST:12434",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]:12434",
            "::1",
            "nomyo.internal:8443",
        ] {
            assert!(super::is_loopback_host(h, &extra), "{h}");
        }
        for h in [
            "",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "192.168.1.2:12434",
            "[2001:db8::1]:80",
        ] {
            assert!(!super::is_loopback_host(h, &extra), "{h}");
        }
    }
}
