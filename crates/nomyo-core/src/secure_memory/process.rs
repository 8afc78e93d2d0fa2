//! Process hardening (no core dumps, undumpable) and the report of what the
//! process's memory protection achieved.

use super::*;

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

pub(super) static CORE_DUMPS_OFF: OnceLock<bool> = OnceLock::new();

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

pub(super) fn platform() -> &'static str {
    std::env::consts::OS
}

pub(super) fn probe_mlock() -> bool {
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

pub(super) fn memlock_limit() -> Option<u64> {
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

pub(super) fn disable_core_dumps() -> bool {
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
