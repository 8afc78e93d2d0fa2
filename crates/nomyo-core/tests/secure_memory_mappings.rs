//! Found by the `ehbp_frames` fuzz target: every `SecretBuf`
//! marks its pages `MADV_DONTDUMP`, which splits the process's memory
//! mappings. If the mark stays after the buffer is freed, the split stays
//! too, and a long-running process whose secret buffers land on ever new
//! pages collects mappings until it reaches `vm.max_map_count` (65530) and
//! every allocation fails (the fuzzer died of "out of memory" at 600 MB).
//! Freed buffers must leave no mappings behind. Its own test binary: it
//! counts the whole process's mappings.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use nomyo_core::SecretBuf;

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn dropped_secret_buffers_leave_no_mappings_behind() {
    let before = mappings();
    // Ordinary live allocations between the secret pages, so that the
    // freed secret pages are not adjacent to each other.
    let mut ordinary = Vec::new();
    let mut secrets = Vec::new();
    for _ in 0..2000 {
        let mut s = SecretBuf::new();
        s.extend_from_slice(b"secret");
        secrets.push(s);
        ordinary.push(vec![1u8; 4096]);
    }
    let live = mappings();
    drop(secrets);
    let after = mappings();
    eprintln!(
        "mappings: {before} before, {live} with 2000 live buffers, {after} after dropping them"
    );
    assert!(
        after < before + 200,
        "{} mappings left behind by freed secret buffers",
        after.saturating_sub(before)
    );
    drop(ordinary);
}
