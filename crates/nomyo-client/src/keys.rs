//! Where the client's RSA key pair comes from (docs/PROTOCOL.md §3.5: the response
//! is sealed to the key in `X-Public-Key`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nomyo_core::keys::{self, LoadOptions, PrivateKey, RsaBits, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE};
use nomyo_core::SecretString;
use reqwest::header::HeaderValue;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};

/// The source of the client's key pair.
///
/// The default, [`KeySource::Ephemeral`], generates an RSA-4096 key in memory
/// the first time a client needs it (once per client, whatever the number of
/// concurrent requests) and never writes it anywhere.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum KeySource {
    /// A fresh RSA-4096 key in memory, generated once per client.
    #[default]
    Ephemeral,
    /// `DIR/private_key.pem` and `DIR/public_key.pem` (the Python client's
    /// layout). Existing keys are loaded, with `password` when they are
    /// encrypted, and never overwritten; when the directory has no key and
    /// `create` is set, a new RSA-4096 key is saved there (PBES2-encrypted
    /// with `password`, mode 0600).
    Directory {
        /// The key directory.
        dir: PathBuf,
        /// The private key's password.
        password: Option<SecretString>,
        /// Generate and save a key when there is none.
        create: bool,
    },
    /// Explicit files. The public key file, when given, must match the
    /// private key.
    Files {
        /// A PEM private key (PKCS#8, encrypted PKCS#8, or PKCS#1).
        private_key: PathBuf,
        /// Its PEM public key, checked against the private key.
        public_key: Option<PathBuf>,
        /// The private key's password.
        password: Option<SecretString>,
    },
    /// A key the application already holds.
    Key(Arc<PrivateKey>),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pw = |p: &Option<SecretString>| if p.is_some() { "[redacted]" } else { "none" };
        match self {
            KeySource::Ephemeral => f.write_str("Ephemeral"),
            KeySource::Directory {
                dir,
                password,
                create,
            } => f
                .debug_struct("Directory")
                .field("dir", dir)
                .field("password", &pw(password))
                .field("create", create)
                .finish(),
            KeySource::Files {
                private_key,
                public_key,
                password,
            } => f
                .debug_struct("Files")
                .field("private_key", private_key)
                .field("public_key", public_key)
                .field("password", &pw(password))
                .finish(),
            KeySource::Key(k) => f.debug_tuple("Key").field(k).finish(),
        }
    }
}

/// The client key with its `X-Public-Key` header value, computed once.
pub(crate) struct ClientKey {
    pub(crate) key: Arc<PrivateKey>,
    pub(crate) header: HeaderValue,
}

impl ClientKey {
    pub(crate) fn new(key: Arc<PrivateKey>) -> Result<Self> {
        let encoded = nomyo_core::v1::encode_public_key_header(&key.public_key().to_pem());
        let header = HeaderValue::from_str(&encoded)
            .map_err(|_| Error::Config("cannot encode the client public key header".into()))?;
        Ok(Self { key, header })
    }
}

/// The client key, loaded or generated once (on first use) from its
/// source, whatever the number of concurrent requests.
pub(crate) struct ClientKeyCell {
    pub(crate) source: KeySource,
    key: OnceCell<Arc<ClientKey>>,
}

impl ClientKeyCell {
    pub(crate) fn new(source: KeySource) -> Self {
        Self {
            source,
            key: OnceCell::new(),
        }
    }

    /// The key, loaded or generated on a blocking thread the first time.
    pub(crate) async fn get(&self) -> Result<Arc<ClientKey>> {
        self.key
            .get_or_try_init(|| async {
                let source = self.source.clone();
                let key = tokio::task::spawn_blocking(move || source.load())
                    .await
                    .map_err(|_| {
                        Error::ClientKey(nomyo_core::Error::Key(
                            "key generation was interrupted".into(),
                        ))
                    })??;
                ClientKey::new(key).map(Arc::new)
            })
            .await
            .cloned()
    }
}

impl KeySource {
    /// Produces the key. Blocking (key generation, PBKDF2): call it on a
    /// blocking thread.
    pub(crate) fn load(&self) -> Result<Arc<PrivateKey>> {
        match self {
            KeySource::Ephemeral => {
                let started = std::time::Instant::now();
                let key = PrivateKey::generate(RsaBits::B4096).map_err(Error::ClientKey)?;
                tracing::debug!(
                    ms = started.elapsed().as_millis() as u64,
                    "ephemeral RSA-4096 client key generated"
                );
                Ok(Arc::new(key))
            }
            KeySource::Key(k) => Ok(k.clone()),
            KeySource::Files {
                private_key,
                public_key,
                password,
            } => load_pair(private_key, public_key.as_deref(), password.as_ref()).map(Arc::new),
            KeySource::Directory {
                dir,
                password,
                create,
            } => load_dir(dir, password.as_ref(), *create).map(Arc::new),
        }
    }
}

fn load_pair(
    private: &Path,
    public: Option<&Path>,
    password: Option<&SecretString>,
) -> Result<PrivateKey> {
    let key = keys::load_private_key_file(private, password, LoadOptions::default())
        .map_err(Error::ClientKey)?;
    if let Some(public) = public {
        let pubkey = keys::load_public_key_file(public).map_err(Error::ClientKey)?;
        if &pubkey != key.public_key() {
            return Err(Error::ClientKey(nomyo_core::Error::Key(format!(
                "{} does not match the private key {}",
                public.display(),
                private.display()
            ))));
        }
    }
    tracing::debug!(path = %private.display(), fingerprint = %key.public_key().fingerprint(), "client key loaded");
    Ok(key)
}

fn load_dir(dir: &Path, password: Option<&SecretString>, create: bool) -> Result<PrivateKey> {
    let private = dir.join(PRIVATE_KEY_FILE);
    let public = dir.join(PUBLIC_KEY_FILE);
    let public_opt = || public.exists().then_some(public.as_path());
    if private.exists() {
        return load_pair(&private, public_opt(), password);
    }
    if !create {
        return Err(Error::ClientKey(nomyo_core::Error::Key(format!(
            "{} does not exist",
            private.display()
        ))));
    }
    if public.exists() {
        // A public key without its private key: someone's half-deleted pair.
        // Never replace it silently.
        return Err(Error::ClientKey(nomyo_core::Error::AlreadyExists(
            public.display().to_string(),
        )));
    }
    let key = PrivateKey::generate(RsaBits::B4096).map_err(Error::ClientKey)?;
    match keys::save_key_pair(dir, &key, password, false) {
        Ok(saved) => {
            if password.is_none() {
                tracing::warn!(path = %saved.private_key.display(), "client private key saved WITHOUT a password");
            }
            tracing::debug!(path = %saved.private_key.display(), fingerprint = %key.public_key().fingerprint(), "client key generated and saved");
            Ok(key)
        }
        // Another process created the pair meanwhile: use theirs.
        Err(nomyo_core::Error::AlreadyExists(_)) if private.exists() => {
            load_pair(&private, public_opt(), password)
        }
        Err(e) => Err(Error::ClientKey(e)),
    }
}
