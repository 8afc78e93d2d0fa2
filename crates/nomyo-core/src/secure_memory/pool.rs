//! The process-wide pool of locked regions (see the module documentation of
//! `secure_memory`) and the system calls that lock and unlock them.

use super::*;

/// Size classes of pooled regions: 1, 2, 4, 8 and 16 pages.
pub(super) const CLASSES: usize = 5;
/// Regions kept per size class.
pub(super) const KEEP: [usize; CLASSES] = [64, 32, 16, 8, 4];

/// The process-wide pool every [`SecretBuf`] allocates from.
pub(super) static POOL: Pool = Pool::new(KEEP, os_lock);

/// The process's effective user id (`geteuid(2)`), for key-file owner checks.
#[cfg(unix)]
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// `mlock(2)` of a page-aligned range; `true` on success.
pub(super) fn os_lock(ptr: NonNull<u8>, len: usize) -> bool {
    // SAFETY: the caller passes a live, page-aligned allocation it owns.
    unsafe { libc::mlock(ptr.as_ptr().cast(), len) == 0 }
}

/// `munlock(2)`; unlocking a range that is not locked is harmless.
pub(super) fn os_unlock(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller passes a live, page-aligned allocation it owns.
    unsafe {
        libc::munlock(ptr.as_ptr().cast(), len);
    }
}

/// A region's address, owned by the pool while it is idle there.
pub(super) struct Idle(NonNull<u8>);
// SAFETY: an idle region is owned by the pool alone (no other pointer to it
// is used until it is handed out again, to exactly one buffer).
unsafe impl Send for Idle {}

/// Locked, zeroed, `MADV_DONTDUMP` regions kept for reuse, by size class.
pub(super) struct Pool {
    pub(super) idle: [Mutex<Vec<Idle>>; CLASSES],
    pub(super) keep: [usize; CLASSES],
    pub(super) lock: fn(NonNull<u8>, usize) -> bool,
    pub(super) unlock: fn(NonNull<u8>, usize),
    /// Fresh regions whose lock failed (for reports and metrics).
    pub(super) failures: AtomicU64,
    /// Regions handed out again from the pool.
    pub(super) reused: AtomicU64,
    /// Regions newly allocated (and locked).
    pub(super) fresh: AtomicU64,
}

impl Pool {
    pub(super) const fn new(keep: [usize; CLASSES], lock: fn(NonNull<u8>, usize) -> bool) -> Self {
        Self {
            idle: [const { Mutex::new(Vec::new()) }; CLASSES],
            keep,
            lock,
            unlock: os_unlock,
            failures: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            fresh: AtomicU64::new(0),
        }
    }

    #[cfg(test)]
    pub(super) const fn with_unlock(mut self, unlock: fn(NonNull<u8>, usize)) -> Self {
        self.unlock = unlock;
        self
    }

    /// The size class of a region of `size` bytes, if it is pooled.
    pub(super) fn class(size: usize) -> Option<usize> {
        let pages = size / page_size();
        (pages.is_power_of_two() && pages <= 1 << (CLASSES - 1) && pages * page_size() == size)
            .then(|| pages.trailing_zeros() as usize)
    }

    pub(super) fn slot(&self, class: usize) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A poisoned lock still guards a consistent Vec (push/pop only).
        self.idle[class]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A zeroed region of `size` bytes (a multiple of the page size): from
    /// the pool when one is idle (locked), else fresh. Returns it and whether
    /// it is locked.
    pub(super) fn take(&self, size: usize) -> (NonNull<u8>, bool) {
        if let Some(class) = Self::class(size) {
            if let Some(Idle(ptr)) = self.slot(class).pop() {
                self.reused.fetch_add(1, Ordering::Relaxed);
                return (ptr, true);
            }
        }
        let layout = SecretBuf::layout(size);
        // SAFETY: layout has non-zero size (at least one page) and a valid alignment.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout);
        };
        self.fresh.fetch_add(1, Ordering::Relaxed);
        let mut locked = (self.lock)(ptr, layout.size());
        // Idle pooled regions count against RLIMIT_MEMLOCK: give their locks
        // back before calling this one a failure.
        if !locked && self.drain() > 0 {
            locked = (self.lock)(ptr, layout.size());
        }
        if !locked {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(target_os = "linux")]
        // SAFETY: the range is page-aligned and owned by us; MADV_DONTDUMP only
        // changes core-dump inclusion. Failure is harmless (core dumps are also
        // disabled process-wide by `harden_process`).
        unsafe {
            libc::madvise(ptr.as_ptr().cast(), layout.size(), libc::MADV_DONTDUMP);
        }
        (ptr, locked)
    }

    /// Takes back a region of `size` bytes whose every byte is zero: pooled
    /// if it is locked and its class has room, else unlocked and freed.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`Pool::take`] with this `size`, is all zeros, and is
    /// not used by the caller afterwards.
    pub(super) unsafe fn give(&self, ptr: NonNull<u8>, size: usize, locked: bool) {
        if locked {
            if let Some(class) = Self::class(size) {
                let mut idle = self.slot(class);
                if idle.len() < self.keep[class] {
                    idle.push(Idle(ptr));
                    return;
                }
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.release(ptr, size, locked) };
    }

    /// Unlocks and frees a zeroed region.
    ///
    /// # Safety
    ///
    /// As for [`Pool::give`].
    pub(super) unsafe fn release(&self, ptr: NonNull<u8>, size: usize, locked: bool) {
        if locked {
            (self.unlock)(ptr, size);
        }
        // SAFETY: same region as allocated, owned by the caller.
        unsafe {
            // Undo MADV_DONTDUMP (the bytes are zero now): a mark left on
            // freed pages keeps their mappings split, and a long-running
            // process would collect mappings up to vm.max_map_count.
            #[cfg(target_os = "linux")]
            libc::madvise(ptr.as_ptr().cast(), size, libc::MADV_DODUMP);
            alloc::dealloc(ptr.as_ptr(), SecretBuf::layout(size));
        }
    }

    /// Unlocks and frees every idle region; returns how many there were.
    pub(super) fn drain(&self) -> usize {
        let mut n = 0;
        for class in 0..CLASSES {
            let idle = std::mem::take(&mut *self.slot(class));
            let size = page_size() << class;
            for Idle(ptr) in idle {
                // SAFETY: idle regions are zeroed, locked and owned by the pool alone.
                unsafe { self.release(ptr, size, true) };
                n += 1;
            }
        }
        n
    }

    pub(super) fn stats(&self) -> PoolStats {
        PoolStats {
            reused: self.reused.load(Ordering::Relaxed),
            fresh: self.fresh.load(Ordering::Relaxed),
            idle: (0..CLASSES).map(|c| self.slot(c).len()).sum(),
        }
    }
}

/// Counters of the pool of locked regions (module documentation), since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Regions handed to a buffer again from the pool (no system call).
    pub reused: u64,
    /// Regions newly allocated, locked and marked `MADV_DONTDUMP`.
    pub fresh: u64,
    /// Regions idle in the pool now (locked, zeroed).
    pub idle: usize,
}

/// The pool's counters.
pub fn pool_stats() -> PoolStats {
    POOL.stats()
}

pub(super) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    })
}
