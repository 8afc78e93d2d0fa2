//! MakeCredential against a software ActivateCredential written from the
//! specification (Part 3 §12.5), with EK private keys held here. The real
//! TPM's side is tested in tests/tpm.rs against swtpm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::agreement::{self, PrivateKey};
use aws_lc_rs::cipher::{DecryptingKey, DecryptionContext, UnboundCipherKey, AES_128};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA256_MGF1SHA256,
};
use der::Decode;

use super::*;

const EK_ATTRS: u32 = 0x0003_00B2; // fixedTPM, fixedParent, sensitiveDataOrigin, adminWithPolicy, restricted, decrypt

/// A `TPM2B_PUBLIC` with the default EK template's shape around a key.
fn ek_public(key_type: u16, unique: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(key_type.to_be_bytes());
    t.extend(alg::SHA256.to_be_bytes());
    t.extend(EK_ATTRS.to_be_bytes());
    put_tpm2b(&mut t, &[0x11; 32]).unwrap(); // authPolicy
    t.extend(alg::AES.to_be_bytes());
    t.extend(128u16.to_be_bytes());
    t.extend(alg::CFB.to_be_bytes());
    t.extend(alg::NULL.to_be_bytes()); // scheme
    if key_type == alg::RSA {
        t.extend(2048u16.to_be_bytes());
        t.extend(0u32.to_be_bytes());
        put_tpm2b(&mut t, unique).unwrap();
    } else {
        t.extend(ECC_NIST_P256.to_be_bytes());
        t.extend(alg::NULL.to_be_bytes()); // kdf
        put_tpm2b(&mut t, &unique[1..33]).unwrap();
        put_tpm2b(&mut t, &unique[33..65]).unwrap();
    }
    let mut out = Vec::new();
    put_tpm2b(&mut out, &t).unwrap();
    out
}

/// ActivateCredential's second half: from the seed, check the HMAC and
/// decrypt; `None` when the integrity check fails.
fn open_with_seed(seed: &[u8], id_object: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let mut r = Reader::new(id_object);
    let contents = r.tpm2b(MAX_ID_OBJECT_BYTES, "id").ok()?;
    let mut r = Reader::new(contents);
    let hmac = r.tpm2b(64, "hmac").ok()?.to_vec();
    let enc = r.remaining().to_vec();
    let hmac_key = kdfa(HashAlg::Sha256, seed, b"INTEGRITY", &[], &[], 256);
    if HashAlg::Sha256.hmac(&hmac_key, &[&enc, name]) != hmac {
        return None;
    }
    let sym = kdfa(HashAlg::Sha256, seed, b"STORAGE", name, &[], 128);
    let key = DecryptingKey::cfb128(UnboundCipherKey::new(&AES_128, &sym).unwrap()).unwrap();
    let mut buf = enc;
    let plain = key
        .decrypt(
            &mut buf,
            DecryptionContext::Iv128(FixedLength::from([0u8; 16])),
        )
        .unwrap();
    let mut r = Reader::new(plain);
    let cred = r.tpm2b(64, "cred").ok()?.to_vec();
    r.finish("cred").ok()?;
    Some(cred)
}

fn ak_name() -> Vec<u8> {
    let mut n = alg::SHA256.to_be_bytes().to_vec();
    n.extend([0x5A; 32]);
    n
}

#[test]
fn rsa_round_trip_and_tools_file() {
    let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
    let spki_der = private.public_key().as_der().unwrap();
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der.as_ref()).unwrap();
    let rsa = pkcs1::RsaPublicKey::from_der(spki.subject_public_key.raw_bytes()).unwrap();
    let ek = ek_public(alg::RSA, rsa.modulus.as_bytes());
    let cred = b"0123456789abcdef0123456789abcdef";
    let made = make_credential(&ek, cred, &ak_name()).unwrap();
    assert_eq!(made.id_object.len(), 2 + 2 + 32 + 2 + 32);
    assert_eq!(made.encrypted_secret.len(), 2 + 256);

    let oaep = OaepPrivateDecryptingKey::new(private).unwrap();
    let mut seed = [0u8; 256];
    let seed = oaep
        .decrypt(
            &OAEP_SHA256_MGF1SHA256,
            &made.encrypted_secret[2..],
            &mut seed,
            Some(b"IDENTITY\0"),
        )
        .unwrap()
        .to_vec();
    assert_eq!(seed.len(), 32);
    assert_eq!(
        open_with_seed(&seed, &made.id_object, &ak_name()).as_deref(),
        Some(&cred[..])
    );
    let mut other = ak_name();
    other[5] ^= 1;
    assert_eq!(open_with_seed(&seed, &made.id_object, &other), None);

    let file = made.to_tools_file();
    assert_eq!(&file[..8], &[0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1]);
    assert_eq!(MadeCredential::from_tools_file(&file).unwrap(), made);
    for cut in 0..file.len() {
        assert!(MadeCredential::from_tools_file(&file[..cut]).is_err());
    }
}

#[test]
fn ecc_round_trip() {
    let private = PrivateKey::generate(&agreement::ECDH_P256).unwrap();
    let public = private.compute_public_key().unwrap();
    let ek = ek_public(alg::ECC, public.as_ref());
    let cred = b"sixteen byte key";
    let made = make_credential(&ek, cred, &ak_name()).unwrap();
    // TPMS_ECC_POINT: two 32-byte coordinates.
    assert_eq!(made.encrypted_secret.len(), 2 + 2 + 32 + 2 + 32);
    let point = &made.encrypted_secret[2..];
    let (ex, ey) = (&point[2..34], &point[36..68]);
    let mut eph = vec![4u8];
    eph.extend_from_slice(ex);
    eph.extend_from_slice(ey);
    let seed = agreement::agree(
        &private,
        agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &eph),
        (),
        |z| {
            Ok(kdfe(
                HashAlg::Sha256,
                z,
                b"IDENTITY",
                ex,
                &public.as_ref()[1..33],
                256,
            ))
        },
    )
    .unwrap();
    assert_eq!(
        open_with_seed(&seed, &made.id_object, &ak_name()).as_deref(),
        Some(&cred[..])
    );
}

#[test]
fn refusals() {
    let private = PrivateKey::generate(&agreement::ECDH_P256).unwrap();
    let ek = ek_public(alg::ECC, private.compute_public_key().unwrap().as_ref());
    assert_eq!(
        make_credential(&ek, &[1; 33], &ak_name()),
        Err(CredentialError::CredentialSize { max: 32 })
    );
    assert_eq!(
        make_credential(&ek, &[], &ak_name()),
        Err(CredentialError::CredentialSize { max: 32 })
    );
    assert_eq!(
        make_credential(&ek, &[1; 16], &ak_name()[..20]),
        Err(CredentialError::InvalidName)
    );
    assert!(matches!(
        make_credential(&ek[..40], &[1; 16], &ak_name()),
        Err(CredentialError::EkPublic(_))
    ));
    // A signing key is not an EK.
    let mut signing = ek.clone();
    signing[6..10].copy_from_slice(&0x0005_0072u32.to_be_bytes());
    assert_eq!(
        make_credential(&signing, &[1; 16], &ak_name()),
        Err(CredentialError::EkNotStorageKey)
    );
    // A point not on the curve.
    let mut off_curve = ek.clone();
    let last = off_curve.len() - 1;
    off_curve[last] ^= 1;
    assert!(make_credential(&off_curve, &[1; 16], &ak_name()).is_err());
}
