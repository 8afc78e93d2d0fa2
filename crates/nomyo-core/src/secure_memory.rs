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
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// Count of buffers whose `mlock` failed since start (for reports and metrics).
static LOCK_FAILURES: AtomicU64 = AtomicU64::new(0);

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
/// freed or reallocated. It has no `Clone`, and its `Debug` prints only its length.
pub struct SecretBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
    locked: bool,
}

// SAFETY: SecretBuf owns its allocation exclusively (like Vec<u8>); the raw
// pointer is never shared, so moving it to or sharing `&` across threads is sound.
unsafe impl Send for SecretBuf {}
// SAFETY: all `&self` methods only read the buffer.
unsafe impl Sync for SecretBuf {}

impl SecretBuf {
    /// An empty buffer; allocates nothing.
    pub fn new() -> Self {
        Self {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
            locked: false,
        }
    }

    /// An empty buffer with room for at least `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut b = Self::new();
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
        // SAFETY: ptr is valid for `cap >= len` bytes, all initialised (alloc_zeroed).
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
    }

    /// Sets the length to `new_len`; new bytes are zero, removed bytes are zeroed.
    pub fn resize(&mut self, new_len: usize) {
        if new_len > self.len {
            self.reserve(new_len - self.len);
            // Bytes in [len, cap) are always zero (alloc_zeroed and zeroing on
            // truncate), so only the length moves.
            self.len = new_len;
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
        let mut fresh = Self::alloc_region(new_cap);
        if self.len > 0 {
            // SAFETY: fresh has cap >= needed > self.len; distinct allocations.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), fresh.ptr.as_ptr(), self.len);
            }
        }
        fresh.len = self.len;
        // The old region is zeroed, unlocked and freed by Drop.
        std::mem::swap(self, &mut fresh);
    }

    fn layout(cap: usize) -> Layout {
        let page = page_size();
        let size = cap.div_ceil(page).saturating_mul(page);
        Layout::from_size_align(size, page).expect("SecretBuf layout")
    }

    fn alloc_region(cap: usize) -> Self {
        let layout = Self::layout(cap);
        // SAFETY: layout has non-zero size (cap >= 64) and a valid alignment.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout);
        };
        // SAFETY: [ptr, ptr + layout.size()) is a live allocation owned by us.
        let locked = unsafe { libc::mlock(ptr.as_ptr().cast(), layout.size()) } == 0;
        if !locked {
            LOCK_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
        #[cfg(target_os = "linux")]
        // SAFETY: the range is page-aligned and owned by us; MADV_DONTDUMP only
        // changes core-dump inclusion. Failure is harmless (core dumps are also
        // disabled process-wide by `harden_process`).
        unsafe {
            libc::madvise(ptr.as_ptr().cast(), layout.size(), libc::MADV_DONTDUMP);
        }
        Self {
            ptr,
            len: 0,
            cap: layout.size(),
            locked,
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
        // Zero the whole region, not only `len`: volatile writes that the
        // optimiser cannot remove (zeroize).
        // SAFETY: ptr is valid for cap bytes, exclusively owned.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) };
        all.zeroize();
        let layout = Self::layout(self.cap);
        // SAFETY: same region as allocated; unlocking an unlocked range is harmless.
        unsafe {
            if self.locked {
                libc::munlock(self.ptr.as_ptr().cast(), self.cap);
            }
            // Undo MADV_DONTDUMP (the bytes are zero now): a mark left on
            // freed pages keeps their mappings split, and a long-running
            // process would collect mappings up to vm.max_map_count.
            #[cfg(target_os = "linux")]
            libc::madvise(self.ptr.as_ptr().cast(), self.cap, libc::MADV_DODUMP);
            alloc::dealloc(self.ptr.as_ptr(), layout);
        }
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
/// `_metadata.memory_protection` (PROTOCOL.md v1). Every field states a
/// measured result, never an intention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryProtection {
    /// Operating system (`linux`, `macos`, ...).
    pub platform: String,
    /// A probe page could be `mlock`ed and no secret buffer has failed to lock.
    pub memory_locking: bool,
    /// Secret buffers are overwritten with volatile writes before release.
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
            memory_locking: probe_mlock() && LOCK_FAILURES.load(Ordering::Relaxed) == 0,
            secure_zeroing: true,
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
        memory_locking: probe_mlock() && LOCK_FAILURES.load(Ordering::Relaxed) == 0,
        secure_zeroing: true,
        core_dump_prevention: CORE_DUMPS_OFF.get().copied().unwrap_or(false),
    }
}

/// How many secret buffers could not be locked since start.
pub fn lock_failures() -> u64 {
    LOCK_FAILURES.load(Ordering::Relaxed)
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

    #[test]
    fn hardening_reports_core_dumps_disabled() {
        let r = harden_process();
        assert!(r.protection.core_dump_prevention);
        assert!(r.protection.secure_zeroing);
        let mut rl = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: valid pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut rl) }, 0);
        assert_eq!(rl.rlim_cur, 0);
    }
}
