//! The client against a scriptable v1 server double over real sockets.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{local_client, shared_key, Answer, Double, Scripted};
use nomyo_client::{
    ChatMessage, ChatRequest, Client, ClientBuilder, Error, KeySource, KnownServers,
    RequestOptions, SecretString, SecurityTier, Tool, TrustDecision,
};
use nomyo_core::keys::{self, PrivateKey, RsaBits};
use nomyo_core::v1;
use serde_json::json;

fn builder(d: &Double) -> ClientBuilder {
    local_client(&d.url())
}

type Check = fn(&Error) -> bool;

fn hello() -> ChatRequest {
    ChatRequest::new("test-model").message(ChatMessage::user("hello there"))
}

fn header_key(r: &common::Recorded) -> nomyo_core::PublicKey {
    v1::decode_public_key_header(r.headers["x-public-key"].to_str().unwrap()).unwrap()
}

#[tokio::test]
async fn round_trip_with_types_passthrough_and_metadata() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d)
        .security_tier(SecurityTier::High)
        .build()
        .unwrap();
    let request = ChatRequest::new("test-model")
        .message(ChatMessage::system("be brief"))
        .message(ChatMessage::user("weather in Paris?"))
        .temperature(0.5)
        .max_tokens(20)
        .seed(42)
        .tools(vec![Tool::function(
            "get_weather",
            "weather",
            json!({"type": "object"}),
        )])
        .with("tool_choice", json!("auto"))
        .with("response_format", json!({"type": "json_object"}))
        .with("logprobs", json!(true))
        .with("n", json!(1));
    let c = client.create(&request).await.unwrap();
    assert_eq!(c.text(), Some("echo: weather in Paris?"));
    let msg = &c.choices[0].message;
    assert_eq!(msg.reasoning_content.as_deref(), Some("thinking about it"));
    assert_eq!(
        msg.tool_calls.as_ref().unwrap()[0].function.name,
        "get_weather"
    );
    assert_eq!(c.usage.as_ref().unwrap().total_tokens, 8);
    assert_eq!(c.system_fingerprint.as_deref(), Some("fp_double"));
    // Every parameter reached the server inside the package.
    let received = &c.extra["received"];
    for (k, v) in [
        ("seed", json!(42)),
        ("tool_choice", json!("auto")),
        ("logprobs", json!(true)),
        ("n", json!(1)),
        ("max_tokens", json!(20)),
        ("temperature", json!(0.5)),
    ] {
        assert_eq!(received[k], v, "{k}");
    }
    assert_eq!(received["response_format"]["type"], "json_object");
    assert_eq!(received["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(received["messages"][0]["role"], "system");

    // Metadata: the server's, plus the client's additions.
    let posts = d.posts();
    assert_eq!(posts.len(), 1);
    let sent_id = posts[0].headers["x-payload-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid_v4(&sent_id), "{sent_id}");
    let m = &c.metadata;
    assert_eq!(m.payload_id.as_deref(), Some(sent_id.as_str()));
    assert_eq!(m.processed_at, Some(1764300001)); // the sealed value wins
    assert_eq!(m.is_encrypted, Some(true));
    assert_eq!(
        m.encryption_algorithm.as_deref(),
        Some("hybrid-aes256-rsa4096")
    );
    assert_eq!(m.security_tier.as_deref(), Some("high"));
    assert!(m.memory_protection.as_ref().unwrap().memory_locking);

    // Headers as docs/PROTOCOL.md §3.2 lists them.
    let h = &posts[0].headers;
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(h["x-security-tier"], "high");
    assert!(h.get("authorization").is_none());
    assert_eq!(&header_key(&posts[0]), shared_key(0).public_key());
    // The body is a strict v1 package, and the plaintext never travels in it.
    let body = std::str::from_utf8(&posts[0].body).unwrap();
    assert!(!body.contains("Paris"));
    v1::Package::from_json(&posts[0].body).unwrap();

    // --json output: the whole response, _metadata included.
    let out = serde_json::to_value(&c).unwrap();
    assert_eq!(out["_metadata"]["payload_id"], sent_id.as_str());
    assert_eq!(
        out["choices"][0]["message"]["tool_calls"][0]["id"],
        "call_1"
    );
}

fn uuid_v4(s: &str) -> bool {
    s.len() == 36
        && s.as_bytes()[14] == b'4'
        && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

#[tokio::test]
async fn server_key_fetched_once_one_connection_fresh_keys_per_request() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    for _ in 0..5 {
        client.create(&hello()).await.unwrap();
    }
    assert_eq!(d.key_gets(), 1, "the server key is cached");
    assert_eq!(d.connections(), 1, "one pooled connection for everything");
    let posts = d.posts();
    let packages: Vec<_> = posts
        .iter()
        .map(|p| v1::Package::from_json(&p.body).unwrap())
        .collect();
    for i in 0..packages.len() {
        for j in i + 1..packages.len() {
            assert_ne!(packages[i].nonce, packages[j].nonce);
            assert_ne!(packages[i].encrypted_key, packages[j].encrypted_key);
            assert_ne!(
                posts[i].headers["x-payload-id"],
                posts[j].headers["x-payload-id"]
            );
        }
    }
}

#[tokio::test]
async fn refused_requests_map_to_typed_errors_and_are_not_retried() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).max_retries(3).build().unwrap();
    client.prepare().await.unwrap();
    let cases: [(u16, Check); 5] = [
        (400, |e| matches!(e, Error::InvalidRequest(_))),
        (401, |e| matches!(e, Error::Authentication(_))),
        (403, |e| matches!(e, Error::Forbidden(_))),
        (404, |e| matches!(e, Error::NotFound(_))),
        (413, |e| matches!(e, Error::Api(_))),
    ];
    for (status, is) in cases {
        let before = d.posts().len();
        d.script([Scripted::Status(status, "the reason", None)]);
        let e = client.create(&hello()).await.unwrap_err();
        assert!(is(&e), "{status}: {e:?}");
        assert_eq!(e.status(), Some(status));
        assert_eq!(e.api_error().unwrap().detail(), "the reason");
        assert_eq!(e.api_error().unwrap().attempts(), 1);
        assert!(e.to_string().contains("the reason"), "{e}");
        assert!(!e.to_string().contains("hello there"));
        assert_eq!(d.posts().len(), before + 1, "{status} must not be retried");
    }
    // A 400 makes the client check once whether the server rotated its key.
    assert_eq!(d.key_gets(), 2);
}

#[tokio::test]
async fn retryable_statuses_resend_the_same_sealed_request() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    d.script([
        Scripted::Status(503, "busy", None),
        Scripted::Status(502, "upstream", None),
    ]);
    let c = client.create(&hello()).await.unwrap();
    assert_eq!(c.text(), Some("echo: hello there"));
    let posts = d.posts();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[0].body, posts[1].body, "no second encryption");
    assert_eq!(posts[1].body, posts[2].body);
    assert_eq!(
        posts[0].headers["x-payload-id"],
        posts[2].headers["x-payload-id"]
    );
    assert_eq!(d.key_gets(), 1);
}

#[tokio::test]
async fn retries_are_bounded_and_the_last_error_is_typed() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).max_retries(2).build().unwrap();
    for (status, check) in [
        (
            500u16,
            (|e: &Error| matches!(e, Error::Server(_))) as fn(&Error) -> bool,
        ),
        (504, |e| matches!(e, Error::Server(_))),
        (503, |e| matches!(e, Error::ServiceUnavailable(_))),
        (429, |e| matches!(e, Error::RateLimit { .. })),
    ] {
        let before = d.posts().len();
        d.script(std::iter::repeat_n(
            Scripted::Status(status, "down", None),
            3,
        ));
        let e = client.create(&hello()).await.unwrap_err();
        assert!(check(&e), "{e:?}");
        assert!(e.is_server_or_network());
        assert_eq!(e.api_error().unwrap().attempts(), 3);
        assert!(e.to_string().contains("after 3 attempts"), "{e}");
        assert_eq!(d.posts().len(), before + 3);
    }
    // max_retries(0): one attempt only.
    let once = builder(&d).max_retries(0).build().unwrap();
    let before = d.posts().len();
    d.script([Scripted::Status(503, "down", None)]);
    assert!(matches!(
        once.create(&hello()).await,
        Err(Error::ServiceUnavailable(_))
    ));
    assert_eq!(d.posts().len(), before + 1);
}

#[tokio::test]
async fn retry_after_is_honoured_and_an_excessive_one_is_returned() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    client.prepare().await.unwrap();
    d.script([Scripted::Status(429, "slow down", Some("1"))]);
    let t = Instant::now();
    client.create(&hello()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());

    d.script([Scripted::Status(429, "come back tomorrow", Some("86400"))]);
    let before = d.posts().len();
    let t = Instant::now();
    match client.create(&hello()).await {
        Err(Error::RateLimit { retry_after, error }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(86400)));
            assert_eq!(error.detail(), "come back tomorrow");
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(d.posts().len(), before + 1);
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    client.prepare().await.unwrap();
    // The key fetch used one connection; the server now goes away for a bit.
    let c0 = d.connections();
    // Make the pooled connection unusable: next requests need new ones.
    drop(client);
    let client = builder(&d).build().unwrap();
    d.state
        .drop_connections
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let c = client.create(&hello()).await.unwrap();
    assert_eq!(c.text(), Some("echo: hello there"));
    assert!(d.connections() >= c0 + 3, "{} {}", d.connections(), c0);
}

#[tokio::test]
async fn unreachable_server_is_a_connection_error_after_retries() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let client = local_client(&format!("http://{addr}")).build().unwrap();
    match client.create(&hello()).await {
        Err(e @ Error::Connection { .. }) => {
            assert!(e.is_server_or_network());
            let s = e.to_string();
            assert!(
                s.contains("after 3 attempts") && s.contains(&addr.to_string()),
                "{s}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_timeout_is_not_retried() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    client.prepare().await.unwrap();
    d.set_answer(Answer::Hang);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(d.posts().len(), 1);
}

#[tokio::test]
async fn bad_answers_are_security_errors_without_content() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    d.set_answer(Answer::Downgraded);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Security(nomyo_core::Error::UnsupportedVersion { .. })
        ),
        "{e:?}"
    );
    assert!(e.is_security());

    d.set_answer(Answer::TamperedTag);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(
        matches!(&e, Error::Security(nomyo_core::Error::DecryptionFailed)),
        "{e:?}"
    );

    d.set_answer(Answer::ForeignOuterId);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(
        matches!(&e, Error::ResponseMismatch(_)) && e.is_security(),
        "{e:?}"
    );

    d.set_answer(Answer::ForeignInnerId);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(matches!(&e, Error::ResponseMismatch(_)), "{e:?}");

    d.set_answer(Answer::NotJson);
    let e = client.create(&hello()).await.unwrap_err();
    assert!(matches!(&e, Error::InvalidResponse(_)), "{e:?}");
    assert!(!e.to_string().contains("not json"), "{e}");
    // None of these is retried.
    assert_eq!(d.posts().len(), 5);
}

#[tokio::test]
async fn pins_are_enforced_before_anything_is_sent() {
    let d = Double::start(shared_key(1)).await;
    let wrong = shared_key(2).public_key().fingerprint();
    let right = shared_key(1).public_key().fingerprint();
    let client = builder(&d).pin(wrong).build().unwrap();
    match client.create(&hello()).await {
        Err(e @ Error::PinMismatch { .. }) => {
            assert!(e.is_security());
            let s = e.to_string();
            assert!(
                s.contains(&right.to_string()) && s.contains(&wrong.to_string()),
                "{s}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.posts().len(), 0, "nothing sent to an unpinned key");
    let client = builder(&d).pins([wrong, right]).build().unwrap();
    client.create(&hello()).await.unwrap();
    assert_eq!(
        *client.server_key().await.unwrap().trust(),
        TrustDecision::Pinned
    );
}

#[tokio::test]
async fn trust_on_first_use_then_a_changed_key_fails_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nomyo/known_servers");
    let d = Double::start(shared_key(1)).await;
    let b = || builder(&d).known_servers(KnownServers::File(file.clone()));

    let first = b().build().unwrap();
    first.create(&hello()).await.unwrap();
    assert_eq!(
        *first.server_key().await.unwrap().trust(),
        TrustDecision::FirstUse { file: file.clone() }
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let fp = shared_key(1).public_key().fingerprint();
    assert_eq!(
        text,
        format!(
            "{}\n{}\n{} v1={fp}\n",
            nomyo_client::trust::FORMAT_HEADER,
            text.lines().nth(1).unwrap(),
            d.url()
        )
    );

    let second = b().build().unwrap();
    second.create(&hello()).await.unwrap();
    assert!(matches!(
        second.server_key().await.unwrap().trust(),
        TrustDecision::Known { .. }
    ));

    // The server now presents another key: a new client refuses it.
    d.set_key(shared_key(2));
    let posts = d.posts().len();
    let third = b().build().unwrap();
    match third.create(&hello()).await {
        Err(e @ Error::ServerKeyChanged { .. }) => {
            assert!(e.is_security());
            let s = e.to_string();
            assert!(
                s.contains(&file.display().to_string()) && s.contains("line 3"),
                "{s}"
            );
            assert!(s.contains(&shared_key(2).public_key().fingerprint().to_string()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.posts().len(), posts, "nothing sent to a changed key");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        text,
        "never recorded"
    );

    // A client that cached the old key finds out at its next request.
    match second.create(&hello()).await {
        Err(Error::ServerKeyChanged { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_rotated_key_is_refetched_and_the_request_resealed() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d)
        .pins([
            shared_key(1).public_key().fingerprint(),
            shared_key(2).public_key().fingerprint(),
        ])
        .build()
        .unwrap();
    client.create(&hello()).await.unwrap();
    d.set_key(shared_key(2));
    let c = client.create(&hello()).await.unwrap();
    assert_eq!(c.text(), Some("echo: hello there"));
    assert_eq!(d.key_gets(), 2);
    let posts = d.posts();
    assert_eq!(posts.len(), 3, "one refused, one resealed");
    assert_ne!(posts[1].body, posts[2].body);
    assert_eq!(
        client.server_key().await.unwrap().fingerprint(),
        shared_key(2).public_key().fingerprint()
    );
    // And the new key is used straight away from now on.
    client.create(&hello()).await.unwrap();
    assert_eq!(d.posts().len(), 4);
    assert_eq!(d.key_gets(), 2);
}

#[tokio::test]
async fn plain_http_is_refused_before_any_network_io() {
    let d = Double::start(shared_key(1)).await;
    // Not loopback (TEST-NET-1 and a name): plain HTTP needs allow_http.
    for url in [
        "http://192.0.2.1:12434",
        "http://[2001:db8::1]:12434",
        "http://example.com",
        "http://localhost.example.com",
        "http://128.0.0.1",
        // A trailing dot may send the name to DNS instead of the hosts file.
        "http://localhost.",
    ] {
        let e = Client::builder().base_url(url).build().unwrap_err();
        assert!(matches!(e, Error::InsecureUrl { .. }), "{url}: {e:?}");
        assert!(e.to_string().contains("https://"));
    }
    for bad in [
        "ftp://x",
        "not a url",
        "https://user:pw@host",
        "https://h/?q=1",
    ] {
        assert!(
            matches!(
                Client::builder().base_url(bad).build(),
                Err(Error::Config(_))
            ),
            "{bad}"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(d.connections(), 0);
}

#[tokio::test]
async fn the_ephemeral_key_is_generated_once_even_concurrently() {
    let d = Double::start(shared_key(1)).await;
    let client = Client::builder()
        .base_url(d.url())
        .allow_http(true)
        .known_servers(KnownServers::Off)
        .build()
        .unwrap();
    let t = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.create(&hello()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    eprintln!(
        "6 concurrent first requests with RSA-4096 keygen: {:?}",
        t.elapsed()
    );
    let posts = d.posts();
    let k0 = header_key(&posts[0]);
    assert_eq!(k0.bits(), 4096);
    assert!(posts.iter().all(|p| header_key(p) == k0));
    assert_eq!(d.key_gets(), 1);
    assert_eq!(client.client_public_key().await.unwrap(), k0);
}

#[tokio::test]
async fn password_protected_key_directories_work_and_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(RsaBits::B2048).unwrap();
    let pw = || SecretString::from("correct horse".to_owned());
    keys::save_key_pair(dir.path(), &key, Some(&pw()), false).unwrap();
    let private = std::fs::read(dir.path().join("private_key.pem")).unwrap();
    let public = std::fs::read(dir.path().join("public_key.pem")).unwrap();
    assert!(String::from_utf8_lossy(&private).contains("ENCRYPTED PRIVATE KEY"));

    let d = Double::start(shared_key(1)).await;
    let b = |password: Option<SecretString>| {
        Client::builder()
            .base_url(d.url())
            .allow_http(true)
            .known_servers(KnownServers::Off)
            .key_dir(dir.path(), password)
            .build()
            .unwrap()
    };
    let ok = b(Some(pw()));
    ok.create(&hello()).await.unwrap();
    assert_eq!(&header_key(&d.posts()[0]), key.public_key());

    let wrong = b(Some(SecretString::from("wrong".to_owned())));
    let e = wrong.create(&hello()).await.unwrap_err();
    assert!(
        matches!(&e, Error::ClientKey(nomyo_core::Error::WrongPassword(_))) && e.is_security(),
        "{e:?}"
    );
    assert!(!e.to_string().contains("wrong\""), "{e}");
    let none = b(None);
    let e = none.create(&hello()).await.unwrap_err();
    assert!(
        matches!(&e, Error::ClientKey(nomyo_core::Error::PasswordRequired(_))),
        "{e:?}"
    );
    assert!(e.to_string().contains("password"), "{e}");

    assert_eq!(d.posts().len(), 1, "no request without a usable key");
    assert_eq!(
        std::fs::read(dir.path().join("private_key.pem")).unwrap(),
        private
    );
    assert_eq!(
        std::fs::read(dir.path().join("public_key.pem")).unwrap(),
        public
    );
}

#[tokio::test]
async fn an_empty_key_directory_gets_an_encrypted_key_that_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let kd = dir.path().join("client_keys");
    let d = Double::start(shared_key(1)).await;
    let b = || {
        Client::builder()
            .base_url(d.url())
            .allow_http(true)
            .known_servers(KnownServers::Off)
            .key_dir(&kd, Some(SecretString::from("pw".to_owned())))
            .build()
            .unwrap()
    };
    b().create(&hello()).await.unwrap();
    let pem = std::fs::read_to_string(kd.join("private_key.pem")).unwrap();
    assert!(pem.contains("ENCRYPTED PRIVATE KEY"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kd.join("private_key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    b().create(&hello()).await.unwrap();
    let posts = d.posts();
    assert_eq!(header_key(&posts[0]), header_key(&posts[1]));
    assert_eq!(header_key(&posts[0]).bits(), 4096);
    assert_eq!(
        std::fs::read_to_string(kd.join("private_key.pem")).unwrap(),
        pem
    );
}

#[tokio::test]
async fn explicit_key_files_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let a = PrivateKey::generate(RsaBits::B2048).unwrap();
    let saved = keys::save_key_pair(dir.path(), &a, None, false).unwrap();
    let other = tempfile::tempdir().unwrap();
    let b = PrivateKey::generate(RsaBits::B2048).unwrap();
    let other_saved = keys::save_key_pair(other.path(), &b, None, false).unwrap();
    let d = Double::start(shared_key(1)).await;
    let client = |public| {
        Client::builder()
            .base_url(d.url())
            .allow_http(true)
            .known_servers(KnownServers::Off)
            .key_source(KeySource::Files {
                private_key: saved.private_key.clone(),
                public_key: Some(public),
                password: None,
            })
            .build()
            .unwrap()
    };
    client(saved.public_key.clone())
        .create(&hello())
        .await
        .unwrap();
    let e = client(other_saved.public_key.clone())
        .create(&hello())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
}

#[tokio::test]
async fn api_key_and_tier_headers() {
    let d = Double::start(shared_key(1)).await;
    *d.state.api_key.lock().unwrap() = Some("sk-test-123".into());
    let client = builder(&d)
        .api_key(SecretString::from("sk-test-123".to_owned()))
        .build()
        .unwrap();
    assert!(!format!("{client:?}").contains("sk-test"));
    client.create(&hello()).await.unwrap();
    client
        .create_with(
            &hello(),
            &RequestOptions::default().security_tier(SecurityTier::Maximum),
        )
        .await
        .unwrap();
    let posts = d.posts();
    assert_eq!(posts[0].headers["authorization"], "Bearer sk-test-123");
    assert!(posts[0].headers.get("x-security-tier").is_none());
    assert_eq!(posts[1].headers["x-security-tier"], "maximum");

    let bad = builder(&d)
        .api_key(SecretString::from("sk-wrong".to_owned()))
        .build()
        .unwrap();
    let e = bad.create(&hello()).await.unwrap_err();
    assert!(
        matches!(e, Error::Authentication(_)) && e.is_auth(),
        "{e:?}"
    );
    assert!(!e.to_string().contains("sk-wrong"));
    assert!(!format!("{e:?}").contains("sk-wrong"));
}

#[tokio::test]
async fn streaming_is_refused_before_sending() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d).build().unwrap();
    let e = client
        .create(&hello().with("stream", json!(true)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    assert_eq!(d.posts().len(), 0);
    // stream: false is fine and passes through.
    client
        .create(&hello().with("stream", json!(false)))
        .await
        .unwrap();
    assert_eq!(d.plaintexts()[0]["stream"], false);
}

#[tokio::test]
async fn clones_share_keys_and_pool() {
    let d = Double::start(shared_key(1)).await;
    let client = builder(&d)
        .client_key(Arc::clone(&shared_key(3)))
        .build()
        .unwrap();
    let other = client.clone();
    client.create(&hello()).await.unwrap();
    other.create(&hello()).await.unwrap();
    assert_eq!(d.key_gets(), 1);
    assert_eq!(d.connections(), 1);
}

#[tokio::test]
async fn loopback_plain_http_needs_no_consent_and_a_v1_suffix_is_dropped() {
    let d = Double::start(shared_key(1)).await;
    // Every loopback address is accepted like the default server's.
    for url in [
        "http://127.0.0.1:12434",
        "http://127.1.2.3",
        "http://[::1]:12434/",
        "http://localhost:12434",
        "http://LOCALHOST:12434",
    ] {
        Client::builder()
            .base_url(url)
            .known_servers(KnownServers::Off)
            .build()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    // An OpenAI-style base URL (".../v1", with or without a slash) finds the
    // NOMYO routes at the server's root; no allow_http for loopback.
    for suffix in ["/v1", "/v1/"] {
        let url = format!("{}{suffix}", d.url());
        let client = Client::builder()
            .base_url(&url)
            .known_servers(KnownServers::Off)
            .build()
            .unwrap();
        assert_eq!(client.origin(), d.url());
        client.create(&hello()).await.unwrap();
    }
    assert_eq!(d.posts().len(), 2);
    // A path prefix other than a trailing /v1 is kept.
    let client = Client::builder()
        .base_url(format!("{}/v1x", d.url()))
        .known_servers(KnownServers::Off)
        .max_retries(0)
        .build()
        .unwrap();
    assert!(client.create(&hello()).await.is_err());
    assert_eq!(d.posts().len(), 2);
}
