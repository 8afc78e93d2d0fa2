//! One module per subcommand; `serve` and `proxy` only in builds with their
//! feature (docs/CLI.md, "Builds").

pub mod attest;
pub mod bench;
pub mod chat;
mod client_error;
pub mod completions;
pub mod connect;
pub(crate) use client_error::client_error;
#[cfg(feature = "serve")]
#[allow(dead_code)]
pub mod embedded;
pub mod fingerprint;
mod fingerprint_server;
pub mod keygen;
pub mod known_servers;
pub mod models;
#[cfg(feature = "proxy")]
pub mod proxy;
#[cfg(feature = "serve")]
pub mod serve;

/// The async runtime of a client command: one thread (`chat`, `attest`,
/// `fingerprint --server`), or a worker per core for those that run many
/// requests at once (`bench`, `proxy`).
pub(crate) fn runtime(
    multi_thread: bool,
) -> Result<tokio::runtime::Runtime, crate::exit::CliError> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().map_err(|e| {
        crate::exit::CliError::new(
            crate::exit::Code::Other,
            format!("cannot start the runtime: {e}"),
        )
    })
}

/// Completes on SIGTERM or ctrl-c (SIGINT): when `nomyo serve` and `nomyo
/// proxy` begin their graceful stop.
#[cfg(any(feature = "serve", feature = "proxy"))]
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
