//! Who may call, how often, and which model on which tier goes to which backend.
//!
//! API keys are in `api_keys.rs`, rate limits and trusted proxies in
//! `rate.rs`, tiers, models and backends in `routing.rs`; every item is
//! re-exported here.

mod api_keys;
mod rate;
mod routing;

pub use api_keys::{bearer_matches, hash_key, ApiKeys, Caller};
pub use rate::{RateKey, RateLimit, TrustedProxies};
pub use routing::{ModelSet, NamedBackend, Route, Routing, TierRule};
