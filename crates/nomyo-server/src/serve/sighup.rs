//! Key rotation on SIGHUP (or, for a replica, a reload of the key directory).

use crate::state::AppState;

/// Rotates the server key (see [`KeyStore::rotate`](crate::keystore::KeyStore::rotate)) and the protocol v2
/// HPKE keys on every SIGHUP; a replica that follows its key directory
/// ([`AppState::follows_key_dir`]) reloads it instead. The handler is installed before this returns,
/// so a SIGHUP sent after it can never terminate the process.
#[cfg(unix)]
pub fn rotate_on_sighup(state: AppState) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if state.follows_key_dir() {
                match state.reload_keys().await {
                    Ok(changed) => tracing::info!(changed, "key directory reloaded (SIGHUP)"),
                    Err(e) => {
                        tracing::error!(error = %e, "reloading the key directory failed; keeping the current keys")
                    }
                }
                continue;
            }
            match state.rotate_key().await {
                Ok(fp) => {
                    tracing::info!(fingerprint = %fp, "server key rotated (SIGHUP); the previous key opens requests during its grace period")
                }
                Err(e) => {
                    tracing::error!(error = %e, "server key rotation failed; keeping the current key")
                }
            }
            match state.rotate_hpke_keys().await {
                Ok(r) => {
                    tracing::info!(key_ids = ?r.key_ids, retired = ?r.retired_ids, "HPKE keys rotated (SIGHUP)")
                }
                Err(e) => {
                    tracing::error!(error = %e, "HPKE key rotation failed; keeping the current keys")
                }
            }
        }
    }))
}
