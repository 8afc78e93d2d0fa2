//! TPM evidence from the attestation route (docs/PROTOCOL.md §14.3),
//! verified as §14.7 says.

use base64::Engine as _;
use nomyo_core::tpm::{
    attestation_extra_data, make_credential, verify_quote, Public, VerifyError, ACTIVATE_PATH,
};
use nomyo_core::Fingerprint;
use reqwest::header::CONTENT_TYPE;

use super::evidence::Evidence;
use super::{ek, parse_fingerprint, AttestOptions, Step, StepStatus, Verification};
use crate::error::Result;
use crate::server_keys::ServerKeys;
use crate::transport::Transport;

/// Largest activation answer read.
const MAX_ACTIVATE_BYTES: usize = 64 * 1024;

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

/// Verifies the route's TPM evidence (`body`, or why it could not be
/// had) for `nonce` (docs/PROTOCOL.md §14.7): the EK chain, credential
/// activation, the quote and its nonce, the key binding and the PCR
/// policy. An AK that passes is recorded in the known-servers file.
#[allow(clippy::too_many_arguments)]
pub(super) async fn attest_tpm(
    t: &Transport,
    keys: &ServerKeys,
    body: std::result::Result<bytes::Bytes, String>,
    nonce: &[u8; 32],
    v1: &crate::server_keys::ServerKey,
    v2: Option<&crate::server_keys::HpkeKeys>,
    base: &str,
    options: &AttestOptions,
) -> Result<Verification> {
    let evidence = match body.and_then(|body| Evidence::parse(&body)) {
        Ok(e) => e,
        Err(why) => {
            return Ok(Verification {
                origin: t.origin.clone(),
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
        Ok(ak) => match activate(t, base, &evidence.ek_public, &ak.name()).await {
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
        .map(|fp| attestation_extra_data(nonce, &fp, v2_body))
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
        v2,
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
        origin: t.origin.clone(),
        kind: "tpm",
        ak_fingerprint: Some(ak_fingerprint.to_string()),
        steps,
        cvm: None,
        endorsement: None,
    };
    if verification.passed() {
        // Verified in full: the known-servers file keeps it, with the
        // origin's other replicas' keys.
        let new = keys.trust.record_ak(&t.origin, ak_fingerprint)?;
        tracing::debug!(origin = %verification.origin, ak = %ak_fingerprint, new, "attestation key on record");
    }
    Ok(verification)
}

/// MakeCredential for the AK's Name to the EK, and `POST /activate`:
/// the server must give back the credential.
async fn activate(
    t: &Transport,
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
    let answer = t
        .retrier()
        .send(
            || {
                t.http
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
    let (status, detail) = key_claims("quote", claimed_v1, trusted_v1, bound_v2, used_v2);
    step("key_binding", status, detail)
}

/// Whether the keys the evidence claims to bind (the v1 key's fingerprint,
/// the v2 key list) are the ones this client trusts and seals to. `noun`
/// names the evidence in the detail: `quote` (a TPM's) or `report` (a
/// confidential VM's).
pub(super) fn key_claims(
    noun: &str,
    claimed_v1: Option<Fingerprint>,
    trusted_v1: Fingerprint,
    bound_v2: Option<&[u8]>,
    used_v2: Option<&crate::server_keys::HpkeKeys>,
) -> (StepStatus, String) {
    if claimed_v1 != Some(trusted_v1) {
        return (
            StepStatus::Fail,
            format!("the {noun} binds another v1 key than the trusted {trusted_v1}"),
        );
    }
    let Some(used) = used_v2 else {
        return (
            StepStatus::Pass,
            format!("the {noun} binds the trusted v1 key {trusted_v1} (the server has no v2 keys)"),
        );
    };
    let chosen = used.config().fingerprint();
    let bound = bound_v2
        .and_then(|b| nomyo_core::v2::keys::KeyConfig::parse_list(b).ok())
        .unwrap_or_default();
    if bound.iter().any(|c| c.fingerprint() == chosen) {
        (
            StepStatus::Pass,
            format!("the {noun} binds the trusted v1 key {trusted_v1} and the v2 key {chosen}"),
        )
    } else {
        (
            StepStatus::Fail,
            format!(
                "the v2 key {chosen} this client seals to is not in the key list the {noun} binds"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
