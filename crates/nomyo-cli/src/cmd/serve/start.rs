//! Starting `nomyo serve` from its flags and configuration file: the key
//! password for a new key, the runtime, the listener, the start line and
//! what its errors exit with.

use std::io::Write;
use std::sync::Arc;

use nomyo_server::backend::Backend;
use nomyo_server::config::{ConfigError, FileConfig, KeySetting};
use nomyo_server::keystore::KeyOrigin;
use nomyo_server::serve::{self, EmbeddedParams, StartError};

use super::Args;
use crate::cmd::embedded::{self, EmbeddedSettings};
use crate::exit::{CliError, CliResult, Code};

fn config_error(e: ConfigError) -> CliError {
    match e {
        ConfigError::Read { .. } => CliError::new(Code::Other, e.to_string()),
        _ => CliError::usage(e.to_string()),
    }
}

fn start_error(e: StartError) -> CliError {
    match &e {
        // The core names the generic flags; serve's are --key-password-*.
        StartError::Key(nomyo_core::Error::PasswordRequired(path)) => CliError::new(
            Code::Security,
            format!(
                "server key {path} is password-protected; give its password with --key-password-file F or --key-password-env VAR"
            ),
        ),
        StartError::Key(k) if k.is_security() => CliError::new(Code::Security, e.to_string()),
        StartError::Config(_) => CliError::usage(e.to_string()),
        _ => CliError::new(Code::Other, e.to_string()),
    }
}

pub fn run(args: Args) -> CliResult {
    let flags = args.as_config();
    let config = match &args.config {
        Some(path) => FileConfig::from_file(path)
            .map_err(config_error)?
            .overlay(flags),
        None => flags,
    };
    let no_password = config.no_password == Some(true);
    let mut settings = config.resolve().map_err(config_error)?;
    key_password_for_a_new_key(&mut settings.key, no_password)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nomyo-serve")
        .build()
        .map_err(|e| CliError::new(Code::Other, format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        // A setting the engine refuses (a context the model cannot take) is
        // a usage error, exit 2.
        let usage = std::cell::Cell::new(false);
        let engine_info = std::cell::RefCell::new(None);
        let embedded = |p: EmbeddedParams| -> Result<Arc<dyn Backend>, String> {
            let settings = EmbeddedSettings {
                model: p.model,
                threads: p.threads,
                context: p.context,
                parallel: p.parallel,
            };
            match embedded::backend_described(&settings) {
                Ok((backend, info)) => {
                    *engine_info.borrow_mut() = Some(info);
                    Ok(backend)
                }
                Err(e) => {
                    usage.set(usage.get() || e.code == Code::Usage);
                    Err(e.message)
                }
            }
        };
        // Address and TLS files first: nothing is written to the key
        // directory unless the server can listen.
        let bound = serve::bind(settings.listen, settings.tls.as_ref())
            .await
            .map_err(start_error)?;
        let prepared = serve::prepare(settings, embedded).await.map_err(|e| {
            if usage.get() {
                CliError::usage(e.to_string())
            } else {
                start_error(e)
            }
        })?;
        let state = prepared.state;
        start_line(&state, engine_info.borrow().as_ref());
        let key = state.keys().current();
        let origin = match prepared.key_origin {
            KeyOrigin::Loaded => "loaded",
            KeyOrigin::Generated => "generated and saved",
            KeyOrigin::Ephemeral => "ephemeral, not saved",
        };
        tracing::info!(fingerprint = %key.fingerprint(), origin, "server key");
        eprintln!("nomyo serve: server key {} ({origin})", key.fingerprint());
        if state.is_open() {
            tracing::warn!("no API keys configured: every caller is accepted");
        }
        #[cfg(unix)]
        let _rotation = serve::rotate_on_sighup(state.clone()).map_err(|e| {
            CliError::new(
                Code::Other,
                format!("cannot install the SIGHUP handler: {e}"),
            )
        })?;

        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {}", bound.url());
            let _ = out.flush();
        }
        tracing::info!(addr = %bound.local_addr(), "listening");
        bound
            .run(
                state,
                prepared.shutdown_grace,
                crate::cmd::shutdown_signal(),
            )
            .await
            .map_err(|e| CliError::new(Code::Other, format!("server error: {e}")))?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// A key directory without a private key gets a new key at start-up: it is
/// saved encrypted with the key password, or unencrypted with
/// `--no-password`; with neither, the password is asked for on a terminal,
/// and off a terminal the start is refused (exit 2) before anything is written.
fn key_password_for_a_new_key(key: &mut KeySetting, no_password: bool) -> CliResult {
    let KeySetting::Dir(src) = key else {
        return Ok(());
    };
    if src.password.is_some()
        || no_password
        || src.dir.join(nomyo_core::keys::PRIVATE_KEY_FILE).exists()
    {
        return Ok(());
    }
    if !crate::cmd::keygen::on_terminal() {
        return Err(CliError::usage(format!(
            "no server key in {} yet, and a new one needs a password source: \
             --key-password-file F or --key-password-env VAR (saved encrypted), \
             or --no-password (config: no_password = true) to save it unencrypted",
            src.dir.display()
        )));
    }
    eprintln!(
        "nomyo serve: no server key in {}; a new one will be generated and saved there",
        src.dir.display()
    );
    src.password = Some(crate::cmd::keygen::prompt_new_password(
        "the new server key",
        "--no-password",
    )?);
    Ok(())
}

/// The `tracing` target of the start line (enabled by default).
pub(crate) const START_TARGET: &str = "nomyo::serve";

/// One line at start: what is served (model, context, threads) and the
/// attestation (`tpm sha256:<AK fingerprint>`, or `none`).
fn start_line(state: &nomyo_server::AppState, engine: Option<&embedded::EmbeddedInfo>) {
    let attestation = match (
        state.attestation().evidence(),
        state.attestation().tsm_source(),
    ) {
        (Some(e), _) => format!("tpm {}", e.ak_fingerprint),
        (None, Some((provider, _))) => format!("tsm {provider}"),
        (None, None) => "none".to_owned(),
    };
    let attestation = attestation.as_str();
    match engine {
        Some(e) => tracing::info!(
            target: START_TARGET,
            model = %e.model.display(),
            context = e.context,
            threads = e.threads,
            parallel = e.parallel,
            attestation,
            "serving the embedded model"
        ),
        None => {
            let mut models = Vec::new();
            for b in state.routing().backends() {
                match &b.models {
                    nomyo_server::policy::ModelSet::Only(names) => {
                        models.extend(names.iter().cloned())
                    }
                    nomyo_server::policy::ModelSet::Any => models.push(format!("{}:*", b.name)),
                }
            }
            tracing::info!(
                target: START_TARGET,
                model = %models.join(","),
                context = "upstream",
                threads = "upstream",
                parallel = "upstream",
                attestation,
                "serving upstream models"
            );
        }
    }
}
