use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use zeroize::Zeroize;

use super::*;

/// Parses `wire` as a `T` and asserts that it serialises back to the same
/// JSON: every field, known or not, with its value.
fn round_trip<T: Serialize + DeserializeOwned>(wire: &Value) -> T {
    let t: T = serde_json::from_value(wire.clone()).unwrap();
    assert_eq!(&serde_json::to_value(&t).unwrap(), wire);
    t
}

#[test]
fn a_completion_becomes_one_chunk_with_its_messages_as_deltas() {
    let completion = json!({
        "id": "c1", "object": "chat.completion", "created": 7, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"},
            {"message": {"role": "assistant", "tool_calls": []}, "finish_reason": "tool_calls"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    });
    let chunk = completion_to_chunk(&completion).unwrap();
    assert_eq!(chunk["object"], "chat.completion.chunk");
    assert_eq!(
        (&chunk["id"], &chunk["created"], &chunk["model"]),
        (&json!("c1"), &json!(7), &json!("m"))
    );
    assert_eq!(chunk["choices"][0]["delta"]["content"], "hi");
    assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
    // A choice without an index gets its position.
    assert_eq!(chunk["choices"][1]["index"], 1);
    assert_eq!(chunk["choices"][1]["finish_reason"], "tool_calls");
    assert_eq!(chunk["usage"]["total_tokens"], 4);
    // The result is a chunk the typed shape reads.
    let typed: ChatCompletionChunk = serde_json::from_value(chunk).unwrap();
    assert_eq!(typed.text(), Some("hi"));
    assert_eq!(typed.usage().map(|u| u.total_tokens), Some(4));
    assert_eq!(typed.choices[1].finish(), Some(FinishReason::ToolCalls));
}

#[test]
fn only_an_object_is_a_completion() {
    assert!(completion_to_chunk(&json!([1, 2])).is_none());
    assert!(completion_to_chunk(&json!("text")).is_none());
    let bare = completion_to_chunk(&json!({})).unwrap();
    assert_eq!(bare["choices"], json!([]));
    assert!(bare.get("usage").is_none());
}

#[test]
fn unknown_fields_round_trip() {
    let wire = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1764300000.5,
        "model": "m",
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant", "content": null,
                "reasoning_content": "thinking",
                "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}],
                "audio": {"id": "a"}
            },
            "finish_reason": "tool_calls",
            "logprobs": {"content": []}
        }],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                  "prompt_tokens_details": {"cached_tokens": 0}},
        "service_tier": "default",
        "_metadata": {"payload_id": "p", "processed_at": 17, "is_encrypted": true,
            "security_tier": "high",
            "memory_protection": {"platform": "linux", "memory_locking": true,
                "secure_zeroing": true, "core_dump_prevention": false},
            "cuda_device": {"available": false, "device_hash": ""},
            "worker": "w1"}
    });
    let c: ChatCompletion = serde_json::from_value(wire.clone()).unwrap();
    assert_eq!(c.created, 1764300000);
    let m = &c.choices[0].message;
    assert_eq!(m.reasoning_content.as_deref(), Some("thinking"));
    let calls = m.tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].function.name, "weather");
    assert_eq!(m.extra["audio"]["id"], "a");
    assert_eq!(c.extra["service_tier"], "default");
    assert_eq!(c.metadata.security_tier.as_deref(), Some("high"));
    assert_eq!(c.metadata.extra["worker"], "w1");
    assert_eq!(c.usage.as_ref().unwrap().total_tokens, 7);
    assert_eq!(c.choices[0].finish(), Some(FinishReason::ToolCalls));
    let back = serde_json::to_value(&c).unwrap();
    assert_eq!(back["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(back["choices"][0]["logprobs"], json!({"content": []}));
    assert_eq!(back["_metadata"]["memory_protection"]["platform"], "linux");
    assert_eq!(back["_metadata"]["worker"], "w1");
    assert_eq!(back["choices"][0]["message"]["audio"], json!({"id": "a"}));
    assert_eq!(back["service_tier"], "default");
}

#[test]
fn request_passes_unknown_parameters() {
    let r = ChatRequest::new("m")
        .message(ChatMessage::user("hi"))
        .seed(7)
        .tools(vec![Tool::function(
            "f",
            "does f",
            json!({"type": "object"}),
        )])
        .with("logprobs", json!(true))
        .with("n", json!(2));
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["seed"], 7);
    assert_eq!(v["logprobs"], true);
    assert_eq!(v["n"], 2);
    assert_eq!(v["tools"][0]["function"]["name"], "f");
    assert_eq!(v["tools"][0]["type"], "function");
    let back: ChatRequest = serde_json::from_value(v).unwrap();
    assert_eq!(back.n, Some(2));
    assert_eq!(back.extra["logprobs"], true);
}

#[test]
fn zeroize_request_and_json_output() {
    let mut r = ChatRequest::new("m").message(ChatMessage::user("secret"));
    r.zeroize();
    assert!(r.messages.is_empty());
    let c: ChatCompletion = serde_json::from_value(json!({
        "choices": [{"message": {"role": "assistant", "content": "hi"}}],
        "_metadata": {"payload_id": "p"}
    }))
    .unwrap();
    let out: Value = serde_json::from_slice(c.to_json(true).expose_secret()).unwrap();
    assert_eq!(out["_metadata"]["payload_id"], "p");
    assert_eq!(out["choices"][0]["message"]["content"], "hi");
}

#[test]
fn debug_hides_text() {
    let r = ChatRequest::new("m").message(ChatMessage::user("my secret diagnosis"));
    assert!(!format!("{r:?}").contains("diagnosis"));
    let c: ChatCompletion = serde_json::from_value(json!({
        "choices": [{"message": {"role": "assistant", "content": "secret answer"}}]
    }))
    .unwrap();
    assert_eq!(c.text(), Some("secret answer"));
    assert!(!format!("{c:?}").contains("answer"));
    let chunk: ChatCompletionChunk = serde_json::from_value(json!({
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "secret answer",
            "tool_calls": [{"index": 0, "function": {"arguments": "{\"dx\":\"secret\"}"}}]},
            "finish_reason": null}]
    }))
    .unwrap();
    assert_eq!(chunk.text(), Some("secret answer"));
    let shown = format!("{chunk:?}");
    assert!(!shown.contains("secret"), "{shown}");
    let call: ToolCall = serde_json::from_value(json!({
        "id": "c1", "function": {"name": "lookup", "arguments": "{\"dx\":\"secret\"}"}
    }))
    .unwrap();
    assert!(!format!("{call:?}").contains("secret"));
    assert!(!format!("{:?}", Content::from("secret")).contains("secret"));
}

#[test]
fn every_request_shape_round_trips_with_unknown_fields() {
    let request = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief", "x_cache": true},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:,"}}], "name": "u"},
            {"role": "assistant", "refusal": "no",
                "tool_calls": [{"id": "c1", "type": "function", "index": 0,
                    "function": {"name": "f", "arguments": "{}", "x_fn": 1}}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1"}
        ],
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 9, "stop": ["\n"], "seed": 1,
        "n": 2, "presence_penalty": 0.0, "frequency_penalty": 1.0,
        "tools": [{"type": "function", "x_tool": "t",
            "function": {"name": "f", "description": "d",
                "parameters": {"type": "object"}, "strict": true}}],
        "tool_choice": "auto", "response_format": {"type": "json_object"}, "user": "me",
        "stream_options": {"include_usage": true}, "logit_bias": {"1": -100}
    });
    let r: ChatRequest = round_trip(&request);
    assert_eq!(r.extra["stream_options"]["include_usage"], true);
    assert_eq!(r.messages[0].extra["x_cache"], true);
    assert!(matches!(&r.messages[1].content, Some(Content::Parts(p)) if p.len() == 2));
    let calls = r.messages[2].tool_calls.as_ref().unwrap();
    assert_eq!(calls[0].extra["index"], 0);
    assert_eq!(calls[0].function.extra["x_fn"], 1);
    let tools = r.tools.as_ref().unwrap();
    assert_eq!(tools[0].extra["x_tool"], "t");
    assert_eq!(tools[0].function.extra["strict"], true);
    assert_eq!(r.messages[3].tool_call_id.as_deref(), Some("c1"));

    // Each part alone.
    let m: ChatMessage = round_trip(&request["messages"][2]);
    assert_eq!(m.refusal.as_deref(), Some("no"));
    let _: Content = round_trip(&json!("text"));
    let _: Content = round_trip(&json!([{"type": "text", "text": "t"}]));
    let _: Tool = round_trip(&request["tools"][0]);
    let _: FunctionDefinition = round_trip(&request["tools"][0]["function"]);
    let _: ToolCall = round_trip(&request["messages"][2]["tool_calls"][0]);
    let _: FunctionCall = round_trip(&json!({"name": "f", "arguments": "{}", "x": [1]}));
}

#[test]
fn every_answer_shape_round_trips_with_unknown_fields() {
    let completion = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "m",
        "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "hi", "annotations": []},
            "finish_reason": "stop", "logprobs": {"content": []}, "stop_reason": 7}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
            "completion_tokens_details": {"reasoning_tokens": 0}},
        "system_fingerprint": "fp",
        "_metadata": {"payload_id": "p", "protocol": "v2"},
        "service_tier": "default"
    });
    let c: ChatCompletion = round_trip(&completion);
    assert_eq!(c.choices[0].extra["stop_reason"], 7);
    assert_eq!(c.choices[0].message.extra["annotations"], json!([]));
    assert_eq!(c.metadata.extra["protocol"], "v2");
    assert_eq!(c.system_fingerprint.as_deref(), Some("fp"));
    let choice: Choice = round_trip(&completion["choices"][0]);
    assert_eq!(choice.finish(), Some(FinishReason::Stop));
    let u: Usage = round_trip(&completion["usage"]);
    assert_eq!(u.extra["completion_tokens_details"]["reasoning_tokens"], 0);
    // A finish reason OpenAI does not define passes unchanged.
    let odd: Choice = round_trip(&json!({"index": 1,
        "message": {"role": "assistant"}, "finish_reason": "abort"}));
    assert_eq!(odd.finish_reason.as_deref(), Some("abort"));
    assert_eq!(odd.finish(), None);
}

#[test]
fn every_chunk_shape_round_trips_with_unknown_fields() {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 5, "model": "m",
        "system_fingerprint": "fp",
        "choices": [{"index": 0,
            "delta": {"role": "assistant", "content": "h", "reasoning_content": "r",
                "tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
            "logprobs": null, "finish_reason": null}],
        "usage": null,
        "_metadata": {"payload_id": "p", "hpke": {"kem": "x25519"}}
    });
    let c: ChatCompletionChunk = round_trip(&chunk);
    assert_eq!(c.text(), Some("h"));
    assert_eq!(c.extra["system_fingerprint"], "fp");
    assert_eq!(c.usage(), None);
    assert_eq!(c.choices[0].extra["logprobs"], Value::Null);
    assert_eq!(c.choices[0].delta.extra["reasoning_content"], "r");
    assert_eq!(c.metadata.as_ref().unwrap()["hpke"]["kem"], "x25519");
    let choice: ChunkChoice = round_trip(&chunk["choices"][0]);
    assert_eq!(choice.finish(), None);
    let _: Delta = round_trip(&chunk["choices"][0]["delta"]);
    // The last choice chunk: an empty delta and a finish reason.
    let last: ChunkChoice =
        round_trip(&json!({"index": 0, "delta": {}, "finish_reason": "length"}));
    assert_eq!(last.finish(), Some(FinishReason::Length));
}

#[test]
fn a_built_chunk_has_the_openai_shape() {
    let mut c = ChatCompletionChunk::new("chatcmpl-1", 5, "m");
    // `Delta` wipes itself on drop, so it is built field by field.
    let mut delta = Delta::default();
    delta.content = Some("x".into());
    c.choices.push(ChunkChoice {
        index: 0,
        delta,
        finish_reason: None,
        extra: Extra::new(),
    });
    assert_eq!(
        serde_json::to_value(&c).unwrap(),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 5,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": null}]})
    );
    c.set_usage(None);
    assert_eq!(serde_json::to_value(&c).unwrap()["usage"], Value::Null);
    assert_eq!(c.usage(), None);
    c.set_usage(Some(&Usage::new(3, 4)));
    assert_eq!(
        serde_json::to_value(&c).unwrap()["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );
    assert_eq!(c.usage().map(|u| u.total_tokens), Some(7));
}

#[test]
fn finish_reasons_are_the_openai_strings() {
    for (r, s) in [
        (FinishReason::Stop, "stop"),
        (FinishReason::Length, "length"),
        (FinishReason::ToolCalls, "tool_calls"),
        (FinishReason::ContentFilter, "content_filter"),
        (FinishReason::FunctionCall, "function_call"),
    ] {
        assert_eq!(r.as_str(), s);
        assert_eq!(r.to_string(), s);
        assert_eq!(FinishReason::parse(s), Some(r));
        assert_eq!(serde_json::to_value(r).unwrap(), json!(s));
        assert_eq!(serde_json::from_value::<FinishReason>(json!(s)).unwrap(), r);
    }
    assert_eq!(FinishReason::parse("Stop"), None);
    assert!(serde_json::from_value::<FinishReason>(json!("abort")).is_err());
}

#[test]
fn metadata_round_trips_with_unknown_fields() {
    let wire = json!({
        "payload_id": "p", "processed_at": 17, "is_encrypted": true,
        "encryption_algorithm": "ehbp-x25519", "response_status": "success",
        "security_tier": "maximum",
        "memory_protection": {"platform": "linux", "memory_locking": true,
            "secure_zeroing": false, "core_dump_prevention": true, "x_mp": 1},
        "cuda_device": {"available": true, "device_hash": "ab", "x_cd": 2},
        "protocol": "v2"
    });
    let m: Metadata = round_trip(&wire);
    assert_eq!(m.extra["protocol"], "v2");
    let mp = m.memory_protection.as_ref().unwrap();
    assert!(mp.memory_locking && !mp.secure_zeroing && mp.core_dump_prevention);
    assert_eq!(mp.extra["x_mp"], 1);
    assert_eq!(m.cuda_device.as_ref().unwrap().extra["x_cd"], 2);
    let _: MemoryProtectionInfo = round_trip(&wire["memory_protection"]);
    let _: CudaDevice = round_trip(&wire["cuda_device"]);
    // A float `processed_at` (Python's `time.time()`) is read as seconds.
    let f: Metadata = serde_json::from_value(json!({"processed_at": 17.9})).unwrap();
    assert_eq!(f.processed_at, Some(17));
    // Nothing set, nothing sent.
    assert_eq!(
        serde_json::to_value(Metadata::default()).unwrap(),
        json!({})
    );
}

/// The `_metadata` example of docs/PROTOCOL.md §1.7, as a JSON object.
fn documented_metadata() -> Value {
    let doc = include_str!("../../../../docs/PROTOCOL.md");
    let section = doc
        .split_once("### 1.7 `_metadata`")
        .map(|(_, rest)| rest)
        .unwrap();
    let block = section
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .map(|(block, _)| block)
        .unwrap();
    let wrapped: Value = serde_json::from_str(&format!("{{{block}}}")).unwrap();
    wrapped["_metadata"].clone()
}

/// The same keys, with values of the same JSON type, at every level.
fn same_schema(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_schema(v, w)))
        }
        (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Number(_), Value::Number(_)) => true,
        _ => false,
    }
}

#[test]
fn metadata_serialises_to_the_documented_schema() {
    let documented = documented_metadata();
    // Every documented field is a typed one, and reads back unchanged.
    let parsed: Metadata = round_trip(&documented);
    assert!(parsed.extra.is_empty(), "{:?}", parsed.extra);
    assert!(parsed.memory_protection.as_ref().unwrap().extra.is_empty());
    assert!(parsed.cuda_device.as_ref().unwrap().extra.is_empty());

    // What the server builds (routes::pipeline::metadata) has exactly the
    // documented keys, each with the documented type.
    let built = Metadata {
        payload_id: Some("0123456789abcdef".into()),
        processed_at: Some(1_764_300_000),
        is_encrypted: Some(true),
        response_status: Some("success".into()),
        security_tier: Some("high".into()),
        memory_protection: Some(MemoryProtectionInfo {
            platform: "linux".into(),
            memory_locking: false,
            secure_zeroing: true,
            core_dump_prevention: true,
            extra: Extra::new(),
        }),
        cuda_device: Some(CudaDevice {
            available: true,
            device_hash: "ab".repeat(32),
            extra: Extra::new(),
        }),
        tpm_attestation: Some(TpmAttestation::unavailable()),
        ..Metadata::default()
    };
    let built = serde_json::to_value(&built).unwrap();
    assert!(same_schema(&built, &documented), "{built} vs {documented}");
    // The schema check itself tells a missing key from a present one.
    let mut missing = built.clone();
    missing.as_object_mut().unwrap().remove("security_tier");
    assert!(!same_schema(&missing, &documented));
}

#[test]
fn the_tpm_attestation_block_round_trips_and_defaults_to_unavailable() {
    let text = r#"{"payload_id":"p","tpm_attestation":{"is_available":true,"pcr_banks":"sha256:0,7,10","pcr_values":{"sha256":{"0":"00"}},"quote_b64":"AA==","signature_b64":"AQ==","aik_pubkey_b64":"Ag==","future":1}}"#;
    let m: Metadata = serde_json::from_str(text).unwrap();
    let t = m.tpm_attestation.as_ref().unwrap();
    assert!(t.is_available);
    assert_eq!(t.pcr_values.as_ref().unwrap()["sha256"]["0"], "00");
    assert_eq!(t.extra["future"], 1);
    let back: serde_json::Value = serde_json::to_value(&m).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(text).unwrap()
    );
    assert_eq!(
        serde_json::to_value(TpmAttestation::unavailable()).unwrap(),
        serde_json::json!({"is_available": false})
    );
    // Absent from a server that does not know it.
    let m: Metadata = serde_json::from_str(r#"{"payload_id":"p"}"#).unwrap();
    assert!(m.tpm_attestation.is_none());
}

#[test]
fn the_confidential_vm_attestation_block_round_trips() {
    let text = r#"{"payload_id":"p","attestation":{"kind":"sev-snp","provider":"sev_guest","report_b64":"AA==","future":1}}"#;
    let m: Metadata = serde_json::from_str(text).unwrap();
    let a = m.attestation.as_ref().unwrap();
    assert_eq!(a.kind, "sev-snp");
    assert_eq!(a.provider, "sev_guest");
    assert_eq!(a.report_b64, "AA==");
    assert_eq!(a.extra["future"], 1);
    assert_eq!(
        serde_json::to_value(&m).unwrap(),
        serde_json::from_str::<serde_json::Value>(text).unwrap()
    );
    let m: Metadata = serde_json::from_str(r#"{"payload_id":"p"}"#).unwrap();
    assert!(m.attestation.is_none());
    assert!(!serde_json::to_string(&m).unwrap().contains("attestation"));
}

#[test]
fn stream_is_a_typed_field_and_only_a_boolean() {
    let r: ChatRequest = round_trip(&json!({
        "model": "m", "messages": [], "stream": true, "stream_options": {"include_usage": true}
    }));
    assert_eq!(r.stream, Some(true));
    assert!(!r.extra.contains_key("stream"));
    assert!(r.extra.contains_key("stream_options"));
    let r: ChatRequest = serde_json::from_value(json!({"messages": [], "stream": null})).unwrap();
    assert_eq!(r.stream, None);
    let absent: ChatRequest = round_trip(&json!({"model": "m", "messages": []}));
    assert_eq!(absent.stream, None);
    for bad in [json!("yes"), json!(1), json!({"on": true}), json!([true])] {
        let body = serde_json::to_vec(&json!({"messages": [], "stream": bad})).unwrap();
        let e = serde_json::from_slice::<ChatRequest>(&body).unwrap_err();
        assert!(e.to_string().contains(STREAM_NOT_BOOLEAN), "{e}");
    }
    // with() sets the typed field as parsing does, so "stream" is never
    // sent twice.
    let r = ChatRequest::new("m").with("stream", json!(true));
    assert_eq!(r.stream, Some(true));
    assert!(r.extra.is_empty());
    let r = r.with("stream", Value::Null);
    assert_eq!(r.stream, None);
}
