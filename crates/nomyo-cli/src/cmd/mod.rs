//! One module per subcommand.

pub mod bench;
pub mod chat;
pub mod completions;
pub mod connect;
#[allow(dead_code)]
pub mod embedded;
pub mod fingerprint;
mod fingerprint_server;
pub mod keygen;
pub mod known_servers;
pub mod models;
pub mod proxy;
pub mod serve;
