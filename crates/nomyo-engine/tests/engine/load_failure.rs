//! A model that fails to load (the fault: a truncated GGUF): the
//! failure is reported to every waiter, also to one that starts waiting only
//! after the failure, and requests then fail at once instead of hanging.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nomyo_engine::{Engine, EngineConfig};

#[tokio::test]
async fn truncated_gguf_fails_every_waiter_even_a_late_one() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("truncated-{}.gguf", std::process::id()));
    // A GGUF v3 header that promises tensors and metadata it does not have.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&291u64.to_le_bytes());
    bytes.extend_from_slice(&24u64.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let dir_file = path.clone();
    let mut config = EngineConfig::new(path);
    config.threads = Some(1);
    let engine = Engine::start(config).expect("the header check passes");
    // Let the load fail before anyone waits for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while engine.is_loading() {
        assert!(
            std::time::Instant::now() < deadline,
            "the load neither failed nor finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = tokio::time::timeout(Duration::from_secs(20), engine.wait_ready())
        .await
        .expect("wait_ready must not hang after a failed load");
    assert!(waited.is_err());
    let _ = std::fs::remove_file(dir_file);
}
