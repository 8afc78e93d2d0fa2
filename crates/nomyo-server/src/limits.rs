//! Limits: the configured numbers, the concurrency gate with its bounded
//! queue, and the replay window.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

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
    /// Requests per minute per API key (0 = no limit).
    pub rate_per_minute: u32,
    /// Burst size for the rate limit (0 = same as the per-minute rate).
    pub rate_burst: u32,
    /// How long an `X-Payload-ID` (and the package itself) stays used.
    pub replay_window: Duration,
    /// Most ids remembered; when full, new requests get 503 until old ones expire.
    pub replay_capacity: usize,
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
            rate_per_minute: 0,
            rate_burst: 0,
            replay_window: Duration::from_secs(900),
            replay_capacity: 500_000,
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
    seen: HashMap<ReplayKey, Instant>,
    order: VecDeque<(ReplayKey, Instant)>,
}

/// Remembers used request ids and packages for a window.
///
/// v1 packages carry no timestamp, so this is what makes "a package is valid
/// once" true inside the window. A request that fails with a retryable status
/// (429/5xx) gives its entries back, so the reference client's retry of the
/// very same body with the same id goes through.
#[derive(Debug)]
pub struct ReplayCache {
    inner: Mutex<ReplayInner>,
    window: Duration,
    capacity: usize,
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
}

impl ReplayCache {
    /// A cache remembering entries for `window`, at most `capacity` at once.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(ReplayInner::default()),
            window,
            capacity,
        }
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
            if inner.seen.get(&k) == Some(&at) {
                inner.seen.remove(&k);
            }
        }
    }

    /// Whether any key is currently used (a cheap check before decrypting).
    pub fn is_used(&self, keys: &[ReplayKey]) -> bool {
        let now = Instant::now();
        let g = self.lock();
        keys.iter()
            .any(|k| g.seen.get(k).is_some_and(|until| *until > now))
    }

    /// Marks all keys used, atomically: either all were free and now are
    /// used, or none changes.
    pub fn claim(&self, keys: &[ReplayKey]) -> Claim {
        let now = Instant::now();
        let mut g = self.lock();
        Self::expire(&mut g, now);
        if keys.iter().any(|k| g.seen.contains_key(k)) {
            return Claim::Replayed;
        }
        if g.seen.len() + keys.len() > self.capacity {
            return Claim::Full;
        }
        let until = now + self.window;
        for k in keys {
            g.seen.insert(*k, until);
            g.order.push_back((*k, until));
        }
        Claim::Fresh
    }

    /// Gives claimed keys back (the request failed in a way the client may retry).
    pub fn release(&self, keys: &[ReplayKey]) {
        let mut g = self.lock();
        for k in keys {
            g.seen.remove(k);
        }
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
        let c = ReplayCache::new(Duration::from_millis(100), 4);
        let a = [1u8; 32];
        let b = [2u8; 32];
        assert_eq!(c.claim(&[a, b]), Claim::Fresh);
        assert!(c.is_used(&[b]));
        assert_eq!(c.claim(&[a]), Claim::Replayed);
        assert_eq!(c.claim(&[[3u8; 32], b]), Claim::Replayed);
        // Nothing of a refused claim is kept.
        assert!(!c.is_used(&[[3u8; 32]]));
        c.release(&[a, b]);
        assert_eq!(c.claim(&[a, b]), Claim::Fresh);
        assert_eq!(c.claim(&[[4u8; 32], [5u8; 32], [6u8; 32]]), Claim::Full);
        std::thread::sleep(Duration::from_millis(120));
        assert!(!c.is_used(&[a]));
        assert_eq!(c.claim(&[a, b]), Claim::Fresh);
        assert_eq!(c.len(), 2);
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
