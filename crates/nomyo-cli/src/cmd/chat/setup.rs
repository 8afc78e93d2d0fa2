//! Everything `nomyo chat` does before its first request: the protocol, the
//! server's keys (trusted on first use or checked), the v1 guards and warning,
//! and the model.

use nomyo_client::{Client, KeySource, TrustDecision};

use super::{client_error, Protocol, Settings, V1_CANNOT_STREAM};
use crate::exit::{CliError, CliResult, Code};
use crate::spinner::Spinner;

/// Everything before the first request: which protocol, the server's keys
/// (trusted on first use or checked), the v1 guards, and the model.
/// Returns whether the server is spoken to over v2.
pub(super) async fn setup(client: &Client, s: &mut Settings, spin: bool) -> CliResult<bool> {
    let spinner = Spinner::start(
        "contacting the server",
        spin && s.protocol == Protocol::Auto,
    );
    let v2 = client.uses_v2().await;
    spinner.stop();
    let v2 = v2.map_err(client_error)?;
    if v2 {
        fetch_v2_keys(client, spin).await?;
        let spinner = Spinner::start("verifying the server's attestation", spin);
        let attested = client.ensure_attested().await;
        spinner.stop();
        attested.map_err(client_error)?;
    } else {
        client
            .refuse_v1_if_attestation_required()
            .map_err(client_error)?;
        if s.stream {
            return Err(CliError::usage(format!(
                "{} does not publish protocol v2 keys; {V1_CANNOT_STREAM}",
                client.origin()
            )));
        }
        prepare_v1(client, s, spin).await?;
    }
    if s.model.is_none() {
        s.request.model = pick_model(client).await?;
    }
    Ok(v2)
}

/// Protocol v1: the guards, the client key and the server's key.
async fn prepare_v1(client: &Client, s: &Settings, spin: bool) -> CliResult {
    // Protocol auto never sends high or maximum over v1: refused before
    // anything is fetched or recorded.
    client
        .check_v1_allowed(&nomyo_client::RequestOptions::default())
        .map_err(client_error)?;

    let label = match s.key_source {
        KeySource::Ephemeral => "generating a key and fetching the server key",
        _ => "loading the key and fetching the server key",
    };
    let spinner = Spinner::start(label, spin);
    let prepared = client.prepare().await;
    spinner.stop();
    let server_key = prepared.map_err(client_error)?;
    if let Some(dir) = &s.creating_key_in {
        eprintln!(
            "nomyo: created a new client key pair in {} (private key encrypted with your password)",
            dir.display()
        );
    }
    if let TrustDecision::FirstUse { file } = server_key.trust() {
        eprintln!(
            "nomyo: first contact with {}: trusting its key {} (recorded in {})",
            client.origin(),
            server_key.fingerprint(),
            file.display()
        );
    }
    warn_v1_once(client, spin)
}

/// On a terminal, once per server (recorded as `warned=v1` in the
/// known-servers file): what protocol v1 does not protect.
pub(crate) fn warn_v1_once(client: &Client, terminal: bool) -> CliResult {
    if terminal && client.take_v1_warning().map_err(client_error)? {
        eprintln!(
            "nomyo: warning: {} is answered over protocol v1, whose answers are only as safe as \
             the TLS path: a middleman who terminates TLS can swap X-Public-Key and read the \
             answer. Use --protocol v2 where the server offers it. (Said once for this server.)",
            client.origin()
        );
    }
    Ok(())
}

/// Protocol v2: verify the server's key configs.
async fn fetch_v2_keys(client: &Client, spin: bool) -> CliResult {
    let spinner = Spinner::start("fetching the server's keys", spin);
    let keys = client.hpke_keys().await;
    spinner.stop();
    let keys = keys.map_err(client_error)?;
    if let TrustDecision::FirstUse { file } = keys.trust() {
        // A signed key list is trusted through the server's v1 key, which is
        // what was recorded; an unsigned one through the config itself.
        match keys.signed_by() {
            Some(v1) => eprintln!(
                "nomyo: first contact with {}: trusting its server key {v1}, which signs its v2 keys (recorded in {})",
                client.origin(),
                file.display()
            ),
            None => eprintln!(
                "nomyo: first contact with {} (v2): trusting its {} key {} (recorded in {})",
                client.origin(),
                keys.config().kem,
                keys.fingerprint(),
                file.display()
            ),
        }
    }
    Ok(())
}

/// Without -m: the server's only model.
pub(crate) async fn pick_model(client: &Client) -> CliResult<String> {
    let models = client.models().await.map_err(|e| {
        let mut err = client_error(e);
        if err.code == Code::Other {
            err.message = format!("no model given (-m MODEL or NOMYO_MODEL), and the server's model list is unavailable: {}", err.message);
        }
        err
    })?;
    match models.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => Err(CliError::usage(
            "no model given and the server lists none: use -m MODEL (or set NOMYO_MODEL)",
        )),
        several => {
            let names: Vec<&str> = several.iter().take(10).map(|m| m.id.as_str()).collect();
            Err(CliError::usage(format!(
                "the server offers several models; choose one with -m: {}{}",
                names.join(", "),
                if several.len() > 10 { ", ..." } else { "" }
            )))
        }
    }
}
