//! Unit tests of secure memory.

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
