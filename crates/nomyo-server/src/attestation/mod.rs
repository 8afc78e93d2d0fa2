//! Attestation: a TPM (docs/PROTOCOL.md §14) or a confidential VM's
//! configfs-tsm reports (§15, [`tsm`]). One thread owns the TPM; quotes
//! and credential activations reach it through a bounded queue, so that TPM
//! work never runs on the async workers and a busy TPM answers 503 at once
//! instead of piling requests up. configfs-tsm reports are made one at a
//! time on the blocking pool, behind a bounded queue too.
//!
//! [`Attestation`] is the handle the routes hold: [`Attestation::none`]
//! without either, else started by `Attestation::open` (feature `tpm`) or,
//! for tests, by [`Attestation::start`] with any [`Device`]; or opened by
//! [`Attestation::open_tsm`].

use std::sync::Arc;

use base64::Engine as _;
use nomyo_core::chat::TpmAttestation;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

#[cfg(feature = "tpm")]
mod tpm;
pub mod tsm;
#[cfg(feature = "tpm")]
pub use tpm::{AK_PRIVATE_FILE, AK_PUBLIC_FILE};

/// The quoted PCRs of the SHA-256 bank.
pub const PCR_INDICES: [u32; 3] = [0, 7, 10];
/// [`PCR_INDICES`] as the wire names them (`pcr_banks`).
pub const PCR_BANKS: &str = "sha256:0,7,10";
/// Default length of the TPM's queue (`[attestation] queue`).
pub const DEFAULT_QUEUE: usize = 32;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The static evidence: what the TPM and its keys are (§14.1, §14.3).
#[derive(Clone, Debug)]
pub struct Evidence {
    /// The EK's `TPM2B_PUBLIC`.
    pub ek_public: Vec<u8>,
    /// DER certificates from the TPM's EK certificate NV indices.
    pub ek_certificates: Vec<Vec<u8>>,
    /// The AK's `TPM2B_PUBLIC`.
    pub ak_public: Vec<u8>,
    /// `sha256:HEX` of `ak_public`.
    pub ak_fingerprint: String,
}

impl Evidence {
    /// The evidence of an EK, its certificates and an AK.
    pub fn new(ek_public: Vec<u8>, ek_certificates: Vec<Vec<u8>>, ak_public: Vec<u8>) -> Self {
        let ak_fingerprint = format!("sha256:{}", hex::encode(Sha256::digest(&ak_public)));
        Self {
            ek_public,
            ek_certificates,
            ak_public,
            ak_fingerprint,
        }
    }
}

/// One quote: the signed `TPMS_ATTEST`, its `TPMT_SIGNATURE`, and the
/// values of the quoted PCRs (SHA-256 bank, in [`PCR_INDICES`] order).
#[derive(Clone, Debug)]
pub struct Quote {
    /// `TPMS_ATTEST` bytes (what the signature covers).
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE` bytes.
    pub signature: Vec<u8>,
    /// PCR index and value.
    pub pcrs: Vec<(u32, Vec<u8>)>,
}

impl Quote {
    /// Whether the PCR values hash to the quote's `pcrDigest`.
    pub fn pcrs_match(&self) -> bool {
        let Ok(attest) = nomyo_core::tpm::Attest::parse_quote(&self.attest) else {
            return false;
        };
        let mut h = Sha256::new();
        for (_, v) in &self.pcrs {
            h.update(v);
        }
        attest.quote.pcr_digest == h.finalize().as_slice()
    }

    /// The wire fields of a quote, shared by the per-answer block and the
    /// attestation route: `pcr_banks`, `pcr_values`, `quote_b64`,
    /// `signature_b64`.
    pub fn fields(&self, into: &mut Map<String, Value>) {
        let values: Map<String, Value> = self
            .pcrs
            .iter()
            .map(|(i, v)| (i.to_string(), Value::String(hex::encode(v))))
            .collect();
        into.insert("pcr_banks".into(), json!(PCR_BANKS));
        into.insert("pcr_values".into(), json!({ "sha256": values }));
        into.insert("quote_b64".into(), json!(b64(&self.attest)));
        into.insert("signature_b64".into(), json!(b64(&self.signature)));
    }
}

/// What the owner thread drives: the TPM, or a stand-in in tests. Called on
/// that thread only, one call at a time.
pub trait Device {
    /// TPM2_Quote of the SHA-256 PCRs [`PCR_INDICES`] by the AK, with
    /// `extra_data` as qualifying data, and the PCR values quoted.
    fn quote(&mut self, extra_data: &[u8]) -> Result<Quote, String>;
    /// TPM2_ActivateCredential of a `TPM2B_ID_OBJECT` and a
    /// `TPM2B_ENCRYPTED_SECRET` for the AK under the EK: the credential.
    fn activate(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, String>;
}

enum Job {
    Quote {
        extra_data: Vec<u8>,
        reply: oneshot::Sender<Result<Quote, String>>,
    },
    Activate {
        blob: Vec<u8>,
        secret: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
}

struct Shared {
    jobs: mpsc::Sender<Job>,
    evidence: Evidence,
}

/// A configfs-tsm report entry behind a bounded queue.
struct TsmShared {
    tsm: std::sync::Mutex<tsm::Tsm>,
    kind: tsm::TsmKind,
    provider: String,
    queue: Arc<tokio::sync::Semaphore>,
}

/// The server's TPM or confidential-VM evidence, or none; cheap to clone.
#[derive(Clone, Default)]
pub struct Attestation {
    tpm: Option<Arc<Shared>>,
    tsm: Option<Arc<TsmShared>>,
}

impl std::fmt::Debug for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.tpm, &self.tsm) {
            (Some(s), _) => write!(f, "Attestation({})", s.evidence.ak_fingerprint),
            (None, Some(t)) => write!(f, "Attestation(tsm {})", t.provider),
            (None, None) => f.write_str("Attestation(none)"),
        }
    }
}

impl Attestation {
    /// No TPM: answers say `tpm_attestation.is_available: false`, the
    /// attestation routes 404.
    pub fn none() -> Self {
        Self::default()
    }

    /// Opens a configfs-tsm report entry under `dir` (§15): every answer of
    /// a tier that quotes per answer then carries a report
    /// (`_metadata.attestation`), and the attestation route serves one bound
    /// to the server's keys. At most `queue` reports wait; beyond, 503.
    /// Blocks: call it from a blocking context.
    pub fn open_tsm(dir: &std::path::Path, queue: usize) -> Result<Self, String> {
        let tsm = tsm::Tsm::open(dir)?;
        Ok(Self {
            tpm: None,
            tsm: Some(Arc::new(TsmShared {
                kind: tsm.kind(),
                provider: tsm.provider().to_owned(),
                tsm: std::sync::Mutex::new(tsm),
                queue: Arc::new(tokio::sync::Semaphore::new(queue.max(1))),
            })),
        })
    }

    /// Starts the owner thread: `open` runs there first (an ESAPI context
    /// must stay on one thread) and returns the device and its evidence;
    /// then the thread serves the queue of `queue` jobs until every handle
    /// is dropped. Blocks until `open` is done.
    pub fn start<D, F>(open: F, queue: usize) -> Result<Self, String>
    where
        D: Device,
        F: FnOnce() -> Result<(D, Evidence), String> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Job>(queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("nomyo-tpm".into())
            .spawn(move || {
                let mut device = match open() {
                    Ok((device, evidence)) => {
                        let _ = ready_tx.send(Ok(evidence));
                        device
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Some(job) = rx.blocking_recv() {
                    match job {
                        Job::Quote { extra_data, reply } => {
                            let _ = reply.send(device.quote(&extra_data));
                        }
                        Job::Activate {
                            blob,
                            secret,
                            reply,
                        } => {
                            let _ = reply.send(device.activate(&blob, &secret));
                        }
                    }
                }
            })
            .map_err(|e| format!("cannot start the TPM thread: {e}"))?;
        let evidence = ready_rx
            .recv()
            .map_err(|_| "the TPM thread stopped while opening the TPM".to_owned())??;
        Ok(Self {
            tpm: Some(Arc::new(Shared { jobs: tx, evidence })),
            tsm: None,
        })
    }

    /// Opens the TPM at `tcti` (feature `tpm`; docs/PROTOCOL.md §14.1): the
    /// AK is loaded from `ak_dir` (`ak.pub`, `ak.priv`), created and saved
    /// there on the first start. Blocks (creating keys takes a while on some
    /// TPMs): call it from a blocking context.
    #[cfg(feature = "tpm")]
    pub fn open(
        tcti: &str,
        ak_dir: Option<&std::path::Path>,
        queue: usize,
    ) -> Result<Self, String> {
        let tcti = tcti.to_owned();
        let dir = ak_dir.map(|d| d.to_owned());
        Self::start(move || tpm::open(&tcti, dir.as_deref()), queue)
    }

    /// Whether this server has attestation: a TPM or configfs-tsm.
    pub fn is_available(&self) -> bool {
        self.tpm.is_some() || self.tsm.is_some()
    }

    /// The static evidence, with a TPM.
    pub fn evidence(&self) -> Option<&Evidence> {
        self.tpm.as_ref().map(|s| &s.evidence)
    }

    /// The configfs-tsm provider and evidence kind, with configfs-tsm.
    pub fn tsm_source(&self) -> Option<(&str, tsm::TsmKind)> {
        self.tsm.as_ref().map(|t| (t.provider.as_str(), t.kind))
    }

    fn shared(&self) -> Result<&Shared, ApiError> {
        self.tpm.as_deref().ok_or(ApiError::NoAttestation)
    }

    /// A configfs-tsm report carrying `report_data` (503
    /// [`ApiError::EvidenceBusy`] when `queue` reports already wait).
    async fn tsm_report(
        &self,
        report_data: [u8; tsm::REPORT_DATA_LEN],
    ) -> Result<(tsm::TsmKind, String, tsm::TsmReport), ApiError> {
        let shared = Arc::clone(self.tsm.as_ref().ok_or(ApiError::NoAttestation)?);
        let permit = Arc::clone(&shared.queue)
            .try_acquire_owned()
            .map_err(|_| ApiError::EvidenceBusy)?;
        let (kind, provider) = (shared.kind, shared.provider.clone());
        let report = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let tsm = shared
                .tsm
                .lock()
                .map_err(|_| "the configfs-tsm entry is poisoned".to_owned())?;
            tsm.report(&report_data)
        })
        .await
        .map_err(|_| ApiError::Internal("the configfs-tsm task failed".into()))?
        .map_err(ApiError::Internal)?;
        Ok((kind, provider, report))
    }

    /// `_metadata.attestation` for the answer to `payload_id` (§15.2): with
    /// configfs-tsm and a tier that quotes per answer, a report whose report
    /// data is [`tsm::answer_report_data`]`(payload_id)`; else `None`.
    pub async fn answer_evidence(
        &self,
        payload_id: &str,
        per_answer: bool,
    ) -> Result<Option<nomyo_core::chat::CvmAttestation>, ApiError> {
        if self.tsm.is_none() || !per_answer {
            return Ok(None);
        }
        let (kind, provider, report) = self.tsm_report(tsm::answer_report_data(payload_id)).await?;
        Ok(Some(nomyo_core::chat::CvmAttestation {
            kind: kind.name().to_owned(),
            provider,
            report_b64: b64(&report.outblob),
            extra: Map::new(),
        }))
    }

    fn enqueue(&self, job: Job) -> Result<(), ApiError> {
        self.shared()?.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::TpmBusy,
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::Internal("the TPM thread has stopped".into())
            }
        })
    }

    /// A quote with `extra_data` (503 [`ApiError::TpmBusy`] when the queue
    /// is full; 404 without a TPM).
    pub async fn quote(&self, extra_data: &[u8]) -> Result<Quote, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Quote {
            extra_data: extra_data.to_vec(),
            reply,
        })?;
        match answer.await {
            Ok(Ok(q)) => Ok(q),
            Ok(Err(e)) => Err(ApiError::Internal(e)),
            Err(_) => Err(ApiError::Internal("the TPM thread has stopped".into())),
        }
    }

    /// TPM2_ActivateCredential (400 [`ApiError::ActivationFailed`] for
    /// whatever the TPM refuses; the reason is logged at debug level).
    pub async fn activate(&self, blob: Vec<u8>, secret: Vec<u8>) -> Result<Vec<u8>, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Activate {
            blob,
            secret,
            reply,
        })?;
        match answer.await {
            Ok(Ok(credential)) => Ok(credential),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "credential activation refused");
                Err(ApiError::ActivationFailed)
            }
            Err(_) => Err(ApiError::Internal("the TPM thread has stopped".into())),
        }
    }

    /// `_metadata.tpm_attestation` for the answer to `payload_id`
    /// (§14.2): a quote whose extraData is
    /// [`nomyo_core::tpm::extra_data_for`]`(payload_id)`, or
    /// `{"is_available": false}` without a TPM or when `per_answer` is off.
    pub async fn answer_block(
        &self,
        payload_id: &str,
        per_answer: bool,
    ) -> Result<TpmAttestation, ApiError> {
        let Some(shared) = self.tpm.as_deref().filter(|_| per_answer) else {
            return Ok(TpmAttestation::unavailable());
        };
        let quote = self
            .quote(&nomyo_core::tpm::extra_data_for(payload_id))
            .await?;
        let values = quote
            .pcrs
            .iter()
            .map(|(i, v)| (i.to_string(), hex::encode(v)))
            .collect();
        Ok(TpmAttestation {
            is_available: true,
            pcr_banks: Some(PCR_BANKS.to_owned()),
            pcr_values: Some([("sha256".to_owned(), values)].into()),
            quote_b64: Some(b64(&quote.attest)),
            signature_b64: Some(b64(&quote.signature)),
            aik_pubkey_b64: Some(b64(&shared.evidence.ak_public)),
            extra: Map::new(),
        })
    }

    /// The body of `GET /.well-known/nomyo-attestation` (§14.3) for
    /// `nonce`, the v1 key's SPKI DER and the bound v2 key list.
    pub async fn platform_evidence(
        &self,
        nonce: &[u8],
        v1_spki_der: &[u8],
        v2_keys: &[u8],
    ) -> Result<Value, ApiError> {
        let v1_key = nomyo_core::Fingerprint::of_bytes(v1_spki_der);
        let extra = nomyo_core::tpm::attestation_extra_data(nonce, &v1_key, v2_keys);
        if self.tpm.is_none() && self.tsm.is_some() {
            let report_data = tsm::route_report_data(&extra);
            let (kind, provider, report) = self.tsm_report(report_data).await?;
            let mut m = Map::new();
            m.insert("version".into(), json!(1));
            m.insert("kind".into(), json!(kind.name()));
            m.insert("provider".into(), json!(provider));
            m.insert(
                "v1_key_fingerprint".into(),
                json!(format!("sha256:{}", hex::encode(v1_key.0))),
            );
            m.insert("v2_keys_b64".into(), json!(b64(v2_keys)));
            m.insert("report_data".into(), json!(hex::encode(report_data)));
            m.insert("report_b64".into(), json!(b64(&report.outblob)));
            if !report.auxblob.is_empty() {
                m.insert("auxblob_b64".into(), json!(b64(&report.auxblob)));
            }
            m.insert("generation".into(), json!(report.generation));
            return Ok(Value::Object(m));
        }
        let shared = self.shared()?;
        let quote = self.quote(&extra).await?;
        let ev = &shared.evidence;
        let mut m = Map::new();
        m.insert("version".into(), json!(1));
        m.insert("ek_public_b64".into(), json!(b64(&ev.ek_public)));
        let certs: Vec<String> = ev.ek_certificates.iter().map(|c| b64(c)).collect();
        m.insert("ek_certificates_b64".into(), json!(certs));
        m.insert("ak_public_b64".into(), json!(b64(&ev.ak_public)));
        m.insert("ak_fingerprint".into(), json!(ev.ak_fingerprint));
        m.insert(
            "v1_key_fingerprint".into(),
            json!(format!("sha256:{}", hex::encode(v1_key.0))),
        );
        m.insert("v2_keys_b64".into(), json!(b64(v2_keys)));
        quote.fields(&mut m);
        if let Ok(log) = tokio::fs::read(IMA_LOG).await {
            m.insert("ima_log_b64".into(), json!(b64(&log)));
        }
        Ok(Value::Object(m))
    }
}

/// The kernel's binary IMA log (§14.3, `ima_log_b64`).
const IMA_LOG: &str = "/sys/kernel/security/ima/binary_runtime_measurements";

#[cfg(test)]
mod tests;
