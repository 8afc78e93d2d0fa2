//! Secure memory: locked, non-dumpable, zeroed-on-drop buffers and process hardening.
//!
//! This is the one module of the workspace allowed to use `unsafe`: it calls
//! `mlock(2)`, `madvise(2)`, `setrlimit(2)` and `prctl(2)`, and manages a raw,
//! page-aligned allocation so that those calls cover exactly the secret bytes.
//!
//! Everything degrades gracefully: an unprivileged process may lock only
//! `RLIMIT_MEMLOCK` bytes (8 MiB by default), so a buffer that cannot be locked
//! still works, is still zeroed on drop and excluded from core dumps, and
//! [`SecretBuf::is_locked`] and [`MemoryProtection`] say what really happened.
//!
//! # The pool of locked regions
//!
//! Locking costs system calls: `mlock` and `madvise(MADV_DONTDUMP)` when a
//! region is allocated, `munlock` and `madvise(MADV_DODUMP)` when it is freed,
//! each taking the kernel's mmap lock and splitting or merging the mapping. A
//! request used to pay that for each of its 4–5 buffers (BENCHMARKS.md: 7.6%
//! of a v2 server's CPU). So regions of 1, 2, 4, 8 or 16 pages are kept in a
//! small process-wide pool when their buffer is dropped, and handed to the
//! next buffer of that size class:
//!
//! - a region enters the pool only after every byte its buffer ever held was
//!   overwritten with zeros (volatile writes), so a reused region is all zeros,
//!   exactly like a fresh `alloc_zeroed` one;
//! - it stays locked and `MADV_DONTDUMP` while pooled; only regions whose
//!   `mlock` succeeded are pooled, so a reused region is truthfully locked and
//!   a buffer that could not be locked still says so;
//! - when the pool of a class is empty a fresh region is allocated and locked
//!   as before; when it is full the region is unlocked and freed as before;
//! - pooled regions count against `RLIMIT_MEMLOCK`: when a fresh region cannot
//!   be locked, the idle ones are unlocked and freed and the lock is tried once
//!   more, so the pool never makes locking fail where it used to succeed;
//! - the pool holds at most 64 + 32 + 16 + 8 + 4 regions of 1, 2, 4, 8 and 16
//!   pages (1.25 MiB with 4 KiB pages) of `RLIMIT_MEMLOCK`, and fills only as
//!   buffers are released.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Size classes of pooled regions: 1, 2, 4, 8 and 16 pages.
const CLASSES: usize = 5;
/// Regions kept per size class.
const KEEP: [usize; CLASSES] = [64, 32, 16, 8, 4];

/// The process-wide pool every [`SecretBuf`] allocates from.
static POOL: Pool = Pool::new(KEEP, os_lock);

/// The process's effective user id (`geteuid(2)`), for key-file owner checks.
#[cfg(unix)]
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

/// `mlock(2)` of a page-aligned range; `true` on success.
fn os_lock(ptr: NonNull<u8>, len: usize) -> bool {
    // SAFETY: the caller passes a live, page-aligned allocation it owns.
    unsafe { libc::mlock(ptr.as_ptr().cast(), len) == 0 }
}

/// `munlock(2)`; unlocking a range that is not locked is harmless.
fn os_unlock(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the caller passes a live, page-aligned allocation it owns.
    unsafe {
        libc::munlock(ptr.as_ptr().cast(), len);
    }
}

/// A region's address, owned by the pool while it is idle there.
struct Idle(NonNull<u8>);
// SAFETY: an idle region is owned by the pool alone (no other pointer to it
// is used until it is handed out again, to exactly one buffer).
unsafe impl Send for Idle {}

/// Locked, zeroed, `MADV_DONTDUMP` regions kept for reuse, by size class.
struct Pool {
    idle: [Mutex<Vec<Idle>>; CLASSES],
    keep: [usize; CLASSES],
    lock: fn(NonNull<u8>, usize) -> bool,
    unlock: fn(NonNull<u8>, usize),
    /// Fresh regions whose lock failed (for reports and metrics).
    failures: AtomicU64,
    /// Regions handed out again from the pool.
    reused: AtomicU64,
    /// Regions newly allocated (and locked).
    fresh: AtomicU64,
}

impl Pool {
    const fn new(keep: [usize; CLASSES], lock: fn(NonNull<u8>, usize) -> bool) -> Self {
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
    const fn with_unlock(mut self, unlock: fn(NonNull<u8>, usize)) -> Self {
        self.unlock = unlock;
        self
    }

    /// The size class of a region of `size` bytes, if it is pooled.
    fn class(size: usize) -> Option<usize> {
        let pages = size / page_size();
        (pages.is_power_of_two() && pages <= 1 << (CLASSES - 1) && pages * page_size() == size)
            .then(|| pages.trailing_zeros() as usize)
    }

    fn slot(&self, class: usize) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A poisoned lock still guards a consistent Vec (push/pop only).
        self.idle[class]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A zeroed region of `size` bytes (a multiple of the page size): from
    /// the pool when one is idle (locked), else fresh. Returns it and whether
    /// it is locked.
    fn take(&self, size: usize) -> (NonNull<u8>, bool) {
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
    unsafe fn give(&self, ptr: NonNull<u8>, size: usize, locked: bool) {
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
    unsafe fn release(&self, ptr: NonNull<u8>, size: usize, locked: bool) {
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
    fn drain(&self) -> usize {
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

    fn stats(&self) -> PoolStats {
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

fn page_size() -> usize {
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

/// A growable byte buffer for secrets (keys, plaintext payloads).
///
/// Its memory is page-aligned, `mlock`ed where the limit allows, marked
/// `MADV_DONTDUMP`, and overwritten with zeros (volatile writes) before it is
/// freed, reallocated or returned to the pool of locked regions (module
/// documentation). It has no `Clone`, and its `Debug` prints only its length.
pub struct SecretBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
    /// The most bytes this region has held: every byte at or beyond it has
    /// never been written and is still zero.
    dirty: usize,
    locked: bool,
    pool: &'static Pool,
}

// SAFETY: SecretBuf owns its allocation exclusively (like Vec<u8>); the raw
// pointer is never shared, so moving it to or sharing `&` across threads is sound.
unsafe impl Send for SecretBuf {}
// SAFETY: all `&self` methods only read the buffer.
unsafe impl Sync for SecretBuf {}

impl SecretBuf {
    /// An empty buffer; allocates nothing.
    pub fn new() -> Self {
        Self::new_in(&POOL)
    }

    const fn new_in(pool: &'static Pool) -> Self {
        Self {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
            dirty: 0,
            locked: false,
            pool,
        }
    }

    /// An empty buffer with room for at least `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut b = Self::new();
        b.reserve(capacity);
        b
    }

    #[cfg(test)]
    fn with_capacity_in(pool: &'static Pool, capacity: usize) -> Self {
        let mut b = Self::new_in(pool);
        b.reserve(capacity);
        b
    }

    /// A buffer holding a copy of `bytes`. The caller remains responsible for
    /// zeroing the source.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut b = Self::with_capacity(bytes.len());
        b.extend_from_slice(bytes);
        b
    }

    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        let mut b = Self::with_capacity(len);
        b.resize(len);
        b
    }

    /// Moves the contents of a vector into secure memory and zeroes the vector.
    pub fn from_vec_zeroizing(mut v: Vec<u8>) -> Self {
        let b = Self::from_slice(&v);
        v.zeroize();
        b
    }

    /// The secret bytes. Named so that every read of a secret is visible in review.
    pub fn expose_secret(&self) -> &[u8] {
        if self.cap == 0 {
            return &[];
        }
        // SAFETY: ptr is valid for `cap >= len` bytes, all initialised
        // (alloc_zeroed, or zeroed before it entered the pool).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The secret bytes, writable.
    pub fn expose_secret_mut(&mut self) -> &mut [u8] {
        if self.cap == 0 {
            return &mut [];
        }
        // SAFETY: as in expose_secret, and &mut self guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Number of bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this buffer's pages are locked in RAM (cannot be swapped out).
    /// An empty buffer with no allocation counts as locked: there is nothing to swap.
    pub fn is_locked(&self) -> bool {
        self.cap == 0 || self.locked
    }

    /// Appends bytes, growing (into fresh secure memory) as needed.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        // SAFETY: reserve guaranteed cap >= len + bytes.len(); regions cannot
        // overlap because `bytes` is borrowed immutably while self is &mut.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
        self.dirty = self.dirty.max(self.len);
    }

    /// Sets the length to `new_len`; new bytes are zero, removed bytes are zeroed.
    pub fn resize(&mut self, new_len: usize) {
        if new_len > self.len {
            self.reserve(new_len - self.len);
            // Bytes in [len, cap) are always zero (alloc_zeroed and zeroing on
            // truncate), so only the length moves.
            self.len = new_len;
            self.dirty = self.dirty.max(self.len);
        } else {
            self.truncate(new_len);
        }
    }

    /// Shortens the buffer, zeroing the bytes cut off.
    pub fn truncate(&mut self, new_len: usize) {
        if new_len < self.len {
            self.expose_secret_mut()[new_len..].zeroize();
            self.len = new_len;
        }
    }

    /// Ensures room for `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self
            .len
            .checked_add(additional)
            .expect("SecretBuf capacity overflow");
        if needed <= self.cap {
            return;
        }
        let new_cap = needed.max(self.cap.saturating_mul(2)).max(64);
        let mut fresh = Self::alloc_region(self.pool, new_cap);
        if self.len > 0 {
            // SAFETY: fresh has cap >= needed > self.len; distinct allocations.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), fresh.ptr.as_ptr(), self.len);
            }
        }
        fresh.len = self.len;
        fresh.dirty = self.len;
        // The old region is zeroed and pooled, or unlocked and freed, by Drop.
        std::mem::swap(self, &mut fresh);
    }

    /// The layout of a region for `cap` bytes: whole pages; up to 16 pages,
    /// a power of two of them (the pool's size classes).
    fn layout(cap: usize) -> Layout {
        let page = page_size();
        let mut pages = cap.div_ceil(page);
        if pages <= 1 << (CLASSES - 1) {
            pages = pages.next_power_of_two();
        }
        Layout::from_size_align(pages.saturating_mul(page), page).expect("SecretBuf layout")
    }

    fn alloc_region(pool: &'static Pool, cap: usize) -> Self {
        let size = Self::layout(cap).size();
        let (ptr, locked) = pool.take(size);
        Self {
            ptr,
            len: 0,
            cap: size,
            dirty: 0,
            locked,
            pool,
        }
    }
}

impl Default for SecretBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SecretBuf {
    fn drop(&mut self) {
        if self.cap == 0 {
            return;
        }
        // Zero every byte the region ever held (beyond `dirty` it was never
        // written): volatile writes that the optimiser cannot remove (zeroize).
        // SAFETY: ptr is valid for cap >= dirty bytes, exclusively owned.
        let used = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.dirty) };
        used.zeroize();
        // SAFETY: the region came from this pool's `take` with size `cap`, is
        // all zeros now, and this buffer never touches it again.
        unsafe { self.pool.give(self.ptr, self.cap, self.locked) };
    }
}

impl fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBuf([redacted; {} bytes])", self.len)
    }
}

impl std::io::Write for SecretBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the process's memory protection actually achieved, as reported in
/// `_metadata.memory_protection` (docs/PROTOCOL.md §1.7). Every field states a
/// measured result, never an intention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryProtection {
    /// Operating system (`linux`, `macos`, ...).
    pub platform: String,
    /// A probe page could be `mlock`ed and no secret buffer has failed to lock.
    pub memory_locking: bool,
    /// Memory is wiped before it is freed, all of it: secret buffers (always),
    /// and every other allocation of the process, Rust and C alike
    /// ([`crate::wipe_alloc::freed_memory_wiped`]: the wiping global allocator
    /// is installed and glibc wipes freed chunks). `false` in a program
    /// without them, whose freed copies of prompts and answers stay in memory.
    pub secure_zeroing: bool,
    /// `RLIMIT_CORE` reads back as 0 and the process is not dumpable.
    pub core_dump_prevention: bool,
}

/// Details behind [`MemoryProtection`], for logs at start-up.
#[derive(Clone, Debug)]
pub struct HardeningReport {
    /// The summary.
    pub protection: MemoryProtection,
    /// `RLIMIT_MEMLOCK` soft limit in bytes (`None` = unlimited).
    pub memlock_limit: Option<u64>,
}

static CORE_DUMPS_OFF: OnceLock<bool> = OnceLock::new();

/// Disables core dumps for this process (`RLIMIT_CORE` = 0 and, on Linux,
/// `PR_SET_DUMPABLE` = 0) and returns what succeeded. Idempotent.
pub fn harden_process() -> HardeningReport {
    let core_off = *CORE_DUMPS_OFF.get_or_init(disable_core_dumps);
    HardeningReport {
        protection: MemoryProtection {
            platform: platform().to_owned(),
            memory_locking: probe_mlock() && lock_failures() == 0,
            secure_zeroing: crate::wipe_alloc::freed_memory_wiped(),
            core_dump_prevention: core_off,
        },
        memlock_limit: memlock_limit(),
    }
}

/// The current report without changing anything (core dump prevention is
/// `false` unless [`harden_process`] ran and succeeded).
pub fn memory_protection() -> MemoryProtection {
    MemoryProtection {
        platform: platform().to_owned(),
        memory_locking: probe_mlock() && lock_failures() == 0,
        secure_zeroing: crate::wipe_alloc::freed_memory_wiped(),
        core_dump_prevention: CORE_DUMPS_OFF.get().copied().unwrap_or(false),
    }
}

/// How many secret buffers could not be locked since start.
pub fn lock_failures() -> u64 {
    POOL.failures.load(Ordering::Relaxed)
}

fn platform() -> &'static str {
    std::env::consts::OS
}

fn probe_mlock() -> bool {
    static PROBE: OnceLock<bool> = OnceLock::new();
    *PROBE.get_or_init(|| {
        let layout = SecretBuf::layout(1);
        // SAFETY: non-zero, page-aligned layout; freed below.
        unsafe {
            let p = alloc::alloc_zeroed(layout);
            if p.is_null() {
                return false;
            }
            let ok = libc::mlock(p.cast(), layout.size()) == 0;
            if ok {
                libc::munlock(p.cast(), layout.size());
            }
            alloc::dealloc(p, layout);
            ok
        }
    })
}

fn memlock_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return Some(0);
    }
    if rl.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        // rlim_t is u64 on Linux but not everywhere.
        #[allow(clippy::unnecessary_cast)]
        Some(rl.rlim_cur as u64)
    }
}

fn disable_core_dumps() -> bool {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: pointer to a valid rlimit.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } == 0;
    let mut back = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: pointer to a valid, writable rlimit.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut back) } == 0;
    let rlimit_ok = set && read && back.rlim_cur == 0;

    #[cfg(target_os = "linux")]
    let dumpable_off = {
        // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        // SAFETY: PR_GET_DUMPABLE takes no pointer arguments.
        r == 0 && unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) } == 0
    };
    #[cfg(not(target_os = "linux"))]
    let dumpable_off = true;

    rlimit_ok && dumpable_off
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn grows_and_keeps_contents() {
        let mut b = SecretBuf::new();
        assert!(b.is_empty());
        for i in 0..10_000u32 {
            b.write_all(&i.to_le_bytes()).unwrap();
        }
        assert_eq!(b.len(), 40_000);
        assert_eq!(&b.expose_secret()[4..8], &1u32.to_le_bytes());
        assert_eq!(&b.expose_secret()[39_996..], &9_999u32.to_le_bytes());
    }

    #[test]
    fn truncate_zeroes_tail_and_resize_exposes_zeros() {
        let mut b = SecretBuf::from_slice(b"abcdef");
        b.truncate(2);
        assert_eq!(b.expose_secret(), b"ab");
        b.resize(6);
        assert_eq!(b.expose_secret(), b"ab\0\0\0\0");
    }

    #[test]
    fn debug_never_shows_content() {
        let b = SecretBuf::from_slice(b"top secret prompt");
        let d = format!("{b:?}");
        assert!(!d.contains("secret prompt"), "{d}");
        assert!(d.contains("redacted"));
    }

    #[test]
    fn small_buffers_are_locked_under_default_limit() {
        // 8 MiB is the default unprivileged limit; a 32-byte key fits.
        let b = SecretBuf::from_slice(&[7u8; 32]);
        if memlock_limit().is_none_or(|l| l >= 65536) {
            assert!(b.is_locked());
        }
    }

    fn pretend_lock(_: NonNull<u8>, _: usize) -> bool {
        true
    }

    fn fail_lock(_: NonNull<u8>, _: usize) -> bool {
        false
    }

    fn all_zero(b: &mut SecretBuf) -> bool {
        let cap = b.cap;
        b.resize(cap);
        b.expose_secret().iter().all(|&x| x == 0)
    }

    #[test]
    fn a_reused_region_is_zeroed_and_locked() {
        static P: Pool = Pool::new([1; CLASSES], pretend_lock);
        let mut a = SecretBuf::with_capacity_in(&P, 100);
        a.extend_from_slice(b"the secret prompt");
        a.resize(300);
        a.expose_secret_mut()[299] = 0xAA;
        let addr = a.ptr;
        drop(a);
        assert_eq!(P.stats().idle, 1);
        let mut b = SecretBuf::with_capacity_in(&P, 10);
        assert_eq!(b.ptr, addr, "the pooled region is handed out again");
        assert!(b.is_empty());
        assert!(b.is_locked());
        assert!(all_zero(&mut b), "a reused region must read as zeros");
        assert_eq!(
            P.stats(),
            PoolStats {
                reused: 1,
                fresh: 1,
                idle: 0
            }
        );
    }

    #[test]
    fn an_exhausted_pool_falls_back_to_fresh_locked_regions() {
        static P: Pool = Pool::new([1; CLASSES], os_lock);
        let a = SecretBuf::with_capacity_in(&P, 32);
        let b = SecretBuf::with_capacity_in(&P, 32);
        drop(a);
        drop(b);
        // One kept, the other unlocked and freed.
        assert_eq!(P.stats().idle, 1);
        let mut c = SecretBuf::with_capacity_in(&P, 32);
        let mut d = SecretBuf::with_capacity_in(&P, 32);
        assert_eq!(
            P.stats(),
            PoolStats {
                reused: 1,
                fresh: 3,
                idle: 0
            }
        );
        assert!(all_zero(&mut c) && all_zero(&mut d));
        if memlock_limit().is_none_or(|l| l >= 65536) {
            assert!(c.is_locked() && d.is_locked());
            assert_eq!(P.failures.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn a_failed_lock_is_reported_and_never_pooled() {
        static P: Pool = Pool::new([4; CLASSES], fail_lock);
        let mut a = SecretBuf::with_capacity_in(&P, 32);
        a.extend_from_slice(b"key material");
        assert!(!a.is_locked());
        assert_eq!(P.failures.load(Ordering::Relaxed), 1);
        drop(a);
        assert_eq!(P.stats().idle, 0, "an unlocked region must not be pooled");
        let b = SecretBuf::with_capacity_in(&P, 32);
        assert!(!b.is_locked(), "a fresh region whose lock failed says so");
        assert_eq!(P.failures.load(Ordering::Relaxed), 2);
        assert_eq!(P.stats().reused, 0);
    }

    #[test]
    fn idle_regions_give_their_locks_back_when_a_lock_fails() {
        // A lock limit of two regions, as RLIMIT_MEMLOCK would impose.
        static BUDGET: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(2);
        fn lock(_: NonNull<u8>, _: usize) -> bool {
            BUDGET
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                    (b > 0).then(|| b - 1)
                })
                .is_ok()
        }
        fn unlock(_: NonNull<u8>, _: usize) {
            BUDGET.fetch_add(1, Ordering::SeqCst);
        }
        static P: Pool = Pool::new([4; CLASSES], lock).with_unlock(unlock);
        let a = SecretBuf::with_capacity_in(&P, 32);
        let b = SecretBuf::with_capacity_in(&P, 32);
        assert!(a.is_locked() && b.is_locked());
        drop(a);
        drop(b);
        // Both idle and still holding the budget; a 2-page buffer needs a lock.
        assert_eq!(P.stats().idle, 2);
        let c = SecretBuf::with_capacity_in(&P, 2 * page_size());
        assert!(c.is_locked(), "the idle regions must give their locks back");
        assert_eq!(P.failures.load(Ordering::Relaxed), 0);
        assert_eq!(P.stats().idle, 0);
        // Now the limit really is reached: reported, not hidden.
        let d = SecretBuf::with_capacity_in(&P, 2 * page_size());
        let e = SecretBuf::with_capacity_in(&P, 2 * page_size());
        assert!(d.is_locked());
        assert!(!e.is_locked());
        assert_eq!(P.failures.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn growth_pools_the_old_regions_zeroed_and_keeps_contents() {
        static P: Pool = Pool::new([4; CLASSES], pretend_lock);
        let page = page_size();
        let mut b = SecretBuf::new_in(&P);
        for i in 0..3 * page / 100 {
            b.extend_from_slice(&[(i % 250) as u8 + 1; 100]);
        }
        // 1, 2 then 4 pages: the first two are idle now.
        assert_eq!(b.cap, 4 * page);
        assert_eq!(P.stats().idle, 2);
        assert_eq!(b.expose_secret()[100], 2);
        for cap in [page, 2 * page] {
            let mut r = SecretBuf::with_capacity_in(&P, cap);
            assert_eq!(r.cap, cap);
            assert!(all_zero(&mut r), "an outgrown region must be zeroed");
        }
        assert_eq!(P.stats().reused, 2);
        // Above 16 pages: page-rounded, never pooled.
        let big = SecretBuf::with_capacity_in(&P, 17 * page);
        assert_eq!(big.cap, 17 * page);
        let idle = P.stats().idle;
        drop(big);
        assert_eq!(P.stats().idle, idle);
    }

    #[test]
    fn churn_through_the_process_pool_never_shows_old_bytes() {
        for i in 0..200u32 {
            let mut a = SecretBuf::from_slice(&[0xA5; 3000]);
            a.extend_from_slice(&i.to_le_bytes());
            drop(a);
            let mut b = SecretBuf::zeroed(16);
            assert!(all_zero(&mut b));
            assert!(b.is_locked() || lock_failures() > 0);
        }
        if lock_failures() == 0 {
            // Locked regions are pooled, so this loop reused some.
            assert!(pool_stats().reused > 0);
        }
    }

    #[test]
    fn hardening_reports_core_dumps_disabled() {
        let r = harden_process();
        assert!(r.protection.core_dump_prevention);
        // This test program does not install the wiping allocator: the
        // report must not claim it.
        assert!(!r.protection.secure_zeroing);
        let mut rl = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: valid pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut rl) }, 0);
        assert_eq!(rl.rlim_cur, 0);
    }
}
