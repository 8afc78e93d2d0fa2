//! `nomyo fingerprint --server URL [--allow-http]`: the fingerprint of each
//! key the server publishes, one line per key, labelled by protocol
//! (`v1 sha256:...`, then `v2 KEM key_id=N sha256:...` for each HPKE key
//! config of `/.well-known/hpke-keys`, when the server publishes it). The keys are displayed, not trusted: nothing is
//! recorded in the known-servers file.

use std::time::Duration;

use nomyo_client::{Client, KnownServers, Protocol};

use crate::exit::{CliError, CliResult, Code};

pub fn run(url: &str, allow_http: bool) -> CliResult {
    let client = Client::builder()
        .base_url(url)
        .allow_http(allow_http)
        .known_servers(KnownServers::Off)
        .protocol(Protocol::Auto)
        .max_retries(1)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| {
            let code = match e {
                nomyo_client::Error::Config(_) | nomyo_client::Error::InsecureUrl { .. } => {
                    Code::Usage
                }
                _ => Code::Other,
            };
            let hint = if matches!(e, nomyo_client::Error::InsecureUrl { .. }) {
                " (--allow-http)"
            } else {
                ""
            };
            CliError::new(code, format!("{e}{hint}"))
        })?;
    let runtime = crate::cmd::runtime(false)?;
    // v1: the RSA key of GET /pki/public_key; v2: every published key config.
    let fetched = runtime.block_on(async {
        let v1 = client.server_key().await?;
        let v2 = if client.uses_v2().await? {
            Some(client.hpke_keys().await?)
        } else {
            None
        };
        Ok::<_, nomyo_client::Error>((v1, v2))
    });
    let (key, v2) = fetched.map_err(|e| {
        let code = if e.is_security() {
            Code::Security
        } else if e.is_auth() {
            Code::Auth
        } else if e.is_server_or_network() {
            Code::Server
        } else {
            Code::Other
        };
        CliError::new(code, e.to_string())
    })?;
    println!("v1 {}", key.fingerprint());
    for config in v2.iter().flat_map(|k| k.configs()) {
        println!(
            "v2 {} key_id={} {}",
            config.kem,
            config.key_id,
            config.fingerprint()
        );
    }
    Ok(())
}
