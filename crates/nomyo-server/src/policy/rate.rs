//! Rate limits: who a request counts against (its principal, through
//! trusted reverse proxies) and the per-caller GCRA limiter.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::Caller;
use crate::error::ApiError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
