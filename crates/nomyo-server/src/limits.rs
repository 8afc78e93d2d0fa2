//! Limits: the configured numbers, the concurrency gate with its bounded
//! queue, and the replay window.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::policy::RateKey;

/// The server's numeric limits. `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted (413 above). The reference client's
    /// 10 MiB plaintext limit is about 13.4 MiB as a base64 package.
    pub max_body_bytes: usize,
    /// Requests processed at once on the secure route.
    pub max_concurrency: usize,
    /// Requests that may wait for a slot; beyond that, 503 at once.
    pub max_queue: usize,
    /// Longest wait for a slot before 503.
    pub queue_timeout: Duration,
    /// Longest a whole secure request may take (504).
    pub request_timeout: Duration,
    /// Longest the body may take to arrive (408).
    pub body_timeout: Duration,
    /// Most request-body bytes held in memory at once, over all requests
    /// being read or waiting to be opened (bodies are read before a
    /// processing slot is taken); a request that would exceed it gets 503.
    pub max_buffered_body_bytes: usize,
    /// Requests per minute per API key (0 = no limit).
    pub rate_per_minute: u32,
    /// Burst size for the rate limit (0 = same as the per-minute rate).
    pub rate_burst: u32,
    /// How long an `X-Payload-ID` (and the package itself) stays used.
    pub replay_window: Duration,
    /// Most ids remembered; when full, new requests get 503 until old ones expire.
    pub replay_capacity: usize,
    /// The largest share of `replay_capacity`, in percent, that one caller
    /// (an API key; an anonymous caller's address, IPv6 per /64) may hold;
    /// beyond it that caller gets 429 while others are served.
    pub replay_share_percent: u8,
    /// A streamed answer whose backend produces nothing for this long is cut.
    pub stream_idle_timeout: Duration,
    /// A streamed answer whose client reads nothing for this long is cut
    /// (its processing slot is given back).
    pub stream_write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_concurrency: 64,
            max_queue: 256,
            queue_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(60),
            max_buffered_body_bytes: 256 * 1024 * 1024,
            rate_per_minute: 0,
            rate_burst: 0,
            replay_window: Duration::from_secs(900),
            replay_capacity: 500_000,
            replay_share_percent: 25,
            stream_idle_timeout: Duration::from_secs(120),
            stream_write_timeout: Duration::from_secs(30),
        }
    }
}

/// At most `max_concurrency` requests run; at most `max_queue` wait (each at
/// most `queue_timeout`); anyone else gets 503 at once.
#[derive(Debug)]
pub struct ConcurrencyGate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queue: usize,
    queue_timeout: Duration,
}

/// Decrements the waiting count however the wait ends (also on cancellation).
struct Waiting<'a>(&'a AtomicUsize);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConcurrencyGate {
    /// A gate for these limits.
    pub fn new(limits: &Limits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_queue: limits.max_queue,
            queue_timeout: limits.queue_timeout,
        }
    }

    /// Requests waiting for a slot now.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Slots in use now.
    pub fn in_flight(&self, max: usize) -> usize {
        max.max(1) - self.slots.available_permits()
    }

    /// Takes a slot, waiting in the bounded queue if needed.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(p);
        }
        // Reserve a place in the queue or refuse at once.
        let mut cur = self.waiting.load(Ordering::Relaxed);
        loop {
            if cur >= self.max_queue {
                return Err(ApiError::Saturated);
            }
            match self.waiting.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let _w = Waiting(&self.waiting);
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned())
            .await
        {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_closed)) => Err(ApiError::Saturated),
            Err(_elapsed) => Err(ApiError::Saturated),
        }
    }
}

/// A 32-byte replay key: SHA-256 of the `X-Payload-ID` or of the package's
/// nonce, tag and wrapped key.
pub type ReplayKey = [u8; 32];

#[derive(Debug, Default)]
struct ReplayInner {
    /// Each entry: when it expires, and who claimed it (`None`: restored
    /// from the journal at start, counted against no caller).
    seen: HashMap<ReplayKey, (Instant, Option<RateKey>)>,
    order: VecDeque<(ReplayKey, Instant)>,
    /// Entries held per caller.
    held: HashMap<RateKey, usize>,
}

impl ReplayInner {
    fn forget(&mut self, key: &ReplayKey) {
        if let Some((_, Some(owner))) = self.seen.remove(key) {
            if let Some(n) = self.held.get_mut(&owner) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.held.remove(&owner);
                }
            }
        }
    }
}

/// Remembers used request ids and packages for a window.
///
/// v1 packages carry no timestamp, so this is what makes "a package is valid
/// once" true inside the window. A request refused before it reached the
/// backend gives its entries back, so the reference client's retry of the
/// very same body with the same id goes through; once the backend was given
/// the request they are kept, whatever happens next.
///
/// No caller holds more than `share` entries: one API key (or one address)
/// cannot fill the window for everyone.
#[derive(Debug)]
pub struct ReplayCache {
    inner: Mutex<ReplayInner>,
    window: Duration,
    capacity: usize,
    share: usize,
}

/// The most entries one caller may hold: `share_percent` of `capacity`, at
/// least 2 (one request).
pub fn replay_share(capacity: usize, share_percent: u8) -> usize {
    (capacity.saturating_mul(usize::from(share_percent.min(100))) / 100).max(2)
}

/// Outcome of [`ReplayCache::claim`].
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The keys are now marked used.
    Fresh,
    /// One of the keys is already used.
    Replayed,
    /// The cache is full of unexpired entries.
    Full,
    /// This caller already holds its share of the cache.
    OverShare,
}

impl ReplayCache {
    /// A cache remembering entries for `window`, at most `capacity` at once,
    /// any one caller at most `capacity * share_percent / 100` of them (at
    /// least 2: one request).
    pub fn new(window: Duration, capacity: usize, share_percent: u8) -> Self {
        let share = replay_share(capacity, share_percent);
        Self {
            inner: Mutex::new(ReplayInner::default()),
            window,
            capacity,
            share,
        }
    }

    /// The most entries one caller may hold.
    pub fn share(&self) -> usize {
        self.share
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayInner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn expire(inner: &mut ReplayInner, now: Instant) {
        while let Some((k, at)) = inner.order.front().copied() {
            if at > now {
                break;
            }
            inner.order.pop_front();
            // Only remove the entry if it is this one (it may have been
            // released and claimed again since).
            if inner.seen.get(&k).map(|e| e.0) == Some(at) {
                inner.forget(&k);
            }
        }
    }

    /// Whether any key is currently used (a cheap check before decrypting).
    pub fn is_used(&self, keys: &[ReplayKey]) -> bool {
        let now = Instant::now();
        let g = self.lock();
        keys.iter()
            .any(|k| g.seen.get(k).is_some_and(|(until, _)| *until > now))
    }

    /// Marks all keys used by `owner`, atomically: either all were free and
    /// now are used, or none changes.
    pub fn claim(&self, keys: &[ReplayKey], owner: RateKey) -> Claim {
        let now = Instant::now();
        let mut g = self.lock();
        Self::expire(&mut g, now);
        if keys.iter().any(|k| g.seen.contains_key(k)) {
            return Claim::Replayed;
        }
        if g.held.get(&owner).copied().unwrap_or(0) + keys.len() > self.share {
            return Claim::OverShare;
        }
        if g.seen.len() + keys.len() > self.capacity {
            return Claim::Full;
        }
        let until = now + self.window;
        for k in keys {
            g.seen.insert(*k, (until, Some(owner)));
            g.order.push_back((*k, until));
        }
        *g.held.entry(owner).or_insert(0) += keys.len();
        Claim::Fresh
    }

    /// Gives claimed keys back (the request was refused before it reached
    /// the backend).
    pub fn release(&self, keys: &[ReplayKey]) {
        let mut g = self.lock();
        for k in keys {
            g.forget(k);
        }
        // Released entries stay in the expiry queue until their time; keep
        // the queue within a small multiple of the live entries.
        if g.order.len() > 2 * g.seen.len() + 1024 {
            let ReplayInner { seen, order, .. } = &mut *g;
            order.retain(|(k, at)| seen.get(k).map(|e| e.0) == Some(*at));
        }
    }

    /// Puts back an entry read from the journal at start, used for `left`
    /// more (counted against no caller). Beyond the capacity, nothing.
    pub fn restore(&self, key: ReplayKey, left: Duration) {
        let mut g = self.lock();
        if g.seen.len() >= self.capacity {
            return;
        }
        let until = Instant::now() + left;
        g.seen.insert(key, (until, None));
        g.order.push_back((key, until));
    }

    /// How long an entry stays used.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Entries held by `owner` now.
    pub fn held_by(&self, owner: RateKey) -> usize {
        self.lock().held.get(&owner).copied().unwrap_or(0)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_claim_release_expire() {
        let c = ReplayCache::new(Duration::from_millis(100), 4, 100);
        let o = RateKey::Anonymous;
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(c.claim(&[a, b], o), Claim::Fresh);
        assert!(c.is_used(&[b]));
        assert_eq!(c.claim(&[a], o), Claim::Replayed);
        assert_eq!(c.claim(&[[3u8; 32], b], o), Claim::Replayed);
        // Nothing of a refused claim is kept.
        assert!(!c.is_used(&[[3u8; 32]]));
        c.release(&[a, b]);
        assert_eq!(c.claim(&[a, b], o), Claim::Fresh);
        assert_eq!(
            c.claim(&[[4u8; 32], [5u8; 32], [6u8; 32]], RateKey::Key(1)),
            Claim::Full
        );
        std::thread::sleep(Duration::from_millis(120));
        assert!(!c.is_used(&[a]));
        assert_eq!(c.claim(&[a, b], o), Claim::Fresh);
        assert_eq!(c.len(), 2);
        assert_eq!(c.held_by(o), 2);
    }

    #[test]
    fn one_caller_holds_at_most_its_share_of_the_replay_window() {
        let c = ReplayCache::new(Duration::from_secs(60), 20, 25);
        assert_eq!(c.share(), 5);
        let (a, b) = (RateKey::Key(0), RateKey::Key(1));
        let key = |i: u8| [i; 32];
        assert_eq!(c.claim(&[key(1), key(2)], a), Claim::Fresh);
        assert_eq!(c.claim(&[key(3), key(4)], a), Claim::Fresh);
        assert_eq!(c.claim(&[key(5), key(6)], a), Claim::OverShare);
        assert_eq!(c.claim(&[key(5), key(6)], b), Claim::Fresh);
        // A released request frees its owner's share.
        c.release(&[key(1), key(2)]);
        assert_eq!(c.held_by(a), 2);
        assert_eq!(c.claim(&[key(7), key(8)], a), Claim::Fresh);
        // Many released claims do not grow the expiry queue without bound.
        for i in 0..5000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            k[31] = 9;
            assert_eq!(c.claim(&[k], b), Claim::Fresh);
            c.release(&[k]);
        }
        assert!(c.lock().order.len() < 2000);
    }

    #[tokio::test]
    async fn gate_queues_then_refuses() {
        let limits = Limits {
            max_concurrency: 1,
            max_queue: 1,
            queue_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let gate = Arc::new(ConcurrencyGate::new(&limits));
        let held = gate.acquire().await.unwrap();
        let g2 = Arc::clone(&gate);
        let waiter = tokio::spawn(async move { g2.acquire().await.map(|_| ()) });
        let t = Instant::now();
        while gate.queue_depth() < 1 {
            assert!(t.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Queue full: refused at once.
        assert!(matches!(gate.acquire().await, Err(ApiError::Saturated)));
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(gate.queue_depth(), 0);
        // Queue wait expires.
        let _held = gate.acquire().await.unwrap();
        let t = Instant::now();
        assert!(matches!(gate.acquire().await, Err(ApiError::Saturated)));
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!(gate.queue_depth(), 0);
    }
}
