//! The server's v1 key: fetched from `GET /pki/public_key`, verified (pins,
//! or the known-servers file) the first time, cached, and refreshed once
//! after a 400 that may mean a rotation. (The v2 key list, signed by this
//! key, is in `v2.rs`.)

use std::sync::Arc;
use std::time::Instant;

use nomyo_core::keys::PublicKey;
use nomyo_core::Fingerprint;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::trust::TrustDecision;

/// Largest public-key body read (an 8192-bit PEM is under 1.5 KiB).
const MAX_KEY_BYTES: usize = 64 * 1024;

/// The server's v1 public key, verified and cached by the client.
#[derive(Clone, Debug)]
pub struct ServerKey {
    pub(crate) key: PublicKey,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) trust: TrustDecision,
}

impl ServerKey {
    /// The key.
    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }
    /// Its `sha256:` fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    /// How it came to be trusted.
    pub fn trust(&self) -> &TrustDecision {
        &self.trust
    }
}

impl Client {
    /// The server's key: fetched from `GET /pki/public_key` and verified
    /// (pins, or the known-servers file) the first time, cached afterwards.
    pub async fn server_key(&self) -> Result<Arc<ServerKey>> {
        if let Some(k) = self.cached_server_key() {
            return Ok(k);
        }
        let _guard = self.inner.server_key_fetch.lock().await;
        if let Some(k) = self.cached_server_key() {
            return Ok(k);
        }
        let key = self.fetch_server_public_key().await?;
        let fingerprint = key.fingerprint();
        let trust = self.inner.trust.verify(&self.inner.origin, fingerprint)?;
        tracing::debug!(origin = %self.inner.origin, %fingerprint, ?trust, "server key verified");
        Ok(self.cache_server_key(key, fingerprint, trust))
    }

    /// Makes a verified server key the cached one and returns it.
    fn cache_server_key(
        &self,
        key: PublicKey,
        fingerprint: Fingerprint,
        trust: TrustDecision,
    ) -> Arc<ServerKey> {
        let k = Arc::new(ServerKey {
            key,
            fingerprint,
            trust,
        });
        *self
            .inner
            .server_key
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(k.clone());
        k
    }

    fn cached_server_key(&self) -> Option<Arc<ServerKey>> {
        self.inner
            .server_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a 400: has the server rotated its key? Refetches it once; a new
    /// key is verified like a first one (pins, or the known-servers file,
    /// where a changed key is [`Error::ServerKeyChanged`]) and replaces the
    /// cached one. `Ok(None)` when the key is unchanged.
    pub(crate) async fn refresh_server_key(
        &self,
        stale: &Arc<ServerKey>,
    ) -> Result<Option<Arc<ServerKey>>> {
        let _guard = self.inner.server_key_fetch.lock().await;
        if let Some(current) = self.cached_server_key() {
            if !Arc::ptr_eq(&current, stale) {
                // Another request refreshed it meanwhile.
                return Ok(Some(current));
            }
        }
        let key = self.fetch_server_public_key().await?;
        let fingerprint = key.fingerprint();
        if fingerprint == stale.fingerprint {
            return Ok(None);
        }
        let trust = self.inner.trust.verify(&self.inner.origin, fingerprint)?;
        tracing::info!(origin = %self.inner.origin, old = %stale.fingerprint, new = %fingerprint, "server key rotated");
        Ok(Some(self.cache_server_key(key, fingerprint, trust)))
    }

    async fn fetch_server_public_key(&self) -> Result<PublicKey> {
        let started = Instant::now();
        let body = self
            .retrier()
            .send(
                || self.inner.http.get(self.inner.key_url.clone()),
                MAX_KEY_BYTES,
            )
            .await?;
        let pem = std::str::from_utf8(&body)
            .map_err(|_| Error::InvalidServerKey("the key is not PEM text".into()))?;
        let key = PublicKey::from_pem(pem).map_err(|e| Error::InvalidServerKey(e.to_string()))?;
        tracing::debug!(
            bits = key.bits(),
            ms = started.elapsed().as_millis() as u64,
            "server key fetched"
        );
        Ok(key)
    }
}
