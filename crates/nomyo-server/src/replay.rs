//! Where the replay window lives: in this process ([`ReplayCache`]), or in a
//! Redis server shared by every replica ([`RedisReplay`]).
//!
//! With one process the local cache is exact and free. Behind a load
//! balancer, each replica's local cache only knows the requests that replica
//! saw: a captured request replayed to *another* replica would be answered a
//! second time. A shared store closes that gap: every replica claims a
//! request's keys in the same Redis with one atomic script (all keys free →
//! all set with the window as expiry), so a request is valid once across the
//! fleet. If the store cannot be reached the request is refused (503, retry
//! later): replay protection fails closed, never open.
//!
//! Only SHA-256 hashes of public request bytes (`X-Payload-ID`, the package's
//! nonce/tag/wrapped key, the v2 `enc` and body) are stored, under a prefix,
//! with the window as their time to live; nothing secret reaches Redis.

use std::time::{Duration, Instant};

use nomyo_core::{ExposeSecret, SecretString};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::ApiError;
use crate::limits::{Claim, ReplayCache, ReplayKey};
use crate::policy::RateKey;
use crate::replay_journal::ReplayJournal;

/// Default key prefix in the shared store.
pub const DEFAULT_PREFIX: &str = "nomyo:replay:";

/// How long one store operation may take before the request is refused.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Claims every key or none for one caller. KEYS: the request's replay keys,
/// then the caller's key (a sorted set of the replay keys it holds, scored
/// by expiry); ARGV: time to live (ms), the caller's share (entries), the
/// number of replay keys. Returns 1 when all were free and are now set, 0
/// when any was already set, 2 when the caller already holds its share.
const CLAIM_SCRIPT: &str = r"
local n = tonumber(ARGV[3])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
local owner = KEYS[n + 1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', owner, '-inf', now)
if redis.call('ZCARD', owner) + n > tonumber(ARGV[2]) then return 2 end
for i = 1, n do
  redis.call('SET', KEYS[i], '1', 'PX', ARGV[1])
  redis.call('ZADD', owner, now + tonumber(ARGV[1]), KEYS[i])
end
redis.call('PEXPIRE', owner, ARGV[1])
return 1
";

/// The replay window of this server: local (in memory, or in memory and on
/// disk) or shared.
#[derive(Debug)]
pub enum ReplayStore {
    /// In this process only, forgotten on restart (ephemeral keys: their
    /// requests cannot be opened after a restart anyway).
    Local(ReplayCache),
    /// In this process, and journaled to a file so that a restart does not
    /// reopen the window ([`ReplayJournal`]).
    Persistent(ReplayCache, ReplayJournal),
    /// In a Redis server shared by the replicas.
    Shared(RedisReplay),
}

impl ReplayStore {
    /// Whether any key is already used, when that can be known without a
    /// round trip (local store); a shared store answers `false` here and
    /// decides in [`Self::claim`]. A cheap check before decrypting.
    pub fn seen_locally(&self, keys: &[ReplayKey]) -> bool {
        match self {
            ReplayStore::Local(c) | ReplayStore::Persistent(c, _) => c.is_used(keys),
            ReplayStore::Shared(_) => false,
        }
    }

    /// Marks all keys used by `owner`, atomically (all or none). Both stores
    /// hold each caller to its share of the window (the shared one across
    /// every replica).
    pub async fn claim(&self, keys: &[ReplayKey], owner: RateKey) -> Result<Claim, ApiError> {
        match self {
            ReplayStore::Local(c) => Ok(c.claim(keys, owner)),
            ReplayStore::Persistent(c, journal) => {
                let claim = c.claim(keys, owner);
                if claim != Claim::Fresh {
                    return Ok(claim);
                }
                // Given back if this request goes away before the record
                // is on disk.
                struct Pending<'a>(&'a ReplayCache, &'a [ReplayKey], bool);
                impl Drop for Pending<'_> {
                    fn drop(&mut self) {
                        if !self.2 {
                            self.0.release(self.1);
                        }
                    }
                }
                let mut pending = Pending(c, keys, false);
                match journal.claim(keys, c.window()).await {
                    Ok(()) => {
                        pending.2 = true;
                        Ok(Claim::Fresh)
                    }
                    Err(_) => Err(ApiError::ReplayStoreUnavailable),
                }
            }
            ReplayStore::Shared(r) => r.claim(keys, owner).await,
        }
    }

    /// Gives claimed keys back (the request was refused before it reached
    /// the backend). For the shared store this is sent in the background; if it
    /// is lost, the keys simply expire with the window.
    pub fn release(&self, keys: &[ReplayKey], owner: RateKey) {
        match self {
            ReplayStore::Local(c) => c.release(keys),
            ReplayStore::Persistent(c, journal) => {
                // Journal first: a new claim of the same bytes, possible once
                // the window forgets them, is then written after this
                // release, never before it (which would leave the file
                // saying "given back" for a request the backend ran).
                journal.release(keys);
                c.release(keys);
            }
            ReplayStore::Shared(r) => r.release(keys, owner),
        }
    }

    /// Entries held in this process (`None` for the shared store).
    pub fn local_len(&self) -> Option<usize> {
        match self {
            ReplayStore::Local(c) | ReplayStore::Persistent(c, _) => Some(c.len()),
            ReplayStore::Shared(_) => None,
        }
    }

    /// "local" or "redis".
    pub fn kind(&self) -> &'static str {
        match self {
            ReplayStore::Local(_) => "local",
            ReplayStore::Persistent(..) => "local+journal",
            ReplayStore::Shared(_) => "redis",
        }
    }
}

/// The replay window in a shared Redis (or Valkey) server.
pub struct RedisReplay {
    conn: ConnectionManager,
    script: redis::Script,
    window: Duration,
    /// The most entries one caller may hold across the fleet.
    share: usize,
    prefix: String,
    timeout: Duration,
    /// `host:port` of the store, for logs (never the URL: it may hold a
    /// password).
    addr: String,
    /// Failures not logged yet (one line per second at most, with the count).
    unlogged: std::sync::atomic::AtomicU64,
    /// When the last failure was logged (ms since `started`).
    last_logged_ms: std::sync::atomic::AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for RedisReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplay")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl RedisReplay {
    /// Connects to the store at `url` (`redis://[:PASSWORD@]HOST:PORT[/DB]`,
    /// or `rediss://` for TLS). Fails if it cannot be reached now, so that a
    /// misconfigured replica does not start; later outages refuse requests
    /// (503) until the connection is back. Errors never contain the URL.
    pub async fn connect(
        url: &SecretString,
        window: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url.expose_secret())
            .map_err(|e| format!("replay store URL is not a redis:// URL ({})", e.category()))?;
        let addr = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2);
        let t = Instant::now();
        let mut conn = tokio::time::timeout(
            timeout * 2,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| format!("replay store {addr} did not answer within {timeout:?}"))?
        .map_err(|e| format!("replay store {addr} unreachable: {}", describe(&e)))?;
        // Prove the server works (and that AUTH, if any, was accepted).
        let _: () = redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| format!("replay store {addr} refused PING: {}", describe(&e)))?;
        tracing::info!(
            store = %addr,
            window_secs = window.as_secs(),
            connect_ms = t.elapsed().as_secs_f64() * 1e3,
            "shared replay store connected"
        );
        Ok(Self {
            conn,
            script: redis::Script::new(CLAIM_SCRIPT),
            window,
            share: usize::MAX,
            prefix: DEFAULT_PREFIX.to_owned(),
            timeout,
            addr,
            unlogged: std::sync::atomic::AtomicU64::new(0),
            // Far in the past, so that the first failure is logged.
            last_logged_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            started: Instant::now(),
        })
    }

    /// Uses `prefix` for the keys (several deployments sharing one Redis).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Holds each caller to `share` entries across the fleet (default: no
    /// limit).
    pub fn with_share(mut self, share: usize) -> Self {
        self.share = share.max(2);
        self
    }

    /// The caller's set of held entries: its identity is hashed, so no
    /// address or key index is stored in clear.
    fn owner_key(&self, owner: RateKey) -> String {
        let id = match owner {
            RateKey::Key(i) => format!("key:{i}"),
            RateKey::Peer(ip) => format!("peer:{ip}"),
            RateKey::Anonymous => "anonymous".to_owned(),
        };
        let mut s = String::with_capacity(self.prefix.len() + 70);
        s.push_str(&self.prefix);
        s.push_str("owner:");
        s.push_str(&hex::encode(
            nomyo_core::Fingerprint::of_bytes(id.as_bytes()).0,
        ));
        s
    }

    fn key(&self, k: &ReplayKey) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 64);
        s.push_str(&self.prefix);
        s.push_str(&hex::encode(k));
        s
    }

    async fn claim(&self, keys: &[ReplayKey], owner: RateKey) -> Result<Claim, ApiError> {
        let mut inv = self.script.prepare_invoke();
        for k in keys {
            inv.key(self.key(k));
        }
        inv.key(self.owner_key(owner));
        let ttl_ms = u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        inv.arg(ttl_ms);
        inv.arg(u64::try_from(self.share).unwrap_or(u64::MAX));
        inv.arg(keys.len());
        let mut conn = self.conn.clone();
        let t = Instant::now();
        let res = tokio::time::timeout(self.timeout, inv.invoke_async::<i64>(&mut conn)).await;
        match res {
            Ok(Ok(1)) => {
                tracing::trace!(
                    store_ms = t.elapsed().as_secs_f64() * 1e3,
                    "replay keys claimed"
                );
                Ok(Claim::Fresh)
            }
            Ok(Ok(2)) => Ok(Claim::OverShare),
            Ok(Ok(_)) => Ok(Claim::Replayed),
            Ok(Err(e)) => {
                self.log_failure(&describe(&e));
                Err(ApiError::ReplayStoreUnavailable)
            }
            Err(_) => {
                self.log_failure("timed out");
                Err(ApiError::ReplayStoreUnavailable)
            }
        }
    }

    /// One error line per second at most during an outage, with how many
    /// requests were refused since the last one.
    fn log_failure(&self, why: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let refused = self.unlogged.fetch_add(1, Relaxed) + 1;
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_logged_ms.load(Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < 1000 {
            return;
        }
        if self
            .last_logged_ms
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
        {
            self.unlogged.fetch_sub(refused, Relaxed);
            tracing::error!(store = %self.addr, error = why, refused, "shared replay store unavailable; refusing requests (503) until it is back");
        }
    }

    fn release(&self, keys: &[ReplayKey], owner: RateKey) {
        let names: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let owner = self.owner_key(owner);
        let mut conn = self.conn.clone();
        let timeout = self.timeout;
        let addr = self.addr.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("DEL")
                .arg(&names)
                .ignore()
                .cmd("ZREM")
                .arg(&owner)
                .arg(&names)
                .ignore();
            let del = pipe.query_async::<()>(&mut conn);
            match tokio::time::timeout(timeout, del).await {
                Ok(Ok(_)) => {}
                _ => tracing::warn!(store = %addr, "releasing replay keys failed; they expire with the window"),
            }
        });
    }
}

/// A redis error without its detail text, which can echo the server's reply.
fn describe(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection failed".into()
    } else {
        e.category().to_owned()
    }
}
