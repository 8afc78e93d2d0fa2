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

mod pool;
mod process;
#[cfg(test)]
mod tests;

pub(crate) use pool::effective_uid;
use pool::*;
pub use pool::{pool_stats, PoolStats};
#[cfg(test)]
use process::memlock_limit;
pub use process::{
    harden_process, lock_failures, memory_protection, HardeningReport, MemoryProtection,
};

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
