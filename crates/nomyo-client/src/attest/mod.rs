//! Attestation: what the client checks about the endpoint before a prompt
//! leaves (docs/PROTOCOL.md §14.7, §16.4).
//!
//! [`Client::attest`](crate::Client::attest) fetches the server's evidence for a fresh nonce and
//! reports each check as a [`Step`]. For a TPM: the EK certificate chain,
//! the activation of a credential made for the AK, the quote's signature,
//! the nonce, the binding of the client's trusted keys, and a PCR policy.
//! For a confidential VM (AMD SEV-SNP, Intel TDX): the vendor's chain and
//! signature, the TCB, debug off, the measurement, the report data (the
//! nonce and keys) and the binding of the client's trusted keys. A check
//! whose trust input is missing (no EK root, no TDX collateral) is
//! [`StepStatus::Unverified`], never a pass; a policy not asked for is
//! [`StepStatus::NotRequested`].

mod answer;
mod cvm;
mod ek;
mod evidence;
mod policy;
mod tpm;

use std::path::Path;

use nomyo_core::cvm::TdxCollateral;
use nomyo_core::tpm::ATTESTATION_PATH;
use nomyo_core::Fingerprint;
use serde::Serialize;

pub(crate) use answer::AnswerCheck;
pub use cvm::CvmFound;
pub use nomyo_core::attest::{Step, StepStatus};
pub use policy::Policy;

use crate::error::{Error, Result};
use crate::server_keys::ServerKeys;
use crate::transport::Transport;

/// Largest evidence body read (certificates, quote, and an IMA log).
const MAX_EVIDENCE_BYTES: usize = 8 * 1024 * 1024;

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
    /// route could not be read; for a confidential VM's answer that does
    /// not parse, the kind it claims, or `unknown` when that cannot be
    /// read).
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
    verdict: tokio::sync::OnceCell<()>,
    /// The attestation keys verified in full by this client.
    verified: std::sync::Mutex<Vec<Fingerprint>>,
    /// What answers' confidential-VM reports are checked with, from
    /// evidence verified in full by this client.
    endorsements: std::sync::Mutex<Vec<cvm::Endorsement>>,
}

/// Fetches the server's evidence for a fresh nonce and verifies it: a
/// TPM's (docs/PROTOCOL.md §14.7) or a confidential VM's (§16.4). The v1
/// key is the one the client trusts (pins or the known-servers file); the
/// v2 key list, when the server has one, is the one the client would seal
/// to. An error is returned only when those keys cannot be had; evidence
/// that is missing or wrong fails steps instead.
pub(crate) async fn attest(
    t: &Transport,
    keys: &ServerKeys,
    options: &AttestOptions,
) -> Result<Verification> {
    let started = std::time::Instant::now();
    let v1 = keys.server_key(t).await?;
    let v2 = match keys.hpke_keys(t).await {
        Ok(keys) => Some(keys),
        Err(e) if e.is_security() => return Err(e),
        Err(_) => None,
    };
    let nonce: [u8; 32] = rand::random();
    let base = keys.base()?;
    let url = format!("{base}{ATTESTATION_PATH}?nonce={}", hex::encode(nonce));
    let fetched = t
        .retrier()
        .send(|| t.http.get(url.as_str()), MAX_EVIDENCE_BYTES)
        .await;
    let body = fetched.map_err(|e| match e.status() {
        Some(404) => "this server offers no attestation (404)".to_owned(),
        _ => format!("cannot fetch the attestation evidence: {e}"),
    });
    let verification = match &body {
        Ok(body) if cvm::is_cvm(body) => {
            cvm::attest_cvm(&t.origin, body, &nonce, &v1, v2.as_deref(), options)
        }
        _ => tpm::attest_tpm(t, keys, body, &nonce, &v1, v2.as_deref(), base, options).await?,
    };
    tracing::debug!(
        origin = %verification.origin,
        kind = verification.kind,
        passed = verification.passed(),
        ms = started.elapsed().as_millis() as u64,
        "attestation verified"
    );
    Ok(verification)
}

impl Required {
    /// A requirement not checked yet.
    pub(crate) fn new(options: AttestOptions) -> Self {
        Self {
            options,
            verdict: tokio::sync::OnceCell::new(),
            verified: std::sync::Mutex::new(Vec::new()),
            endorsements: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Attests the server once (concurrent first requests wait for one
    /// check) and fails unless every step passed. A failed check is not
    /// kept: the next request checks again.
    pub(crate) async fn ensure(&self, t: &Transport, keys: &ServerKeys) -> Result<()> {
        self.verdict
            .get_or_try_init(|| async {
                let v = attest(t, keys, &self.options).await?;
                if v.passed() {
                    tracing::debug!(origin = %v.origin, kind = v.kind, ak = ?v.ak_fingerprint, "server attested");
                    if let (Some(e), Ok(mut known)) =
                        (v.endorsement.clone(), self.endorsements.lock())
                    {
                        known.push(e);
                    }
                    if let (Some(ak), Ok(mut known)) = (
                        v.ak_fingerprint.as_deref().and_then(parse_fingerprint),
                        self.verified.lock(),
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

    /// Runs a full attestation and returns `ak` when it passed with that
    /// key (which is then remembered), else refuses.
    pub(super) async fn verify_ak(
        &self,
        t: &Transport,
        keys: &ServerKeys,
        ak: Fingerprint,
    ) -> Result<Fingerprint> {
        let v = attest(t, keys, &self.options).await?;
        if v.passed() && v.ak_fingerprint.as_deref() == Some(ak.to_string().as_str()) {
            if let Ok(mut known) = self.verified.lock() {
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

    /// Runs a full attestation of a confidential VM and, when it passes,
    /// remembers and returns its endorsement.
    pub(super) async fn fresh_endorsement(
        &self,
        t: &Transport,
        keys: &ServerKeys,
    ) -> Result<cvm::Endorsement> {
        let v = attest(t, keys, &self.options).await?;
        match (&v.endorsement, v.passed()) {
            (Some(e), true) => {
                if let Ok(mut known) = self.endorsements.lock() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pass_and_not_requested_make_a_pass() {
        let v = |statuses: &[StepStatus]| Verification {
            origin: "https://x".into(),
            kind: "tpm",
            ak_fingerprint: None,
            steps: statuses
                .iter()
                .map(|s| Step::new("ek_chain", *s, ""))
                .collect(),
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
}
