//! The server's TOML configuration (`FileConfig::from_toml`, then
//! `resolve`, which validates every value): never panics on any text, and
//! errors are messages a person can act on (not empty). The file names a
//! config gives (key password, API keys, TLS, upstream API keys) are dropped
//! before `resolve`, so the target reads no file and an input naming
//! /dev/zero or a FIFO cannot hang it; the environment-variable names stay
//! (reading a variable is harmless). Then the flags-over-file overlay of
//! the parsed config over itself resolves to the same outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_server::config::FileConfig;

fn without_files(mut cfg: FileConfig) -> FileConfig {
    cfg.key_password_file = None;
    cfg.api_key_file = None;
    cfg.tls_cert = None;
    cfg.tls_key = None;
    if let Some(backends) = cfg.backends.as_mut() {
        for b in backends {
            b.api_key_file = None;
        }
    }
    cfg
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match FileConfig::from_toml(text) {
        Ok(cfg) => without_files(cfg),
        Err(message) => {
            assert!(!message.is_empty());
            return;
        }
    };
    let _ = format!("{cfg:?}");
    let again = cfg.clone().overlay(cfg.clone());
    let first = cfg.resolve();
    match &first {
        Ok(settings) => {
            let _ = format!("{settings:?}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    assert_eq!(again.resolve().is_ok(), first.is_ok());
});
