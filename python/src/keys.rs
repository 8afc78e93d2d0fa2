//! `ClientKeys`: the client's RSA key pair, generated or loaded and kept in
//! Rust memory.

use std::path::PathBuf;
use std::sync::Arc;

use nomyo_core::keys::{LoadOptions, PrivateKey, RsaBits};
use pyo3::exceptions::{PyFileExistsError, PyValueError};
use pyo3::prelude::*;

use crate::secret;

/// An RSA client key pair held in Rust memory (`SecureCompletionClient`'s
/// keys). The private key never reaches Python.
#[pyclass(frozen, module = "nomyo_rs._native")]
pub(crate) struct ClientKeys {
    pub(crate) key: Arc<PrivateKey>,
}

#[pymethods]
impl ClientKeys {
    /// Generates an RSA-4096 key pair; with `key_dir`, saves it as
    /// `key_dir/private_key.pem` (PKCS#8, encrypted with `password` when
    /// given, mode 0600) and `key_dir/public_key.pem` (0644), `nomyo`'s
    /// layout and formats. Existing key files are never overwritten
    /// (FileExistsError).
    #[staticmethod]
    #[pyo3(signature = (key_dir=None, password=None))]
    fn generate(
        py: Python<'_>,
        key_dir: Option<PathBuf>,
        password: Option<String>,
    ) -> PyResult<Self> {
        let password = secret(password);
        py.detach(|| {
            let key = PrivateKey::generate(RsaBits::B4096)
                .map_err(|e| PyValueError::new_err(format!("key generation failed: {e}")))?;
            if let Some(dir) = key_dir {
                nomyo_core::keys::save_key_pair(&dir, &key, password.as_ref(), false).map_err(
                    |e| match e {
                        nomyo_core::Error::AlreadyExists(p) => PyFileExistsError::new_err(format!(
                            "{p} exists; existing keys are never overwritten (load them with load_keys)"
                        )),
                        e => PyValueError::new_err(format!("cannot save the keys: {e}")),
                    },
                )?;
            }
            Ok(Self { key: Arc::new(key) })
        })
    }

    /// Loads a PEM private key (PKCS#8, encrypted PKCS#8 or PKCS#1) and,
    /// when given, checks that the public key file matches it. Raises
    /// ValueError("Failed to load private key: ...") like `nomyo`.
    #[staticmethod]
    #[pyo3(signature = (private_key_path, public_key_path=None, password=None))]
    fn load(
        py: Python<'_>,
        private_key_path: PathBuf,
        public_key_path: Option<PathBuf>,
        password: Option<String>,
    ) -> PyResult<Self> {
        let password = secret(password);
        py.detach(|| {
            let key = nomyo_core::keys::load_private_key_file(
                &private_key_path,
                password.as_ref(),
                LoadOptions::default(),
            )
            .map_err(|e| PyValueError::new_err(format!("Failed to load private key: {e}")))?;
            if let Some(p) = public_key_path {
                let public = nomyo_core::keys::load_public_key_file(&p).map_err(|e| {
                    PyValueError::new_err(format!("Failed to load public key: {e}"))
                })?;
                if &public != key.public_key() {
                    return Err(PyValueError::new_err(format!(
                        "{} does not belong to the private key {}",
                        p.display(),
                        private_key_path.display()
                    )));
                }
            }
            if key.bits() < 2048 {
                return Err(PyValueError::new_err(format!(
                    "Key size {} is too small. Minimum recommended size is 2048 bits.",
                    key.bits()
                )));
            }
            Ok(Self { key: Arc::new(key) })
        })
    }

    /// The public key, PEM (SubjectPublicKeyInfo).
    #[getter]
    fn public_key_pem(&self) -> String {
        self.key.public_key().to_pem()
    }

    /// The key size in bits.
    #[getter]
    fn key_size(&self) -> usize {
        self.key.bits()
    }

    /// The public key's fingerprint, `sha256:<hex>`.
    #[getter]
    fn fingerprint(&self) -> String {
        self.key.public_key().fingerprint().to_string()
    }
}
