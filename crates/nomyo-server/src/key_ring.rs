//! The rotation logic both key stores share ([`crate::keystore`]: the v1 RSA
//! key; [`crate::hpke_keys`]: the v2 HPKE key sets): one current key (or set)
//! that is published, and the retired keys that still open requests until
//! their grace period ends, then are purged.
//!
//! A [`KeyRing`] is an immutable value: a rotation or a purge makes a new
//! ring, and [`SharedRing`] swaps it in whole under a lock, so that a
//! request holds one consistent ring (an `Arc`) for as long as it needs.
//! A purged key's memory is erased when the last request holding it lets go.
//!
//! # Time
//!
//! Grace periods are measured by [`now`], tokio's clock: outside a paused
//! tokio runtime that is [`Instant::now`]; in tests that pause it
//! (`#[tokio::test(start_paused = true)]`, `tokio::time::pause`) the grace
//! periods advance with the timers of the rotation schedule and of the
//! purge, so rotation, expiry and purge can be tested without waiting on
//! the wall clock. Lookups take the instant as an argument (request
//! handlers pass [`now`]).

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// Default time a rotated-out key still opens requests, for both stores
/// (`key_grace`, `[hpke] grace`). It must outlast a request sealed to the
/// old key just before the rotation: its body may take `body_timeout`
/// (60 s) to arrive and it may wait `queue_timeout` (10 s) for a slot, and a
/// replica that follows a key directory sees a rotation only at its next
/// reload; beyond that, a client with a stale key refetches it once.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// The instant key rings measure grace periods by: tokio's clock (see the
/// module documentation), as a `std` instant.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A retired key and the end of its grace period.
#[derive(Clone, Debug)]
struct Retired<K> {
    key: K,
    until: Instant,
}

/// The current key (or key set) `C` and the retired keys `K`, newest first.
#[derive(Clone, Debug)]
pub struct KeyRing<C, K> {
    current: C,
    retired: Vec<Retired<K>>,
}

impl<C: Clone, K: Clone> KeyRing<C, K> {
    /// A ring with `current` and nothing retired.
    pub fn new(current: C) -> Self {
        Self {
            current,
            retired: Vec::new(),
        }
    }

    /// The published key (or set).
    pub fn current(&self) -> &C {
        &self.current
    }

    /// The retired keys still in their grace period at `now`, newest first.
    pub fn in_grace(&self, now: Instant) -> impl Iterator<Item = &K> {
        self.retired
            .iter()
            .filter(move |r| r.until > now)
            .map(|r| &r.key)
    }

    /// Every retired key held, in or past its grace period (until purged),
    /// newest first.
    pub fn retired(&self) -> impl Iterator<Item = &K> {
        self.retired.iter().map(|r| &r.key)
    }

    /// How many retired keys are held (in or past their grace, until purged).
    pub fn retired_count(&self) -> usize {
        self.retired.len()
    }

    /// The ring after a rotation at `now`: `next` is current; `leaving`
    /// (the keys of the current one that are no longer published) open
    /// requests until `now + grace`; retired keys already past their grace
    /// at `now` are left out, and so is every retired key `keep` refuses.
    /// Returns the ring and how many keys `keep` refused.
    pub fn rotated(
        &self,
        next: C,
        leaving: impl IntoIterator<Item = K>,
        now: Instant,
        grace: Duration,
        mut keep: impl FnMut(&K) -> bool,
    ) -> (Self, usize) {
        let until = now + grace;
        let mut refused = 0;
        let retired = leaving
            .into_iter()
            .map(|key| Retired { key, until })
            .chain(self.retired.iter().filter(|r| r.until > now).cloned())
            .filter(|r| {
                let k = keep(&r.key);
                refused += usize::from(!k);
                k
            })
            .collect();
        (
            Self {
                current: next,
                retired,
            },
            refused,
        )
    }

    /// The ring without the retired keys whose grace period is over at
    /// `now`, and those keys; `None` when there are none.
    pub fn purged(&self, now: Instant) -> Option<(Self, Vec<K>)> {
        if self.retired.iter().all(|r| r.until > now) {
            return None;
        }
        let (kept, dropped): (Vec<_>, Vec<_>) =
            self.retired.iter().cloned().partition(|r| r.until > now);
        Some((
            Self {
                current: self.current.clone(),
                retired: kept,
            },
            dropped.into_iter().map(|r| r.key).collect(),
        ))
    }
}

/// A [`KeyRing`] behind a lock with its grace period: cheap snapshots (one
/// read lock and an `Arc` clone), rotations and purges swap the ring.
#[derive(Debug)]
pub struct SharedRing<C, K> {
    ring: RwLock<Arc<KeyRing<C, K>>>,
    grace: Duration,
}

impl<C: Clone, K: Clone> SharedRing<C, K> {
    /// A ring around `current`, retired keys getting [`DEFAULT_GRACE`].
    pub fn new(current: C) -> Self {
        Self {
            ring: RwLock::new(Arc::new(KeyRing::new(current))),
            grace: DEFAULT_GRACE,
        }
    }

    /// Sets how long a rotated-out key still opens requests.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The ring as of now.
    pub fn snapshot(&self) -> Arc<KeyRing<C, K>> {
        Arc::clone(&self.read())
    }

    /// Publishes `next` at [`now`]: `leaving` picks the keys of the current
    /// one that enter their grace period, `keep` the retired keys that stay
    /// (see [`KeyRing::rotated`]). Returns the ring it replaced and how many
    /// retired keys `keep` refused.
    pub fn rotate(
        &self,
        next: C,
        leaving: impl FnOnce(&C) -> Vec<K>,
        keep: impl FnMut(&K) -> bool,
    ) -> (Arc<KeyRing<C, K>>, usize) {
        let now = now();
        let mut g = self.write();
        let (ring, refused) = g.rotated(next, leaving(g.current()), now, self.grace, keep);
        let previous = std::mem::replace(&mut *g, Arc::new(ring));
        (previous, refused)
    }

    /// Drops the retired keys whose grace period is over at [`now`] and
    /// returns them (drop them soon: their memory is erased when the last
    /// reference goes). One read lock when there are none.
    pub fn purge_expired(&self) -> Vec<K> {
        let now = now();
        if self.read().purged(now).is_none() {
            return Vec::new();
        }
        let mut g = self.write();
        match g.purged(now) {
            Some((ring, dropped)) => {
                *g = Arc::new(ring);
                dropped
            }
            None => Vec::new(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Arc<KeyRing<C, K>>> {
        self.ring.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Arc<KeyRing<C, K>>> {
        self.ring.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ids<'a>(it: impl Iterator<Item = &'a u32>) -> Vec<u32> {
        it.copied().collect()
    }

    #[test]
    fn rotation_retires_the_leaving_keys_newest_first_until_their_grace_ends() {
        let t0 = Instant::now();
        let ring = KeyRing::<u32, u32>::new(1);
        let (ring, refused) = ring.rotated(2, [1], t0, 10 * S, |_| true);
        assert_eq!((ring.current(), refused), (&2, 0));
        let (ring, _) = ring.rotated(3, [2], t0 + 4 * S, 10 * S, |_| true);
        assert_eq!(ids(ring.in_grace(t0 + 4 * S)), vec![2, 1]);
        // 1 expires at t0 + 10 s (not usable at that instant), 2 at t0 + 14 s.
        assert_eq!(ids(ring.in_grace(t0 + 10 * S)), vec![2]);
        assert_eq!(ids(ring.in_grace(t0 + 14 * S)), Vec::<u32>::new());
        // Held until purged.
        assert_eq!(ids(ring.retired()), vec![2, 1]);
        assert_eq!(ring.retired_count(), 2);
        // A rotation leaves out keys already past their grace.
        let (later, _) = ring.rotated(4, [3], t0 + 11 * S, 10 * S, |_| true);
        assert_eq!(ids(later.retired()), vec![3, 2]);
    }

    #[test]
    fn keep_drops_retired_keys_and_counts_them() {
        let t0 = Instant::now();
        let ring = KeyRing::<u32, u32>::new(1);
        let (ring, _) = ring.rotated(2, [10, 11], t0, 10 * S, |_| true);
        let (ring, refused) = ring.rotated(3, [20, 21], t0, 10 * S, |k| *k != 11);
        assert_eq!(refused, 1);
        assert_eq!(ids(ring.in_grace(t0)), vec![20, 21, 10]);
    }

    #[test]
    fn purge_drops_exactly_the_expired_keys() {
        let t0 = Instant::now();
        let ring = KeyRing::<u32, u32>::new(1);
        let (ring, _) = ring.rotated(2, [1], t0, 5 * S, |_| true);
        let (ring, _) = ring.rotated(3, [2], t0 + 2 * S, 5 * S, |_| true);
        assert!(ring.purged(t0 + 4 * S).is_none(), "nothing expired yet");
        let (ring, dropped) = ring.purged(t0 + 5 * S).unwrap();
        assert_eq!((dropped, ids(ring.retired())), (vec![1], vec![2]));
        assert_eq!(ring.current(), &3);
        let (ring, dropped) = ring.purged(t0 + 7 * S).unwrap();
        assert_eq!((dropped, ring.retired_count()), (vec![2], 0));
        assert!(ring.purged(t0 + 100 * S).is_none());
    }

    #[test]
    fn zero_grace_retires_nothing_usable() {
        let t0 = Instant::now();
        let (ring, _) = KeyRing::<u32, u32>::new(1).rotated(2, [1], t0, Duration::ZERO, |_| true);
        assert_eq!(ring.in_grace(t0).count(), 0);
        assert_eq!(ring.purged(t0).unwrap().1, vec![1]);
    }

    /// The shared ring's grace runs on tokio's clock: a paused clock
    /// advanced past it expires and purges, without waiting.
    #[tokio::test(start_paused = true)]
    async fn shared_ring_grace_follows_the_paused_tokio_clock() {
        assert_eq!(SharedRing::<u32, u32>::new(1).grace(), DEFAULT_GRACE);
        let shared = SharedRing::<u32, u32>::new(1).with_grace(60 * S);
        assert_eq!(shared.grace(), 60 * S);
        let (previous, _) = shared.rotate(2, |old| vec![*old], |_| true);
        assert_eq!(previous.current(), &1);
        let snap = shared.snapshot();
        assert_eq!(ids(snap.in_grace(now())), vec![1]);
        tokio::time::advance(59 * S).await;
        assert_eq!(shared.purge_expired(), Vec::<u32>::new());
        assert_eq!(ids(snap.in_grace(now())), vec![1]);
        tokio::time::advance(S).await;
        assert_eq!(ids(snap.in_grace(now())), Vec::<u32>::new());
        assert_eq!(shared.purge_expired(), vec![1]);
        assert_eq!(shared.snapshot().retired_count(), 0);
        // The snapshot taken before still holds what it held.
        assert_eq!(snap.retired_count(), 1);
    }
}
