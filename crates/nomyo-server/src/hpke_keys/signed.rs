//! The published key list signed by the server's v1 RSA key
//! (`Nomyo-Keys-Signature`, docs/PROTOCOL.md §5.4).

use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;
use nomyo_core::keys::PrivateKey;
use nomyo_core::keys_signature::{KeysSignature, Validity, MAX_VALIDITY_SECS};
use nomyo_core::Fingerprint;

use super::HpkeKeySet;

/// The published key list with its signature by the server's v1 RSA key
/// (`Nomyo-Keys-Signature`, [`nomyo_core::keys_signature`]): clients that
/// trust the v1 key (pinned or recorded) thereby trust every rotation of
/// the HPKE keys. Made once per (key list, RSA key) pair, and again when
/// half of its validity window has passed (never per request); `Debug`
/// shows the signer only.
pub struct SignedKeyList {
    body: Bytes,
    signer: Fingerprint,
    validity: Validity,
    header: HeaderValue,
}

/// Seconds since the Unix epoch, by this machine's clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SignedKeyList {
    /// Signs `set`'s `application/ohttp-keys` body with `key` (RSA-PSS;
    /// about a millisecond for RSA-4096: run it on a blocking thread), valid
    /// from now for `lifetime` (the rotation period plus the grace period;
    /// at least an hour, at most 31 days).
    pub fn sign(set: &HpkeKeySet, key: &PrivateKey, lifetime: Duration) -> Result<Self, String> {
        let now = unix_now();
        let secs = lifetime.as_secs().clamp(3600, MAX_VALIDITY_SECS);
        let validity = Validity::new(now, now.saturating_add(secs))
            .ok_or_else(|| "the key list's validity window is out of range".to_owned())?;
        let sig = KeysSignature::sign(key, set.encoded(), validity)
            .map_err(|_| "signing the HPKE key list failed".to_owned())?;
        let header = HeaderValue::from_str(&sig.to_header_value())
            .map_err(|_| "the key-list signature is not a valid header value".to_owned())?;
        Ok(Self {
            body: Bytes::copy_from_slice(set.encoded()),
            signer: sig.key_fingerprint(),
            validity,
            header,
        })
    }

    /// The window the signature covers.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// Whether less than half of the validity window has passed at `now`
    /// (a list past that is signed again, well before clients refuse it).
    pub fn fresh_at(&self, now: u64) -> bool {
        let v = self.validity;
        now < v.not_before() + (v.not_after() - v.not_before()) / 2
    }

    /// Whether the background renewal should sign the list again at `now`:
    /// 40 % of the window has passed, ahead of the half-way point after
    /// which a fetch would sign it itself, so no fetch waits for RSA.
    pub fn renewal_due_at(&self, now: u64) -> bool {
        let v = self.validity;
        now >= v.not_before() + (v.not_after() - v.not_before()) * 2 / 5
    }

    /// The body as served (exactly the signed bytes).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Fingerprint of the RSA key that signed it.
    pub fn signer(&self) -> Fingerprint {
        self.signer
    }

    /// The `Nomyo-Keys-Signature` header value.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether this is a fresh signature of `set` by the key `signer`.
    pub fn is_for(&self, set: &HpkeKeySet, signer: Fingerprint) -> bool {
        self.signer == signer && self.body.as_ref() == set.encoded() && self.fresh_at(unix_now())
    }
}

impl std::fmt::Debug for SignedKeyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedKeyList")
            .field("signer", &self.signer)
            .field("validity", &self.validity)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_background_renewal_comes_before_a_fetch_would_sign() {
        let key = nomyo_core::keys::PrivateKey::generate(nomyo_core::keys::RsaBits::B2048).unwrap();
        let signed =
            SignedKeyList::sign(&HpkeKeySet::generate(), &key, Duration::from_secs(10_000))
                .unwrap();
        let nbf = signed.validity().not_before();
        assert!(!signed.renewal_due_at(nbf + 3_999));
        // Due at 40 %, while a fetch still serves it as fresh (until 50 %).
        assert!(signed.renewal_due_at(nbf + 4_000));
        assert!(signed.fresh_at(nbf + 4_000));
        assert!(signed.fresh_at(nbf + 4_999));
        assert!(!signed.fresh_at(nbf + 5_000));
    }
}
