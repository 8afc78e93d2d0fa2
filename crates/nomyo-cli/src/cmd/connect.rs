//! How the client commands (`chat`, `proxy`) reach a NOMYO endpoint: its URL,
//! plain-HTTP consent, the API key, and how its key is trusted (pins or
//! known-servers). One set of flags, resolved once, turned into a
//! [`ClientBuilder`] the command completes with its own settings.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use nomyo_client::{Client, ClientBuilder, KnownServers};
use nomyo_core::{Fingerprint, SecretString};

use crate::exit::CliResult;

/// Where `nomyo serve` listens by default (docs/CLI.md §7); the server the
/// client commands talk to when none is given. It is loopback, so its plain
/// HTTP never leaves the machine: like every loopback URL it needs no
/// --allow-http (any other http:// URL does).
pub const LOCAL_SERVER: &str = "http://127.0.0.1:12434";

/// The connection flags shared by the client commands.
#[derive(ClapArgs, Clone, Debug)]
pub struct ConnectArgs {
    /// The server's base URL (https://...; one trailing /v1, as OpenAI
    /// clients are configured, is dropped). Default: $NOMYO_BASE_URL, else
    /// the local `nomyo serve` at http://127.0.0.1:12434 (loopback).
    #[arg(
        long,
        alias = "server",
        value_name = "URL",
        env = "NOMYO_BASE_URL",
        hide_env_values = true
    )]
    base_url: Option<String>,
    /// Allow a plain http:// --base-url that is not loopback (local
    /// development only: the API key and the server key travel unprotected).
    /// Not needed for 127.0.0.0/8, ::1 or localhost (when it resolves only
    /// to those): that traffic never leaves the machine.
    #[arg(long)]
    allow_http: bool,
    /// Read the server's API key from this environment variable (default:
    /// NOMYO_API_KEY, if set).
    #[arg(long, value_name = "VAR", conflicts_with = "api_key_file")]
    api_key_env: Option<String>,
    /// Read the server's API key from the first line of this file.
    #[arg(long, value_name = "F")]
    api_key_file: Option<PathBuf>,
    /// Accept only a server key with this fingerprint (sha256:...); repeat for
    /// several. Pins replace the known-servers check.
    #[arg(long = "pin", value_name = "FP", value_parser = parse_fingerprint)]
    pins: Vec<Fingerprint>,
    /// The known-servers file for trust on first use (default
    /// $XDG_CONFIG_HOME/nomyo/known_servers, else ~/.config/nomyo/known_servers).
    #[arg(long, value_name = "FILE")]
    known_servers: Option<PathBuf>,
}

/// The resolved connection (the API key read from its file or variable).
pub struct Connection {
    base_url: String,
    allow_http: bool,
    api_key: Option<SecretString>,
    pins: Vec<Fingerprint>,
    known_servers: KnownServers,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("base_url", &self.base_url)
            .field("allow_http", &self.allow_http)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("pins", &self.pins)
            .finish_non_exhaustive()
    }
}

impl ConnectArgs {
    /// Whether a base URL was given (flag or `$NOMYO_BASE_URL`).
    pub fn has_base_url(&self) -> bool {
        self.base_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
    }

    /// Resolves the flags: the URL (or the local default) and the API key.
    pub fn resolve(self) -> CliResult<Connection> {
        let (base_url, local_default) = resolve_base_url(self.base_url);
        Ok(Connection {
            base_url,
            allow_http: self.allow_http || local_default,
            api_key: crate::input::api_key(
                self.api_key_file.as_deref(),
                self.api_key_env.as_deref(),
            )?,
            pins: self.pins,
            known_servers: match self.known_servers {
                Some(f) => KnownServers::File(f),
                None => KnownServers::Default,
            },
        })
    }
}

impl Connection {
    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether plain http:// was allowed.
    pub fn allow_http(&self) -> bool {
        self.allow_http
    }

    /// The API key, if one was given.
    pub fn api_key(&self) -> Option<&SecretString> {
        self.api_key.as_ref()
    }

    /// A client builder for this server: URL, plain-HTTP consent, API key,
    /// pins and known-servers; the caller adds retries, timeouts, protocol...
    pub fn client_builder(&self) -> ClientBuilder {
        let mut b = Client::builder()
            .base_url(self.base_url.clone())
            .allow_http(self.allow_http)
            .pins(self.pins.iter().copied())
            .known_servers(self.known_servers.clone());
        if let Some(k) = &self.api_key {
            b = b.api_key(k.clone());
        }
        b
    }
}

/// `--base-url` (or `$NOMYO_BASE_URL`), else the local `nomyo serve`;
/// `true` when it is that local default (loopback: plain HTTP allowed).
pub(crate) fn resolve_base_url(arg: Option<String>) -> (String, bool) {
    match arg.filter(|u| !u.trim().is_empty()) {
        Some(u) => (u, false),
        None => (LOCAL_SERVER.to_owned(), true),
    }
}

/// Parses a `--listen` address: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
/// `localhost` is resolved and accepted only when every address it resolves
/// to is loopback; it then listens on the first (IPv4 preferred). For the
/// commands that listen (`serve`, `proxy`).
#[cfg(any(feature = "serve", feature = "proxy"))]
pub(crate) fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{SocketAddr, ToSocketAddrs};
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad = || format!("'{s}' is not IP:PORT or localhost:PORT (e.g. 127.0.0.1:12434)");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host.strip_suffix('.').unwrap_or(host);
    if !host.eq_ignore_ascii_case("localhost") {
        return Err(bad());
    }
    let addrs: Vec<SocketAddr> = ("localhost", port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve localhost: {e}"))?
        .collect();
    if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(
            "localhost does not resolve to loopback addresses only on this machine; give an IP"
                .into(),
        );
    }
    Ok(*addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0]))
}

/// `--listen` as clap checks it: the address, normalised to `IP:PORT`.
#[cfg(any(feature = "serve", feature = "proxy"))]
pub(crate) fn listen_value(s: &str) -> Result<String, String> {
    parse_listen(s).map(|a| a.to_string())
}

pub(crate) fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    s.parse().map_err(|e: nomyo_core::Error| e.to_string())
}
