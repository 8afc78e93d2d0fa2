//! The endorsement key's certificate: that it chains to a root the user
//! trusts, is an EK certificate, and certifies the EK the server presents.

use der::Decode;
use nomyo_core::tpm::{KeyParams, Public, ECC_NIST_P256};
use rustls_pki_types::{CertificateDer, UnixTime};

/// `tcg-kp-EKCertificate` (2.23.133.8.1), the extended key usage of an EK
/// certificate, as the DER contents of the OID.
const TCG_KP_EK_CERTIFICATE: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x01];
/// `rsaEncryption` and `id-ecPublicKey`, `prime256v1`.
const RSA_ENCRYPTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// Checks `certificates[0]` (the EK certificate; the others are offered as
/// intermediates) against `roots` (DER certificates, each trusted as a
/// root), at the current time, and that it certifies `ek` (the EK's
/// public area). When the certificate lists extended key usages,
/// `tcg-kp-EKCertificate` must be among them; many EK certificates list
/// none, and those pass this check. `Ok` carries what a person reads in the
/// report.
pub(crate) fn verify_ek_chain(
    certificates: &[Vec<u8>],
    roots: &[Vec<u8>],
    ek: &Public,
) -> Result<String, String> {
    let (leaf, rest) = certificates
        .split_first()
        .ok_or("the server presents no EK certificate (its TPM holds none)")?;
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let cert = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| format!("the EK certificate does not parse: {e}"))?;
    let spki = cert.subject_public_key_info();
    if !spki_is_key(spki.as_ref(), &ek.key) {
        return Err("the EK certificate certifies another key than the server's EK".into());
    }
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let mut anchors = Vec::with_capacity(root_ders.len());
    for r in &root_ders {
        anchors.push(
            webpki::anchor_from_trusted_cert(r)
                .map_err(|e| format!("a given EK root certificate does not parse: {e}"))?,
        );
    }
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        UnixTime::now(),
        webpki::KeyUsage::required_if_present(TCG_KP_EK_CERTIFICATE),
        None,
        None,
    )
    .map_err(|e| format!("the EK certificate does not chain to a given root: {e}"))?;
    Ok(format!(
        "the EK certificate chains to one of {} given root(s)",
        roots.len()
    ))
}

/// Whether a DER `SubjectPublicKeyInfo` is the key of a TPM public area:
/// the same RSA modulus and exponent, or the same P-256 point.
fn spki_is_key(spki_der: &[u8], key: &KeyParams) -> bool {
    let Ok(spki) = spki::SubjectPublicKeyInfoRef::from_der(spki_der) else {
        return false;
    };
    let Some(bits) = spki.subject_public_key.as_bytes() else {
        return false;
    };
    match key {
        KeyParams::Rsa {
            modulus, exponent, ..
        } if spki.algorithm.oid == RSA_ENCRYPTION => {
            let Ok(rsa) = pkcs1::RsaPublicKey::from_der(bits) else {
                return false;
            };
            strip(rsa.modulus.as_bytes()) == strip(modulus)
                && strip(rsa.public_exponent.as_bytes()) == strip(&exponent.to_be_bytes())
        }
        KeyParams::Ecc { curve, x, y, .. }
            if *curve == ECC_NIST_P256 && spki.algorithm.oid == EC_PUBLIC_KEY =>
        {
            let named_p256 = spki
                .algorithm
                .parameters_oid()
                .is_ok_and(|oid| oid == PRIME256V1);
            let mut point = vec![4u8];
            point.extend(pad32(x));
            point.extend(pad32(y));
            named_p256 && bits == point.as_slice()
        }
        _ => false,
    }
}

fn strip(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn pad32(c: &[u8]) -> Vec<u8> {
    let c = strip(c);
    let mut out = vec![0u8; 32usize.saturating_sub(c.len())];
    out.extend(c);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EK_CERT: &[u8] = include_bytes!("testdata/ek-cert.der");
    const EK_PUB: &[u8] = include_bytes!("testdata/ek.pub");
    const ROOT: &[u8] = include_bytes!("testdata/ca-root.der");
    const INTERMEDIATE: &[u8] = include_bytes!("testdata/ca-intermediate.der");
    const OTHER_ROOT: &[u8] = include_bytes!("testdata/other-root.der");

    fn ek() -> Public {
        Public::from_tpm2b(EK_PUB).unwrap()
    }

    #[test]
    fn a_software_tpm_ek_certificate_chains_to_its_ca() {
        // Root given, intermediate offered by the server.
        let chain = [EK_CERT.to_vec(), INTERMEDIATE.to_vec()];
        verify_ek_chain(&chain, &[ROOT.to_vec()], &ek()).unwrap();
        // The issuing CA itself trusted.
        verify_ek_chain(&chain[..1], &[INTERMEDIATE.to_vec()], &ek()).unwrap();
    }

    #[test]
    fn another_root_or_a_missing_link_is_refused() {
        let chain = [EK_CERT.to_vec(), INTERMEDIATE.to_vec()];
        let e = verify_ek_chain(&chain, &[OTHER_ROOT.to_vec()], &ek()).unwrap_err();
        assert!(e.contains("does not chain"), "{e}");
        // Without the intermediate, the root alone is not enough.
        let e = verify_ek_chain(&chain[..1], &[ROOT.to_vec()], &ek()).unwrap_err();
        assert!(e.contains("does not chain"), "{e}");
        let e = verify_ek_chain(&[], &[ROOT.to_vec()], &ek()).unwrap_err();
        assert!(e.contains("no EK certificate"), "{e}");
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        // The intermediate CA's certificate is a valid certificate of
        // another RSA key.
        let chain = [INTERMEDIATE.to_vec()];
        let e = verify_ek_chain(&chain, &[ROOT.to_vec()], &ek()).unwrap_err();
        assert!(e.contains("another key"), "{e}");
        let mut garbage = EK_CERT.to_vec();
        garbage.truncate(100);
        let e = verify_ek_chain(&[garbage], &[ROOT.to_vec()], &ek()).unwrap_err();
        assert!(e.contains("does not parse"), "{e}");
    }

    #[test]
    fn the_spki_comparison_needs_the_same_key() {
        let KeyParams::Rsa {
            modulus, exponent, ..
        } = ek().key
        else {
            panic!("an RSA EK")
        };
        let der = CertificateDer::from(EK_CERT);
        let cert = webpki::EndEntityCert::try_from(&der).unwrap();
        let spki = cert.subject_public_key_info();
        let mut other = modulus.clone();
        other[5] ^= 1;
        for (m, e, same) in [
            (modulus.clone(), exponent, true),
            (other, exponent, false),
            (modulus, 3, false),
        ] {
            let key = KeyParams::Rsa {
                key_bits: 2048,
                exponent: e,
                modulus: m,
            };
            assert_eq!(spki_is_key(spki.as_ref(), &key), same);
        }
    }
}
