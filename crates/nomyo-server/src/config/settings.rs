//! The resolved, validated settings that [`FileConfig::resolve`] produces:
//! the listen address, the server key, the backends to build, and the rest
//! of what `nomyo serve` starts from.

use super::*;

/// The TLS files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// Where the server key comes from.
#[derive(Debug)]
pub enum KeySetting {
    /// A key directory (loaded, or generated and saved on first start).
    Dir(KeySource),
    /// A fresh in-memory key of this size.
    Ephemeral(RsaBits),
}

/// A backend to build.
#[derive(Debug)]
pub enum BackendSpec {
    /// An OpenAI-compatible upstream.
    Upstream {
        /// Name.
        name: String,
        /// Connection settings.
        config: UpstreamConfig,
    },
    /// Several OpenAI-compatible upstreams serving the same models.
    Pool {
        /// Name.
        name: String,
        /// Endpoints and routing settings.
        config: PoolConfig,
    },
    /// The embedded model (built by the CLI, which owns the engine).
    Embedded {
        /// Name.
        name: String,
        /// Model file; `None` = the engine's default.
        model: Option<PathBuf>,
        /// Threads; `None` = the engine's default.
        threads: Option<usize>,
        /// Context per sequence; `None` = the model's (within the KV budget).
        context: Option<u32>,
        /// Requests decoding at once; `None` = the engine's default.
        parallel: Option<usize>,
        /// Models to advertise; `None` = what the engine reports.
        models: Option<Vec<String>>,
    },
}

/// The resolved, validated settings.
#[derive(Debug)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Server key.
    pub key: KeySetting,
    /// Grace period of a rotated-out key.
    pub key_grace: Duration,
    /// Accepted API keys (empty = open server).
    pub api_keys: ApiKeys,
    /// TLS, if any.
    pub tls: Option<TlsFiles>,
    /// Limits.
    pub limits: Limits,
    /// Who may read `/metrics`.
    pub metrics: MetricsAccess,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Host names a loopback listener answers besides loopback names.
    pub allowed_hosts: Vec<String>,
    /// The file that keeps the local replay window across restarts.
    pub replay_journal: Option<PathBuf>,
    /// Time in-flight requests get on shutdown.
    pub shutdown_grace: Duration,
    /// Backends, in order.
    pub backends: Vec<BackendSpec>,
    /// Tier rules (`None` = every tier allows everything).
    pub tiers: Option<BTreeMap<SecurityTier, TierRule>>,
    /// Rotate the HPKE keys this often (`None`: only on SIGHUP).
    pub hpke_rotate_every: Option<Duration>,
    /// How long a rotated-out HPKE key still opens requests.
    pub hpke_grace: Duration,
    /// Tiers whose v2 requests must use the post-quantum suite.
    pub post_quantum_tiers: BTreeSet<SecurityTier>,
    /// Replicas: key directory following, shared replay store.
    pub cluster: ClusterSettings,
    /// The TPM and the tiers' attestation rules.
    pub attestation: AttestationSettings,
}
