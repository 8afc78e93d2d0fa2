//! Parsing tests: defaults, every supported field, and refusals that name
//! the field without echoing its value.

use serde_json::{json, Map, Value};

use nomyo_backend::{BackendError, Rejection};

use super::*;

fn body(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn err(v: Value) -> String {
    match parse(&body(v), false) {
        Err(BackendError::InvalidRequest(m)) => m.message,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

fn rejection(v: Value) -> Rejection {
    match parse(&body(v), false) {
        Err(BackendError::InvalidRequest(r)) => r,
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

#[test]
fn rejections_carry_openai_code_and_param() {
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let r = rejection(json!({"messages": msgs, "temperature": 5}));
    assert_eq!(r.code, Some("invalid_value"));
    assert_eq!(r.param.as_deref(), Some("temperature"));
    assert!(r.message.contains("between 0 and 2"), "{}", r.message);
    let r = rejection(json!({"messages": msgs, "tools": [{"type": "function"}]}));
    assert_eq!(r.code, Some("unsupported_parameter"));
    assert_eq!(r.param.as_deref(), Some("tools"));
    let r = rejection(json!({"messages": msgs, "logprobs": true}));
    assert_eq!(r.code, Some("unsupported_parameter"));
    assert_eq!(r.param.as_deref(), Some("logprobs"));
    let r = rejection(json!({"messages": []}));
    assert_eq!(r.param.as_deref(), Some("messages"));
}

#[test]
fn defaults_suit_a_small_model_and_explicit_values_win() {
    let r = parse(
        &body(json!({"messages": [{"role": "user", "content": "hi"}]})),
        false,
    )
    .expect("valid");
    assert_eq!(r.sampling.temperature, 0.2);
    assert_eq!(r.sampling.top_p, 0.9);
    assert_eq!(r.sampling.top_k, 0);
    assert_eq!(r.sampling.min_p, 0.0);
    // A null is an omission; any explicit value wins, even OpenAI's 1.
    let r = parse(
        &body(json!({"messages": [{"role": "user", "content": "hi"}],
                     "temperature": null, "top_p": 1})),
        false,
    )
    .expect("valid");
    assert_eq!(r.sampling.temperature, 0.2);
    assert_eq!(r.sampling.top_p, 1.0);
    let r = parse(
        &body(json!({"messages": [{"role": "user", "content": "hi"}],
                     "temperature": 1.0, "top_p": 0.5})),
        false,
    )
    .expect("valid");
    assert_eq!(r.sampling.temperature, 1.0);
    assert_eq!(r.sampling.top_p, 0.5);
    assert_eq!(r.max_tokens, None);
    assert_eq!(r.n, 1);
    assert!(!r.sampling.seeded);
    assert!(r.stop.is_empty());
    assert_eq!(r.format, OutputFormat::Text);
}

#[test]
fn reads_every_supported_field() {
    let r = parse(
        &body(json!({
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ],
            "temperature": 0.7, "top_p": 0.9, "seed": 42, "max_tokens": 7,
            "stop": ["\n\n", "END"], "n": 2,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "logit_bias": {"15": -100},
            "presence_penalty": 0.5
        })),
        false,
    )
    .expect("valid");
    assert_eq!(r.messages[0].role, "system");
    assert_eq!(r.messages[1].content.as_str(), "ab");
    assert_eq!(r.sampling.temperature, 0.7);
    assert_eq!(r.sampling.top_p, 0.9);
    assert_eq!(r.sampling.seed, 42);
    assert!(r.sampling.seeded);
    assert_eq!(r.max_tokens, Some(7));
    assert_eq!(r.stop, vec!["\n\n".to_owned(), "END".to_owned()]);
    assert_eq!(r.n, 2);
    assert_eq!(
        r.format,
        OutputFormat::JsonSchema(r#"{"type":"object"}"#.into())
    );
    assert_eq!(r.sampling.logit_bias, vec![(15, -100.0)]);
    assert_eq!(r.sampling.presence_penalty, 0.5);
}

#[test]
fn max_completion_tokens_wins_over_max_tokens() {
    let r = parse(
        &body(json!({"messages": [{"role": "user", "content": "x"}],
                     "max_tokens": 9, "max_completion_tokens": 3})),
        false,
    )
    .expect("valid");
    assert_eq!(r.max_tokens, Some(3));
}

#[test]
fn rejects_bad_input_with_the_field_name() {
    let m = |extra: Value| {
        let mut b = json!({"messages": [{"role": "user", "content": "x"}]});
        for (k, v) in extra.as_object().expect("object") {
            b[k] = v.clone();
        }
        err(b)
    };
    assert!(err(json!({})).contains("messages"));
    assert!(err(json!({"messages": []})).contains("empty"));
    assert!(err(json!({"messages": [{"role": "wizard", "content": "x"}]})).contains("role"));
    assert!(err(json!({"messages": [{"role": "user", "content": 5}]})).contains("content"));
    assert!(
        err(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}))
            .contains("text")
    );
    assert!(m(json!({"temperature": 3})).contains("temperature"));
    assert!(m(json!({"temperature": "hot"})).contains("temperature"));
    assert!(m(json!({"top_p": -0.1})).contains("top_p"));
    assert!(m(json!({"max_tokens": 0})).contains("max_tokens"));
    assert!(m(json!({"max_tokens": -5})).contains("max_tokens"));
    assert!(m(json!({"n": 9})).contains("`n`"));
    assert!(m(json!({"seed": "x"})).contains("seed"));
    assert!(m(json!({"stop": ["a", "b", "c", "d", "e"]})).contains("stop"));
    assert!(m(json!({"stop": [""]})).contains("stop"));
    assert!(m(json!({"stop": 3})).contains("stop"));
    assert!(m(json!({"response_format": {"type": "yaml"}})).contains("response_format"));
    assert!(m(json!({"response_format": {"type": "json_schema"}})).contains("schema"));
    assert!(m(json!({"tools": [{"type": "function"}]})).contains("tool"));
    assert!(m(json!({"logprobs": true})).contains("logprobs"));
    assert!(m(json!({"logit_bias": {"a": 1}})).contains("logit_bias"));
}

#[test]
fn errors_never_echo_content() {
    let secret = "TOP-SECRET-PROMPT";
    let e = err(json!({"messages": [{"role": secret, "content": secret}]}));
    assert!(!e.contains(secret));
    let e = err(
        json!({"messages": [{"role": "user", "content": "x"}], "stop": [secret, secret, secret, secret, secret]}),
    );
    assert!(!e.contains(secret));
}

#[test]
fn streaming_needs_one_choice() {
    let b = body(json!({"messages": [{"role": "user", "content": "x"}], "n": 2}));
    assert!(parse(&b, false).is_ok());
    assert!(matches!(
        parse(&b, true),
        Err(BackendError::InvalidRequest(_))
    ));
}

#[test]
fn seeds_fold_deterministically_below_the_random_marker() {
    assert_eq!(fold_seed(1), 1);
    assert_eq!(fold_seed(0), 0);
    assert_ne!(fold_seed(-1), u32::MAX);
    assert_eq!(fold_seed(i64::from(u32::MAX)), 0);
    assert_eq!(fold_seed(-1), fold_seed(-1));
    assert!(fold_seed(i64::MIN) < u32::MAX);
}

#[test]
fn a_model_s_metadata_sets_the_defaults_and_bad_values_fall_back() {
    let meta = |key: &str| match key {
        "general.sampling.temp" => Some("0.6".to_owned()),
        "general.sampling.top_p" => Some("0.95".to_owned()),
        "general.sampling.top_k" => Some("20".to_owned()),
        "general.sampling.min_p" => Some("nonsense".to_owned()),
        _ => None,
    };
    let d = SamplingDefaults::from_metadata(meta);
    assert_eq!(d.temperature, 0.6);
    assert_eq!(d.top_p, 0.95);
    assert_eq!(d.top_k, 20);
    assert_eq!(d.min_p, SamplingDefaults::ENGINE.min_p);
    assert_eq!(
        SamplingDefaults::from_metadata(|_| Some("7".to_owned())).temperature,
        SamplingDefaults::ENGINE.temperature
    );
    assert_eq!(
        SamplingDefaults::from_metadata(|_| None),
        SamplingDefaults::ENGINE
    );
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let r = parse_with_defaults(&body(json!({"messages": msgs})), false, &d).expect("valid");
    assert_eq!((r.sampling.temperature, r.sampling.top_k), (0.6, 20));
    let r = parse_with_defaults(&body(json!({"messages": msgs, "top_k": 0})), false, &d)
        .expect("valid");
    assert_eq!(r.sampling.top_k, 0);
}
