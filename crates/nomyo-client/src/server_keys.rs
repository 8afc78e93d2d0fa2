//! The server's keys, the layer under both protocols:
//!
//! - the v1 key: fetched from `GET /pki/public_key`, verified (pins, or the
//!   known-servers file) the first time, cached, and refreshed once after a
//!   400 that may mean a rotation;
//! - the v2 key list (`GET /.well-known/hpke-keys`): its
//!   `Nomyo-Keys-Signature` verified against that v1 key (an origin known to
//!   sign never gets an unsigned list trusted), cached, and refetched once
//!   when the server says the configs are stale.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use nomyo_core::keys::PublicKey;
use nomyo_core::keys_signature::{self, KeysSignature, KeysSignatureError};
use nomyo_core::v2::keys::{Kem, KeyConfig};
use nomyo_core::v2::{HPKE_KEYS_PATH, KEYS_CONTENT_TYPE};
use nomyo_core::Fingerprint;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Url;
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::transport::{read_limited, refusal, status_error, Transport};
use crate::trust::{Trust, TrustDecision};

/// Largest public-key body read (an 8192-bit PEM is under 1.5 KiB).
const MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest key list read.
const MAX_KEYS_BYTES: usize = 64 * 1024;

/// The server's keys as this client knows them: where they are fetched,
/// how they are trusted, and the verified ones cached. The layer above the
/// transport (every fetch takes it as an argument) and under both
/// protocols.
pub(crate) struct ServerKeys {
    /// `GET /pki/public_key`.
    pub(crate) key_url: Url,
    /// `GET /.well-known/hpke-keys`.
    pub(crate) keys_url: Url,
    /// Pins, or the known-servers file.
    pub(crate) trust: Trust,
    /// Only this KEM's config (else X-Wing preferred over X25519).
    pub(crate) kem: Option<Kem>,
    v1: RwLock<Option<Arc<ServerKey>>>,
    /// Serialises fetches of the v1 key, so that concurrent first requests
    /// fetch it once.
    v1_fetch: Mutex<()>,
    v2: RwLock<Option<Arc<HpkeKeys>>>,
    v2_fetch: Mutex<()>,
    /// A signed key list was verified: from now on an unsigned one is
    /// refused, whatever the known-servers file says.
    signed_seen: AtomicBool,
}

impl ServerKeys {
    /// Nothing fetched yet.
    pub(crate) fn new(key_url: Url, keys_url: Url, trust: Trust, kem: Option<Kem>) -> Self {
        Self {
            key_url,
            keys_url,
            trust,
            kem,
            v1: RwLock::new(None),
            v1_fetch: Mutex::new(()),
            v2: RwLock::new(None),
            v2_fetch: Mutex::new(()),
            signed_seen: AtomicBool::new(false),
        }
    }

    /// The server's base URL (with any path prefix), as the key routes use
    /// (the attestation routes are under it too).
    pub(crate) fn base(&self) -> Result<&str> {
        self.keys_url
            .as_str()
            .strip_suffix(HPKE_KEYS_PATH)
            .ok_or_else(|| Error::Config("cannot derive the attestation URL".into()))
    }

    /// Whether the server publishes a v2 key list: always fetched (once per
    /// client, for [`Protocol::Auto`](crate::Protocol::Auto)) and verified
    /// as by [`ServerKeys::hpke_keys`], and cached when it does (`false` on
    /// 404, where a server recorded as speaking v2 is refused).
    pub(crate) async fn probe_v2(&self, t: &Transport) -> Result<bool> {
        let _guard = self.v2_fetch.lock().await;
        match self.fetch_hpke_keys(t).await? {
            Some(keys) => {
                self.store_hpke_keys(keys);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn cached_hpke_keys(&self) -> Option<Arc<HpkeKeys>> {
        self.v2.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn store_hpke_keys(&self, k: Arc<HpkeKeys>) {
        *self.v2.write().unwrap_or_else(|e| e.into_inner()) = Some(k);
    }
}

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

impl ServerKeys {
    /// The server's key: fetched from `GET /pki/public_key` and verified
    /// (pins, or the known-servers file) the first time, cached afterwards.
    pub(crate) async fn server_key(&self, t: &Transport) -> Result<Arc<ServerKey>> {
        if let Some(k) = self.cached_server_key() {
            return Ok(k);
        }
        let _guard = self.v1_fetch.lock().await;
        if let Some(k) = self.cached_server_key() {
            return Ok(k);
        }
        let key = self.fetch_server_public_key(t).await?;
        let fingerprint = key.fingerprint();
        let trust = self.trust.verify(&t.origin, fingerprint)?;
        tracing::debug!(origin = %t.origin, %fingerprint, ?trust, "server key verified");
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
        *self.v1.write().unwrap_or_else(|e| e.into_inner()) = Some(k.clone());
        k
    }

    fn cached_server_key(&self) -> Option<Arc<ServerKey>> {
        self.v1.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a 400: has the server rotated its key? Refetches it once; a new
    /// key is verified like a first one (pins, or the known-servers file,
    /// where a changed key is [`Error::ServerKeyChanged`]) and replaces the
    /// cached one. `Ok(None)` when the key is unchanged.
    pub(crate) async fn refresh_server_key(
        &self,
        t: &Transport,
        stale: &Arc<ServerKey>,
    ) -> Result<Option<Arc<ServerKey>>> {
        let _guard = self.v1_fetch.lock().await;
        if let Some(current) = self.cached_server_key() {
            if !Arc::ptr_eq(&current, stale) {
                // Another request refreshed it meanwhile.
                return Ok(Some(current));
            }
        }
        let key = self.fetch_server_public_key(t).await?;
        let fingerprint = key.fingerprint();
        if fingerprint == stale.fingerprint {
            return Ok(None);
        }
        let trust = self.trust.verify(&t.origin, fingerprint)?;
        tracing::info!(origin = %t.origin, old = %stale.fingerprint, new = %fingerprint, "server key rotated");
        Ok(Some(self.cache_server_key(key, fingerprint, trust)))
    }

    async fn fetch_server_public_key(&self, t: &Transport) -> Result<PublicKey> {
        let started = Instant::now();
        let body = t
            .retrier()
            .send(|| t.http.get(self.key_url.clone()), MAX_KEY_BYTES)
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

/// The server's v2 key configs, verified and cached by the client.
#[derive(Clone, Debug)]
pub struct HpkeKeys {
    pub(crate) configs: Vec<KeyConfig>,
    pub(crate) chosen: usize,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) trust: TrustDecision,
    pub(crate) signed_by: Option<Fingerprint>,
}

impl HpkeKeys {
    /// Every config the server published, in its order.
    pub fn configs(&self) -> &[KeyConfig] {
        &self.configs
    }
    /// The config requests are sealed to (X-Wing when offered).
    pub fn config(&self) -> &KeyConfig {
        &self.configs[self.chosen]
    }
    /// The chosen config's `sha256:` fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    /// How the keys came to be trusted: for a signed list, how the v1 key
    /// that signed it is trusted ([`HpkeKeys::signed_by`]); otherwise how
    /// the chosen config's own fingerprint is.
    pub fn trust(&self) -> &TrustDecision {
        &self.trust
    }
    /// The fingerprint of the server's v1 key whose signature over the list
    /// was verified (`None`: an unsigned list, trusted by its config
    /// fingerprint, or a signed one accepted by a pin of the config).
    pub fn signed_by(&self) -> Option<Fingerprint> {
        self.signed_by
    }
}

impl ServerKeys {
    /// The server's v2 key configs: fetched and verified the first time,
    /// cached afterwards.
    pub(crate) async fn hpke_keys(&self, t: &Transport) -> Result<Arc<HpkeKeys>> {
        if let Some(k) = self.cached_hpke_keys() {
            return Ok(k);
        }
        let _guard = self.v2_fetch.lock().await;
        if let Some(k) = self.cached_hpke_keys() {
            return Ok(k);
        }
        let keys = self.fetch_hpke_keys(t).await?.ok_or_else(|| {
            Error::InvalidServerKey(format!(
                "{} does not publish {HPKE_KEYS_PATH}: it does not speak protocol v2",
                t.origin
            ))
        })?;
        self.store_hpke_keys(keys.clone());
        Ok(keys)
    }

    /// After a 422 key-config answer: refetch, verify and cache the keys.
    pub(crate) async fn refresh_hpke_keys(
        &self,
        t: &Transport,
        stale: &Arc<HpkeKeys>,
    ) -> Result<Arc<HpkeKeys>> {
        let _guard = self.v2_fetch.lock().await;
        if let Some(current) = self.cached_hpke_keys() {
            if !Arc::ptr_eq(&current, stale) {
                return Ok(current);
            }
        }
        let keys = self.fetch_hpke_keys(t).await?.ok_or_else(|| {
            Error::InvalidServerKey(format!("{} no longer publishes {HPKE_KEYS_PATH}", t.origin))
        })?;
        tracing::info!(origin = %t.origin, old = %stale.fingerprint, new = %keys.fingerprint, "v2 keys refetched");
        self.store_hpke_keys(keys.clone());
        Ok(keys)
    }

    /// `GET /.well-known/hpke-keys`, parsed and verified; `None` on 404.
    async fn fetch_hpke_keys(&self, t: &Transport) -> Result<Option<Arc<HpkeKeys>>> {
        let started = Instant::now();
        let url = self.keys_url.clone();
        let resp = t
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| t.retrier().network_error(e, 1))?;
        let status = resp.status().as_u16();
        if status == 404 {
            // A server recorded as speaking v2 does not stop: refused.
            self.trust.check_no_v2(&t.origin)?;
            return Ok(None);
        }
        if status != 200 {
            let (api, retry_after) = refusal(resp, 1).await;
            return Err(status_error(api, retry_after));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if content_type != KEYS_CONTENT_TYPE {
            return Err(Error::InvalidServerKey(format!(
                "{HPKE_KEYS_PATH} is not {KEYS_CONTENT_TYPE}"
            )));
        }
        let signature = resp.headers().get(keys_signature::HEADER).cloned();
        let (body, too_long) = read_limited(resp, MAX_KEYS_BYTES)
            .await
            .map_err(|e| t.retrier().network_error(e, 1))?;
        if too_long {
            return Err(Error::InvalidServerKey("the key list is too large".into()));
        }
        let configs =
            KeyConfig::parse_list(&body).map_err(|e| Error::InvalidServerKey(e.to_string()))?;
        let pick = |kem| {
            configs
                .iter()
                .position(|c| c.kem == kem && c.supports_our_suite())
        };
        let chosen = match self.kem {
            Some(kem) => pick(kem),
            None => pick(Kem::XWing).or_else(|| pick(Kem::X25519)),
        }
        .ok_or_else(|| {
            Error::InvalidServerKey(
                "no key config with X-Wing or X25519 and HKDF-SHA256/AES-256-GCM".into(),
            )
        })?;
        let config = &configs[chosen];
        let fingerprint = config.fingerprint();
        let (trust, signed_by) = match signature {
            // A pin of this very config: trusted as configured.
            _ if self.trust.pins.contains(&fingerprint) => (TrustDecision::Pinned, None),
            Some(value) => {
                self.trust.check_new_signer(&t.origin)?;
                let server = self.verify_keys_signature(t, &value, &body).await?;
                self.signed_seen.store(true, Ordering::SeqCst);
                self.trust.record_signed_v2(&t.origin)?;
                (server.trust().clone(), Some(server.fingerprint()))
            }
            // Unsigned: refused for a server known to sign (pinned or
            // recorded v1 key, `v2=signed`, or a signed list seen by this
            // client); otherwise its config is checked against the record,
            // or trusted on first use. A refetch after a 400 or 422 comes
            // through here too, so it is verified exactly as a first fetch.
            None => (
                self.trust.verify_unsigned_v2(
                    &t.origin,
                    config.kem,
                    fingerprint,
                    self.signed_seen.load(Ordering::SeqCst),
                )?,
                None,
            ),
        };
        tracing::debug!(origin = %t.origin, kem = %config.kem, key_id = config.key_id, %fingerprint, signed_by = ?signed_by, ?trust, ms = started.elapsed().as_millis() as u64, "v2 keys verified");
        Ok(Some(Arc::new(HpkeKeys {
            configs,
            chosen,
            fingerprint,
            trust,
            signed_by,
        })))
    }

    /// Checks `Nomyo-Keys-Signature` over the key list `body` with the
    /// server's v1 key, verified as for v1 (pins or the known-servers file);
    /// returns that key. A list signed by another key than the cached one
    /// refetches the v1 key once (the server may have rotated it).
    async fn verify_keys_signature(
        &self,
        t: &Transport,
        value: &HeaderValue,
        body: &[u8],
    ) -> Result<Arc<ServerKey>> {
        let refuse = |reason| Error::KeysSignature {
            origin: t.origin.clone(),
            reason,
        };
        let text = value
            .to_str()
            .map_err(|_| refuse(KeysSignatureError::Malformed("not ASCII")))?;
        let signature = KeysSignature::parse(text).map_err(refuse)?;
        let mut server = self.server_key(t).await?;
        if signature.key_fingerprint() != server.fingerprint() {
            if let Some(new) = self.refresh_server_key(t, &server).await? {
                // Without pins or a known-servers file nothing vouches for
                // a new signing key; once this client has verified a list
                // signed by the old one, another signer is refused.
                if matches!(new.trust(), TrustDecision::Unverified)
                    && self.signed_seen.load(Ordering::SeqCst)
                {
                    return Err(refuse(KeysSignatureError::WrongKey {
                        expected: server.fingerprint(),
                        found: signature.key_fingerprint(),
                    }));
                }
                server = new;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        signature
            .verify(server.public_key(), body, now)
            .map_err(refuse)?;
        Ok(server)
    }
}
