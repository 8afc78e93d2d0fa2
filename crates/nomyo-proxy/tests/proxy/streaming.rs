//! Streamed answers: v2 relayed chunk by chunk, v1 built from the complete
//! answer, and a cut v2 stream ending in an error event.

use super::*;

#[tokio::test]
async fn streamed_v2_is_relayed_chunk_by_chunk() {
    let (up, url) = proxied(Speaks::V2).await;
    let ev = one_two_three_streamed(&url).await;
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert_eq!(streamed_text(&ev), "echo: one two three");
    // role chunk + 4 words + finish + usage + [DONE]
    assert_eq!(ev.len(), 8, "{ev:?}");
    assert!(ev[..7]
        .iter()
        .all(|e| e["object"] == "chat.completion.chunk"));
    assert_eq!(ev[5]["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[6]["usage"]["total_tokens"], 7);
    let got = up.bodies().pop().unwrap();
    assert_eq!(got["stream"], true);
    assert_eq!(got["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn streamed_v1_is_built_from_the_complete_answer() {
    let (up, url) = proxied(Speaks::V1Only).await;
    let ev = one_two_three_streamed(&url).await;
    assert_eq!(ev.len(), 4, "{ev:?}");
    assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&ev), "echo: one two three");
    assert_eq!(ev[1]["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[2]["usage"]["total_tokens"], 5);
    assert_eq!(ev[3], "[DONE]");
    // v1 got a plain request: neither `stream` nor `stream_options`.
    let got = up.bodies().pop().unwrap();
    assert!(got.get("stream").is_none() && got.get("stream_options").is_none());

    // Tool calls become streamed tool-call deltas with an index.
    let mut req = full_request();
    req["stream"] = json!(true);
    let ev = events(&post(&url, req).await.text().await.unwrap());
    let call = &ev[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["id"], "call_1");
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(ev[1]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(ev.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn a_cut_v2_stream_ends_with_an_error_event_and_no_done() {
    let (_up, url) = proxied(Speaks::V2).await;
    let resp = post(
        &url,
        json!({"model": "cut", "stream": true, "messages": [{"role": "user", "content": "a b c"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let ev = events(&resp.text().await.unwrap());
    let last = ev.last().unwrap();
    assert!(last["error"]["message"].as_str().is_some(), "{ev:?}");
    assert!(!ev.iter().any(|e| e == "[DONE]"));
}
