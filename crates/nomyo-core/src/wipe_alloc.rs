//! Freed memory is wiped: a global allocator for the whole process, and the
//! C library's heap.
//!
//! Decrypted prompts and answers do not stay in [`SecretBuf`]s: they are
//! parsed into `serde_json` values, copied into request bodies, HTTP
//! buffers, the model's template and tokenizer. Each of those copies is
//! freed when the request ends, and the allocator would otherwise hand the
//! bytes back to the heap as they are, readable in the process's memory
//! (a debugger, `/proc/PID/mem`, a later bug reading freed memory) until
//! something happens to overwrite them. Two mechanisms cover that, one for
//! each kind of code:
//!
//! - Rust: [`WipeOnFree`], a [`GlobalAlloc`] over [`System`] that
//!   overwrites every allocation (`layout.size()` bytes, with
//!   `explicit_bzero(3)` on Linux, volatile writes elsewhere) before it is
//!   freed, and implements `realloc` as allocate, copy, wipe and free, so
//!   that no grown or shrunk buffer leaves its old copy behind. A binary
//!   installs it with `#[global_allocator]`.
//! - C and C++ (llama.cpp, aws-lc) call glibc's `malloc` and `free`
//!   directly. glibc overwrites freed chunks itself when its `perturb`
//!   setting is on, but not the chunks it keeps in its per-thread cache
//!   (tcache), and of a chunk it puts in a fast bin not the last 8 bytes
//!   (they are the next chunk's header). Both caches have to be off, and the
//!   tcache can only be switched off before the process starts, by the
//!   `GLIBC_TUNABLES` environment variable. [`wipe_c_heap`] re-executes the
//!   program once with `glibc.malloc.tcache_count=0`, `mxfast=0` and
//!   `perturb` added (the same process id, arguments and environment
//!   otherwise). Then every freed chunk is overwritten, but for its last 8
//!   bytes when it merges into the top of its heap (no footer is written
//!   there). Chunks glibc returns to the kernel (`munmap`, allocations of
//!   128 KiB and more) are not readable any more.
//!
//! [`freed_memory_wiped`] tells whether both are in effect, measured, not
//! assumed: the allocator is the process's global allocator (an allocation
//! through `std::alloc` reached it), and a chunk freed to glibc reads back
//! as the perturb value. It is `_metadata.memory_protection.secure_zeroing`
//! (docs/PROTOCOL.md §1.7).
//!
//! What this does not cover (SECURITY.md "Memory"): memory that is still in
//! use (a live buffer, an idle connection's read buffer, llama.cpp's KV
//! cache), thread stacks, and kernel buffers.
//!
//! [`SecretBuf`]: crate::SecretBuf
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::OnceLock;

/// A global allocator that wipes every allocation before it is freed (see
/// the module documentation). Install it in a binary:
///
/// ```
/// #[global_allocator]
/// static ALLOC: nomyo_core::wipe_alloc::WipeOnFree = nomyo_core::wipe_alloc::WipeOnFree;
/// # fn main() { assert!(nomyo_core::wipe_alloc::installed()); }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct WipeOnFree;

/// The layout [`installed`] allocates through `std::alloc`: seeing it here
/// means this allocator is the global one.
const PROBE: (usize, usize) = (0x5ec1, 64);

/// Set when the probe layout reached [`WipeOnFree::alloc`].
static PROBE_SEEN: AtomicBool = AtomicBool::new(false);

/// Overwrites `len` bytes at `ptr` with zeros in a way the compiler may not
/// remove as a dead store before `free`.
///
/// # Safety
///
/// `ptr` is valid for writes of `len` bytes.
#[inline]
unsafe fn wipe(ptr: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: forwarded from the caller; explicit_bzero only writes there.
    unsafe {
        libc::explicit_bzero(ptr.cast(), len);
    }
    #[cfg(not(target_os = "linux"))]
    {
        use zeroize::Zeroize;
        // SAFETY: forwarded from the caller.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }.zeroize();
    }
}

// SAFETY: every method forwards to `System` with the layouts it was given
// (realloc: a fresh allocation of the new layout, the old one freed with its
// own layout), and wiping only writes inside the allocation being freed.
unsafe impl GlobalAlloc for WipeOnFree {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() == PROBE.0 && layout.align() == PROBE.1 {
            PROBE_SEEN.store(true, Ordering::Relaxed);
        }
        // SAFETY: forwarded from the caller (non-zero size).
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr is a live allocation of `layout` (caller's contract).
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size > 0 and that it does not
        // overflow isize when rounded up to layout.align().
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: non-zero size (caller's contract).
        let new = unsafe { System.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both are live, distinct allocations, each at least
            // min(old, new) bytes long; the old one is then wiped and freed
            // with its own layout and not used again.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                wipe(ptr, layout.size());
                System.dealloc(ptr, layout);
            }
        }
        // On failure the old allocation is left as it is (GlobalAlloc contract).
        new
    }
}

/// Whether [`WipeOnFree`] is this process's global allocator: an
/// allocation made through `std::alloc` is seen by it. A program (or a
/// library's test) that did not install it gets `false`.
pub fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        // The pointer escapes through a static, so the allocation cannot be
        // optimised away.
        static ESCAPE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
        let layout = Layout::from_size_align(PROBE.0, PROBE.1).expect("probe layout");
        // SAFETY: non-zero size; freed below with the same layout.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return false;
        }
        ESCAPE.store(p, Ordering::SeqCst);
        let p = ESCAPE.swap(std::ptr::null_mut(), Ordering::SeqCst);
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(p, layout) };
        PROBE_SEEN.load(Ordering::Relaxed)
    })
}

/// The value glibc writes over freed chunks (`glibc.malloc.perturb`). Any
/// non-zero byte works; glibc fills new allocations with its complement.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const PERTURB: u8 = 0xa5;

/// The `GLIBC_TUNABLES` settings [`wipe_c_heap`] adds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TUNABLES: &str = "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0:glibc.malloc.perturb=165";

/// Makes glibc wipe the chunks C and C++ code frees (module
/// documentation): when the process did not start with the settings in
/// `GLIBC_TUNABLES`, re-executes it (`/proc/self/exe`, same arguments) with
/// them added, and does not return. Call it first thing in `main`, before
/// any thread or secret exists. Returns when the settings are in effect
/// already, on other platforms, and when the re-execution fails
/// ([`c_heap_wiped`] then says `false`).
pub fn wipe_c_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current
            .split(':')
            .any(|t| t == "glibc.malloc.tcache_count=0")
        {
            // Started with the settings (by us or by the user): no loop.
            return;
        }
        let tunables = if current.is_empty() {
            TUNABLES.to_owned()
        } else {
            format!("{current}:{TUNABLES}")
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_default();
        // Only returns on failure; the process then runs on as it is.
        let _ = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .exec();
    }
}

/// Whether glibc wipes the chunks C and C++ code frees: a chunk freed to
/// glibc reads back as the perturb value (it would keep its bytes in the
/// per-thread cache, or without `perturb`). Measured once; measure it
/// before other threads start (`nomyo` does, in `main`), since another
/// thread that allocates from the same arena between the probe's free and
/// its read can take the chunk and make the answer a false `false`.
pub fn c_heap_wiped() -> bool {
    static WIPED: OnceLock<bool> = OnceLock::new();
    *WIPED.get_or_init(probe_c_heap)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn probe_c_heap() -> bool {
    const LEN: usize = 40;
    const MINE: u8 = 0x3c;
    // SAFETY: malloc/free of small chunks; the bytes of the freed one are
    // read with volatile reads of memory that stays mapped (a small chunk
    // lives in a heap glibc does not unmap; `guard` after it keeps it from
    // merging into the top of the heap) before anything else in this thread
    // allocates. A 40-byte request is a 48-byte chunk: glibc keeps its list
    // pointers in the first 16 bytes, then come 16 bytes that only `perturb`
    // overwrites, then 8 bytes that are the next chunk's footer, written
    // only when the chunk goes to a regular bin (no fast bin, no tcache).
    unsafe {
        let p = libc::malloc(LEN).cast::<u8>();
        let guard = libc::malloc(LEN);
        if p.is_null() || guard.is_null() {
            libc::free(p.cast());
            libc::free(guard);
            return false;
        }
        std::ptr::write_bytes(p, MINE, LEN);
        let p = std::hint::black_box(p);
        libc::free(p.cast());
        let p = std::hint::black_box(p);
        let mut after = [0u8; LEN];
        for (i, b) in after.iter_mut().enumerate() {
            *b = std::ptr::read_volatile(p.add(i));
        }
        libc::free(guard);
        after[16..32].iter().all(|&b| b == PERTURB) && after[32..].iter().any(|&b| b != MINE)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn probe_c_heap() -> bool {
    false
}

/// Whether memory freed anywhere in the process is wiped first: the Rust
/// allocator is [`WipeOnFree`] ([`installed`]) and the C library's heap is
/// wiped too ([`c_heap_wiped`]). This is what
/// `_metadata.memory_protection.secure_zeroing` reports.
pub fn freed_memory_wiped() -> bool {
    installed() && c_heap_wiped()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_global_allocator_nothing_is_claimed() {
        // The test harness does not install WipeOnFree.
        assert!(!installed());
        assert!(!freed_memory_wiped());
    }

    #[test]
    fn it_allocates_reallocates_and_wipes() {
        let a = WipeOnFree;
        let layout = Layout::from_size_align(100, 8).unwrap();
        // SAFETY: non-zero layouts; every pointer is used within its size
        // and freed once with its layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            for i in 0..100 {
                p.add(i).write(i as u8);
            }
            let q = a.realloc(p, layout, 5000);
            assert!(!q.is_null());
            assert!((0..100).all(|i| q.add(i).read() == i as u8));
            let big = Layout::from_size_align(5000, 8).unwrap();
            let r = a.realloc(q, big, 10);
            assert!((0..10).all(|i| r.add(i).read() == i as u8));
            a.dealloc(r, Layout::from_size_align(10, 8).unwrap());
            let z = a.alloc_zeroed(big);
            assert!((0..5000).all(|i| z.add(i).read() == 0));
            a.dealloc(z, big);
        }
    }

    #[test]
    fn wipe_overwrites_every_byte() {
        let mut buf = vec![0xeeu8; 333];
        // SAFETY: buf is valid for 333 bytes.
        unsafe { wipe(buf.as_mut_ptr(), buf.len()) };
        assert!(buf.iter().all(|&b| b == 0));
    }
}
