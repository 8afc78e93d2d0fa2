//! Verifying a TPM2_Quote in software.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

use super::attest::{Attest, Signature};
use super::marshal::{alg, HashAlg};
use super::public::{KeyParams, ObjectAttributes, Public, ECC_NIST_P256};
use super::{ParseError, VerifyError};

/// PCR values claimed by the attester: bank → PCR index → value.
pub type PcrValues = BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>;

/// The `extraData` (qualifying data) a quote for one answer carries:
/// the first 16 bytes of SHA-256 of the payload id as UTF-8.
pub fn extra_data_for(payload_id: &str) -> [u8; 16] {
    let digest = HashAlg::Sha256.digest(&[payload_id.as_bytes()]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Verifies a quote: that the key in `ak_public` (a `TPM2B_PUBLIC`) signed
/// `attest` (a `TPMS_ATTEST`) with `signature` (a `TPMT_SIGNATURE`), that
/// it is a TPM-generated quote whose `extraData` is `expected_extra_data`,
/// and, when `pcr_values` is given, that those are exactly the quoted PCRs
/// and hash to the quote's `pcrDigest`. Returns the parsed quote.
///
/// The steps, in order, each with its own [`VerifyError`]:
/// 1. the AK parses and is a restricted signing key (`restricted`, `sign`,
///    `fixedTPM`): such a key signs only structures the TPM made, which is
///    what gives the magic value its meaning;
/// 2. the signature parses, uses SHA-256, and matches the AK's type (and its
///    scheme when the AK has one): RSASSA or RSAPSS for RSA, ECDSA for P-256;
/// 3. the signature verifies over `attest` (the TPM signed SHA-256(attest));
/// 4. `attest` starts with `TPM_GENERATED_VALUE`, is `TPM_ST_ATTEST_QUOTE`,
///    and parses to the end;
/// 5. `extraData` equals `expected_extra_data` (this binds the quote to one
///    answer; it is public, so the comparison need not be constant time);
/// 6. with `pcr_values`: every quoted PCR has a value of the bank's digest
///    size, no unquoted PCR is claimed, and the scheme hash of the values
///    concatenated in selection order equals `pcrDigest`.
///
/// What it does not prove: that the AK belongs to a genuine TPM (that is
/// the EK certificate and credential activation, see
/// [`make_credential`](super::make_credential)), that `qualifiedSigner`
/// names the AK (it depends on the AK's hierarchy, which a verifier does
/// not see), that the quote is recent (compare `clock_info` across quotes
/// yourself), or that the PCR values are good ones (that is policy).
/// Without `pcr_values` the PCR digest is returned unchecked.
pub fn verify_quote(
    ak_public: &[u8],
    attest: &[u8],
    signature: &[u8],
    expected_extra_data: &[u8],
    pcr_values: Option<&PcrValues>,
) -> Result<Attest, VerifyError> {
    let ak = Public::from_tpm2b(ak_public).map_err(VerifyError::AkPublic)?;
    let needed =
        ObjectAttributes::RESTRICTED | ObjectAttributes::SIGN | ObjectAttributes::FIXED_TPM;
    if !ak.attributes.has(needed) || ak.attributes.has(ObjectAttributes::DECRYPT) {
        return Err(VerifyError::AkNotRestrictedSigning);
    }
    let sig = Signature::parse(signature).map_err(VerifyError::Signature)?;
    if sig.hash() != alg::SHA256 {
        return Err(VerifyError::SignatureSchemeMismatch);
    }
    if let Some(scheme) = ak.scheme {
        if scheme.algorithm != sig.scheme() || scheme.hash != Some(sig.hash()) {
            return Err(VerifyError::SignatureSchemeMismatch);
        }
    }
    verify_signature(&ak.key, &sig, attest)?;
    let quote = Attest::parse_quote(attest).map_err(|e| match e {
        ParseError::NotTpmGenerated => VerifyError::NotTpmGenerated,
        ParseError::NotAQuote { .. } => VerifyError::NotAQuote,
        e => VerifyError::Attest(e),
    })?;
    if quote.extra_data != expected_extra_data {
        return Err(VerifyError::ExtraDataMismatch);
    }
    if let Some(values) = pcr_values {
        check_pcrs(&quote, values, HashAlg::Sha256)?;
    }
    Ok(quote)
}

fn verify_signature(key: &KeyParams, sig: &Signature, message: &[u8]) -> Result<(), VerifyError> {
    match (key, sig) {
        (
            KeyParams::Rsa {
                modulus, exponent, ..
            },
            Signature::RsaSsa { sig: bytes, .. } | Signature::RsaPss { sig: bytes, .. },
        ) => {
            let e = exponent.to_be_bytes();
            let first = e.iter().position(|b| *b != 0).unwrap_or(e.len() - 1);
            let components = RsaPublicKeyComponents {
                n: strip_zeros(modulus),
                e: &e[first..],
            };
            let ok = if matches!(sig, Signature::RsaSsa { .. }) {
                components
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, bytes)
                    .is_ok()
            } else {
                // TPMs sign PSS with the digest-sized salt (Part 1 since
                // 1.38); older ones with the largest salt the key allows.
                components
                    .verify(&signature::RSA_PSS_2048_8192_SHA256, message, bytes)
                    .is_ok()
                    || components.verify(&RSA_PSS_MAX_SALT, message, bytes).is_ok()
            };
            ok.then_some(()).ok_or(VerifyError::SignatureInvalid)
        }
        (KeyParams::Ecc { curve, x, y, .. }, Signature::Ecdsa { r, s, .. }) => {
            if *curve != ECC_NIST_P256 {
                return Err(VerifyError::AkUnsupported);
            }
            let mut point = vec![4u8];
            for c in [x, y] {
                point.extend(left_pad_32(c).ok_or(VerifyError::AkUnsupported)?);
            }
            let mut fixed = Vec::with_capacity(64);
            for c in [r, s] {
                fixed.extend(left_pad_32(c).ok_or(VerifyError::SignatureInvalid)?);
            }
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, &fixed)
                .map_err(|_| VerifyError::SignatureInvalid)
        }
        _ => Err(VerifyError::SignatureSchemeMismatch),
    }
}

const RSA_PSS_MAX_SALT: signature::RsaParameters =
    signature::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(signature::RsaPssSaltLength::Max);

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// A big-endian integer as exactly 32 bytes, or `None` when it is longer.
fn left_pad_32(bytes: &[u8]) -> Option<[u8; 32]> {
    let v = strip_zeros(bytes);
    if v.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - v.len()..].copy_from_slice(v);
    Some(out)
}

fn check_pcrs(quote: &Attest, values: &PcrValues, hash: HashAlg) -> Result<(), VerifyError> {
    let mut concat = Vec::new();
    let mut quoted = 0usize;
    for sel in &quote.quote.pcr_select {
        let bank = HashAlg::from_id(sel.hash).ok_or(VerifyError::PcrBankUnsupported)?;
        let bank_values = values.get(&bank);
        for index in sel.indices() {
            let value =
                bank_values
                    .and_then(|v| v.get(&index))
                    .ok_or(VerifyError::PcrValueMissing {
                        bank: bank.name(),
                        index,
                    })?;
            if value.len() != bank.digest_len() {
                return Err(VerifyError::PcrValueLength {
                    bank: bank.name(),
                    index,
                });
            }
            concat.extend_from_slice(value);
            quoted += 1;
        }
    }
    // A value the quote does not cover must not pass as attested.
    let claimed: usize = values.values().map(BTreeMap::len).sum();
    if claimed != quoted {
        for (bank, v) in values {
            for index in v.keys() {
                let covered = quote
                    .quote
                    .pcr_select
                    .iter()
                    .any(|sel| sel.hash == bank.id() && sel.indices().any(|i| i == *index));
                if !covered {
                    return Err(VerifyError::PcrNotQuoted {
                        bank: bank.name(),
                        index: *index,
                    });
                }
            }
        }
    }
    if hash.digest(&[&concat]) != quote.quote.pcr_digest {
        return Err(VerifyError::PcrDigestMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_data_is_truncated_sha256() {
        assert_eq!(
            hex::encode(extra_data_for("PAYLOAD-ID")),
            // python3: hashlib.sha256(b'PAYLOAD-ID').hexdigest()[:32]
            "4309273ab23a1de8e6dd5d8a2bfefe88"
        );
    }

    #[test]
    fn left_pad() {
        assert_eq!(left_pad_32(&[0, 0, 1]).map(|a| a[31]), Some(1));
        assert!(left_pad_32(&[1; 33]).is_none());
        assert!(left_pad_32(&[0; 40]).is_some());
    }
}
