//! The decrypted chat request (`nomyo_server::routes::pipeline::chat_request`, used
//! by v1 and v2 after opening): any bytes an attacker can seal to the server.
//! Never panics; an accepted request has a non-empty string `model` and a
//! non-empty array `messages`, and `"stream": true` only where streaming is
//! allowed; every refusal has a message a person can act on, which never
//! echoes the request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_core::SecretBuf;
use nomyo_server::error::ApiError;
use nomyo_server::routes::pipeline::chat_request;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let plaintext = SecretBuf::from_slice(data);
    for allow_stream in [false, true] {
        match chat_request(&plaintext, allow_stream) {
            Ok(body) => {
                assert!(matches!(body.get("model"), Some(Value::String(m)) if !m.is_empty()));
                assert!(matches!(body.get("messages"), Some(Value::Array(a)) if !a.is_empty()));
                if !allow_stream {
                    assert_ne!(body.get("stream"), Some(&Value::Bool(true)));
                }
            }
            Err(e) => {
                let detail = e.detail();
                assert!(!detail.is_empty());
                assert!(matches!(
                    e,
                    ApiError::InvalidChatRequest(_) | ApiError::StreamingUnsupported
                ));
                // Fixed texts only: nothing of the request comes back. (An
                // input that is itself a piece of a fixed text, which the
                // fuzzer finds by comparing, gets the same text as a
                // filler of its length: that is not an echo.)
                if data.len() >= 8 {
                    if let Ok(text) = std::str::from_utf8(data) {
                        let filler = SecretBuf::from_slice(&vec![b'x'; data.len()]);
                        let fixed = chat_request(&filler, allow_stream)
                            .err()
                            .map(|e| e.detail());
                        if fixed.as_deref() != Some(&*detail) {
                            assert!(!detail.contains(text), "{detail}");
                        }
                    }
                }
            }
        }
    }
});
