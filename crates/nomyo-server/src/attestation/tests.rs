use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::time::Duration;

use super::*;

/// A device whose quotes wait until the test lets them go.
struct Gated {
    started: std_mpsc::Sender<()>,
    go: std_mpsc::Receiver<()>,
}

impl Device for Gated {
    fn quote(&mut self, extra_data: &[u8]) -> Result<Quote, String> {
        let _ = self.started.send(());
        self.go
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "not released".to_owned())?;
        Ok(Quote {
            attest: extra_data.to_vec(),
            signature: vec![1],
            pcrs: PCR_INDICES.iter().map(|&i| (i, vec![0; 32])).collect(),
        })
    }

    fn activate(&mut self, blob: &[u8], _secret: &[u8]) -> Result<Vec<u8>, String> {
        if blob == b"good" {
            Ok(b"credential".to_vec())
        } else {
            Err("TPM_RC_INTEGRITY".into())
        }
    }
}

fn evidence() -> Evidence {
    Evidence::new(vec![0, 1, 2], vec![], vec![0, 2, 9, 9])
}

fn gated(queue: usize) -> (Attestation, std_mpsc::Receiver<()>, std_mpsc::Sender<()>) {
    let (started_tx, started) = std_mpsc::channel();
    let (go, go_rx) = std_mpsc::channel();
    let go_rx = Mutex::new(Some(go_rx));
    let att = Attestation::start(
        move || {
            let go = go_rx.lock().unwrap().take().unwrap();
            Ok((
                Gated {
                    started: started_tx,
                    go,
                },
                evidence(),
            ))
        },
        queue,
    )
    .unwrap();
    (att, started, go)
}

#[tokio::test]
async fn a_full_queue_is_refused_at_once_with_503() {
    let (att, started, go) = gated(1);
    // The first quote is on the TPM, the second waits in the queue of one.
    let a = att.clone();
    let first = tokio::spawn(async move { a.quote(b"first").await });
    tokio::task::spawn_blocking(move || started.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    // One poll enqueues (the send is synchronous); the second then waits.
    let mut second = Box::pin(att.quote(b"second"));
    assert!(futures::poll!(&mut second).is_pending());
    let mut third = Box::pin(att.answer_block("id", true));
    let e = match futures::poll!(&mut third) {
        std::task::Poll::Ready(Err(e)) => e,
        _ => panic!("a third quote was not refused while the TPM was busy"),
    };
    assert!(matches!(e, ApiError::TpmBusy), "{e:?}");
    assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e.detail(), "the TPM is busy; retry later");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    go.send(()).unwrap();
    go.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap().attest, b"first");
    assert_eq!(second.await.unwrap().attest, b"second");
}

#[tokio::test]
async fn answer_block_carries_the_quote_for_the_payload_id() {
    let (att, _started, go) = gated(4);
    go.send(()).unwrap();
    let block = serde_json::to_value(att.answer_block("payload-1", true).await.unwrap()).unwrap();
    assert_eq!(block["is_available"], true);
    assert_eq!(block["pcr_banks"], "sha256:0,7,10");
    let attest = base64::engine::general_purpose::STANDARD
        .decode(block["quote_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(attest, nomyo_core::tpm::extra_data_for("payload-1"));
    assert_eq!(block["pcr_values"]["sha256"]["7"], hex::encode([0u8; 32]));
    assert_eq!(block["aik_pubkey_b64"], b64(&[0, 2, 9, 9]));
    // Per-answer quotes off: no TPM work.
    assert_eq!(
        serde_json::to_value(att.answer_block("payload-2", false).await.unwrap()).unwrap(),
        json!({"is_available": false})
    );
}

#[tokio::test]
async fn without_a_tpm_blocks_say_unavailable_and_routes_404() {
    let att = Attestation::none();
    assert!(!att.is_available());
    assert_eq!(
        serde_json::to_value(att.answer_block("x", true).await.unwrap()).unwrap(),
        json!({"is_available": false})
    );
    let e = att.quote(b"x").await.unwrap_err();
    assert_eq!(e.status(), axum::http::StatusCode::NOT_FOUND);
    assert_eq!(e.detail(), "this server has no TPM attestation");
}

#[tokio::test]
async fn activation_refusals_are_one_opaque_400() {
    let (att, _started, _go) = gated(4);
    assert_eq!(
        att.activate(b"good".to_vec(), vec![]).await.unwrap(),
        b"credential"
    );
    let e = att.activate(b"bad".to_vec(), vec![]).await.unwrap_err();
    assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
    assert_eq!(e.detail(), "credential activation failed");
}

#[test]
fn a_device_that_does_not_open_is_an_error() {
    let r = Attestation::start(
        || -> Result<(Gated, Evidence), String> { Err("no TPM there".into()) },
        4,
    );
    assert_eq!(r.unwrap_err(), "no TPM there");
}

#[test]
fn ak_fingerprint_is_the_sha256_of_the_tpm2b_public() {
    let ev = evidence();
    assert_eq!(
        ev.ak_fingerprint,
        format!("sha256:{}", hex::encode(Sha256::digest([0u8, 2, 9, 9])))
    );
}
