//! What each answer's quote or report is checked against when attestation
//! is required (docs/PROTOCOL.md §14.7, §16.4).

use base64::Engine as _;
use nomyo_core::chat::{CvmAttestation, TpmAttestation};
use nomyo_core::tpm::verify_quote;
use nomyo_core::Fingerprint;

use super::{cvm, evidence, Policy, Required};
use crate::error::{Error, Result};
use crate::server_keys::ServerKeys;
use crate::transport::Transport;

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
    /// A confidential VM's report that failed only the steps tying it to a
    /// chip: signed by a chip not verified yet (another replica?).
    OtherChip(String),
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
            .map_err(|r| {
                if r.other_chip {
                    QuoteRefusal::OtherChip(r.why)
                } else {
                    QuoteRefusal::Bad(r.why)
                }
            });
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
            QuoteRefusal::OtherChip(why) | QuoteRefusal::Bad(why) => why,
        };
        Error::NotAttested {
            origin: self.origin.clone(),
            failed,
        }
    }
}

impl Required {
    /// What an answer's quote is checked against: the keys this client
    /// verified and those on record for the origin.
    pub(crate) fn answer_check(
        &self,
        t: &Transport,
        keys: &ServerKeys,
        payload_id: &str,
    ) -> Result<AnswerCheck> {
        let mut aks = self.verified.lock().map(|v| v.clone()).unwrap_or_default();
        aks.extend(keys.trust.recorded_aks(&t.origin)?);
        let endorsements = self
            .endorsements
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        Ok(AnswerCheck {
            aks,
            endorsements,
            payload_id: payload_id.to_owned(),
            policy: self.options.policy.clone(),
            origin: t.origin.clone(),
        })
    }

    /// Checks a whole answer's quote. An
    /// answer quoted by a key not verified yet (another replica behind a
    /// load balancer) has that key verified in full first: when a fresh
    /// attestation passes with that very key, the quote is checked with it.
    pub(crate) async fn check_answer_quote(
        &self,
        t: &Transport,
        keys: &ServerKeys,
        payload_id: &str,
        block: Option<&TpmAttestation>,
        cvm_block: Option<&CvmAttestation>,
    ) -> Result<()> {
        let check = self.answer_check(t, keys, payload_id)?;
        match check.check(block, cvm_block) {
            Ok(()) => Ok(()),
            Err(QuoteRefusal::UnknownAk(fp)) => {
                let verified = self.verify_ak(t, keys, fp).await?;
                let retry = AnswerCheck {
                    aks: vec![verified],
                    ..check
                };
                retry.check(block, cvm_block).map_err(|r| retry.refused(r))
            }
            // A confidential VM's report that failed only the chip's steps
            // (vcek, report_signature, chip_id) may come from another
            // replica (another chip): a fresh attestation that passes adds
            // its endorsement, once. Any other failed step refuses it at
            // once.
            Err(QuoteRefusal::OtherChip(_)) => {
                let fresh = self.fresh_endorsement(t, keys).await?;
                let retry = AnswerCheck {
                    endorsements: vec![fresh],
                    ..check
                };
                retry.check(block, cvm_block).map_err(|r| retry.refused(r))
            }
            Err(r) => Err(check.refused(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::Policy;
    use nomyo_core::chat::TpmAttestation;
    use nomyo_core::Fingerprint;

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
            Err(QuoteRefusal::OtherChip(why) | QuoteRefusal::Bad(why)) => why,
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

    /// What a client requiring attestation, holding the endorsement of the
    /// Milan evidence and reaching no server, says of an answer carrying
    /// `report` for the payload id `payload-1`.
    async fn refused_report(report: &[u8]) -> Error {
        let origin = "http://127.0.0.1:1";
        let t = Transport {
            origin: origin.into(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            headers: Default::default(),
            timeout: std::time::Duration::from_secs(5),
            max_retries: 0,
            backoff: Default::default(),
        };
        let url = |path: &str| reqwest::Url::parse(&format!("{origin}{path}")).unwrap();
        let keys = ServerKeys::new(
            url(nomyo_core::v1::PUBLIC_KEY_PATH),
            url(nomyo_core::v2::HPKE_KEYS_PATH),
            crate::trust::Trust {
                pins: Vec::new(),
                known: None,
            },
            None,
        );
        let endorsement =
            nomyo_core::cvm::SevSnpEndorsement::verify(nomyo_testkit::tsm::MILAN_VCEK, None)
                .unwrap();
        let required = Required::new(crate::attest::AttestOptions::default());
        required
            .endorsements
            .lock()
            .unwrap()
            .push(cvm::Endorsement::SevSnp(Box::new(endorsement)));
        let block = CvmAttestation {
            kind: "sev-snp".into(),
            provider: "sev_guest".into(),
            report_b64: base64::engine::general_purpose::STANDARD.encode(report),
            extra: Default::default(),
        };
        required
            .check_answer_quote(&t, &keys, "payload-1", None, Some(&block))
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn only_a_report_failing_the_chips_steps_has_the_route_checked_again() {
        // An authentic report with another request's report data: refused
        // at once, the route not asked again.
        let report = nomyo_testkit::tsm::milan_report();
        let e = refused_report(&report).await;
        assert!(
            matches!(&e, Error::NotAttested { failed, .. } if failed.contains("report_data fail")),
            "{e}"
        );
        // A report the verified chip's key did not sign (another replica's
        // chip?): the route is checked again, here unreachable.
        let mut other = report;
        other[0x90] ^= 1;
        let e = refused_report(&other).await;
        assert!(matches!(e, Error::Connection { .. }), "{e}");
    }
}
