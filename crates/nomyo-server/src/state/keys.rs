//! The key lifecycle of a running state: the signed HPKE key list (cached,
//! renewed ahead of its half-life), rotation of the server and HPKE keys,
//! and re-reading a shared key directory (replica mode).

use std::sync::Arc;
use std::time::Duration;

use crate::error::ApiError;
use crate::hpke_keys::{Rotation, SignedKeyList};

use super::AppState;

/// SHA-256 of a key file's bytes, read into locked memory that is erased
/// when dropped (the file holds the private key). `None` if it cannot be read
/// (the reload that follows reports why) or is implausibly large.
fn key_file_digest(path: &std::path::Path) -> Option<[u8; 32]> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let file = std::fs::File::open(path).ok()?;
    let mut buf = nomyo_core::SecretBuf::with_capacity(16 * 1024);
    let n = std::io::copy(&mut file.take(MAX + 1), &mut buf).ok()?;
    (n <= MAX).then(|| nomyo_core::Fingerprint::of_bytes(buf.expose_secret()).0)
}

impl AppState {
    /// The published HPKE key list with its `Nomyo-Keys-Signature` by the
    /// current RSA key. Cached: signed again only when the HPKE keys or the
    /// RSA key changed since (the rotations re-sign at once; this is the
    /// backstop), on the blocking pool.
    pub async fn signed_hpke_keys(&self) -> Result<Arc<SignedKeyList>, ApiError> {
        let set = self.inner.hpke.current();
        let rsa = self.inner.keys.current();
        if let Some(c) = self.cached_signed_keys() {
            if c.is_for(&set, rsa.fingerprint()) {
                return Ok(c);
            }
        }
        let lifetime = self.signed_keys_lifetime();
        let signed = self
            .blocking(move || SignedKeyList::sign(&set, rsa.private_key(), lifetime))
            .await?
            .map_err(ApiError::Internal)?;
        Ok(self.store_signed_keys(signed))
    }

    /// How long a signed key list stays valid: the rotation period plus
    /// the grace period during which retired keys still open requests
    /// (24 h when the keys do not rotate on a schedule: the list is signed
    /// again when half of that has passed).
    fn signed_keys_lifetime(&self) -> Duration {
        signed_keys_lifetime(self.inner.hpke_rotate_every, self.inner.hpke.grace())
    }

    fn cached_signed_keys(&self) -> Option<Arc<SignedKeyList>> {
        self.inner
            .signed_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps `signed` unless a list signed meanwhile is the current one.
    fn store_signed_keys(&self, signed: SignedKeyList) -> Arc<SignedKeyList> {
        let signed = Arc::new(signed);
        let mut g = self
            .inner
            .signed_keys
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let set = self.inner.hpke.current();
        let rsa = self.inner.keys.current().fingerprint();
        match g.as_ref() {
            Some(c) if c.is_for(&set, rsa) && !signed.is_for(&set, rsa) => Arc::clone(c),
            _ => {
                tracing::debug!(signer = %signed.signer(), "HPKE key list signed");
                *g = Some(Arc::clone(&signed));
                signed
            }
        }
    }

    /// Signs the current key list again in the background when 40 % of its
    /// window has passed (the maintenance tick calls this every second), so
    /// that the half-way renewal on a fetch never happens and no GET waits
    /// for an RSA signature. Returns whether it signed.
    pub async fn renew_signed_keys_if_due(&self) -> bool {
        let due = match self.cached_signed_keys() {
            None => true,
            Some(c) => c.renewal_due_at(crate::hpke_keys::unix_now()),
        };
        if !due {
            return false;
        }
        let set = self.inner.hpke.current();
        let rsa = self.inner.keys.current();
        let lifetime = self.signed_keys_lifetime();
        match self
            .blocking(move || SignedKeyList::sign(&set, rsa.private_key(), lifetime))
            .await
        {
            Ok(Ok(signed)) => {
                self.store_signed_keys(signed);
                tracing::debug!("HPKE key list signed again ahead of its half-life");
                true
            }
            Ok(Err(e)) | Err(ApiError::Internal(e)) => {
                tracing::error!(error = %e, "renewing the key-list signature failed; retried on the next tick");
                false
            }
            Err(_) => false,
        }
    }

    /// Signs the current key list now (after a rotation), so that the
    /// first client to fetch it does not wait for the signature.
    async fn resign_hpke_keys(&self) {
        if let Err(e) = self.signed_hpke_keys().await {
            tracing::error!(error = %e, "signing the HPKE key list failed; retried on the next fetch");
        }
    }

    /// Rotates the HPKE keys now (new key ids, published at once; the
    /// previous keys open requests for the grace period, then are dropped and
    /// erased). File I/O runs on the blocking pool.
    pub async fn rotate_hpke_keys(&self) -> Result<Rotation, String> {
        let store = Arc::clone(&self.inner.hpke);
        let rotation = tokio::task::spawn_blocking(move || store.rotate())
            .await
            .map_err(|_| "HPKE key rotation task failed".to_owned())??;
        self.inner.metrics.hpke_key_rotations.inc();
        self.resign_hpke_keys().await;
        self.purge_retired_hpke_keys_after_grace();
        Ok(rotation)
    }

    /// Erases the retired HPKE keys as soon as their grace ends (the 1 s
    /// maintenance tick is the backstop).
    fn purge_retired_hpke_keys_after_grace(&self) {
        let store = Arc::clone(&self.inner.hpke);
        let grace = store.grace();
        tokio::spawn(async move {
            tokio::time::sleep(grace + Duration::from_millis(1)).await;
            store.purge_expired();
        });
    }

    /// Whether this server follows its key directory (replica mode).
    pub fn follows_key_dir(&self) -> bool {
        self.inner.key_reload_every.is_some()
    }

    /// Re-reads the key directory and uses the keys another replica or an
    /// operator wrote there: a new server key and/or new HPKE keys become
    /// current, the previous ones open requests for their grace period.
    /// Never writes. Returns whether anything changed. File I/O and key
    /// parsing run on the blocking pool.
    ///
    /// The server key file is parsed again only when its bytes changed since
    /// the last reload that read it (compared by SHA-256; the bytes are read
    /// into locked memory and erased): most ticks cost one small file read,
    /// not an RSA key parse and check.
    pub async fn reload_keys(&self) -> Result<bool, String> {
        let keys = Arc::clone(&self.inner.keys);
        let hpke = Arc::clone(&self.inner.hpke);
        let last = *self
            .inner
            .key_file_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let parses = Arc::clone(&self.inner.key_file_parses);
        let (v1, v2, seen) = tokio::task::spawn_blocking(move || {
            // Hashed before the parse, which reads the file again: if it
            // changes in between, the next tick sees other bytes and parses
            // once more, so a change is never missed.
            let seen = keys.key_file().and_then(|p| key_file_digest(&p));
            let v1 = match (seen, last) {
                (Some(now), Some(before)) if now == before => Ok(None),
                _ => {
                    parses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    keys.reload()
                }
            };
            (v1, hpke.reload(), seen)
        })
        .await
        .map_err(|_| "key reload task failed".to_owned())?;
        if v1.is_ok() {
            *self
                .inner
                .key_file_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = seen;
        }
        let mut changed = false;
        let mut failed = Vec::new();
        match v1 {
            Ok(Some(fp)) => {
                self.inner.metrics.key_rotations.inc();
                tracing::info!(fingerprint = %fp, "server key reloaded from the key directory; the previous key opens requests during its grace period");
                changed = true;
            }
            Ok(None) => {}
            Err(e) => failed.push(format!("server key: {e}")),
        }
        match v2 {
            Ok(Some(r)) => {
                self.inner.metrics.hpke_key_rotations.inc();
                tracing::info!(key_ids = ?r.key_ids, retired = ?r.retired_ids, "HPKE keys reloaded from the key directory");
                changed = true;
                self.purge_retired_hpke_keys_after_grace();
            }
            Ok(None) => {}
            Err(e) => failed.push(format!("HPKE keys: {e}")),
        }
        if changed {
            self.resign_hpke_keys().await;
        }
        if failed.is_empty() {
            Ok(changed)
        } else {
            Err(failed.join("; "))
        }
    }

    /// Rotates the server key now (blocking work on the blocking pool) and
    /// returns the new fingerprint.
    pub async fn rotate_key(&self) -> nomyo_core::Result<nomyo_core::Fingerprint> {
        let keys = Arc::clone(&self.inner.keys);
        let fp = tokio::task::spawn_blocking(move || keys.rotate())
            .await
            .map_err(|_| nomyo_core::Error::Key("key rotation task failed".into()))??;
        self.inner.metrics.key_rotations.inc();
        // The v2 key list is vouched for by the current RSA key.
        self.resign_hpke_keys().await;
        Ok(fp)
    }
}

/// Validity of a signed key list: the rotation period (24 h without a
/// schedule) plus the grace period.
pub(super) fn signed_keys_lifetime(rotate_every: Option<Duration>, grace: Duration) -> Duration {
    rotate_every.unwrap_or(Duration::from_secs(24 * 3600)) + grace
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Backend, BackendError, ChatRequest};
    use crate::keystore::{KeySource, KeyStore};
    use nomyo_core::keys::{save_key_pair, PrivateKey, RsaBits};
    use serde_json::Value;
    use std::sync::atomic::Ordering;

    /// Never called: `reload_keys` does not route requests.
    struct NoBackend;

    #[async_trait::async_trait]
    impl Backend for NoBackend {
        fn name(&self) -> &str {
            "none"
        }
        fn models(&self) -> Vec<String> {
            vec!["m".into()]
        }
        async fn chat(&self, _request: ChatRequest) -> Result<Value, BackendError> {
            Err(BackendError::ModelNotFound)
        }
    }

    #[tokio::test]
    async fn reload_parses_the_key_file_only_when_its_bytes_change() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, _) = KeyStore::load_or_generate(KeySource {
            dir: dir.path().to_owned(),
            password: None,
            bits: RsaBits::B2048,
        })
        .unwrap();
        let first = keys.current().fingerprint();
        let st = AppState::builder(keys)
            .backend("none", Arc::new(NoBackend))
            .build()
            .unwrap();
        let parses = || st.inner.key_file_parses.load(Ordering::Relaxed);

        // The first tick reads and parses once; unchanged bytes are not parsed again.
        assert!(!st.reload_keys().await.unwrap());
        assert_eq!(parses(), 1);
        assert!(!st.reload_keys().await.unwrap());
        assert!(!st.reload_keys().await.unwrap());
        assert_eq!(parses(), 1, "unchanged file parsed again");
        assert_eq!(st.keys().current().fingerprint(), first);

        // A new key written there is picked up at the next tick...
        let fresh = PrivateKey::generate(RsaBits::B2048).unwrap();
        save_key_pair(dir.path(), &fresh, None, true).unwrap();
        assert!(st.reload_keys().await.unwrap());
        assert_eq!(parses(), 2);
        assert_eq!(
            st.keys().current().fingerprint(),
            fresh.public_key().fingerprint()
        );
        assert!(!st.reload_keys().await.unwrap());
        assert_eq!(parses(), 2);

        // ...and so is a file that stops parsing (reported each tick until fixed).
        std::fs::write(dir.path().join("private_key.pem"), b"not a key").unwrap();
        assert!(st.reload_keys().await.is_err());
        assert!(st.reload_keys().await.is_err());
        assert_eq!(parses(), 4, "a failed parse is not remembered as seen");
        save_key_pair(dir.path(), &fresh, None, true).unwrap();
        assert!(!st.reload_keys().await.unwrap(), "the same key again");
        assert_eq!(
            st.keys().current().fingerprint(),
            fresh.public_key().fingerprint()
        );
    }
}
