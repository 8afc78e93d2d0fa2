//! The server's HPKE key set for protocol v2 (PROTOCOL.md, "v2"): one
//! X25519 config (the EHBP reference suite, published first because EHBP
//! clients read only the first config) and one X-Wing config (post-quantum).
//!
//! The set is generated in memory at start (a first request never waits for
//! key generation: both KEMs generate in well under a millisecond).

use std::sync::Arc;

use nomyo_core::v2::keys::{Kem, KeyConfig, ServerKeyPair};

/// `key_id` of the X25519 config at start.
pub const X25519_KEY_ID: u8 = 0;
/// `key_id` of the X-Wing config at start.
pub const XWING_KEY_ID: u8 = 1;

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
}
