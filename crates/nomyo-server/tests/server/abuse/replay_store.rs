//! The replay store: one caller filling it for everyone, and a
//! restart reopening its window.

use super::*;

/// One API key sends cheap requests until the replay store refuses it; a
/// second API key is still served: no caller may hold more than its share
/// of the store.
#[tokio::test]
async fn one_api_key_filling_the_replay_store_leaves_room_for_others() {
    let (b, _) = echo(&["m"]);
    let mut keys = ApiKeys::open();
    keys.add_key("key-a");
    keys.add_key("key-b");
    let capacity = 16;
    let b = b.api_keys(keys).limits(Limits {
        replay_capacity: capacity,
        ..Limits::default()
    });
    let addr = serve(b.build().unwrap()).await;
    let mut served_a = 0;
    let mut refused_a = false;
    for _ in 0..capacity {
        let s = seal_json(&chat("m", "fill"));
        match post_v1(addr, &s, Some("key-a"), None).await.0 {
            200 => served_a += 1,
            429 => {
                refused_a = true;
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused_a, "key-a was never refused (429)");
    // Each request holds two entries (its id and its package).
    assert!(served_a * 2 < capacity, "key-a held {served_a} requests");
    let s = seal_json(&chat("m", "still served"));
    let (status, body) = post_v1(addr, &s, Some("key-b"), None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// A request captured (say, from a TLS terminator's log) is sent again after
/// the server restarted with the same key directory: still 409, and the
/// backend ran once. v1 packages carry no time, so only the journaled
/// replay window (`replay_window.log` in the key directory) stops this.
#[tokio::test]
async fn captured_request_replayed_after_a_restart_is_409() {
    use nomyo_server::serve::{self, EmbeddedParams};
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend(&["m"]);
    let start = || {
        let toml = format!(
            "key_dir = \"{}\"\nkey_bits = 2048\n[[backends]]\nname = \"local\"\ntype = \"embedded\"\n",
            dir.path().display()
        );
        let settings = common::settings(&toml);
        let backend = Arc::clone(&backend);
        async move {
            let prepared = serve::prepare(settings, move |_p: EmbeddedParams| {
                Ok(Arc::clone(&backend) as Arc<dyn nomyo_server::backend::Backend>)
            })
            .await
            .unwrap();
            nomyo_server::app(prepared.state)
        }
    };
    let app = start().await;
    let key = fetch_public_key(&app).await;
    let s = seal_to(&serde_json::to_vec(&chat("m", "once")).unwrap(), &key);
    let (status, _, _) = oneshot(&app, s.request(None, None)).await;
    assert_eq!(status, StatusCode::OK);
    drop(app);

    // The restarted server (same key directory) refuses the same bytes.
    let app = start().await;
    let (status, _, body) = oneshot(&app, s.request(None, None)).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(backend.calls.load(Ordering::SeqCst), 1);
    // Under a fresh id too (the package itself is recorded).
    let mut again = s.request(None, None);
    again
        .headers_mut()
        .insert("x-payload-id", payload_id().parse().unwrap());
    assert_eq!(oneshot(&app, again).await.0, StatusCode::CONFLICT);
    assert!(dir.path().join("replay_window.log").exists());
}
