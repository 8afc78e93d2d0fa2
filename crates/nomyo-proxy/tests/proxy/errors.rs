//! Errors in OpenAI shape: upstream statuses kept, the rate limit as 429,
//! bad requests as 400 without quoting content, and a pin mismatch refused
//! before anything is sent.

use super::*;

#[tokio::test]
async fn endpoint_errors_keep_their_status_in_openai_shape() {
    for speaks in [Speaks::V1Only, Speaks::V2] {
        let up = upstream(speaks, true, false).await;
        // A v1-only endpoint is spoken to with v1 chosen explicitly: auto
        // never sends the high tier over v1 (checked below).
        let client = |up: &Upstream| match speaks {
            Speaks::V1Only => client_for(up).protocol(Protocol::V1),
            Speaks::V2 => client_for(up),
        };
        let msg =
            |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "x"}]});

        // No or a wrong API key: 401.
        let url = proxy(ProxyState::new(client(&up).build().unwrap())).await;
        let (s, _, v) = error_of(post(&url, msg("m")).await).await;
        assert_eq!(s, 401);
        assert_eq!(v["error"]["type"], "authentication_error");
        let url = proxy(ProxyState::new(
            client(&up)
                .api_key(SecretString::from("wrong"))
                .build()
                .unwrap(),
        ))
        .await;
        assert_eq!(error_of(post(&url, msg("m")).await).await.0, 401);

        let good = client(&up)
            .api_key(SecretString::from("k1"))
            .build()
            .unwrap();
        let url = proxy(ProxyState::new(good.clone())).await;
        // Unknown model: 404.
        let (s, _, v) = error_of(post(&url, msg("nope")).await).await;
        assert_eq!(s, 404);
        assert_eq!(v["error"]["type"], "not_found_error");
        // Not allowed on the standard tier: 403, by header or by the
        // proxy's default tier; the high tier allows it.
        let with_tier = |tier: &'static str| {
            reqwest::Client::new()
                .post(format!("{url}/v1/chat/completions"))
                .header("X-Nomyo-Tier", tier)
                .json(&msg("big"))
                .send()
        };
        let (s, _, v) = error_of(with_tier("standard").await.unwrap()).await;
        assert_eq!(s, 403);
        assert_eq!(v["error"]["type"], "permission_error");
        let resp = with_tier("high").await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["_metadata"]["security_tier"], "high");
        if speaks == Speaks::V1Only {
            // Under protocol auto the same request is refused before it is
            // sent: the high tier never goes over v1 unless chosen.
            let auto = client_for(&up)
                .api_key(SecretString::from("k1"))
                .build()
                .unwrap();
            let auto_url = proxy(ProxyState::new(auto)).await;
            let resp = reqwest::Client::new()
                .post(format!("{auto_url}/v1/chat/completions"))
                .header("X-Nomyo-Tier", "high")
                .json(&msg("big"))
                .send()
                .await
                .unwrap();
            let (s, _, v) = error_of(resp).await;
            assert_eq!(s, 502, "{v}");
            assert_eq!(v["error"]["type"], "nomyo_security_error", "{v}");
        }
        let standard =
            proxy(ProxyState::new(good.clone()).default_tier(SecurityTier::Standard)).await;
        assert_eq!(error_of(post(&standard, msg("big")).await).await.0, 403);
        // A bad tier header: 400 before anything is sent.
        let resp = reqwest::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .header("X-Nomyo-Tier", "ultra")
            .json(&msg("m"))
            .send()
            .await
            .unwrap();
        let (s, _, v) = error_of(resp).await;
        assert_eq!(s, 400);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-nomyo-tier"));
        // Backend unavailable: 503 with Retry-After.
        let (s, h, _) = error_of(post(&url, msg("busy")).await).await;
        assert_eq!(s, 503);
        assert!(h.contains_key("retry-after"));
        // A streamed request that fails before the stream starts: a plain
        // error answer, not an event stream.
        let mut r = msg("nope");
        r["stream"] = json!(true);
        assert_eq!(error_of(post(&url, r).await).await.0, 404);
    }
}

#[tokio::test]
async fn rate_limit_is_429_with_retry_after() {
    let up = upstream(Speaks::V2, false, true).await;
    let url = proxy(ProxyState::new(client_for(&up).build().unwrap())).await;
    let msg = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let resp = post(&url, msg.clone()).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == 429 {
            retry_after = resp.headers().get("retry-after").cloned();
            let (_, _, v) = error_of(resp).await;
            assert_eq!(v["error"]["type"], "rate_limit_error");
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let secs: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!(secs >= 1);
}

#[tokio::test]
async fn bad_requests_are_400_and_say_why_without_quoting_content() {
    let (up, url) = proxied(Speaks::V2).await;
    let send = |body: &'static str| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let (s, _, v) = error_of(send("{not json").await).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (s, _, v) =
        error_of(send(r#"{"model": "m", "messages": "my secret diagnosis"}"#).await).await;
    assert_eq!(s, 400);
    assert!(!v.to_string().contains("diagnosis"), "{v}");
    let (s, _, v) = error_of(
        send(r#"{"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}"#)
            .await,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["message"], "\"stream\" must be true or false");
    // The endpoint's own 400 (no messages) passes through.
    let (s, _, _) = error_of(send(r#"{"model": "m", "messages": []}"#).await).await;
    assert_eq!(s, 400);
    // Not JSON: 415.
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/chat/completions"))
        .body("model=m")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 415);
    // Unknown route: 404 in OpenAI shape.
    let resp = reqwest::get(format!("{url}/v1/embeddings")).await.unwrap();
    assert_eq!(error_of(resp).await.0, 404);
    assert!(up.bodies().is_empty());
}

#[tokio::test]
async fn a_pin_mismatch_refuses_before_sending_anything() {
    let wrong: Fingerprint = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
    for speaks in [Speaks::V1Only, Speaks::V2] {
        let up = upstream(speaks, false, false).await;
        let client = client_for(&up).pin(wrong).build().unwrap();
        let url = proxy(ProxyState::new(client)).await;
        for stream in [false, true] {
            let resp = post(
                &url,
                json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
            assert_eq!(resp.headers()["x-should-retry"], "false");
            let (s, _, v) = error_of(resp).await;
            assert_eq!(s, 502);
            assert_eq!(v["error"]["type"], "nomyo_security_error");
            let m = v["error"]["message"].as_str().unwrap();
            match speaks {
                Speaks::V2 => assert!(
                    m.contains("pin mismatch") && m.contains(&wrong.to_string()),
                    "{m}"
                ),
                // Under auto a pinned server that publishes no v2 keys is not
                // downgraded to v1 without being asked: refused first.
                Speaks::V1Only => assert!(m.contains("--protocol v1"), "{m}"),
            }
        }
        assert!(up.bodies().is_empty());
    }
    // The right pin (v1: the RSA key) works, with protocol v1 chosen.
    let up = upstream(Speaks::V1Only, false, false).await;
    let client = client_for(&up)
        .pin(up.rsa_fingerprint)
        .protocol(Protocol::V1)
        .build()
        .unwrap();
    let url = proxy(ProxyState::new(client)).await;
    let resp = post(
        &url,
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
}
