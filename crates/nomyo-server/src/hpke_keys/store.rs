//! The HPKE keys that open requests, and their rotation: a
//! [`crate::key_ring`] whose current entry is a key set and whose retired
//! entries are single keys, with key ids that are never reused while live.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nomyo_core::v2::keys::{Kem, ServerKeyPair};
use nomyo_core::Fingerprint;

use super::{HpkeKeySet, KEY_FILE};
use crate::key_ring::{now, KeyRing, SharedRing};

/// What handlers see: the published set ([`KeyRing::current`]) and the
/// retired keys in grace.
pub type HpkeSnapshot = KeyRing<HpkeKeySet, Arc<ServerKeyPair>>;

impl HpkeSnapshot {
    /// The key with this id that may open a request at `now` (pass
    /// [`crate::key_ring::now`]): a current key, or a retired one still in
    /// its grace period.
    pub fn by_id(&self, key_id: u8, now: Instant) -> Option<Arc<ServerKeyPair>> {
        self.current().by_id(key_id).cloned().or_else(|| {
            self.in_grace(now)
                .find(|k| k.key_id() == key_id)
                .map(Arc::clone)
        })
    }

    /// Every key of this KEM that may open a request at `now`: the current
    /// one first, then the retired ones in grace, newest first.
    pub fn by_kem(&self, kem: Kem, now: Instant) -> Vec<Arc<ServerKeyPair>> {
        let current = self.current().keys.iter().filter(|k| k.kem() == kem);
        let retired = self.in_grace(now).filter(|k| k.kem() == kem);
        current.chain(retired).cloned().collect()
    }

    /// Whether `key_id` is current or retired (in or past its grace, until
    /// purged).
    fn is_live(&self, key_id: u8) -> bool {
        self.current().by_id(key_id).is_some() || self.retired().any(|k| k.key_id() == key_id)
    }
}

/// Two key ids that are not live, trying `next`, `next + 1`, ... (wrapping),
/// and the id to start from next time.
fn next_free_ids(snapshot: &HpkeSnapshot, mut next: u8) -> Option<([u8; 2], u8)> {
    let mut ids = [0u8; 2];
    let mut found = 0;
    for _ in 0..=u8::MAX {
        let id = next;
        next = next.wrapping_add(1);
        if !snapshot.is_live(id) {
            ids[found] = id;
            found += 1;
            if found == 2 {
                return Some((ids, next));
            }
        }
    }
    None
}

/// The outcome of a rotation, for logs and tests.
#[derive(Clone, Debug)]
pub struct Rotation {
    /// The new key ids (X25519, X-Wing).
    pub key_ids: Vec<u8>,
    /// Fingerprints of the new configs, in order.
    pub fingerprints: Vec<Fingerprint>,
    /// The key ids now in grace.
    pub retired_ids: Vec<u8>,
}

#[derive(Debug)]
struct Ids {
    /// The next key id to try.
    next: u8,
    /// When the current keys were made, by [`now`] (for the first
    /// scheduled rotation after a restart with saved keys).
    born: Instant,
}

/// The HPKE keys that open requests, and their rotation. Cheap lookups (one
/// read lock and an `Arc` clone); rotation and purging swap the snapshot.
#[derive(Debug)]
pub struct HpkeKeyStore {
    ring: SharedRing<HpkeKeySet, Arc<ServerKeyPair>>,
    ids: Mutex<Ids>,
    /// Saved here after each rotation, if set.
    dir: Option<PathBuf>,
    /// One rotation at a time (the file write happens under it).
    rotating: Mutex<()>,
}

impl HpkeKeyStore {
    /// A store around `current`, kept in memory only; retired keys get
    /// [`super::DEFAULT_GRACE`].
    pub fn new(current: HpkeKeySet) -> Self {
        let next = current
            .key_ids()
            .into_iter()
            .max()
            .unwrap_or(0)
            .wrapping_add(1);
        Self {
            ring: SharedRing::new(current),
            ids: Mutex::new(Ids { next, born: now() }),
            dir: None,
            rotating: Mutex::new(()),
        }
    }

    /// Saves every rotation's keys to `dir` (the set given to [`Self::new`]
    /// must already be saved there, e.g. by [`HpkeKeySet::load_or_generate`]).
    pub fn with_dir(mut self, dir: PathBuf) -> Self {
        self.dir = Some(dir);
        self
    }

    /// How long a rotated-out key still opens requests.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.ring = self.ring.with_grace(grace);
        self
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.ring.grace()
    }

    /// The current keys are already this old (saved keys loaded at start:
    /// the age of their file), so that a server restarted more often than
    /// it rotates still rotates on time.
    pub fn with_age(self, age: Duration) -> Self {
        {
            let mut ids = self.ids();
            ids.born = now().checked_sub(age).unwrap_or(ids.born);
        }
        self
    }

    /// How long ago the current keys were made.
    pub fn current_age(&self) -> Duration {
        now().saturating_duration_since(self.ids().born)
    }

    /// The keys as of now.
    pub fn snapshot(&self) -> Arc<HpkeSnapshot> {
        self.ring.snapshot()
    }

    /// The published set.
    pub fn current(&self) -> HpkeKeySet {
        self.snapshot().current().clone()
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Generates new keys with new ids, saves them (if the store has a
    /// directory) and publishes them; the previous ones enter their grace
    /// period. If saving fails nothing changes. Blocking (file I/O).
    pub fn rotate(&self) -> Result<Rotation, String> {
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.ids().next;
        let (ids, next) = next_free_ids(&self.snapshot(), next)
            .ok_or("no free HPKE key id: too many keys in their grace period")?;
        let set = HpkeKeySet::generate_with_ids(ids[0], ids[1]);
        if let Some(dir) = &self.dir {
            set.save(&dir.join(KEY_FILE))?;
        }
        let rotation = self.install(set, "rotated");
        self.ids().next = next;
        Ok(rotation)
    }

    /// Follows the key file another process (a replica that rotates, or an
    /// operator) wrote: if `dir/hpke_keys.key` holds other keys than the
    /// current ones, they become current and the previous ones enter their
    /// grace period. `None` when nothing changed (or the store has no
    /// directory). Never writes. Blocking (file I/O).
    pub fn reload(&self) -> Result<Option<Rotation>, String> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let _one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        let Some(set) = HpkeKeySet::load(dir)? else {
            return Ok(None);
        };
        if set.encoded() == self.current().encoded() {
            return Ok(None);
        }
        let next = set.key_ids().into_iter().max().unwrap_or(0).wrapping_add(1);
        let rotation = self.install(set, "reloaded from the key file");
        self.ids().next = next;
        Ok(Some(rotation))
    }

    /// Publishes `set`; the current keys enter their grace period.
    fn install(&self, set: HpkeKeySet, how: &'static str) -> Rotation {
        let new_ids = set.key_ids();
        let rotation = Rotation {
            key_ids: new_ids.clone(),
            fingerprints: set.keys.iter().map(|k| k.config().fingerprint()).collect(),
            retired_ids: Vec::new(),
        };
        let described = set.describe();
        // A key set made elsewhere (reloaded) may reuse an id still in its
        // grace period: lookups by id find the new key first, so the old one
        // could never open anything again. Drop it now and say so.
        let (previous, shadowed) = self.ring.rotate(
            set,
            |old| old.keys.clone(),
            |k| !new_ids.contains(&k.key_id()),
        );
        self.ids().born = now();
        if shadowed > 0 {
            tracing::warn!(
                dropped = shadowed,
                new_ids = ?new_ids,
                "the new HPKE keys reuse key ids still in their grace period: clients holding the old configs get 400 until they refetch (make key sets with `nomyo keygen --server --force` on the old directory, which avoids its ids)"
            );
        }
        let rotation = Rotation {
            retired_ids: previous.current().key_ids(),
            ..rotation
        };
        tracing::info!(
            keys = %described,
            retired = ?rotation.retired_ids,
            grace_ms = u64::try_from(self.grace().as_millis()).unwrap_or(u64::MAX),
            saved = self.dir.is_some(),
            "HPKE keys {how}"
        );
        rotation
    }

    /// Drops the retired keys whose grace period is over; their private keys
    /// are erased once the last in-flight request using them lets go.
    /// Returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        let dropped: Vec<u8> = self
            .ring
            .purge_expired()
            .iter()
            .map(|k| k.key_id())
            .collect();
        if !dropped.is_empty() {
            tracing::info!(key_ids = ?dropped, "retired HPKE keys dropped after their grace period");
        }
        dropped.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nomyo_core::v2::keys::KeyConfig;

    #[test]
    fn reloading_a_set_that_reuses_ids_in_grace_drops_the_shadowed_keys() {
        let store = HpkeKeyStore::new(HpkeKeySet::generate_with_ids(10, 11))
            .with_grace(Duration::from_secs(60));
        store.install(HpkeKeySet::generate_with_ids(20, 21), "test");
        // Made elsewhere with an id still in grace (11).
        store.install(HpkeKeySet::generate_with_ids(11, 12), "test");
        let snap = store.snapshot();
        let now = now();
        assert_eq!(
            snap.by_id(11, now).unwrap().kem(),
            Kem::X25519,
            "the new key"
        );
        assert!(snap.by_id(10, now).is_some() && snap.by_id(20, now).is_some());
        assert_eq!(
            snap.by_kem(Kem::XWing, now)
                .iter()
                .map(|k| k.key_id())
                .collect::<Vec<_>>(),
            vec![12, 21],
            "the shadowed X-Wing key 11 is gone"
        );
    }

    #[test]
    fn rotation_publishes_new_ids_keeps_old_in_grace_then_drops_and_erases() {
        let store = HpkeKeyStore::new(HpkeKeySet::generate_with_ids(0, 1))
            .with_grace(Duration::from_secs(60));
        let old = store.current();
        let old_x = Arc::downgrade(old.by_id(0).unwrap());
        let r = store.rotate().unwrap();
        assert_eq!(r.key_ids, vec![2, 3]);
        assert_eq!(r.retired_ids, vec![0, 1]);
        let snap = store.snapshot();
        let parsed = KeyConfig::parse_list(snap.current().encoded()).unwrap();
        assert_eq!((parsed[0].key_id, parsed[0].kem), (2, Kem::X25519));
        assert_eq!((parsed[1].key_id, parsed[1].kem), (3, Kem::XWing));
        assert_eq!(r.fingerprints[0], parsed[0].fingerprint());
        // In grace: the old ids still open, the current key is tried first.
        let t0 = now();
        assert!(snap.by_id(0, t0).is_some() && snap.by_id(1, t0).is_some());
        let xs: Vec<u8> = snap
            .by_kem(Kem::X25519, t0)
            .iter()
            .map(|k| k.key_id())
            .collect();
        assert_eq!(xs, vec![2, 0]);
        // Past the grace (as seen by a lookup): not usable any more.
        let later = t0 + Duration::from_secs(61);
        assert!(snap.by_id(0, later).is_none());
        assert_eq!(snap.by_kem(Kem::X25519, later).len(), 1);
        drop((snap, old));
        assert!(old_x.upgrade().is_some(), "still in grace: kept");
        // A store with zero grace drops them at the first purge.
        let store =
            HpkeKeyStore::new(HpkeKeySet::generate_with_ids(0, 1)).with_grace(Duration::ZERO);
        let weak = Arc::downgrade(store.current().by_id(1).unwrap());
        store.rotate().unwrap();
        assert_eq!(store.purge_expired(), 2);
        assert!(store.snapshot().by_id(1, now()).is_none());
        // The last reference is gone: the private key was dropped, hence zeroized.
        assert!(weak.upgrade().is_none());
        assert_eq!(store.purge_expired(), 0);
    }

    /// A snapshot whose live ids are `current` and `retired` (X25519 keys:
    /// X-Wing key generation is slow in unoptimised test builds).
    fn snapshot_with(current: [u8; 2], retired: &[u8]) -> HpkeSnapshot {
        let set = HpkeKeySet::from_pairs(
            current
                .iter()
                .map(|&id| ServerKeyPair::generate(id, Kem::X25519))
                .collect(),
        );
        let retired = retired
            .iter()
            .map(|&id| Arc::new(ServerKeyPair::generate(id, Kem::X25519)));
        KeyRing::new(set.clone())
            .rotated(set, retired, now(), Duration::from_secs(3600), |_| true)
            .0
    }

    #[test]
    fn key_ids_never_reuse_a_live_id_and_wrap() {
        // Counting on from the last ids handed out.
        let s = snapshot_with([0, 1], &[]);
        assert_eq!(next_free_ids(&s, 2), Some(([2, 3], 4)));
        // Wrapping past 255, skipping the live ids.
        let s = snapshot_with([254, 255], &[0, 2]);
        assert_eq!(next_free_ids(&s, 254), Some(([1, 3], 4)));
        // Every id but one live: no pair to hand out, so no reuse.
        let all_but_7: Vec<u8> = (2..=255).filter(|&i| i != 7).collect();
        let s = snapshot_with([0, 1], &all_but_7);
        assert_eq!(next_free_ids(&s, 0), None);
        // Real rotations: successive ids, never one that is live.
        let store = HpkeKeyStore::new(HpkeKeySet::generate_with_ids(0, 1))
            .with_grace(Duration::from_secs(3600));
        let mut seen = std::collections::HashSet::from([0u8, 1]);
        for _ in 0..3 {
            let r = store.rotate().unwrap();
            for id in r.key_ids {
                assert!(seen.insert(id), "id {id} reused while live");
            }
        }
        assert_eq!(store.current().key_ids(), vec![6, 7]);
    }
}
