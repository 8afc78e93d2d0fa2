//! Stateless replicas: two servers built through the real config
//! path (`FileConfig` → `serve::prepare`) on one key directory, with the
//! replay window in a real Redis server (`redis-server`, started here on
//! loopback) or, for comparison, in each process.
//!
//! What is shown: both replicas publish the same keys; a request captured at
//! one replica and replayed to the other is refused when the window is shared
//! (409) and — the documented limit of the local window — answered again when
//! it is not; keys rotated by one replica are followed by the other; a store
//! outage fails closed (503) and service resumes when it is back.
//!
//! Without `redis-server` on the PATH the Redis tests say so and pass, unless
//! `NOMYO_REQUIRE_REDIS=1` (CI), which makes them fail.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use nomyo_core::v2::keys::{Kem, KeyConfig};
use nomyo_core::v2::request::RequestSealer;
use nomyo_core::PublicKey;
use nomyo_server::config::FileConfig;
use nomyo_server::serve::{prepare, StartError};
use nomyo_server::{app, AppState};

/// A `redis-server` on a free loopback port, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts one, or `None` (the test is skipped) when the binary is missing
    /// and `NOMYO_REQUIRE_REDIS` is not set.
    fn start() -> Option<Redis> {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Option<Redis> {
        let spawned = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::env::var_os("NOMYO_REQUIRE_REDIS").is_some_and(|v| v == "1") {
                    panic!("redis-server is not installed but NOMYO_REQUIRE_REDIS=1");
                }
                eprintln!("SKIPPED: redis-server is not installed (apt install redis-server)");
                return None;
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A replica configured as an operator would, in TOML.
async fn replica(dir: &Path, upstream: &str, extra: &str) -> Result<AppState, StartError> {
    let toml = format!(
        "key_dir = {dir:?}\nkey_bits = 2048\n\
         [[backends]]\nname = \"up\"\nurl = \"{upstream}\"\nmodels = [\"m\"]\n\
         {extra}\n",
        dir = dir.display().to_string(),
    );
    let settings = FileConfig::from_toml(&toml)
        .unwrap()
        .resolve()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let prepared = prepare(settings, |_| Err("no embedded engine in this test".into())).await?;
    Ok(prepared.state)
}

/// A v1 request sealed to `server`, as nomyo 0.2.9 sends it.
fn v1_request(server: &PublicKey, prompt: &str) -> Sealed {
    seal_to(&serde_json::to_vec(&chat("m", prompt)).unwrap(), server)
}

/// A v2 request (X25519) sealed to the first config of `list`; the same
/// bytes can be sent any number of times.
fn v2_request(list: &[u8], prompt: &str) -> (String, Vec<u8>) {
    let configs = KeyConfig::parse_list(list).unwrap();
    let config = configs.iter().find(|c| c.kem == Kem::X25519).unwrap();
    let (enc, mut sealer) = RequestSealer::new(config).unwrap();
    let frame = sealer
        .seal_chunk(&serde_json::to_vec(&chat("m", prompt)).unwrap())
        .unwrap();
    (hex::encode(enc), frame)
}

fn v2_http(enc_hex: &str, body: &[u8]) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("ehbp-encapsulated-key", enc_hex)
        .body(Body::from(body.to_vec()))
        .unwrap()
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_replicas_share_keys_and_a_replay_at_the_other_replica_is_409() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (up, seen) = start_upstream().await;
    let cluster = format!(
        "[cluster]\nkey_reload_every = \"1s\"\nreplay_redis_url = \"{}\"\nreplay_redis_prefix = \"t1:\"",
        redis.url()
    );
    // The first replica creates the keys; the second loads them.
    let a = app(replica(dir.path(), &up, &cluster).await.unwrap());
    let b = app(replica(dir.path(), &up, &cluster).await.unwrap());
    let key = fetch_public_key(&a).await;
    assert_eq!(key.fingerprint(), fetch_public_key(&b).await.fingerprint());
    let list = fetch_hpke_keys(&a).await;
    assert_eq!(
        list,
        fetch_hpke_keys(&b).await,
        "same HPKE keys on both replicas"
    );

    // v1: answered by A, then the very same bytes (same X-Payload-ID) to B.
    let req = v1_request(&key, "replicated");
    let (s, _, body) = oneshot(&a, req.request(None, None)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (_, answer) = open_response(&body);
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "upstream-echo:replicated"
    );
    let (s, _, body) = oneshot(&b, req.request(None, None)).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(detail(&body).contains("replayed"));
    // The same package under a fresh X-Payload-ID is refused too.
    let mut again = v1_request(&key, "x");
    again.body.clone_from(&req.body);
    again.public_key_header.clone_from(&req.public_key_header);
    let (s, _, _) = oneshot(&b, again.request(None, None)).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // v2: answered by B, replayed to A.
    let (enc, frame) = v2_request(&list, "replicated v2");
    let (s, _, body) = oneshot(&b, v2_http(&enc, &frame)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let (s, _, _) = oneshot(&a, v2_http(&enc, &frame)).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // The upstream ran exactly once per accepted request.
    assert_eq!(seen.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_a_shared_store_each_replica_only_knows_its_own_requests() {
    // The documented limit of the default (local) replay window: a request
    // replayed to another replica is answered again.
    let dir = tempfile::tempdir().unwrap();
    let (up, seen) = start_upstream().await;
    // Each replica keeps its own window on disk: one journal per server (a
    // second server on the same journal file is refused at start).
    let journal = |name: &str| {
        format!(
            "[limits]\nreplay_journal = {:?}\n",
            dir.path().join(name).display().to_string()
        )
    };
    let a = app(replica(dir.path(), &up, &journal("a.log")).await.unwrap());
    let b = app(replica(dir.path(), &up, &journal("b.log")).await.unwrap());
    // Two replicas on the default journal in the key directory: the second
    // is refused, with what to do.
    let first = replica(dir.path(), &up, "").await.unwrap();
    match replica(dir.path(), &up, "").await {
        Err(e) => assert!(
            e.to_string().contains("in use by another nomyo serve"),
            "{e}"
        ),
        Ok(_) => panic!("a second replica shared the first one's replay journal"),
    }
    drop(first);
    let key = fetch_public_key(&a).await;
    let req = v1_request(&key, "local");
    let (s, _, _) = oneshot(&a, req.request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = oneshot(&a, req.request(None, None)).await;
    assert_eq!(s, StatusCode::CONFLICT, "the same replica refuses it");
    let (s, _, _) = oneshot(&b, req.request(None, None)).await;
    assert_eq!(s, StatusCode::OK, "another replica does not know it");
    assert_eq!(seen.requests.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_replica_follows_keys_rotated_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = start_upstream().await;
    let follow = "[cluster]\nkey_reload_every = \"200ms\"\n[hpke]\ngrace = \"1m\"";
    let a_state = replica(dir.path(), &up, follow).await.unwrap();
    let b_state = replica(dir.path(), &up, follow).await.unwrap();
    let _maintenance = b_state.spawn_maintenance();
    let (a, b) = (app(a_state.clone()), app(b_state.clone()));
    let old_key = fetch_public_key(&b).await;
    let old_list = fetch_hpke_keys(&b).await;
    // A request sealed to the old keys before the rotation.
    let pending = v1_request(&old_key, "sealed before the rotation");

    // Replica A rotates both key kinds (an operator could instead drop new
    // key files into the directory); B picks them up on its own.
    a_state.rotate_hpke_keys().await.unwrap();
    // A follows the directory, so its SIGHUP would only reload: write a new
    // server key as an operator would, then let A reload it too.
    let fresh = nomyo_core::keys::PrivateKey::generate(nomyo_core::keys::RsaBits::B2048).unwrap();
    nomyo_core::keys::save_key_pair(dir.path(), &fresh, None, true).unwrap();
    assert!(a_state.reload_keys().await.unwrap());
    let new_list = fetch_hpke_keys(&a).await;
    assert_ne!(new_list, old_list);
    wait_for("B to follow the rotation", || {
        let (b, new_list) = (b.clone(), new_list.clone());
        async move { fetch_hpke_keys(&b).await == new_list }
    })
    .await;
    wait_for("B to follow the new server key", || {
        let b = b.clone();
        let fp = fresh.public_key().fingerprint();
        async move { fetch_public_key(&b).await.fingerprint() == fp }
    })
    .await;
    // Requests sealed to the new keys work on both replicas...
    let (enc, frame) = v2_request(&new_list, "after");
    let (s, _, _) = oneshot(&b, v2_http(&enc, &frame)).await;
    assert_eq!(s, StatusCode::OK);
    let req = v1_request(fresh.public_key(), "after v1");
    let (s, _, _) = oneshot(&b, req.request(None, None)).await;
    assert_eq!(s, StatusCode::OK);
    // ...and the one sealed to the old key still opens during its grace.
    let (s, _, body) = oneshot(&b, pending.request(None, None)).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn replay_store_outage_fails_closed_then_recovers() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let port = redis.port;
    let dir = tempfile::tempdir().unwrap();
    let (up, seen) = start_upstream().await;
    let cluster = format!(
        "[cluster]\nreplay_redis_url = \"{}\"\nreplay_redis_prefix = \"t2:\"",
        redis.url()
    );
    let a = app(replica(dir.path(), &up, &cluster).await.unwrap());
    let key = fetch_public_key(&a).await;
    let (s, _, _) = oneshot(&a, v1_request(&key, "one").request(None, None)).await;
    assert_eq!(s, StatusCode::OK);

    redis.stop();
    let t = Instant::now();
    let (s, h, body) = oneshot(&a, v1_request(&key, "two").request(None, None)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h["retry-after"], "1");
    assert!(detail(&body).contains("replay protection"));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "fails within the store timeout"
    );
    assert_eq!(
        seen.requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "nothing reached the model"
    );

    // The store is back: service resumes without a restart.
    let _redis = Redis::start_on(port).unwrap();
    wait_for("the replay store to be back", || {
        let a = a.clone();
        let key = key.clone();
        async move {
            let (s, _, _) = oneshot(&a, v1_request(&key, "three").request(None, None)).await;
            s == StatusCode::OK
        }
    })
    .await;
}

#[tokio::test]
async fn misconfigured_replicas_do_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = start_upstream().await;
    // Nobody listens on this port: the replica refuses to start rather than
    // serve without the shared window.
    let cluster = format!(
        "[cluster]\nreplay_redis_url = \"redis://:hunter2-secret@127.0.0.1:{}/0\"",
        free_port()
    );
    let err = replica(dir.path(), &up, &cluster)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("replay store 127.0.0.1:"), "{err}");
    assert!(!err.contains("hunter2"), "the URL's password leaked: {err}");

    // Replicas need the HPKE keys in the shared directory, which a
    // password-protected server key keeps out of it.
    std::env::set_var("NOMYO_TEST_REPLICA_PW", "correct horse");
    let pw = "key_password_env = \"NOMYO_TEST_REPLICA_PW\"\n";
    let toml = format!(
        "{pw}key_dir = {:?}\nkey_bits = 2048\n[[backends]]\nname = \"up\"\nurl = \"{up}\"\nmodels = [\"m\"]\n[cluster]\nkey_reload_every = \"10s\"\n",
        dir.path().display().to_string()
    );
    let settings = common::settings(&toml);
    let err = prepare(settings, |_| Err("none".into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("key_reload_every"), "{err}");
    // The same with only a shared replay window (nobody listens there: the
    // key check comes first).
    let toml = format!(
        "{pw}key_dir = {:?}\nkey_bits = 2048\n[[backends]]\nname = \"up\"\nurl = \"{up}\"\nmodels = [\"m\"]\n[cluster]\nreplay_redis_url = \"redis://127.0.0.1:{}/0\"\n",
        dir.path().display().to_string(),
        free_port()
    );
    let settings = common::settings(&toml);
    let err = prepare(settings, |_| Err("none".into()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HPKE keys are saved there only"), "{err}");

    // Not a Redis URL.
    let bad = FileConfig::from_toml("[cluster]\nreplay_redis_url = \"http://x\"\n")
        .unwrap()
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(bad.contains("redis://"), "{bad}");
}

/// One API key sends cheap requests to two replicas sharing the replay
/// store until the store refuses it (429); a second key is still served:
/// the per-caller share holds across the fleet, not per replica.
#[tokio::test]
async fn one_api_key_filling_the_shared_replay_store_leaves_room_for_others() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (up, _) = start_upstream().await;
    let keys_file = dir.path().join("api_keys");
    std::fs::write(&keys_file, "key-a\nkey-b\n").unwrap();
    // The API key file is a top-level key: it goes before the tables.
    let toml = format!(
        "api_key_file = {keys:?}\nkey_dir = {dir:?}\nkey_bits = 2048\n\
         [[backends]]\nname = \"up\"\nurl = \"{up}\"\nmodels = [\"m\"]\n\
         [limits]\nreplay_max_entries = 16\n\
         [cluster]\nreplay_redis_url = \"{url}\"\nreplay_redis_prefix = \"t3:\"\n",
        keys = keys_file.display().to_string(),
        dir = dir.path().display().to_string(),
        url = redis.url()
    );
    let start = || async {
        let settings = common::settings(&toml);
        let prepared = prepare(settings, |_| Err("no embedded engine in this test".into()))
            .await
            .unwrap();
        app(prepared.state)
    };
    let a = start().await;
    let b = start().await;
    // Without its key a caller is refused: the key file is in force.
    let req = v1_request(&fetch_public_key(&a).await, "no key");
    assert_eq!(
        oneshot(&a, req.request(None, None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let key = fetch_public_key(&a).await;
    let mut served = 0;
    let mut refused = false;
    for i in 0..16 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let req = v1_request(&key, "fill");
        let (s, h, body) = oneshot(replica, req.request(Some("key-a"), None)).await;
        match s {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(h.contains_key("retry-after"));
                assert!(detail(&body).contains("replay window"), "{}", detail(&body));
                refused = true;
                break;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(refused, "key-a was never refused");
    // 25 % of 16 entries, two per request: two requests across both replicas.
    assert_eq!(served, 2);
    for replica in [&a, &b] {
        let req = v1_request(&key, "still served");
        let (s, _, body) = oneshot(replica, req.request(Some("key-b"), None)).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
}
