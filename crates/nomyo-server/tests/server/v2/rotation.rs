//! HPKE key rotation on tokio's paused clock: new ids published at once,
//! old keys open during the grace period and get 422 after it, the
//! rotation schedule, and saved keys older than the interval rotated at
//! start.

use axum::http::StatusCode;
use nomyo_core::v2::keys::Kem;
use nomyo_server::app;
use serde_json::Value;

use super::key_configs;
use crate::common::*;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// On tokio's paused clock, which the key store's grace periods follow
/// (`nomyo_server::key_ring::now`): time moves only when the test moves it,
/// never while keys are made or requests opened.
#[tokio::test(start_paused = true)]
async fn rotation_publishes_new_ids_old_opens_in_grace_then_422() {
    use nomyo_server::hpke_keys::{HpkeKeySet, HpkeKeyStore};
    // A long grace for the in-grace checks, then a short one for the expiry.
    let st = state_with(&["m"])
        .hpke_store(
            HpkeKeyStore::new(HpkeKeySet::generate())
                .with_grace(std::time::Duration::from_secs(120)),
        )
        .build()
        .unwrap();
    let app = app(st.clone());
    let old = key_configs(&app).await;
    let (x, w) = (old[0].key_id, old[1].key_id);
    assert_eq!(w, x.wrapping_add(1));
    let r = st.rotate_hpke_keys().await.unwrap();
    let next = [x.wrapping_add(2), x.wrapping_add(3)];
    assert_eq!(r.key_ids, next);
    assert_eq!(r.retired_ids, vec![x, w]);
    // The new keys are published at once, X25519 first.
    let new = key_configs(&app).await;
    assert_eq!(
        new.iter().map(|c| (c.key_id, c.kem)).collect::<Vec<_>>(),
        vec![(next[0], Kem::X25519), (next[1], Kem::XWing)]
    );
    assert_ne!(new[0].public_key, old[0].public_key);
    // During the grace period the old keys still open, by id and by enc length.
    for cfg in &old {
        for key_id in [Some(cfg.key_id), None] {
            let req = seal_v2_frames(cfg, &chat("m", "in grace"), 1024);
            let (s, h, b) = oneshot(&app, req.request(key_id, None)).await;
            assert_eq!(s, StatusCode::OK, "{:?} {key_id:?}: {}", cfg, detail(&b));
            assert_eq!(
                req.open_json(&h, &b)["choices"][0]["message"]["content"],
                "echo:in grace"
            );
        }
    }
    // After it, they are gone: 422 problem+json, with or without the id.
    let grace = std::time::Duration::from_millis(100);
    let st = state_with(&["m"])
        .hpke_store(HpkeKeyStore::new(HpkeKeySet::generate()).with_grace(grace))
        .build()
        .unwrap();
    let app = nomyo_server::app(st.clone());
    let old = key_configs(&app).await;
    st.rotate_hpke_keys().await.unwrap();
    let new = key_configs(&app).await;
    // Past the grace period on the paused clock (the purge the rotation
    // scheduled runs on the way).
    tokio::time::sleep(grace + std::time::Duration::from_millis(200)).await;
    for cfg in &old {
        for key_id in [Some(cfg.key_id), None] {
            let req = seal_v2_frames(cfg, &chat("m", "too late"), 1024);
            let (s, h, b) = oneshot(&app, req.request(key_id, None)).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{:?} {key_id:?}", cfg);
            assert_eq!(h["content-type"], "application/problem+json");
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["type"], "urn:ietf:params:ehbp:error:key-config");
        }
    }
    // The client refetches and succeeds with the new keys.
    for cfg in &new {
        let req = seal_v2_frames(cfg, &chat("m", "refetched"), 1024);
        let (s, h, b) = oneshot(&app, req.request(Some(cfg.key_id), None)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            req.open_json(&h, &b)["_metadata"]["hpke"]["kem"],
            cfg.kem.name()
        );
    }
    let (_, _, m) = oneshot_get(&app, "/metrics").await;
    assert_eq!(
        metric(
            &String::from_utf8(m).unwrap(),
            "nomyo_hpke_key_rotations_total"
        ),
        1.0
    );
}

/// On tokio's paused clock: the maintenance task's rotation schedule, the
/// grace periods and the purges all run on virtual time, so the sleeps
/// below take no wall-clock time and the count of rotations is exact.
#[tokio::test(start_paused = true)]
async fn keys_rotate_on_their_schedule() {
    use nomyo_server::hpke_keys::{HpkeKeySet, HpkeKeyStore};
    let st = state_with(&["m"])
        .hpke_store(
            HpkeKeyStore::new(HpkeKeySet::generate())
                .with_grace(std::time::Duration::from_millis(50)),
        )
        .hpke_rotation(Some(std::time::Duration::from_millis(500)))
        .build()
        .unwrap();
    let app = app(st.clone());
    let first = key_configs(&app).await;
    let task = st.spawn_maintenance();
    // Not before the first interval.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(key_configs(&app).await, first);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    task.abort();
    let later = key_configs(&app).await;
    assert_ne!(later, first);
    // Two rotations (at 500 and 1000 ms), each taking the next two ids.
    assert_eq!(
        later[0].key_id,
        first[0].key_id.wrapping_add(4),
        "two rotations: {first:?} -> {later:?}"
    );
    assert_eq!((later[0].kem, later[1].kem), (Kem::X25519, Kem::XWing));
    // The first keys are past their grace: refused.
    let req = seal_v2_frames(&first[1], &chat("m", "old"), 1024);
    let (s, _, _) = oneshot(&app, req.request(Some(first[1].key_id), None)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

/// On tokio's paused clock: rotated at start, long before the hour-long
/// interval would have come round.
#[tokio::test(start_paused = true)]
async fn saved_keys_older_than_the_interval_rotate_at_start() {
    use nomyo_server::hpke_keys::{HpkeKeySet, HpkeKeyStore};
    let every = std::time::Duration::from_secs(3600);
    let st = state_with(&["m"])
        .hpke_store(HpkeKeyStore::new(HpkeKeySet::generate()).with_age(every))
        .hpke_rotation(Some(every))
        .build()
        .unwrap();
    let app = app(st.clone());
    let first = key_configs(&app).await;
    let task = st.spawn_maintenance();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while key_configs(&app).await == first {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not rotated at start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    task.abort();
    assert_eq!(
        key_configs(&app).await[0].key_id,
        first[0].key_id.wrapping_add(2)
    );
}
