//! Attestation: what the client checks about the endpoint before a prompt
//! leaves (docs/PROTOCOL.md §14.7, §16.4).
//!
//! [`Client::attest`] fetches the server's evidence for a fresh nonce and
//! reports each check as a [`Step`]. For a TPM: the EK certificate chain,
//! the activation of a credential made for the AK, the quote's signature,
//! the nonce, the binding of the client's trusted keys, and a PCR policy.
//! For a confidential VM (AMD SEV-SNP, Intel TDX): the vendor's chain and
//! signature, the TCB, debug off, the measurement, the report data (the
//! nonce and keys) and the binding of the client's trusted keys. A check
//! whose trust input is missing (no EK root, no TDX collateral) is
//! [`StepStatus::Unverified`], never a pass; a policy not asked for is
//! [`StepStatus::NotRequested`].

mod cvm;
mod ek;
mod evidence;
mod policy;

use std::path::Path;

use base64::Engine as _;
use nomyo_core::chat::{CvmAttestation, TpmAttestation};
use nomyo_core::cvm::TdxCollateral;
use nomyo_core::tpm::{
    attestation_extra_data, make_credential, verify_quote, Public, VerifyError, ACTIVATE_PATH,
    ATTESTATION_PATH,
};
use nomyo_core::Fingerprint;
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;

pub use cvm::CvmFound;
pub use nomyo_core::attest::{Step, StepStatus};
pub use policy::Policy;

use crate::client::Client;
use crate::error::{Error, Result};
use evidence::Evidence;

/// Largest evidence body read (certificates, quote, and an IMA log).
const MAX_EVIDENCE_BYTES: usize = 8 * 1024 * 1024;
/// Largest activation answer read.
const MAX_ACTIVATE_BYTES: usize = 64 * 1024;

/// What to verify against.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AttestOptions {
    /// DER certificates the EK certificate must chain to (each trusted as
    /// a root). None: the EK chain is [`StepStatus::Unverified`].
    pub ek_roots: Vec<Vec<u8>>,
    /// The policy (PCRs, confidential-VM measurements and TCB). None:
    /// [`StepStatus::NotRequested`] allowlists.
    pub policy: Option<Policy>,
    /// The collateral a TDX quote is verified with (Intel's PCS or a PCCS
    /// serves it; this client fetches nothing). None: a TDX quote's
    /// signature is [`StepStatus::Unverified`].
    pub tdx_collateral: Option<TdxCollateral>,
    /// An SEV-SNP VCEK (or VLEK) certificate, DER, for a server whose
    /// certificate table (auxblob) holds none.
    pub sev_snp_vcek: Option<Vec<u8>>,
    /// AMD's chain (ASK or ASVK, then ARK), PEM, instead of the server's
    /// certificate table's.
    pub sev_snp_chain_pem: Option<Vec<u8>>,
}

impl AttestOptions {
    /// Adds the certificates of a PEM file as EK roots.
    pub fn ek_roots_pem_file(mut self, path: &Path) -> Result<Self> {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| {
                Error::Config(format!(
                    "cannot read EK root certificates from {}: {e}",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "{} holds no PEM certificate",
                path.display()
            )));
        }
        self.ek_roots
            .extend(certs.into_iter().map(|c| c.as_ref().to_vec()));
        Ok(self)
    }

    /// Sets the policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Reads the TDX collateral from a JSON file (the layout of
    /// [`TdxCollateral::from_json`]).
    pub fn tdx_collateral_file(mut self, path: &Path) -> Result<Self> {
        let json = read_input(path, "TDX collateral")?;
        let collateral = TdxCollateral::from_json(&json)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        self.tdx_collateral = Some(collateral);
        Ok(self)
    }

    /// Reads an SEV-SNP VCEK (or VLEK) certificate, DER.
    pub fn sev_snp_vcek_file(mut self, path: &Path) -> Result<Self> {
        self.sev_snp_vcek = Some(read_input(path, "VCEK certificate")?);
        Ok(self)
    }

    /// Reads AMD's chain (ASK or ASVK, then ARK), PEM.
    pub fn sev_snp_chain_file(mut self, path: &Path) -> Result<Self> {
        self.sev_snp_chain_pem = Some(read_input(path, "AMD certificate chain")?);
        Ok(self)
    }
}

/// Reads a trust input file; the error names it.
fn read_input(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display())))
}

/// The verification document of one server.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Verification {
    /// The server's origin.
    pub origin: String,
    /// The kind of evidence: `tpm`, `sev-snp` or `tdx` (`tpm` when the
    /// route could not be read).
    pub kind: &'static str,
    /// The AK's fingerprint (`sha256:` of its `TPM2B_PUBLIC`), when the
    /// server sent TPM evidence.
    pub ak_fingerprint: Option<String>,
    /// The checks, in order.
    pub steps: Vec<Step>,
    /// A confidential VM's evidence as read: measurement, report data,
    /// TCB (lowercase hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvm: Option<CvmFound>,
    /// What answers' reports are checked with, when the evidence is
    /// authentic.
    #[serde(skip)]
    endorsement: Option<cvm::Endorsement>,
}

impl Verification {
    /// Whether there are steps and none failed or is unverified.
    pub fn passed(&self) -> bool {
        nomyo_core::attest::passed(&self.steps)
    }
}

/// A client's attestation requirement and, once checked, its verdict.
pub(crate) struct Required {
    pub(crate) options: AttestOptions,
    pub(crate) verdict: tokio::sync::OnceCell<()>,
    /// The attestation keys verified in full by this client.
    pub(crate) verified: std::sync::Mutex<Vec<Fingerprint>>,
    /// What answers' confidential-VM reports are checked with, from
    /// evidence verified in full by this client.
    pub(crate) endorsements: std::sync::Mutex<Vec<cvm::Endorsement>>,
}

/// What one answer's quote (`_metadata.tpm_attestation`) is checked
/// against when attestation is required: the keys verified in full (by this
/// client, or on record in the known-servers file), the request's payload
/// id, and the PCR policy.
pub(crate) struct AnswerCheck {
    aks: Vec<Fingerprint>,
    /// Non-empty when the server attested as a confidential VM: answers
    /// then carry `_metadata.attestation`, checked with these.
    endorsements: Vec<cvm::Endorsement>,
    payload_id: String,
    policy: Option<Policy>,
    origin: String,
}

/// Why an answer's quote was refused.
enum QuoteRefusal {
    /// Quoted by an attestation key not verified yet (another replica?).
    UnknownAk(Fingerprint),
    /// Missing or wrong.
    Bad(String),
}

impl AnswerCheck {
    /// Checks the block: present and quoted, by a verified AK, for this
    /// request's payload id, its PCR values matching the quote (and the
    /// policy, when there is one).
    fn check(
        &self,
        block: Option<&TpmAttestation>,
        cvm_block: Option<&CvmAttestation>,
    ) -> std::result::Result<(), QuoteRefusal> {
        if !self.endorsements.is_empty() {
            return cvm::check_answer(
                &self.endorsements,
                self.policy.as_ref(),
                &self.payload_id,
                cvm_block,
            )
            .map_err(QuoteRefusal::Bad);
        }
        let bad = |m: &str| QuoteRefusal::Bad(m.to_owned());
        let block = block
            .filter(|b| b.is_available)
            .ok_or_else(|| bad("the answer carries no TPM quote"))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let decode = |v: &Option<String>, what: &str| {
            v.as_deref()
                .and_then(|v| b64.decode(v).ok())
                .ok_or_else(|| QuoteRefusal::Bad(format!("the answer's quote lacks {what}")))
        };
        let ak = decode(&block.aik_pubkey_b64, "aik_pubkey_b64")?;
        let quote = decode(&block.quote_b64, "quote_b64")?;
        let signature = decode(&block.signature_b64, "signature_b64")?;
        let fp = Fingerprint::of_bytes(&ak);
        if !self.aks.contains(&fp) {
            return Err(QuoteRefusal::UnknownAk(fp));
        }
        let pcrs = evidence::pcr_values(block.pcr_values.as_ref().unwrap_or(&Default::default()))
            .map_err(QuoteRefusal::Bad)?;
        let extra = nomyo_core::tpm::extra_data_for(&self.payload_id);
        verify_quote(&ak, &quote, &signature, &extra, Some(&pcrs))
            .map_err(|e| QuoteRefusal::Bad(format!("the answer's quote: {e}")))?;
        if let Some(policy) = &self.policy {
            policy.check_tpm(&pcrs).map_err(QuoteRefusal::Bad)?;
        }
        Ok(())
    }

    /// [`AnswerCheck::check`] for a stream's first chunk, where a new key
    /// cannot be verified on the spot.
    pub(crate) fn check_stream(
        &self,
        block: Option<&TpmAttestation>,
        cvm_block: Option<&CvmAttestation>,
    ) -> Result<()> {
        self.check(block, cvm_block).map_err(|r| self.refused(r))
    }

    fn refused(&self, r: QuoteRefusal) -> Error {
        let failed = match r {
            QuoteRefusal::UnknownAk(fp) => {
                format!("the answer is quoted by the attestation key {fp}, which was not verified")
            }
            QuoteRefusal::Bad(why) => why,
        };
        Error::NotAttested {
            origin: self.origin.clone(),
            failed,
        }
    }
}

/// The step names, in order.
const STEPS: [&str; 6] = [
    "ek_chain",
    "credential_activation",
    "quote_signature",
    "nonce",
    "key_binding",
    "pcr_policy",
];

fn step(name: &str, status: StepStatus, detail: impl Into<String>) -> Step {
    Step::new(name, status, detail)
}

impl Client {
    /// Fetches the server's TPM evidence for a fresh nonce and verifies it
    /// (docs/PROTOCOL.md §14.7). The v1 key is the one the client trusts
    /// (pins or the known-servers file); the v2 key list, when the server
    /// has one, is the one the client would seal to. An error is returned
    /// only when those keys cannot be had; evidence that is missing or
    /// wrong fails steps instead.
    pub async fn attest(&self, options: &AttestOptions) -> Result<Verification> {
        let started = std::time::Instant::now();
        let v1 = self.server_key().await?;
        let v2 = match self.hpke_keys().await {
            Ok(keys) => Some(keys),
            Err(e) if e.is_security() => return Err(e),
            Err(_) => None,
        };
        let nonce: [u8; 32] = rand::random();
        let base = self.attestation_base()?;
        let url = format!("{base}{ATTESTATION_PATH}?nonce={}", hex::encode(nonce));
        let fetched = self
            .retrier()
            .send(|| self.inner.http.get(url.as_str()), MAX_EVIDENCE_BYTES)
            .await;
        let body = fetched.map_err(|e| match e.status() {
            Some(404) => "this server offers no attestation (404)".to_owned(),
            _ => format!("cannot fetch the attestation evidence: {e}"),
        });
        if let Ok(body) = &body {
            if cvm::is_cvm(body) {
                let verification = self.attest_cvm(body, &nonce, &v1, v2.as_deref(), options);
                tracing::debug!(
                    origin = %verification.origin,
                    kind = verification.kind,
                    passed = verification.passed(),
                    ms = started.elapsed().as_millis() as u64,
                    "attestation verified"
                );
                return Ok(verification);
            }
        }
        let evidence = match body.and_then(|body| Evidence::parse(&body)) {
            Ok(e) => e,
            Err(why) => {
                return Ok(Verification {
                    origin: self.inner.origin.clone(),
                    kind: "tpm",
                    ak_fingerprint: None,
                    steps: STEPS
                        .iter()
                        .map(|n| step(n, StepStatus::Fail, why.clone()))
                        .collect(),
                    cvm: None,
                    endorsement: None,
                })
            }
        };
        let mut steps = Vec::with_capacity(STEPS.len());
        let ek = Public::from_tpm2b(&evidence.ek_public);
        let ak = Public::from_tpm2b(&evidence.ak_public);

        // 1. The EK certificate chain.
        steps.push(match (&ek, options.ek_roots.is_empty()) {
            (Err(e), _) => step("ek_chain", StepStatus::Fail, format!("the EK: {e}")),
            (Ok(_), true) => step(
                "ek_chain",
                StepStatus::Unverified,
                "no EK root certificate given (--tpm-ca)",
            ),
            (Ok(ek), false) => {
                match ek::verify_ek_chain(&evidence.ek_certificates, &options.ek_roots, ek) {
                    Ok(d) => step("ek_chain", StepStatus::Pass, d),
                    Err(d) => step("ek_chain", StepStatus::Fail, d),
                }
            }
        });

        // 2. Credential activation: the AK lives in the EK's TPM.
        steps.push(match &ak {
            Err(e) => step(
                "credential_activation",
                StepStatus::Fail,
                format!("the AK: {e}"),
            ),
            Ok(ak) => match self.activate(&base, &evidence.ek_public, &ak.name()).await {
                Ok(()) => step(
                    "credential_activation",
                    StepStatus::Pass,
                    "the TPM holding the EK released a credential made for the AK",
                ),
                Err(d) => step("credential_activation", StepStatus::Fail, d),
            },
        });

        // 3 and 4. The quote's signature and PCR digest, then its nonce. The
        // qualifying data is computed with the v1 key the server names;
        // step 5 checks that it is the one this client trusts.
        let claimed_v1 = parse_fingerprint(&evidence.v1_key_fingerprint);
        let v2_body = evidence.v2_keys.as_deref().unwrap_or_default();
        let expected = claimed_v1
            .map(|fp| attestation_extra_data(&nonce, &fp, v2_body))
            .unwrap_or_default();
        let quote = verify_quote(
            &evidence.ak_public,
            &evidence.quote,
            &evidence.signature,
            &expected,
            Some(&evidence.pcr_values),
        );
        let quote_ok = match &quote {
            Ok(_) | Err(VerifyError::ExtraDataMismatch) => {
                steps.push(step(
                    "quote_signature",
                    StepStatus::Pass,
                    "the AK signed the quote and the PCR values hash to its digest",
                ));
                let nonce_step = if quote.is_ok() {
                    step(
                        "nonce",
                        StepStatus::Pass,
                        "the quote is for this request's nonce and the keys the server names",
                    )
                } else {
                    step(
                        "nonce",
                        StepStatus::Fail,
                        "the quote is for another nonce or other keys (replayed or rebound)",
                    )
                };
                steps.push(nonce_step);
                quote.is_ok()
            }
            Err(e) => {
                steps.push(step("quote_signature", StepStatus::Fail, e.to_string()));
                steps.push(step(
                    "nonce",
                    StepStatus::Fail,
                    "not checked: the quote does not verify",
                ));
                false
            }
        };

        // 5. The quoted keys are the client's.
        steps.push(key_binding(
            quote_ok,
            claimed_v1,
            v1.fingerprint(),
            evidence.v2_keys.as_deref(),
            v2.as_deref(),
        ));

        // 6. The PCR policy.
        steps.push(match (&options.policy, quote_ok) {
            (None, _) => step("pcr_policy", StepStatus::NotRequested, "no --policy given"),
            (Some(_), false) => step(
                "pcr_policy",
                StepStatus::Fail,
                "not checked: the quote does not verify",
            ),
            (Some(p), true) => match p.check_tpm(&evidence.pcr_values) {
                Ok(d) => step("pcr_policy", StepStatus::Pass, d),
                Err(d) => step("pcr_policy", StepStatus::Fail, d),
            },
        });

        let ak_fingerprint = Fingerprint::of_bytes(&evidence.ak_public);
        let verification = Verification {
            origin: self.inner.origin.clone(),
            kind: "tpm",
            ak_fingerprint: Some(ak_fingerprint.to_string()),
            steps,
            cvm: None,
            endorsement: None,
        };
        if verification.passed() {
            // Verified in full: the known-servers file keeps it, with the
            // origin's other replicas' keys.
            let new = self
                .inner
                .trust
                .record_ak(&self.inner.origin, ak_fingerprint)?;
            tracing::debug!(origin = %verification.origin, ak = %ak_fingerprint, new, "attestation key on record");
        }
        tracing::debug!(
            origin = %verification.origin,
            passed = verification.passed(),
            ms = started.elapsed().as_millis() as u64,
            "attestation verified"
        );
        Ok(verification)
    }

    /// With [`ClientBuilder::require_attestation`](crate::ClientBuilder::require_attestation):
    /// attests the server once (concurrent first requests wait for one
    /// check) and fails unless every step passed. A failed check is not
    /// kept: the next request checks again. Without the requirement, does
    /// nothing. Requests call it; call it first to fail early.
    pub async fn ensure_attested(&self) -> Result<()> {
        let Some(required) = &self.inner.attestation else {
            return Ok(());
        };
        required
            .verdict
            .get_or_try_init(|| async {
                let v = self.attest(&required.options).await?;
                if v.passed() {
                    tracing::debug!(origin = %v.origin, kind = v.kind, ak = ?v.ak_fingerprint, "server attested");
                    if let (Some(e), Ok(mut known)) =
                        (v.endorsement.clone(), required.endorsements.lock())
                    {
                        known.push(e);
                    }
                    if let (Some(ak), Ok(mut known)) = (
                        v.ak_fingerprint.as_deref().and_then(parse_fingerprint),
                        required.verified.lock(),
                    ) {
                        known.push(ak);
                    }
                    Ok(())
                } else {
                    Err(Error::NotAttested {
                        origin: v.origin.clone(),
                        failed: failed_steps(&v),
                    })
                }
            })
            .await
            .map(|_| ())
    }

    /// With an attestation requirement: what an answer's quote is checked
    /// against (`None` without the requirement).
    pub(crate) fn answer_check(&self, payload_id: &str) -> Result<Option<AnswerCheck>> {
        let Some(required) = &self.inner.attestation else {
            return Ok(None);
        };
        let mut aks = required
            .verified
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        aks.extend(self.inner.trust.recorded_aks(&self.inner.origin)?);
        let endorsements = required
            .endorsements
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        Ok(Some(AnswerCheck {
            aks,
            endorsements,
            payload_id: payload_id.to_owned(),
            policy: required.options.policy.clone(),
            origin: self.inner.origin.clone(),
        }))
    }

    /// With an attestation requirement, checks a whole answer's quote. An
    /// answer quoted by a key not verified yet (another replica behind a
    /// load balancer) has that key verified in full first: when a fresh
    /// attestation passes with that very key, the quote is checked with it.
    pub(crate) async fn check_answer_quote(
        &self,
        payload_id: &str,
        block: Option<&TpmAttestation>,
        cvm_block: Option<&CvmAttestation>,
    ) -> Result<()> {
        let Some(check) = self.answer_check(payload_id)? else {
            return Ok(());
        };
        match check.check(block, cvm_block) {
            Ok(()) => Ok(()),
            Err(QuoteRefusal::UnknownAk(fp)) => {
                let verified = self.verify_ak(fp).await?;
                let retry = AnswerCheck {
                    aks: vec![verified],
                    ..check
                };
                retry.check(block, cvm_block).map_err(|r| retry.refused(r))
            }
            // A confidential VM's report that no verified endorsement
            // accepts may come from another replica (another chip): a
            // fresh attestation that passes adds its endorsement, once.
            Err(QuoteRefusal::Bad(_)) if !check.endorsements.is_empty() && cvm_block.is_some() => {
                let fresh = self.fresh_endorsement().await?;
                let retry = AnswerCheck {
                    endorsements: vec![fresh],
                    ..check
                };
                retry.check(block, cvm_block).map_err(|r| retry.refused(r))
            }
            Err(r) => Err(check.refused(r)),
        }
    }

    /// Runs a full attestation of a confidential VM and, when it passes,
    /// remembers and returns its endorsement.
    async fn fresh_endorsement(&self) -> Result<cvm::Endorsement> {
        let Some(required) = &self.inner.attestation else {
            return Err(Error::Config("no attestation is required".into()));
        };
        let v = self.attest(&required.options).await?;
        match (&v.endorsement, v.passed()) {
            (Some(e), true) => {
                if let Ok(mut known) = required.endorsements.lock() {
                    known.push(e.clone());
                }
                Ok(e.clone())
            }
            _ => Err(Error::NotAttested {
                origin: v.origin.clone(),
                failed: failed_steps(&v),
            }),
        }
    }

    /// Verifies the route's confidential-VM evidence (docs/PROTOCOL.md
    /// §16.4): the vendor's steps with the route's binding as the expected
    /// report data, then the binding of the keys this client trusts.
    fn attest_cvm(
        &self,
        body: &[u8],
        nonce: &[u8],
        v1: &crate::server_keys::ServerKey,
        v2: Option<&crate::server_keys::HpkeKeys>,
        options: &AttestOptions,
    ) -> Verification {
        let origin = self.inner.origin.clone();
        let evidence = match cvm::CvmEvidence::parse(body) {
            Ok(e) => e,
            Err(why) => {
                return Verification {
                    origin,
                    kind: "tpm",
                    ak_fingerprint: None,
                    steps: vec![step("evidence", StepStatus::Fail, why)],
                    cvm: None,
                    endorsement: None,
                }
            }
        };
        let claimed_v1 = parse_fingerprint(&evidence.v1_key_fingerprint);
        let v2_body = evidence.v2_keys.as_deref().unwrap_or_default();
        let binding = claimed_v1
            .map(|fp| attestation_extra_data(nonce, &fp, v2_body))
            .unwrap_or_default();
        let (mut steps, found, endorsement) = cvm::verify_route(
            &evidence,
            options,
            nomyo_core::attest::route_report_data(&binding),
        );
        let report_data_ok = steps
            .iter()
            .any(|s| s.name == "report_data" && s.status == StepStatus::Pass);
        let (status, detail) = key_claims(
            claimed_v1,
            v1.fingerprint(),
            evidence.v2_keys.as_deref(),
            v2,
        );
        steps.push(Step::judged(
            "key_binding",
            status,
            detail.replace("the quote", "the report"),
            report_data_ok,
        ));
        tracing::debug!(
            origin = %origin,
            kind = evidence.kind.name(),
            report_bytes = evidence.report.len(),
            auxblob_bytes = evidence.auxblob.as_ref().map_or(0, Vec::len),
            "confidential-VM evidence fetched"
        );
        Verification {
            origin,
            kind: evidence.kind.name(),
            ak_fingerprint: None,
            steps,
            cvm: Some(found),
            endorsement,
        }
    }

    /// Runs a full attestation and returns `ak` when it passed with that
    /// key (which is then remembered), else refuses.
    async fn verify_ak(&self, ak: Fingerprint) -> Result<Fingerprint> {
        let Some(required) = &self.inner.attestation else {
            return Ok(ak);
        };
        let v = self.attest(&required.options).await?;
        if v.passed() && v.ak_fingerprint.as_deref() == Some(ak.to_string().as_str()) {
            if let Ok(mut known) = required.verified.lock() {
                known.push(ak);
            }
            return Ok(ak);
        }
        Err(Error::NotAttested {
            origin: v.origin.clone(),
            failed: if v.passed() {
                format!("the answer is quoted by the attestation key {ak}, which a fresh attestation did not present")
            } else {
                failed_steps(&v)
            },
        })
    }

    /// With an attestation requirement, protocol v1 is refused
    /// ([`Error::AttestationNeedsV2`]).
    pub fn refuse_v1_if_attestation_required(&self) -> Result<()> {
        match self.inner.attestation {
            Some(_) => Err(Error::AttestationNeedsV2 {
                origin: self.inner.origin.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The server's base URL (with any path prefix), as the key routes use.
    fn attestation_base(&self) -> Result<String> {
        let keys = self.inner.v2.keys_url.as_str();
        keys.strip_suffix(nomyo_core::v2::HPKE_KEYS_PATH)
            .map(str::to_owned)
            .ok_or_else(|| Error::Config("cannot derive the attestation URL".into()))
    }

    /// MakeCredential for the AK's Name to the EK, and `POST /activate`:
    /// the server must give back the credential.
    async fn activate(
        &self,
        base: &str,
        ek_public: &[u8],
        ak_name: &[u8],
    ) -> std::result::Result<(), String> {
        let secret: [u8; 32] = rand::random();
        let made = make_credential(ek_public, &secret, ak_name).map_err(|e| e.to_string())?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({
            "credential_blob_b64": b64.encode(&made.id_object),
            "encrypted_secret_b64": b64.encode(&made.encrypted_secret),
        })
        .to_string();
        let url = format!("{base}{ACTIVATE_PATH}");
        let answer = self
            .retrier()
            .send(
                || {
                    self.inner
                        .http
                        .post(url.as_str())
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone())
                },
                MAX_ACTIVATE_BYTES,
            )
            .await
            .map_err(|e| format!("credential activation failed: {e}"))?;
        #[derive(serde::Deserialize)]
        struct Answer {
            secret_b64: String,
        }
        let got = serde_json::from_slice::<Answer>(&answer)
            .ok()
            .and_then(|a| b64.decode(a.secret_b64).ok())
            .ok_or("the activation answer is not the documented JSON")?;
        if got != secret {
            return Err("the server returned another credential: its AK is not in that TPM".into());
        }
        Ok(())
    }
}

/// The steps that failed or are unverified, as `name status, ...`.
pub fn failed_steps(v: &Verification) -> String {
    nomyo_core::attest::failed_steps(&v.steps)
}

/// `sha256:HEX` as a fingerprint.
fn parse_fingerprint(text: &str) -> Option<Fingerprint> {
    let hex = text.strip_prefix("sha256:")?;
    let bytes: [u8; 32] = hex::decode(hex).ok()?.try_into().ok()?;
    Some(Fingerprint(bytes))
}

/// Step 5: the v1 key the quote binds is the one the client trusts, and
/// the v2 config the client seals to is in the bound key list.
fn key_binding(
    quote_ok: bool,
    claimed_v1: Option<Fingerprint>,
    trusted_v1: Fingerprint,
    bound_v2: Option<&[u8]>,
    used_v2: Option<&crate::server_keys::HpkeKeys>,
) -> Step {
    if !quote_ok {
        return step(
            "key_binding",
            StepStatus::Fail,
            "not checked: the quote does not verify for them",
        );
    }
    let (status, detail) = key_claims(claimed_v1, trusted_v1, bound_v2, used_v2);
    step("key_binding", status, detail)
}

/// Whether the keys the evidence claims to bind (the v1 key's fingerprint,
/// the v2 key list) are the ones this client trusts and seals to.
fn key_claims(
    claimed_v1: Option<Fingerprint>,
    trusted_v1: Fingerprint,
    bound_v2: Option<&[u8]>,
    used_v2: Option<&crate::server_keys::HpkeKeys>,
) -> (StepStatus, String) {
    if claimed_v1 != Some(trusted_v1) {
        return (
            StepStatus::Fail,
            format!("the quote binds another v1 key than the trusted {trusted_v1}"),
        );
    }
    let Some(used) = used_v2 else {
        return (
            StepStatus::Pass,
            format!("the quote binds the trusted v1 key {trusted_v1} (the server has no v2 keys)"),
        );
    };
    let chosen = used.config().fingerprint();
    let bound = bound_v2
        .and_then(|b| nomyo_core::v2::keys::KeyConfig::parse_list(b).ok())
        .unwrap_or_default();
    if bound.iter().any(|c| c.fingerprint() == chosen) {
        (
            StepStatus::Pass,
            format!("the quote binds the trusted v1 key {trusted_v1} and the v2 key {chosen}"),
        )
    } else {
        (
            StepStatus::Fail,
            format!("the v2 key {chosen} this client seals to is not in the quoted key list"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pass_and_not_requested_make_a_pass() {
        let v = |statuses: &[StepStatus]| Verification {
            origin: "https://x".into(),
            kind: "tpm",
            ak_fingerprint: None,
            steps: statuses.iter().map(|s| step("ek_chain", *s, "")).collect(),
            cvm: None,
            endorsement: None,
        };
        use StepStatus::*;
        assert!(v(&[Pass, NotRequested]).passed());
        assert!(!v(&[Pass, Unverified]).passed());
        assert!(!v(&[Pass, Fail]).passed());
        let json = serde_json::to_value(v(&[NotRequested])).unwrap();
        assert_eq!(json["steps"][0]["status"], "not requested");
    }

    #[test]
    fn fingerprints_parse_strictly() {
        let fp = Fingerprint([9; 32]);
        assert_eq!(parse_fingerprint(&fp.to_string()), Some(fp));
        assert_eq!(parse_fingerprint("sha256:00"), None);
        assert_eq!(
            parse_fingerprint(&fp.to_string().replace("sha256:", "md5:")),
            None
        );
    }

    #[test]
    fn the_v1_key_must_be_the_trusted_one() {
        let a = Fingerprint([1; 32]);
        let b = Fingerprint([2; 32]);
        assert_eq!(
            key_binding(true, Some(a), a, None, None).status,
            StepStatus::Pass
        );
        assert_eq!(
            key_binding(true, Some(b), a, None, None).status,
            StepStatus::Fail
        );
        assert_eq!(
            key_binding(true, None, a, None, None).status,
            StepStatus::Fail
        );
        assert_eq!(
            key_binding(false, Some(a), a, None, None).status,
            StepStatus::Fail
        );
    }

    fn answer_block(payload_pcr10: &str) -> TpmAttestation {
        let b64 = base64::engine::general_purpose::STANDARD;
        let zero = "00".repeat(32);
        let pcrs = serde_json::json!({"sha256": {"0": zero, "7": zero, "10": payload_pcr10}});
        TpmAttestation {
            is_available: true,
            pcr_banks: Some("sha256:0,7,10".into()),
            pcr_values: serde_json::from_value(pcrs).ok(),
            quote_b64: Some(b64.encode(include_bytes!("testdata/answer-quote.msg"))),
            signature_b64: Some(b64.encode(include_bytes!("testdata/answer-quote.sig"))),
            aik_pubkey_b64: Some(b64.encode(include_bytes!("testdata/answer-ak.pub"))),
            ..Default::default()
        }
    }

    const PCR10: &str = "7f85193790de75e46b70bfec3614098f47332a6993dabac6e38ad35f47df5da4";

    fn answer_check(payload_id: &str, policy: Option<Policy>) -> AnswerCheck {
        AnswerCheck {
            aks: vec![Fingerprint::of_bytes(include_bytes!(
                "testdata/answer-ak.pub"
            ))],
            endorsements: Vec::new(),
            payload_id: payload_id.into(),
            policy,
            origin: "https://x".into(),
        }
    }

    fn refusal(r: std::result::Result<(), QuoteRefusal>) -> String {
        match r {
            Ok(()) => panic!("accepted"),
            Err(QuoteRefusal::UnknownAk(fp)) => format!("unknown {fp}"),
            Err(QuoteRefusal::Bad(why)) => why,
        }
    }

    #[test]
    fn an_answer_quote_from_a_software_tpm_is_checked_for_its_payload_id() {
        let block = answer_block(PCR10);
        answer_check("payload-1", None)
            .check(Some(&block), None)
            .ok()
            .unwrap();
        // Another request's quote.
        let e = refusal(answer_check("payload-2", None).check(Some(&block), None));
        assert!(e.contains("extraData"), "{e}");
        // PCR values that are not the quoted ones.
        let e = refusal(
            answer_check("payload-1", None).check(Some(&answer_block(&"11".repeat(32))), None),
        );
        assert!(e.contains("PCR"), "{e}");
        // No block, or a server that did not quote.
        let e = refusal(answer_check("payload-1", None).check(None, None));
        assert!(e.contains("no TPM quote"), "{e}");
        let off = TpmAttestation::unavailable();
        assert!(
            refusal(answer_check("payload-1", None).check(Some(&off), None))
                .contains("no TPM quote")
        );
        // A key not verified yet.
        let mut other = answer_check("payload-1", None);
        other.aks = vec![Fingerprint([3; 32])];
        assert!(refusal(other.check(Some(&block), None)).starts_with("unknown sha256:"));
        // The policy applies to each answer.
        let zero = "00".repeat(32);
        let allow = Policy::parse(&format!("[tpm.pcrs.sha256]\n\"10\" = [\"{PCR10}\"]\n")).unwrap();
        answer_check("payload-1", Some(allow))
            .check(Some(&block), None)
            .ok()
            .unwrap();
        let deny = Policy::parse(&format!("[tpm.pcrs.sha256]\n\"10\" = [\"{zero}\"]\n")).unwrap();
        let e = refusal(answer_check("payload-1", Some(deny)).check(Some(&block), None));
        assert!(e.contains("does not allow"), "{e}");
        // The error a caller sees names the origin and the reason.
        let e = answer_check("payload-2", None)
            .check_stream(Some(&block), None)
            .unwrap_err();
        assert!(
            matches!(e, Error::NotAttested { .. }) && e.to_string().contains("https://x"),
            "{e}"
        );
    }
}
