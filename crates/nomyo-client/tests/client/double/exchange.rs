//! The exchange: parameters and `_metadata` through the round trip, the
//! server key fetched once and fresh keys per request, API key and tier
//! headers, streaming refused before sending, clones sharing keys and pool.

use std::sync::Arc;

use nomyo_client::{
    ChatMessage, ChatRequest, Error, RequestOptions, SecretString, SecurityTier, Tool,
};
use nomyo_core::v1;
use serde_json::json;

use super::{builder, header_key, hello};
use crate::common::{shared_key, Double};

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
