//! The certificate chain of an SEV-SNP report's signing key: ARK -> ASK
//! (ASVK) -> VCEK (VLEK), the steps `ark`, `ask` and `vcek`.

use sev::certs::snp::{Certificate, Verifiable};
use sha2::{Digest, Sha256};

use super::super::{hex, Step, StepStatus};
use super::{certs::VcekInfo, one_line, SnpProductLine};

/// The steps `ark`, `ask`, `vcek`. Returns whether all three passed, the
/// product line of the ARK, and the parsed VCEK.
pub(super) fn verify_chain(
    vcek_der: &[u8],
    chain_pem: Option<&[u8]>,
    steps: &mut Vec<Step>,
) -> (bool, Option<SnpProductLine>, Option<Certificate>) {
    let vcek = Certificate::from_der(vcek_der).ok();
    let vcek_kind = VcekInfo::parse(vcek_der)
        .map(|i| i.kind())
        .unwrap_or("VCEK");

    match chain_pem {
        Some(pem) => {
            let (ask, ark) = match split_chain(pem) {
                Ok(pair) => pair,
                Err(detail) => {
                    steps.push(Step::new("ark", StepStatus::Fail, detail));
                    steps.push(Step::new("ask", StepStatus::Unverified, "no ARK"));
                    steps.push(Step::new("vcek", StepStatus::Unverified, "no ASK"));
                    return (false, None, vcek);
                }
            };
            let ark_der = ark.to_der().unwrap_or_default();
            let line = SnpProductLine::ALL.into_iter().find(|line| {
                line.builtin()
                    .and_then(|(b, _)| b.to_der().ok())
                    .is_some_and(|b| b == ark_der)
            });
            let ark_ok = match line {
                Some(line) if (&ark, &ark).verify().is_ok() => {
                    steps.push(Step::new(
                        "ark",
                        StepStatus::Pass,
                        format!("the chain's ARK is AMD's built-in {} ARK", line.name()),
                    ));
                    true
                }
                Some(line) => {
                    steps.push(Step::new(
                        "ark",
                        StepStatus::Fail,
                        format!("the {} ARK's self-signature does not verify", line.name()),
                    ));
                    false
                }
                None => {
                    steps.push(Step::new(
                        "ark",
                        StepStatus::Fail,
                        format!(
                            "the chain's ARK (sha256 {}) is none of the built-in ARKs (Milan, Genoa, Turin)",
                            hex(&Sha256::digest(&ark_der))
                        ),
                    ));
                    false
                }
            };
            let ask_ok = if !ark_ok {
                steps.push(Step::new("ask", StepStatus::Unverified, "no trusted ARK"));
                false
            } else {
                match (&ark, &ask).verify() {
                    Ok(()) => {
                        steps.push(Step::new(
                            "ask",
                            StepStatus::Pass,
                            "the chain's ASK/ASVK is signed by the ARK (RSA-PSS SHA-384)",
                        ));
                        true
                    }
                    Err(e) => {
                        steps.push(Step::new(
                            "ask",
                            StepStatus::Fail,
                            format!(
                                "the ARK does not sign the chain's ASK/ASVK: {}",
                                one_line(&e.to_string())
                            ),
                        ));
                        false
                    }
                }
            };
            let vcek_ok = match (&vcek, ask_ok) {
                (None, _) => {
                    steps.push(Step::new(
                        "vcek",
                        StepStatus::Fail,
                        "the VCEK certificate is not DER X.509",
                    ));
                    false
                }
                (Some(_), false) => {
                    steps.push(Step::new("vcek", StepStatus::Unverified, "no trusted ASK"));
                    false
                }
                (Some(v), true) => match (&ask, v).verify() {
                    Ok(()) => {
                        steps.push(Step::new(
                            "vcek",
                            StepStatus::Pass,
                            format!("the {vcek_kind} is signed by the chain's ASK/ASVK"),
                        ));
                        true
                    }
                    Err(_) => {
                        steps.push(Step::new(
                            "vcek",
                            StepStatus::Fail,
                            format!("the chain's ASK/ASVK does not sign the {vcek_kind}"),
                        ));
                        false
                    }
                },
            };
            (ark_ok && ask_ok && vcek_ok, line.filter(|_| ark_ok), vcek)
        }
        None => {
            steps.push(Step::new(
                "ark",
                StepStatus::Pass,
                "no chain given: AMD's built-in ARKs (Milan, Genoa, Turin)",
            ));
            let found = SnpProductLine::ALL.into_iter().find_map(|line| {
                let (ark, ask) = line.builtin()?;
                let v = vcek.as_ref()?;
                ((&ark, &ark).verify().is_ok()
                    && (&ark, &ask).verify().is_ok()
                    && (&ask, v).verify().is_ok())
                .then_some(line)
            });
            match (found, &vcek) {
                (Some(line), _) => {
                    steps.push(Step::new(
                        "ask",
                        StepStatus::Pass,
                        format!("AMD's built-in {} ASK, signed by its ARK", line.name()),
                    ));
                    steps.push(Step::new(
                        "vcek",
                        StepStatus::Pass,
                        format!("the {vcek_kind} is signed by the {} ASK", line.name()),
                    ));
                    (true, Some(line), vcek)
                }
                (None, None) => {
                    steps.push(Step::new("ask", StepStatus::Pass, "AMD's built-in ASKs"));
                    steps.push(Step::new(
                        "vcek",
                        StepStatus::Fail,
                        "the VCEK certificate is not DER X.509",
                    ));
                    (false, None, vcek)
                }
                (None, Some(_)) => {
                    steps.push(Step::new("ask", StepStatus::Pass, "AMD's built-in ASKs"));
                    steps.push(Step::new(
                        "vcek",
                        StepStatus::Fail,
                        format!(
                            "none of the built-in ASKs (Milan, Genoa, Turin) signs the {vcek_kind} (a VLEK needs its ASVK in the chain)"
                        ),
                    ));
                    (false, None, vcek)
                }
            }
        }
    }
}

/// The ASK (or ASVK) and the ARK of a PEM chain, in that order.
fn split_chain(pem: &[u8]) -> Result<(Certificate, Certificate), String> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    while let Some(start) = find(rest, BEGIN) {
        let after = &rest[start..];
        let Some(end) = find(after, END) else {
            return Err("the chain has a certificate without an END line".into());
        };
        let block = &after[..end + END.len()];
        if certs.len() == 2 {
            return Err("the chain has more than two certificates (ASK, ARK)".into());
        }
        certs.push(
            Certificate::from_pem(block)
                .map_err(|e| format!("a chain certificate: {}", one_line(&e.to_string())))?,
        );
        rest = &after[end + END.len()..];
    }
    let mut it = certs.into_iter();
    match (it.next(), it.next()) {
        (Some(ask), Some(ark)) => Ok((ask, ark)),
        _ => Err("the chain must hold two PEM certificates, ASK then ARK".into()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
