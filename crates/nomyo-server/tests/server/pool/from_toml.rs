//! The server's config path that builds a pool from TOML.

use super::*;

/// A server built by the product's start-up path from `settings`, and its
/// (ephemeral) key, fetched to seal to it.
async fn prepared_app(
    settings: nomyo_server::config::Settings,
) -> (axum::Router, nomyo_core::PublicKey) {
    let prepared = nomyo_server::serve::prepare(settings, |_| Err("no embedded".into()))
        .await
        .unwrap();
    let app = nomyo_server::app(prepared.state);
    let key = common::fetch_public_key(&app).await;
    (app, key)
}

#[tokio::test]
async fn toml_urls_build_a_pool_through_the_server_config_path() {
    let (a, b) = (start("a").await, start("b").await);
    let toml = format!(
        "ephemeral_key = true\nkey_bits = 2048\nlisten = \"127.0.0.1:0\"\n\
         [[backends]]\nname = \"pool\"\ntype = \"upstream\"\nurls = [\"{}\", \"{}\"]\n\
         max_concurrency_per_endpoint = 4\nhealth_check_interval_secs = 0\n",
        a.url, b.url
    );
    let settings = common::settings(&toml);
    assert!(matches!(
        settings.backends[..],
        [nomyo_server::config::BackendSpec::Pool { .. }]
    ));
    let (app, server) = prepared_app(settings).await;
    for i in 0..4 {
        let plain = serde_json::to_vec(&common::chat("m", &format!("q{i}"))).unwrap();
        let sealed = common::seal_to(&plain, &server);
        let (status, _, body) = common::oneshot(&app, sealed.request(None, None)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!((a.hits(), b.hits()), (2, 2), "both URLs serve one pool");
}

#[tokio::test]
async fn toml_endpoints_route_by_model_with_their_own_keys_and_caps() {
    // A big server that serves two models next to a small one that serves
    // one: per-endpoint models, API keys and concurrency caps, from TOML.
    let (big, small) = (start("big").await, start("small").await);
    big.ctl.delay_ms.store(150, Ordering::SeqCst);
    small.ctl.delay_ms.store(150, Ordering::SeqCst);
    std::env::set_var("NOMYO_TEST_POOL_KEY_BIG", "key-of-big");
    let toml = format!(
        "ephemeral_key = true\nkey_bits = 2048\nlisten = \"127.0.0.1:0\"\n\
         [[backends]]\nname = \"gpus\"\nhealth_check_interval_secs = 0\nmodels = [\"m\"]\n\
         max_concurrency_per_endpoint = 1\n\
         [[backends.endpoints]]\nurl = \"{}\"\nmodels = [\"m\", \"large\"]\n\
         api_key_env = \"NOMYO_TEST_POOL_KEY_BIG\"\nmax_concurrency = 3\n\
         [[backends.endpoints]]\nurl = \"{}\"\n",
        big.url, small.url
    );
    let settings = common::settings(&toml);
    let (app, server) = prepared_app(settings).await;
    let send = |model: &'static str, i: usize| {
        let app = app.clone();
        let server = server.clone();
        async move {
            let plain = serde_json::to_vec(&common::chat(model, &format!("q{i}"))).unwrap();
            let sealed = common::seal_to(&plain, &server);
            let (status, _, body) = common::oneshot(&app, sealed.request(None, None)).await;
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            common::open_response(&body).1["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // Only the big endpoint serves "large".
    for i in 0..3 {
        assert_eq!(send("large", i).await, "from:big");
    }
    assert_eq!(small.hits(), 0);
    assert_eq!(
        big.ctl.last_auth.lock().unwrap().as_deref(),
        Some("Bearer key-of-big")
    );
    // Four at once for "m": caps 3 (big) + 1 (small) admit all four, both
    // endpoints serve some, and neither ever holds more than its own cap.
    big.ctl.delay_ms.store(400, Ordering::SeqCst);
    small.ctl.delay_ms.store(400, Ordering::SeqCst);
    let answers = futures::future::join_all((0..4).map(|i| send("m", i))).await;
    assert!(answers.iter().any(|a| a == "from:small"), "{answers:?}");
    assert!(answers.iter().any(|a| a == "from:big"), "{answers:?}");
    assert!(big.ctl.max_in_flight.load(Ordering::SeqCst) <= 3);
    assert_eq!(small.ctl.max_in_flight.load(Ordering::SeqCst), 1);
    // The small endpoint got no key (none configured for the backend).
    assert_eq!(small.ctl.last_auth.lock().unwrap().as_deref(), None);
}
