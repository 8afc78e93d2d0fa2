//! Who may call, how often, and which model on which tier goes to which backend.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use nomyo_core::{Fingerprint, SecurityTier};
use subtle::ConstantTimeEq;

use crate::backend::Backend;
use crate::error::ApiError;

// ---------------------------------------------------------------------------
// API keys
// ---------------------------------------------------------------------------

/// Who the caller is after authentication: the index of the matching key, or
/// anonymous when the server accepts requests without keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// No API keys are configured.
    Anonymous,
    /// The n-th accepted key.
    Key(u32),
}

/// Accepted API keys, kept only as SHA-256 hashes.
///
/// API keys are long random tokens, so an unsalted SHA-256 is enough to make a
/// memory or config leak useless (as with GitHub's token scanning); the
/// presented key is hashed and compared against every stored hash in constant
/// time, without an early exit.
#[derive(Clone, Default)]
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.hashes.len())
            .finish()
    }
}

impl ApiKeys {
    /// No keys: every caller is anonymous and accepted.
    pub fn open() -> Self {
        Self::default()
    }

    /// Adds a key given in clear (hashed at once).
    pub fn add_key(&mut self, key: &str) {
        self.hashes.push(hash_key(key));
    }

    /// Adds a key given as its SHA-256 (`sha256:HEX` or bare 64 hex digits).
    pub fn add_hash(&mut self, hash: &str) -> Result<(), String> {
        let hex_part = hash.strip_prefix("sha256:").unwrap_or(hash);
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part.trim(), &mut out)
            .map_err(|_| "an API key hash must be sha256: followed by 64 hex digits".to_owned())?;
        self.hashes.push(out);
        Ok(())
    }

    /// Reads keys from text: one per line; blank lines and `#` comments are skipped.
    pub fn add_keys_from_text(&mut self, text: &str) -> usize {
        let mut n = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add_key(line);
            n += 1;
        }
        n
    }

    /// Number of accepted keys.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no key is configured (the server is open).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Checks an `Authorization` header value. Every failure is the same 401.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, ApiError> {
        if self.hashes.is_empty() {
            return Ok(Caller::Anonymous);
        }
        let token = authorization
            .and_then(bearer_token)
            .ok_or(ApiError::Unauthorized)?;
        let presented = Fingerprint::of_bytes(token).0;
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u32;
        for (i, h) in self.hashes.iter().enumerate() {
            let eq = h.ct_eq(&presented);
            // Record the first match without branching on secret data.
            let take = eq & !found;
            index = u32::conditional_select(&index, &(i as u32), take);
            found |= eq;
        }
        if bool::from(found) {
            Ok(Caller::Key(index))
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

use subtle::ConditionallySelectable;

/// Whether an `Authorization: Bearer TOKEN` value carries the token whose
/// SHA-256 is `hash` (compared in constant time).
pub fn bearer_matches(authorization: Option<&[u8]>, hash: &[u8; 32]) -> bool {
    authorization
        .and_then(bearer_token)
        .is_some_and(|t| bool::from(Fingerprint::of_bytes(t).0.ct_eq(hash)))
}

/// SHA-256 of an API key, as stored.
pub fn hash_key(key: &str) -> [u8; 32] {
    Fingerprint::of_bytes(key.as_bytes()).0
}

/// `Bearer <token>` (scheme case-insensitive, RFC 7235) → token bytes.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

// ---------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------

/// Who a request counts against (its rate-limit bucket and its share of
/// the replay window): the principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// An API key (by index).
    Key(u32),
    /// An anonymous caller on an open server, by client address: an IPv4
    /// address, or an IPv6 /64 (one host usually holds a whole /64). Behind
    /// a reverse proxy every caller is the proxy, unless the proxy is
    /// listed in `trusted_proxies` (see [`TrustedProxies`]).
    Peer(IpAddr),
    /// An anonymous caller whose address is unknown (in-process use).
    Anonymous,
}

impl RateKey {
    /// The principal of `caller` connected from `peer` (the client address
    /// after [`TrustedProxies::client_addr`]).
    pub fn of(caller: Caller, peer: Option<IpAddr>) -> Self {
        match (caller, peer) {
            (Caller::Key(i), _) => RateKey::Key(i),
            (Caller::Anonymous, Some(ip)) => RateKey::Peer(network_of(ip)),
            (Caller::Anonymous, None) => RateKey::Anonymous,
        }
    }
}

/// An IPv4 address as is (also when mapped into IPv6); an IPv6 address cut
/// to its /64.
fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// Reverse proxies whose `X-Forwarded-For` is believed (`trusted_proxies`:
/// addresses or CIDR networks). A request from any other peer counts
/// against the peer's own address, whatever it forwards.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// No proxy is trusted (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// From `ADDR` or `ADDR/PREFIX` entries.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for e in entries {
            let e = e.as_ref().trim();
            let (addr, prefix) = match e.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (e, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| {
                format!("trusted_proxies: '{e}' is not an IP address or ADDR/PREFIX network")
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                    format!("trusted_proxies: '{e}': the prefix length must be 0 to {max}")
                })?,
            };
            nets.push((ip, prefix));
        }
        Ok(Self { nets })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|(net, prefix)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    /// The client's address: `peer`, or, when `peer` is a trusted proxy, the
    /// right-most `X-Forwarded-For` address that is not itself a trusted
    /// proxy (addresses further left were written by the client and prove
    /// nothing). A missing or unreadable header leaves `peer`.
    pub fn client_addr(&self, peer: Option<IpAddr>, headers: &http::HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        let mut hops: Vec<&str> = Vec::new();
        for v in headers.get_all("x-forwarded-for") {
            let Ok(s) = v.to_str() else {
                return Some(peer);
            };
            hops.extend(s.split(',').map(str::trim));
        }
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if self.trusts(ip) => continue,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(peer),
            }
        }
        Some(peer)
    }
}

/// Per-caller rate limit (GCRA, the `governor` crate): `per_minute` requests
/// per minute with bursts of `burst`, one bucket per API key (anonymous
/// callers of an open server: one per peer address).
pub struct RateLimit {
    limiter: RateLimiter<RateKey, DefaultKeyedStateStore<RateKey>, DefaultClock>,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

impl RateLimit {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn new(per_minute: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_minute)?;
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
        })
    }

    /// Admits one request or says when to retry.
    pub fn check(&self, key: RateKey) -> Result<(), ApiError> {
        self.limiter.check_key(&key).map_err(|not_until| {
            let now = DefaultClock::default().now();
            ApiError::RateLimited {
                retry_after: not_until.wait_time_from(now),
            }
        })
    }

    /// Forgets idle callers' state (call now and then).
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }
}

// ---------------------------------------------------------------------------
// Tiers, models, backends
// ---------------------------------------------------------------------------

/// A set of model names, or every name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSet {
    /// Any model (`"*"` in the config; an upstream with an unknown list).
    Any,
    /// Exactly these.
    Only(BTreeSet<String>),
}

impl ModelSet {
    /// From config names: `"*"` anywhere means every model.
    pub fn from_names<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        let set: BTreeSet<String> = names.into_iter().map(Into::into).collect();
        if set.contains("*") {
            ModelSet::Any
        } else {
            ModelSet::Only(set)
        }
    }

    /// Whether `model` is in the set.
    pub fn contains(&self, model: &str) -> bool {
        match self {
            ModelSet::Any => true,
            ModelSet::Only(s) => s.contains(model),
        }
    }
}

/// A backend as the router knows it.
pub struct NamedBackend {
    /// Name from the config (`upstream`, `llama`, `embedded`...).
    pub name: String,
    /// The backend.
    pub backend: Arc<dyn Backend>,
    /// Models it serves (read once from the config or [`Backend::models`]).
    pub models: ModelSet,
}

impl std::fmt::Debug for NamedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedBackend")
            .field("name", &self.name)
            .field("models", &self.models)
            .finish()
    }
}

/// What one tier allows.
#[derive(Clone, Debug)]
pub struct TierRule {
    /// Names of the backends that may serve this tier (empty = all backends).
    pub backends: Vec<String>,
    /// Models this tier allows.
    pub models: ModelSet,
}

impl TierRule {
    /// Every backend, every model.
    pub fn any() -> Self {
        Self {
            backends: Vec::new(),
            models: ModelSet::Any,
        }
    }
}

/// The resolved tier for a request and the backend that serves it.
#[derive(Clone)]
pub struct Route {
    /// Tier actually applied.
    pub tier: SecurityTier,
    /// Backend chosen.
    pub backend: Arc<NamedBackend>,
}

struct CompiledTier {
    backends: Vec<Arc<NamedBackend>>,
    models: ModelSet,
    next: AtomicUsize,
}

/// The routing table: tiers → (allowed models, backends).
pub struct Routing {
    backends: Vec<Arc<NamedBackend>>,
    tiers: BTreeMap<SecurityTier, CompiledTier>,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("backends", &self.backends)
            .field("tiers", &self.tiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Routing {
    /// Builds the table. `tiers == None` enables every tier for every backend
    /// and model; otherwise tiers absent from the map are disabled (403).
    pub fn new(
        backends: Vec<NamedBackend>,
        tiers: Option<BTreeMap<SecurityTier, TierRule>>,
    ) -> Result<Self, String> {
        if backends.is_empty() {
            return Err("no inference backend configured".into());
        }
        let mut seen = BTreeSet::new();
        for b in &backends {
            if !seen.insert(b.name.clone()) {
                return Err(format!("two backends are named '{}'", b.name));
            }
        }
        let backends: Vec<Arc<NamedBackend>> = backends.into_iter().map(Arc::new).collect();
        let rules = tiers.unwrap_or_else(|| {
            SecurityTier::ALL
                .into_iter()
                .map(|t| (t, TierRule::any()))
                .collect()
        });
        let mut compiled = BTreeMap::new();
        for (tier, rule) in rules {
            let chosen = if rule.backends.is_empty() {
                backends.clone()
            } else {
                let mut v = Vec::new();
                for name in &rule.backends {
                    let b = backends.iter().find(|b| &b.name == name).ok_or_else(|| {
                        format!("tier '{tier}' names backend '{name}', which is not configured")
                    })?;
                    v.push(Arc::clone(b));
                }
                v
            };
            compiled.insert(
                tier,
                CompiledTier {
                    backends: chosen,
                    models: rule.models,
                    next: AtomicUsize::new(0),
                },
            );
        }
        Ok(Self {
            backends,
            tiers: compiled,
        })
    }

    /// All backends.
    pub fn backends(&self) -> &[Arc<NamedBackend>] {
        &self.backends
    }

    /// Whether a model is served by some backend (a backend with an unknown
    /// list serves every name).
    pub fn is_known(&self, model: &str) -> bool {
        self.backends.iter().any(|b| b.models.contains(model))
    }

    fn tier_serves(&self, tier: SecurityTier, model: &str) -> bool {
        self.tiers.get(&tier).is_some_and(|t| {
            t.models.contains(model) && t.backends.iter().any(|b| b.models.contains(model))
        })
    }

    /// Picks the tier and backend for `model`.
    ///
    /// - no backend serves `model` → 404 `UnknownModel`;
    /// - with a requested tier: the tier must allow the model and have a
    ///   backend serving it, else 403 `ModelForbidden`;
    /// - without one: the lowest tier that allows the model (the reference
    ///   client's "server default based on the model"), else 403;
    /// - the backends of that tier that serve the model take turns; those not
    ///   ready are skipped; none ready → 503.
    pub fn route(&self, model: &str, requested: Option<SecurityTier>) -> Result<Route, ApiError> {
        if !self.is_known(model) {
            return Err(ApiError::UnknownModel);
        }
        let tier = match requested {
            Some(t) if self.tier_serves(t, model) => t,
            Some(_) => return Err(ApiError::ModelForbidden),
            None => SecurityTier::ALL
                .into_iter()
                .find(|t| self.tier_serves(*t, model))
                .ok_or(ApiError::ModelForbidden)?,
        };
        let compiled = self.tiers.get(&tier).ok_or(ApiError::ModelForbidden)?;
        let candidates: Vec<&Arc<NamedBackend>> = compiled
            .backends
            .iter()
            .filter(|b| b.models.contains(model))
            .collect();
        let start = compiled.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..candidates.len() {
            let b = candidates[(start + i) % candidates.len()];
            if b.backend.is_ready() {
                return Ok(Route {
                    tier,
                    backend: Arc::clone(b),
                });
            }
        }
        Err(ApiError::BackendUnavailable {
            retry_after: Some(Duration::from_secs(5)),
        })
    }

    /// Model ids a caller may use, each with the tiers that allow it (for
    /// `GET /v1/models`). Only concrete names are listed: a backend that
    /// accepts any name contributes names only where a tier lists them.
    pub fn listing(&self, only: Option<SecurityTier>) -> BTreeMap<String, BTreeSet<SecurityTier>> {
        let mut names = BTreeSet::new();
        for b in &self.backends {
            if let ModelSet::Only(s) = &b.models {
                names.extend(s.iter().cloned());
            }
        }
        for t in self.tiers.values() {
            if let ModelSet::Only(s) = &t.models {
                names.extend(s.iter().cloned());
            }
        }
        let mut out = BTreeMap::new();
        for name in names {
            let tiers: BTreeSet<SecurityTier> = SecurityTier::ALL
                .into_iter()
                .filter(|t| only.is_none_or(|o| o == *t))
                .filter(|t| self.tier_serves(*t, &name))
                .collect();
            if !tiers.is_empty() {
                out.insert(name, tiers);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, ChatRequest};
    use serde_json::Value;

    struct Dummy(bool);
    #[async_trait::async_trait]
    impl Backend for Dummy {
        fn name(&self) -> &str {
            "dummy"
        }
        fn models(&self) -> Vec<String> {
            vec![]
        }
        fn is_ready(&self) -> bool {
            self.0
        }
        async fn chat(&self, _r: ChatRequest) -> Result<Value, BackendError> {
            Err(BackendError::Timeout)
        }
    }

    fn nb(name: &str, models: &[&str], ready: bool) -> NamedBackend {
        NamedBackend {
            name: name.into(),
            backend: Arc::new(Dummy(ready)),
            models: ModelSet::from_names(models.iter().copied()),
        }
    }

    #[test]
    fn anonymous_principals_are_addresses_ipv6_per_64_behind_trusted_proxies_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = Caller::Anonymous;
        // One IPv6 host's /64 is one principal; another /64 is another.
        assert_eq!(
            RateKey::of(a, Some(ip("2001:db8:1:2::1"))),
            RateKey::of(a, Some(ip("2001:db8:1:2:ffff::9")))
        );
        assert_ne!(
            RateKey::of(a, Some(ip("2001:db8:1:2::1"))),
            RateKey::of(a, Some(ip("2001:db8:1:3::1")))
        );
        assert_eq!(
            RateKey::of(a, Some(ip("::ffff:192.0.2.7"))),
            RateKey::Peer(ip("192.0.2.7"))
        );
        assert_eq!(
            RateKey::of(Caller::Key(3), Some(ip("192.0.2.7"))),
            RateKey::Key(3)
        );

        let mut h = http::HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "198.51.100.1, 203.0.113.5".parse().unwrap(),
        );
        h.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        // Untrusted peer: its own address, whatever it forwards.
        let none = TrustedProxies::none();
        assert_eq!(
            none.client_addr(Some(ip("10.0.0.9")), &h),
            Some(ip("10.0.0.9"))
        );
        // Trusted: the right-most address that is not a trusted proxy.
        let t = TrustedProxies::parse(&["10.0.0.0/8", "::1"]).unwrap();
        assert_eq!(
            t.client_addr(Some(ip("10.0.0.9")), &h),
            Some(ip("203.0.113.5"))
        );
        assert_eq!(
            t.client_addr(Some(ip("192.0.2.1")), &h),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            t.client_addr(Some(ip("::1")), &http::HeaderMap::new()),
            Some(ip("::1"))
        );
        let mut bad = http::HeaderMap::new();
        bad.insert("x-forwarded-for", "not-an-address".parse().unwrap());
        assert_eq!(
            t.client_addr(Some(ip("10.1.1.1")), &bad),
            Some(ip("10.1.1.1"))
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["proxy.example"]).is_err());
    }

    #[test]
    fn keys_hash_and_bearer() {
        let mut k = ApiKeys::open();
        assert_eq!(k.authenticate(None).unwrap(), Caller::Anonymous);
        k.add_key("alpha");
        k.add_hash(&format!("sha256:{}", hex::encode(hash_key("beta"))))
            .unwrap();
        assert!(k.add_hash("sha256:zz").is_err());
        assert_eq!(
            k.authenticate(Some(b"Bearer alpha")).unwrap(),
            Caller::Key(0)
        );
        assert_eq!(
            k.authenticate(Some(b"bearer beta")).unwrap(),
            Caller::Key(1)
        );
        for bad in [
            &b"Bearer gamma"[..],
            b"Bearer ",
            b"Basic alpha",
            b"alpha",
            b"",
        ] {
            assert!(matches!(
                k.authenticate(Some(bad)),
                Err(ApiError::Unauthorized)
            ));
        }
        assert!(matches!(k.authenticate(None), Err(ApiError::Unauthorized)));
        assert!(!format!("{k:?}").contains("alpha"));
    }

    #[test]
    fn rate_limit_refuses_past_burst() {
        let r = RateLimit::new(60, 2).unwrap();
        assert!(r.check(RateKey::Key(0)).is_ok());
        assert!(r.check(RateKey::Key(0)).is_ok());
        match r.check(RateKey::Key(0)) {
            Err(ApiError::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1))
            }
            other => panic!("{other:?}"),
        }
        // Another caller has its own bucket.
        assert!(r.check(RateKey::Key(1)).is_ok());
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            RateKey::of(Caller::Anonymous, ip("10.0.0.1")),
            RateKey::Peer("10.0.0.1".parse().unwrap())
        );
        assert_eq!(RateKey::of(Caller::Key(3), ip("10.0.0.1")), RateKey::Key(3));
        assert!(r
            .check(RateKey::of(Caller::Anonymous, ip("10.0.0.1")))
            .is_ok());
        assert!(r
            .check(RateKey::of(Caller::Anonymous, ip("10.0.0.2")))
            .is_ok());
        assert!(RateLimit::new(0, 5).is_none());
    }

    #[test]
    fn routing_rules() {
        let mut tiers = BTreeMap::new();
        tiers.insert(
            SecurityTier::Standard,
            TierRule {
                backends: vec![],
                models: ModelSet::Any,
            },
        );
        tiers.insert(
            SecurityTier::High,
            TierRule {
                backends: vec!["b".into()],
                models: ModelSet::from_names(["small"]),
            },
        );
        let r = Routing::new(
            vec![nb("a", &["small", "big"], true), nb("b", &["small"], true)],
            Some(tiers),
        )
        .unwrap();
        assert!(matches!(r.route("nope", None), Err(ApiError::UnknownModel)));
        assert_eq!(r.route("big", None).unwrap().tier, SecurityTier::Standard);
        assert!(matches!(
            r.route("big", Some(SecurityTier::High)),
            Err(ApiError::ModelForbidden)
        ));
        assert!(matches!(
            r.route("small", Some(SecurityTier::Maximum)),
            Err(ApiError::ModelForbidden)
        ));
        let route = r.route("small", Some(SecurityTier::High)).unwrap();
        assert_eq!(route.backend.name, "b");
        let l = r.listing(None);
        assert_eq!(l["small"].len(), 2);
        assert_eq!(
            l["big"].iter().copied().collect::<Vec<_>>(),
            vec![SecurityTier::Standard]
        );
        assert!(!r.listing(Some(SecurityTier::High)).contains_key("big"));
    }

    #[test]
    fn not_ready_backends_give_503_and_bad_names_are_refused() {
        let r = Routing::new(vec![nb("a", &["m"], false)], None).unwrap();
        assert!(matches!(
            r.route("m", None),
            Err(ApiError::BackendUnavailable { .. })
        ));
        let mut tiers = BTreeMap::new();
        tiers.insert(
            SecurityTier::High,
            TierRule {
                backends: vec!["missing".into()],
                models: ModelSet::Any,
            },
        );
        assert!(Routing::new(vec![nb("a", &["m"], true)], Some(tiers)).is_err());
        assert!(Routing::new(vec![nb("a", &[], true), nb("a", &[], true)], None).is_err());
    }
}
