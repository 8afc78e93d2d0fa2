//! The socket and the HTTP server: [`bind`] (TLS loaded first), then
//! [`Bound::run`] until shutdown, with the connection limits of [`tune`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;
use hyper_util::rt::TokioTimer;

use crate::config::TlsFiles;
use crate::state::AppState;

use super::StartError;

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
