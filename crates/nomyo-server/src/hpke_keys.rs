//! The server's HPKE key set for protocol v2 (PROTOCOL.md, "v2"): one
//! X25519 config (the EHBP reference suite, published first because EHBP
//! clients read only the first config) and one X-Wing config (post-quantum).
//!
//! The set is generated in memory at start (a first request never waits for
//! key generation: both KEMs generate in well under a millisecond), or loaded
//! from / saved to the server's key directory ([`HpkeKeySet::load_or_generate`],
//! `hpke_x25519.key` and `hpke_xwing.key`: the raw 32-byte private keys,
//! mode 0600, written atomically) so that clients' cached configs survive a
//! restart.

use std::path::Path;
use std::sync::Arc;

use nomyo_core::v2::keys::{Kem, KeyConfig, ServerKeyPair};
use nomyo_core::SecretBuf;

/// `key_id` of the X25519 config at start.
pub const X25519_KEY_ID: u8 = 0;
/// `key_id` of the X-Wing config at start.
pub const XWING_KEY_ID: u8 = 1;

/// File of the X25519 private key in the key directory.
pub const X25519_KEY_FILE: &str = "hpke_x25519.key";
/// File of the X-Wing private key (its 32-byte seed) in the key directory.
pub const XWING_KEY_FILE: &str = "hpke_xwing.key";

/// The current HPKE key pairs, X25519 first. `Debug` shows configs only.
#[derive(Debug, Clone)]
pub struct HpkeKeySet {
    keys: Vec<Arc<ServerKeyPair>>,
    encoded: Arc<Vec<u8>>,
}

impl HpkeKeySet {
    /// A fresh X25519 key (id 0) and a fresh X-Wing key (id 1).
    pub fn generate() -> Self {
        Self::from_pairs(vec![
            ServerKeyPair::generate(X25519_KEY_ID, Kem::X25519),
            ServerKeyPair::generate(XWING_KEY_ID, Kem::XWing),
        ])
    }

    /// A set from existing pairs, in publication order (put X25519 first:
    /// EHBP clients read only the first config). Key ids must be distinct;
    /// the first pair with a given id wins.
    pub fn from_pairs(pairs: Vec<ServerKeyPair>) -> Self {
        let keys: Vec<Arc<ServerKeyPair>> = pairs.into_iter().map(Arc::new).collect();
        let configs: Vec<KeyConfig> = keys.iter().map(|k| k.config().clone()).collect();
        Self {
            encoded: Arc::new(KeyConfig::encode_list(&configs)),
            keys,
        }
    }

    /// Loads the two keys from `dir`, or generates the missing ones and saves
    /// them there (0600). Returns the set and whether anything was generated.
    /// Errors name the file, never its content. Blocking.
    pub fn load_or_generate(dir: &Path) -> Result<(Self, bool), String> {
        let mut generated = false;
        let mut pairs = Vec::with_capacity(2);
        for (file, key_id, kem) in [
            (X25519_KEY_FILE, X25519_KEY_ID, Kem::X25519),
            (XWING_KEY_FILE, XWING_KEY_ID, Kem::XWing),
        ] {
            let path = dir.join(file);
            let pair = if path.exists() {
                let bytes = SecretBuf::from_slice(
                    &std::fs::read(&path)
                        .map_err(|e| format!("reading {}: {e}", path.display()))?,
                );
                ServerKeyPair::from_secret_bytes(key_id, kem, bytes.expose_secret())
                    .map_err(|_| format!("{} is not a valid {kem} private key", path.display()))?
            } else {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                let pair = ServerKeyPair::generate(key_id, kem);
                nomyo_core::keys::write_atomic(&path, pair.secret_bytes().expose_secret(), 0o600)
                    .map_err(|e| format!("writing {}: {e}", path.display()))?;
                generated = true;
                pair
            };
            pairs.push(pair);
        }
        Ok((Self::from_pairs(pairs), generated))
    }

    /// The `application/ohttp-keys` body: every config, in order.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// The key with this `key_id`.
    pub fn by_id(&self, key_id: u8) -> Option<&Arc<ServerKeyPair>> {
        self.keys.iter().find(|k| k.key_id() == key_id)
    }

    /// The first key of this KEM (selection by `enc` length).
    pub fn by_kem(&self, kem: Kem) -> Option<&Arc<ServerKeyPair>> {
        self.keys.iter().find(|k| k.kem() == kem)
    }

    /// The published configs, in order.
    pub fn configs(&self) -> Vec<KeyConfig> {
        self.keys.iter().map(|k| k.config().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x25519_first_then_xwing() {
        let set = HpkeKeySet::generate();
        let parsed = KeyConfig::parse_list(set.encoded()).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!((parsed[0].key_id, parsed[0].kem), (0, Kem::X25519));
        assert_eq!((parsed[1].key_id, parsed[1].kem), (1, Kem::XWing));
        assert_eq!(set.by_id(1).unwrap().kem(), Kem::XWing);
        assert!(set.by_id(7).is_none());
        assert_eq!(set.by_kem(Kem::X25519).unwrap().key_id(), 0);
    }

    #[test]
    fn saved_0600_and_reloaded_identically() {
        let dir = std::env::temp_dir().join(format!(
            "nomyo-hpke-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let (a, generated) = HpkeKeySet::load_or_generate(&dir).unwrap();
        assert!(generated);
        #[cfg(unix)]
        for f in [X25519_KEY_FILE, XWING_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let (b, generated) = HpkeKeySet::load_or_generate(&dir).unwrap();
        assert!(!generated);
        assert_eq!(a.encoded(), b.encoded());
        std::fs::write(dir.join(XWING_KEY_FILE), b"short").unwrap();
        let err = HpkeKeySet::load_or_generate(&dir).unwrap_err();
        assert!(err.contains(XWING_KEY_FILE), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
