//! The configuration's unit tests.

use super::*;

#[test]
fn a_key_password_and_no_password_from_different_layers_do_not_meet() {
    // A password flag over `no_password = true` in the file: encrypted.
    let file = FileConfig::from_toml("no_password = true\n").unwrap();
    let flags = FileConfig {
        key_password_env: Some("SERVE_KEY_PW".into()),
        ..Default::default()
    };
    let c = file.overlay(flags);
    assert_eq!(c.no_password, None);
    assert_eq!(c.key_password_env.as_deref(), Some("SERVE_KEY_PW"));
    // --no-password over a password in the file: unencrypted.
    let file = FileConfig::from_toml("key_password_file = \"/run/pw\"\n").unwrap();
    let flags = FileConfig {
        no_password: Some(true),
        ..Default::default()
    };
    let c = file.overlay(flags);
    assert_eq!(c.key_password_file, None);
    assert_eq!(c.no_password, Some(true));
    // Both in one layer: refused.
    let pw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw.path(), "pw\n").unwrap();
    let both = FileConfig {
        no_password: Some(true),
        key_password_file: Some(pw.path().to_owned()),
        ..Default::default()
    };
    let err = both.resolve().unwrap_err().to_string();
    assert!(err.contains("no_password"), "{err}");
}

#[test]
fn example_config_parses_and_resolves() {
    let text = include_str!("../../../../nomyo.example.toml");
    let cfg = FileConfig::from_toml(text).unwrap();
    // The example names secret files that do not exist here; drop them.
    let cfg = FileConfig {
        key_password_file: None,
        key_password_env: None,
        api_key_file: None,
        tls_cert: None,
        tls_key: None,
        backends: cfg.backends.map(|bs| {
            bs.into_iter()
                .map(|b| BackendConfig {
                    api_key_file: None,
                    api_key_env: None,
                    ..b
                })
                .collect()
        }),
        ..cfg
    };
    let s = cfg.resolve().unwrap();
    assert!(!s.backends.is_empty());
    let pool = s.backends.iter().find_map(|b| match b {
        BackendSpec::Pool { name, config } if name == "gpu-pool" => Some(config),
        _ => None,
    });
    let pool = pool.expect("the example has a pool");
    assert_eq!(pool.endpoints.len(), 2);
    assert_eq!(pool.max_concurrency_per_endpoint, 8);
    assert_eq!(pool.breaker_failures, 3);
    assert!(s.tiers.is_some());
    assert_eq!(s.hpke_rotate_every, Some(Duration::from_secs(86_400)));
    assert_eq!(s.hpke_grace, Duration::from_secs(600));
    assert_eq!(
        s.post_quantum_tiers,
        BTreeSet::from([SecurityTier::Maximum])
    );
}

#[test]
fn upstream_url_stays_plain_urls_make_a_pool_both_is_an_error() {
    let backends = |extra: &str| {
        FileConfig::from_toml(&format!(
            "ephemeral_key = true\n[[backends]]\nname = \"u\"\n{extra}"
        ))
        .unwrap()
        .resolve()
        .map(|s| s.backends)
    };
    let one = backends("url = \"http://127.0.0.1:1/v1\"\n").unwrap();
    assert!(matches!(&one[..], [BackendSpec::Upstream { .. }]));
    let pool = backends("urls = [\"http://127.0.0.1:1/v1\", \"http://127.0.0.1:2/v1\"]\nhealth_check_interval_secs = 0\nbreaker_cooldown_secs = 7\n").unwrap();
    match &pool[..] {
        [BackendSpec::Pool { config, .. }] => {
            assert_eq!(config.endpoints.len(), 2);
            assert!(config.health_check_interval.is_zero());
            assert_eq!(config.breaker_cooldown, Duration::from_secs(7));
        }
        other => panic!("expected a pool: {other:?}"),
    }
    // A single url with pool settings: a pool of one.
    let one_pool =
        backends("url = \"http://127.0.0.1:1/v1\"\nmax_concurrency_per_endpoint = 2\n").unwrap();
    assert!(matches!(&one_pool[..], [BackendSpec::Pool { .. }]));
    let both = backends("url = \"http://127.0.0.1:1/v1\"\nurls = [\"http://127.0.0.1:2/v1\"]\n")
        .unwrap_err();
    assert!(both.to_string().contains("not several"), "{both}");
    assert!(backends("urls = []\n").is_err());
    // [[backends.endpoints]]: per-endpoint keys, models and caps.
    std::env::set_var("NOMYO_TEST_EP_KEY", "k1");
    let eps = backends(
        "models = [\"m\"]\nmax_concurrency_per_endpoint = 2\n\
         [[backends.endpoints]]\nurl = \"http://127.0.0.1:1/v1\"\nmodels = [\"m\", \"x\"]\n\
         api_key_env = \"NOMYO_TEST_EP_KEY\"\nmax_concurrency = 9\n\
         [[backends.endpoints]]\nurl = \"http://127.0.0.1:2/v1\"\n",
    )
    .unwrap();
    match &eps[..] {
        [BackendSpec::Pool { config, .. }] => {
            assert_eq!(config.endpoints[0].models, vec!["m", "x"]);
            assert_eq!(config.endpoints[1].models, vec!["m"]);
            assert!(config.endpoints[0].api_key.is_some());
            assert!(config.endpoints[1].api_key.is_none());
            assert_eq!(config.endpoint_caps, vec![Some(9), None]);
            assert_eq!(config.max_concurrency_per_endpoint, 2);
            // Debug never shows the key.
            assert!(!format!("{config:?}").contains("k1"));
        }
        other => panic!("expected one pool, got {other:?}"),
    }
    let mixed = backends(
        "url = \"http://127.0.0.1:1/v1\"\n[[backends.endpoints]]\nurl = \"http://127.0.0.1:2/v1\"\n",
    )
    .unwrap_err();
    assert!(mixed.to_string().contains("not several"), "{mixed}");
    let unknown = FileConfig::from_toml(
        "[[backends]]\nname = \"p\"\n[[backends.endpoints]]\nurl = \"http://h/v1\"\ncap = 3\n",
    )
    .unwrap_err();
    assert!(unknown.contains("cap"), "{unknown}");
}

#[test]
fn replicas_do_not_rotate_on_their_own_and_flags_replace_the_store_url() {
    let resolve = |t: &str| FileConfig::from_toml(t).unwrap().resolve().unwrap();
    // A single server rotates every 24 h by default...
    assert!(resolve("").hpke_rotate_every.is_some());
    // ...a replica (shared window or key following) only when told to.
    let shared = resolve("[cluster]\nreplay_redis_url = \"redis://127.0.0.1:1/0\"\n");
    assert!(shared.cluster.is_replica());
    assert_eq!(shared.hpke_rotate_every, None);
    let follower = resolve("[cluster]\nkey_reload_every = \"10s\"\n");
    assert_eq!(follower.hpke_rotate_every, None);
    let rotator = resolve(
        "[hpke]\nrotate_every = \"1h\"\n[cluster]\nkey_reload_every = \"10s\"\nreplay_redis_url = \"redis://h:1\"\n",
    );
    assert_eq!(rotator.hpke_rotate_every, Some(Duration::from_secs(3600)));
    // A URL on the command line replaces the file's, however each is given.
    std::env::set_var("NOMYO_TEST_REPLAY_URL", "redis://from-env:6379/0");
    let file =
        FileConfig::from_toml("[cluster]\nreplay_redis_url_env = \"NOMYO_TEST_REPLAY_URL\"\n")
            .unwrap();
    let flags = FileConfig {
        cluster: ClusterConfig {
            replay_redis_url: Some("redis://from-flag:6379/0".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let url = file
        .overlay(flags)
        .resolve()
        .unwrap()
        .cluster
        .replay_redis_url
        .unwrap();
    assert_eq!(url.expose_secret(), "redis://from-flag:6379/0");
    // Absurd windows are refused, not overflowed.
    let err = FileConfig::from_toml("[limits]\nreplay_window_secs = 9223372036854775807\n")
        .unwrap()
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most"), "{err}");
}

#[test]
fn flags_win_over_file_and_file_over_defaults() {
    let file = FileConfig::from_toml(
        "listen = \"127.0.0.1:1\"\nkey_bits = 2048\n[limits]\nmax_queue = 3\nmax_concurrency = 5\n",
    )
    .unwrap();
    let flags = FileConfig {
        listen: Some("127.0.0.1:2".into()),
        limits: LimitsConfig {
            max_queue: Some(7),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = file.overlay(flags).resolve().unwrap();
    assert_eq!(s.listen.port(), 2);
    assert_eq!(s.limits.max_queue, 7);
    assert_eq!(s.limits.max_concurrency, 5);
    assert_eq!(s.limits.max_body_bytes, Limits::default().max_body_bytes);
    assert!(matches!(s.key, KeySetting::Dir(ref k) if k.bits == RsaBits::B2048));
    // With no backend anywhere, the embedded model serves.
    assert!(matches!(s.backends[..], [BackendSpec::Embedded { .. }]));
}

#[test]
fn the_embedded_context_comes_from_the_file_and_the_flag_wins() {
    let file = FileConfig::from_toml("context = 4096\nthreads = 2\n").unwrap();
    let s = file.resolve().unwrap();
    assert!(matches!(
        s.backends[..],
        [BackendSpec::Embedded {
            context: Some(4096),
            threads: Some(2),
            ..
        }]
    ));
    let file = FileConfig::from_toml("context = 4096\n").unwrap();
    let flags = FileConfig {
        context: Some(512),
        ..Default::default()
    };
    let s = file.overlay(flags).resolve().unwrap();
    assert!(matches!(
        s.backends[..],
        [BackendSpec::Embedded {
            context: Some(512),
            ..
        }]
    ));
    let s = FileConfig::from_toml(
        "[[backends]]\nname = \"local\"\ntype = \"embedded\"\ncontext = 1024\n",
    )
    .unwrap()
    .resolve()
    .unwrap();
    assert!(matches!(
        s.backends[..],
        [BackendSpec::Embedded {
            context: Some(1024),
            ..
        }]
    ));
    // Absent: the engine takes the model's.
    let s = FileConfig::default().resolve().unwrap();
    assert!(matches!(
        s.backends[..],
        [BackendSpec::Embedded { context: None, .. }]
    ));
}

#[test]
fn typos_and_bad_values_are_refused_with_a_position() {
    let e = FileConfig::from_toml("lisen = \"x\"\n").unwrap_err();
    assert!(e.contains("lisen") && e.contains("line 1"), "{e}");
    let bad = [
        "listen = \"nope\"",
        "key_bits = 1024",
        "tls_cert = \"c.pem\"",
        "[tiers.ultra]\nmodels = [\"*\"]",
        "[tiers.high]\nmodels = []",
        "[[backends]]\nname = \"a\"\n",
        "api_key_hashes = [\"sha256:12\"]",
        "[limits]\nmax_concurrency = 0",
        "[hpke]\nrotate_every = \"soon\"",
        "[hpke]\nrotate_every = \"0s\"",
        "[hpke]\ngrace = \"5 parsecs\"",
        "[hpke]\nrotate_every = \"1h\"\ngrace = \"2h\"",
        "[hpke]\nrotat_every = \"1h\"",
        "[tiers.high]\nmodels = [\"*\"]\nrequire_post_quantum = \"yes\"",
    ];
    for t in bad {
        let r = FileConfig::from_toml(t)
            .map_err(|e| e.to_string())
            .and_then(|c| c.resolve().map_err(|e| e.to_string()));
        assert!(r.is_err(), "accepted: {t}");
    }
}

#[test]
fn access_replay_journal_and_stream_settings() {
    let s = FileConfig::default().resolve().unwrap();
    // Not public by default; the journal beside the key; streams bounded.
    assert_eq!(s.metrics, MetricsAccess::Loopback);
    assert_eq!(
        s.replay_journal,
        Some(PathBuf::from(DEFAULT_KEY_DIR).join("replay_window.log"))
    );
    assert!(s.trusted_proxies.is_empty() && s.allowed_hosts.is_empty());
    assert_eq!(s.limits.replay_share_percent, 25);
    assert_eq!(s.limits.stream_write_timeout, Duration::from_secs(30));
    assert_eq!(s.limits.stream_idle_timeout, Duration::from_secs(120));
    assert_eq!(s.limits.max_buffered_body_bytes, 256 * 1024 * 1024);

    let s = FileConfig::from_toml(
        "metrics = true
ephemeral_key = true
trusted_proxies = [\"10.0.0.0/8\"]
         allowed_hosts = [\"nomyo.internal\"]
         [limits]
replay_share_percent = 10
stream_write_timeout_secs = 5
         max_body_bytes = 134217728
",
    )
    .unwrap()
    .resolve()
    .unwrap();
    assert_eq!(s.metrics, MetricsAccess::Public);
    assert_eq!(s.replay_journal, None, "an ephemeral key journals nothing");
    assert!(!s.trusted_proxies.is_empty());
    assert_eq!(s.allowed_hosts, ["nomyo.internal"]);
    assert_eq!(s.limits.replay_share_percent, 10);
    assert_eq!(s.limits.stream_write_timeout, Duration::from_secs(5));
    assert_eq!(s.limits.max_buffered_body_bytes, 4 * 134217728);

    let s = FileConfig::from_toml(
        "[limits]
replay_journal = \"off\"",
    )
    .unwrap()
    .resolve()
    .unwrap();
    assert_eq!(s.replay_journal, None);
    for (bad, what) in [
        (
            "[limits]
replay_share_percent = 0",
            "replay_share_percent",
        ),
        (
            "[limits]
replay_share_percent = 101",
            "replay_share_percent",
        ),
        ("trusted_proxies = [\"proxy.example\"]", "trusted_proxies"),
        (
            "[limits]
stream_idle_timeout = \"0s\"",
            "stream_idle_timeout",
        ),
        (
            "[limits]
max_buffered_body_bytes = 2048",
            "max_buffered_body_bytes",
        ),
    ] {
        let err = FileConfig::from_toml(bad)
            .unwrap()
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains(what), "{bad}: {err}");
    }
}

#[test]
fn hpke_rotation_and_post_quantum_tiers() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
    assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_duration("h"), None);
    // Defaults: daily rotation, 10 minutes of grace, maximum requires PQ.
    let s = FileConfig::default().resolve().unwrap();
    assert_eq!(s.hpke_rotate_every, Some(Duration::from_secs(86_400)));
    assert_eq!(s.hpke_grace, Duration::from_secs(600));
    assert_eq!(
        s.post_quantum_tiers,
        BTreeSet::from([SecurityTier::Maximum])
    );
    // Configured, and flags over the file.
    let file = FileConfig::from_toml(
        "[hpke]\nrotate_every = \"1h\"\ngrace = \"30s\"\n\
         [tiers.maximum]\nmodels = [\"*\"]\nrequire_post_quantum = false\n\
         [tiers.high]\nmodels = [\"*\"]\nrequire_post_quantum = true\n\
         [tiers.standard]\nmodels = [\"*\"]\n",
    )
    .unwrap();
    let flags = FileConfig {
        hpke: HpkeConfig {
            grace: Some("2m".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = file.clone().overlay(flags).resolve().unwrap();
    assert_eq!(s.hpke_rotate_every, Some(Duration::from_secs(3600)));
    assert_eq!(s.hpke_grace, Duration::from_secs(120));
    assert_eq!(s.post_quantum_tiers, BTreeSet::from([SecurityTier::High]));
    let off = FileConfig::from_toml("[hpke]\nrotate_every = \"off\"\ngrace = \"0s\"")
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(
        (off.hpke_rotate_every, off.hpke_grace),
        (None, Duration::ZERO)
    );
}

#[test]
fn duration_keys_take_durations_and_the_older_secs_keys_still_load() {
    let (c, warnings) = FileConfig::from_toml_with_warnings(
        "shutdown_grace = \"1m\"
key_grace = 45
[limits]
queue_timeout = \"10s\"
replay_window = \"2h\"
request_timeout_secs = 120
[[backends]]
name = \"u\"
url = \"http://127.0.0.1:1/v1\"
timeout = \"5m\"
connect_timeout_secs = 3
",
    )
    .unwrap();
    assert_eq!(c.shutdown_grace_secs, Some(60));
    assert_eq!(c.key_grace_secs, Some(45));
    assert_eq!(c.limits.queue_timeout_secs, Some(10));
    assert_eq!(c.limits.replay_window_secs, Some(7200));
    assert_eq!(c.limits.request_timeout_secs, Some(120));
    let b = &c.backends.as_ref().unwrap()[0];
    assert_eq!(b.timeout_secs, Some(300));
    assert_eq!(b.connect_timeout_secs, Some(3));
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("limits.request_timeout_secs")
            && warnings[0].contains("limits.request_timeout = \"120s\""),
        "{warnings:?}"
    );
    assert!(
        warnings[1].contains("[[backends]] connect_timeout = \"3s\""),
        "{warnings:?}"
    );
    // No warning for a file in the current names.
    let (_, none) =
        FileConfig::from_toml_with_warnings("[limits]\nqueue_timeout = \"5s\"\n").unwrap();
    assert!(none.is_empty());
    for (bad, what) in [
        ("[limits]\nqueue_timeout = \"500ms\"\n", "whole seconds"),
        ("[limits]\nqueue_timeout = \"soon\"\n", "not a duration"),
        ("shutdown_grace = -1\n", "negative"),
        (
            "[limits]\nqueue_timeout = \"5s\"\nqueue_timeout_secs = 5\n",
            "both given",
        ),
        ("[limits]\nqueue_timeout_sec = 5\n", "unknown field"),
    ] {
        let err = FileConfig::from_toml(bad).unwrap_err();
        assert!(err.contains(what), "{bad}: {err}");
    }
}
