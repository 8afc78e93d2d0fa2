//! The product's start-up path end to end, as `nomyo serve --config` runs it:
//! TOML → `FileConfig::resolve` → `serve::prepare` (key generated and saved
//! password-protected, upstream models discovered, API key hashes, tiers) →
//! `serve::bind` on port 0 → `Bound::run`; then a restart loads the same key.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use nomyo_server::backend::Backend;
use nomyo_server::keystore::KeyOrigin;
use nomyo_server::serve::{self, EmbeddedParams};

fn no_embedded(p: EmbeddedParams) -> Result<Arc<dyn Backend>, String> {
    Err(format!("no embedded engine in this test ({})", p.name))
}

async fn post(base: &str, sealed: &Sealed, key: &str, tier: &str) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/secure_completion"))
        .header("x-payload-id", &sealed.id)
        .header("x-public-key", &sealed.public_key_header)
        .header("authorization", format!("Bearer {key}"))
        .header("x-security-tier", tier)
        .body(sealed.body.clone())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_to_serving_and_restart_with_saved_key() {
    let (upstream, _seen) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let keys = dir.path().join("keys");
    let hash = hex::encode(nomyo_server::policy::hash_key("client-key-1"));
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
key_dir = "{keys}"
key_password_file = "{pw}"
key_bits = 2048
api_key_hashes = ["sha256:{hash}"]
[limits]
max_concurrency = 4
[[backends]]
name = "up"
url = "{upstream}"
[tiers.standard]
models = ["*"]
[tiers.high]
backends = ["up"]
models = ["m"]
"#,
        keys = keys.display(),
        pw = pw.display(),
    );
    let settings = common::settings(&toml);
    let prepared = serve::prepare(settings, no_embedded).await.unwrap();
    assert_eq!(prepared.key_origin, KeyOrigin::Generated);
    let fp = prepared.state.keys().current().fingerprint();
    let saved = std::fs::read_to_string(keys.join("private_key.pem")).unwrap();
    assert!(saved.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let bound = serve::bind(prepared.listen, prepared.tls.as_ref())
        .await
        .unwrap();
    assert_ne!(
        bound.local_addr().port(),
        0,
        "the real port is known before serving"
    );
    let base = bound.url();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        bound.run(prepared.state, Duration::from_secs(5), async move {
            let _ = rx.await;
        }),
    );

    // The served key is the saved one; requests go through policy to the upstream.
    let pem = reqwest::get(format!("{base}/pki/public_key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served = nomyo_core::PublicKey::from_pem(&pem).unwrap();
    assert_eq!(served.fingerprint(), fp);
    let plain = serde_json::to_vec(&chat("m", "from config")).unwrap();
    let (s, body) = post(&base, &seal_to(&plain, &served), "client-key-1", "high").await;
    assert_eq!(s, 200);
    let (_, answer) = open_response(&body);
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "upstream-echo:from config"
    );
    assert_eq!(answer["_metadata"]["security_tier"], "high");
    // Discovered model "slow" is standard-only: 403 on high; unknown model 404; bad key 401.
    let slow = serde_json::to_vec(&chat("slow", "x")).unwrap();
    assert_eq!(
        post(&base, &seal_to(&slow, &served), "client-key-1", "high")
            .await
            .0,
        403
    );
    let nope = serde_json::to_vec(&chat("nope", "x")).unwrap();
    assert_eq!(
        post(&base, &seal_to(&nope, &served), "client-key-1", "standard")
            .await
            .0,
        404
    );
    assert_eq!(
        post(&base, &seal_to(&plain, &served), "client-key-2", "high")
            .await
            .0,
        401
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Restart: the same key is loaded with the password...
    let settings = common::settings(&toml);
    let again = serve::prepare(settings, no_embedded).await.unwrap();
    assert_eq!(again.key_origin, KeyOrigin::Loaded);
    assert_eq!(again.state.keys().current().fingerprint(), fp);
    // ...and refused without it, with a message that says so.
    let no_pw = toml.replace(&format!("key_password_file = \"{}\"\n", pw.display()), "");
    let settings = common::settings(&no_pw);
    let e = serve::prepare(settings, no_embedded).await.unwrap_err();
    assert!(e.to_string().contains("password"), "{e}");
}

#[tokio::test]
async fn without_backends_the_embedded_factory_is_asked_and_its_error_shown() {
    let settings = common::settings("ephemeral_key = true\nkey_bits = 2048\nmodel = \"x.gguf\"\n");
    let mut asked = None;
    let e = serve::prepare(settings, |p: EmbeddedParams| {
        asked = p.model.clone();
        no_embedded(p)
    })
    .await
    .unwrap_err();
    assert_eq!(asked.as_deref(), Some(std::path::Path::new("x.gguf")));
    assert!(e.to_string().contains("no embedded engine"), "{e}");
}

#[tokio::test]
async fn a_tier_can_name_an_embedded_backend() {
    let (upstream, _seen) = start_upstream().await;
    let toml = format!(
        r#"
ephemeral_key = true
key_bits = 2048
[[backends]]
name = "up"
url = "{upstream}"
[[backends]]
name = "local"
type = "embedded"
model = "local.gguf"
threads = 1
[tiers.standard]
backends = ["up"]
models = ["*"]
[tiers.maximum]
backends = ["local"]
models = ["local-model"]
# Asked for over v1 (RSA) below, on a server without a TPM.
require_post_quantum = false
require_attestation = false
"#
    );
    let settings = common::settings(&toml);
    let mut asked = Vec::new();
    let prepared = serve::prepare(settings, |p: EmbeddedParams| {
        asked.push((p.name.clone(), p.model.clone(), p.threads));
        Ok(echo_backend(&["local-model"]) as Arc<dyn Backend>)
    })
    .await
    .unwrap();
    assert_eq!(
        asked,
        [(
            "local".to_owned(),
            Some(std::path::PathBuf::from("local.gguf")),
            Some(1)
        )]
    );
    let pem = prepared.state.keys().current().public_pem().clone();
    let key = nomyo_core::PublicKey::from_pem(std::str::from_utf8(&pem).unwrap()).unwrap();
    let app = nomyo_server::app(prepared.state);
    let ask = |model: &str, tier: &str| {
        let plain = serde_json::to_vec(&chat(model, "which backend?")).unwrap();
        seal_to(&plain, &key).request(None, Some(tier))
    };
    // maximum is served by the embedded backend (the echo double here)...
    let (s, _, body) = oneshot(&app, ask("local-model", "maximum")).await;
    assert_eq!(s, 200);
    let (_, answer) = open_response(&body);
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo:which backend?"
    );
    assert_eq!(answer["_metadata"]["security_tier"], "maximum");
    // ...and only maximum: standard goes to the upstream, which may not serve it.
    let (s, _, _) = oneshot(&app, ask("local-model", "standard")).await;
    assert_eq!(s, 403);
    let (s, _, body) = oneshot(&app, ask("m", "standard")).await;
    assert_eq!(s, 200);
    let (_, answer) = open_response(&body);
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "upstream-echo:which backend?"
    );
}
