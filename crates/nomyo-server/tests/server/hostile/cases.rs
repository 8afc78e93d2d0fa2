//! The matrix's rows: the row types and the decrypted plaintexts both
//! protocols must refuse.

use super::*;

/// A v2 wire-field row: name, `Ehbp-Encapsulated-Key` value, more headers,
/// body, expected statuses.
pub(super) type V2Field = (
    &'static str,
    String,
    Vec<(&'static str, String)>,
    Vec<u8>,
    &'static [u16],
);

/// One row: name, request bytes, the v2 context if any, expected statuses.
pub(super) struct Case {
    pub(super) name: String,
    pub(super) bytes: Vec<u8>,
    pub(super) sealer: Option<RequestSealer>,
    pub(super) expect: &'static [u16],
}

pub(super) fn case(name: impl Into<String>, bytes: Vec<u8>, expect: &'static [u16]) -> Case {
    Case {
        name: name.into(),
        bytes,
        sealer: None,
        expect,
    }
}

/// Plaintext the server decrypts and must refuse, for both protocols.
pub(super) fn hostile_plaintexts() -> Vec<(&'static str, Vec<u8>, &'static [u16])> {
    let deep_model = format!(
        r#"{{"model":{},"messages":[{{"role":"user","content":"x"}}]}}"#,
        nested(100_000)
    );
    let deep_messages = format!(r#"{{"model":"m","messages":[{}]}}"#, nested(5_000));
    let mut bad_utf8_string = br#"{"model":"m","messages":[{"role":"user","content":""#.to_vec();
    bad_utf8_string.extend_from_slice(&[0xC3, 0x28, 0xFF]);
    bad_utf8_string.extend_from_slice(br#""}]}"#);
    let lone_surrogate = br#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#;
    vec![
        (
            "plaintext invalid UTF-8",
            vec![0xFF, 0xFE, 0xFD, b'{', b'}'],
            &[400],
        ),
        (
            "invalid UTF-8 inside a JSON string",
            bad_utf8_string,
            &[400],
        ),
        // serde_json accepts an escaped lone surrogate only as an error.
        ("lone surrogate escape", lone_surrogate.to_vec(), &[400]),
        (
            "100k nested arrays as the model",
            deep_model.into_bytes(),
            &[400],
        ),
        ("100k bare [", "[".repeat(100_000).into_bytes(), &[400]),
        (
            "5k nested arrays in messages",
            deep_messages.into_bytes(),
            &[400],
        ),
        (
            "model a number",
            chat_bytes(&json!({"model": 7, "messages": [{"role": "user", "content": "x"}]})),
            &[400],
        ),
        (
            "model empty",
            chat_bytes(&json!({"model": "", "messages": [{"role": "user", "content": "x"}]})),
            &[400],
        ),
        (
            "messages null",
            chat_bytes(&json!({"model": "m", "messages": null})),
            &[400],
        ),
        (
            "unknown model",
            chat_bytes(
                &json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
            ),
            &[404],
        ),
        (
            "JSON with trailing garbage",
            b"{\"model\":\"m\",\"messages\":[1]} trailing".to_vec(),
            &[400],
        ),
        ("NUL bytes", vec![0u8; 1024], &[400]),
    ]
}
