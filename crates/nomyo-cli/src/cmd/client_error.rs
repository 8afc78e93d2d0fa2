//! Client errors as the client commands (`chat`, `attest`, `bench`,
//! `proxy`) report them: the documented exit code and, where it helps, a
//! hint on what to do.

use nomyo_client::Error as ClientError;

use crate::exit::{CliError, Code};

/// Maps a client error to the documented exit codes.
pub(crate) fn client_error(e: ClientError) -> CliError {
    let code = if e.is_security() {
        Code::Security
    } else if e.is_auth() {
        Code::Auth
    } else if e.is_server_or_network() {
        Code::Server
    } else {
        match e {
            ClientError::Config(_)
            | ClientError::InsecureUrl { .. }
            | ClientError::InvalidInput(_) => Code::Usage,
            _ => Code::Other,
        }
    };
    let mut message = e.to_string();
    match &e {
        ClientError::ServerKeyChanged { origin, .. } => {
            message.push_str(&format!(
                "\nnomyo: to see the key the server presents now: nomyo fingerprint --server {origin}"
            ));
        }
        ClientError::InsecureUrl { .. } => message.push_str(" (--allow-http)"),
        // The server said why (the whole reason over v2, the kind over v1).
        ClientError::InvalidRequest(api) if api.code() == Some("context_length_exceeded") => {
            message.push_str(
                "\nnomyo: shorten the prompt (or the --system message); the server's model \
                 cannot read this much at once",
            );
        }
        ClientError::Connection { origin, .. }
            if origin.as_str() == crate::cmd::connect::LOCAL_SERVER =>
        {
            message.push_str(
                "\nnomyo: is `nomyo serve` running? (it listens there by default; name another \
                 server with --base-url or $NOMYO_BASE_URL)",
            );
        }
        _ => {}
    }
    CliError::new(code, message)
}
