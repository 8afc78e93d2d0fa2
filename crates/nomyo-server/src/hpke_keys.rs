//! The server's HPKE keys for protocol v2 (docs/PROTOCOL.md §4.2, §6): one X25519
//! config (the EHBP reference suite, published first because EHBP clients
//! read only the first config) and one X-Wing config (post-quantum), and
//! their rotation.
//!
//! # Rotation and forward secrecy
//!
//! [`HpkeKeyStore::rotate`] generates a new pair of keys with new key ids and
//! publishes them at once; the previous pair still opens requests for the
//! grace period (a client may have sealed to it just before), then
//! [`HpkeKeyStore::purge_expired`] drops it ([`crate::key_ring`], shared
//! with the v1 RSA key). Dropping the last reference
//! erases the private key: the `hpke` crate's private keys wrap
//! `x25519_dalek::StaticSecret` and `x_wing::DecapsulationKey`, both
//! zeroize-on-drop (the crate enables their `zeroize` features). A request
//! for a dropped key id gets 422 and the client refetches the keys.
//!
//! Key ids are `u8`. Each rotation takes the next ids after the last ones
//! handed out, skipping any id still live (current or in grace), so an id
//! comes back only after 128 rotations, and a live id never.
//!
//! # On disk
//!
//! With a key directory (`hpke_keys.key`, mode 0600) the current pair is
//! saved so that clients' cached configs survive a restart. A rotation
//! replaces the file atomically with the new keys only (the retired keys,
//! still in memory for the grace period, are never written again); the old
//! file's content is overwritten with zeros before it is unlinked (best
//! effort: a journaling or copy-on-write file system or an SSD may keep old
//! blocks). The file format (parse, encode, its checks) is
//! [`nomyo_core::v2::key_file`]'s; the submodule `file` reads and writes it
//! (permissions, locked memory, atomic replacement), `store` rotates, and
//! `signed` signs the published list.
//!
//! The set is generated in memory at start when there is no key directory;
//! both KEMs generate in well under a millisecond.
//!
//! # Signed key lists
//!
//! Clients cannot pin or record keys that change every day, so the server's
//! long-lived v1 RSA key signs each published list ([`SignedKeyList`],
//! header `Nomyo-Keys-Signature`, [`nomyo_core::keys_signature`]); a client
//! that trusts the v1 key accepts every list it signed within the
//! signature's validity window. The signature is made once per key list
//! and RSA key (at start, after each rotation of either) and again when
//! half of its window has passed, never per request.

use std::sync::Arc;
use std::time::Duration;

use nomyo_core::v2::keys::{Kem, KeyConfig, ServerKeyPair};

mod file;
mod signed;
mod store;

pub use crate::key_ring::DEFAULT_GRACE;
pub use signed::{unix_now, SignedKeyList};
pub use store::{HpkeKeyStore, HpkeSnapshot, Rotation};

/// The key file in the key directory.
pub const KEY_FILE: &str = "hpke_keys.key";
/// The replay journal's default name in the key directory
/// ([`crate::replay_journal`]).
pub const REPLAY_JOURNAL_FILE: &str = crate::replay_journal::DEFAULT_FILE;

/// Default interval between rotations.
pub const DEFAULT_ROTATE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// A set of HPKE key pairs, X25519 first. `Debug` shows configs only.
#[derive(Debug, Clone)]
pub struct HpkeKeySet {
    keys: Vec<Arc<ServerKeyPair>>,
    encoded: Arc<Vec<u8>>,
}

impl HpkeKeySet {
    /// A fresh X25519 key and a fresh X-Wing key, with random adjacent key
    /// ids (an even id and the next one), so that sets made independently
    /// (a re-made key set, replicas that were not given one) rarely share an
    /// id: a client holding a stale config then gets 422 and refetches,
    /// instead of having its request tried against a different key.
    pub fn generate() -> Self {
        Self::generate_avoiding(&[])
    }

    /// Like [`Self::generate`], with ids none of which is in `used` (the
    /// ids of the set this one replaces, so that its clients get 422).
    pub fn generate_avoiding(used: &[u8]) -> Self {
        let free = |b: u8| !used.contains(&b) && !used.contains(&(b + 1));
        let start = rand::random::<u8>() & 0xFE;
        let base = (0..128u16)
            .map(|i| start.wrapping_add((i * 2) as u8))
            .find(|&b| free(b))
            .unwrap_or(start);
        Self::generate_with_ids(base, base + 1)
    }

    fn generate_with_ids(x25519: u8, xwing: u8) -> Self {
        Self::from_pairs(vec![
            ServerKeyPair::generate(x25519, Kem::X25519),
            ServerKeyPair::generate(xwing, Kem::XWing),
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

    /// The key ids, in order.
    pub fn key_ids(&self) -> Vec<u8> {
        self.keys.iter().map(|k| k.key_id()).collect()
    }

    /// `key_id`s and fingerprints, for logs.
    fn describe(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("{}#{} {}", k.kem(), k.key_id(), k.config().fingerprint()))
            .collect::<Vec<_>>()
            .join(", ")
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
        let x = parsed[0].key_id;
        assert_eq!(x % 2, 0, "an even id, then the next one");
        assert_eq!((parsed[0].key_id, parsed[0].kem), (x, Kem::X25519));
        assert_eq!((parsed[1].key_id, parsed[1].kem), (x + 1, Kem::XWing));
        assert_eq!(set.by_id(x + 1).unwrap().kem(), Kem::XWing);
        assert!(set.by_id(x.wrapping_add(7)).is_none());
        assert_eq!(set.by_kem(Kem::X25519).unwrap().key_id(), x);
    }

    #[test]
    fn fresh_sets_get_random_ids_that_avoid_the_replaced_ones() {
        let firsts: std::collections::HashSet<u8> = (0..16)
            .map(|_| HpkeKeySet::generate().key_ids()[0])
            .collect();
        assert!(firsts.len() > 1, "ids are not random: {firsts:?}");
        for _ in 0..64 {
            let old = HpkeKeySet::generate();
            let new = HpkeKeySet::generate_avoiding(&old.key_ids());
            for id in new.key_ids() {
                assert!(!old.key_ids().contains(&id));
            }
        }
        // Every pair but one taken: that one is found.
        let used: Vec<u8> = (0..=255u8).filter(|&i| i != 200 && i != 201).collect();
        assert_eq!(
            HpkeKeySet::generate_avoiding(&used).key_ids(),
            vec![200, 201]
        );
    }
}
