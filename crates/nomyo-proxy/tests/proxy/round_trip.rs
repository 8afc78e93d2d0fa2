//! Plain requests through the proxy over v2 and over v1, the protocol each
//! answer is marked with, the model list, and a request without a model.

use super::*;

async fn plain_round_trip(speaks: Speaks) {
    let up = upstream(speaks, false, false).await;
    let url = proxy(ProxyState::new(client_for(&up).build().unwrap())).await;

    let resp = post(
        &url,
        json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("proxy-"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["total_tokens"], 5);
    assert_eq!(v["system_fingerprint"], "fp_test");
    assert_eq!(v["_metadata"]["is_encrypted"], true);

    // Every OpenAI parameter arrives at the backend exactly as sent.
    let resp = post(&url, full_request()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    let got = up.bodies().pop().unwrap();
    let sent = full_request();
    for (k, want) in sent.as_object().unwrap() {
        assert_eq!(&got[k], want, "field {k}");
    }
    assert!(got.get("stream").is_none());
}

#[tokio::test]
async fn plain_v2() {
    plain_round_trip(Speaks::V2).await;
}

#[tokio::test]
async fn plain_v1() {
    plain_round_trip(Speaks::V1Only).await;
}

#[tokio::test]
async fn v1_answers_are_marked_v1_and_v2_answers_v2() {
    for (speaks, v2) in [(Speaks::V1Only, false), (Speaks::V2, true)] {
        let up = upstream(speaks, false, false).await;
        let client = client_for(&up).build().unwrap();
        let url = proxy(ProxyState::new(client.clone())).await;
        let resp = post(
            &url,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(client.uses_v2().await.unwrap(), v2);
        let v: Value = resp.json().await.unwrap();
        let alg = v["_metadata"]["encryption_algorithm"]
            .as_str()
            .unwrap_or("");
        assert_eq!(alg == "hybrid-aes256-rsa4096", !v2, "{}", v["_metadata"]);
    }
}

#[tokio::test]
async fn models_are_listed_in_openai_shape() {
    let (_up, url) = proxied(Speaks::V2).await;
    let resp = reqwest::get(format!("{url}/v1/models")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert!(data.iter().any(|m| m["id"] == "m"));
    assert!(data.iter().all(|m| m["object"] == "model"));
    let one: Value = reqwest::get(format!("{url}/v1/models/m"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "m");
    assert_eq!(one["object"], "model");
    let resp = reqwest::get(format!("{url}/v1/models/nope")).await.unwrap();
    assert_eq!(error_of(resp).await.0, 404);
    let resp = reqwest::get(format!("{url}/health")).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn model_may_be_omitted_when_the_server_serves_one() {
    let one = recorder(&["m"]);
    let up = upstream_of(one, Speaks::V2, false, false).await;
    let url = proxy(ProxyState::new(client_for(&up).build().unwrap())).await;
    let hello = json!({"messages": [{"role": "user", "content": "hello there"}]});
    let resp = post(&url, hello.clone()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "m");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello there");
    assert_eq!(up.bodies().pop().unwrap()["model"], "m");
    // Streamed too.
    let mut streamed = hello.clone();
    streamed["stream"] = json!(true);
    let resp = post(&url, streamed).await;
    assert_eq!(resp.status(), 200);
    let ev = events(&resp.text().await.unwrap());
    assert_eq!(streamed_text(&ev), "echo: hello there");
    // An explicit model is sent as given.
    let mut named = hello.clone();
    named["model"] = json!("m");
    assert_eq!(post(&url, named).await.status(), 200);

    // With several models, a 400 that lists them; nothing is sent.
    let many = upstream(Speaks::V2, false, false).await;
    let url = proxy(ProxyState::new(client_for(&many).build().unwrap())).await;
    let (s, _, v) = error_of(post(&url, hello).await).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "model_required");
    let msg = v["error"]["message"].as_str().unwrap();
    for m in ["m", "big", "busy", "cut"] {
        assert!(msg.contains(m), "{msg}");
    }
    assert!(msg.contains("\"model\""), "{msg}");
    assert!(many.bodies().is_empty());
}
