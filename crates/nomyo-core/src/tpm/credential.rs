//! TPM2_MakeCredential in software (TPM 2.0 Part 1 §24, "Credential
//! Protection"), and the file `tpm2_makecredential` writes.

use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    OaepAlgorithm, PublicKeyComponents, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384,
    OAEP_SHA512_MGF1SHA512,
};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA1_MGF1SHA1};
use zeroize::Zeroizing;

use super::marshal::{alg, kdfa, kdfe, put_tpm2b, HashAlg, Reader};
use super::public::{KeyParams, ObjectAttributes, Public, ECC_NIST_P256, MAX_RSA_KEY_BYTES};
use super::{CredentialError, ParseError};

/// Largest `TPM2B_ID_OBJECT` contents (`TPMS_ID_OBJECT` with SHA-512).
pub const MAX_ID_OBJECT_BYTES: usize = 2 * (2 + 64);
/// Largest `TPM2B_ENCRYPTED_SECRET` contents (an RSA-4096 block).
pub const MAX_ENCRYPTED_SECRET_BYTES: usize = MAX_RSA_KEY_BYTES;
/// The first four bytes of a `tpm2_makecredential` output file.
pub const TOOLS_FILE_MAGIC: u32 = 0xBADC_C0DE;
/// The version that follows the magic.
pub const TOOLS_FILE_VERSION: u32 = 1;

/// The result of MakeCredential: what a TPM holding the EK's private key,
/// and the AK of the given Name, turns back into the credential with
/// TPM2_ActivateCredential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeCredential {
    /// The marshalled `TPM2B_ID_OBJECT` (`credentialBlob`), size included.
    pub id_object: Vec<u8>,
    /// The marshalled `TPM2B_ENCRYPTED_SECRET` (`secret`), size included.
    pub encrypted_secret: Vec<u8>,
}

impl MadeCredential {
    /// The file `tpm2_makecredential -o` writes and `tpm2_activatecredential
    /// -i` reads: magic `BADCC0DE`, version 1 (both 32-bit big-endian), then
    /// the two TPM2Bs.
    pub fn to_tools_file(&self) -> Vec<u8> {
        let mut out = TOOLS_FILE_MAGIC.to_be_bytes().to_vec();
        out.extend(TOOLS_FILE_VERSION.to_be_bytes());
        out.extend(&self.id_object);
        out.extend(&self.encrypted_secret);
        out
    }

    /// Parses such a file: magic, version, a `TPM2B_ID_OBJECT` whose
    /// contents are a `TPM2B_DIGEST` HMAC and the encrypted credential, and
    /// a `TPM2B_ENCRYPTED_SECRET`; nothing may follow.
    pub fn from_tools_file(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        if r.u32("credential file magic")? != TOOLS_FILE_MAGIC {
            return Err(ParseError::Invalid {
                what: "credential file magic",
            });
        }
        let version = r.u32("credential file version")?;
        if version != TOOLS_FILE_VERSION {
            return Err(ParseError::Unsupported {
                what: "credential file version",
                value: u16::try_from(version).unwrap_or(u16::MAX),
            });
        }
        let start = r.remaining();
        let id = r.tpm2b(MAX_ID_OBJECT_BYTES, "TPM2B_ID_OBJECT")?;
        let id_object = start[..2 + id.len()].to_vec();
        let mut inner = Reader::new(id);
        inner.tpm2b(64, "TPMS_ID_OBJECT.integrityHMAC")?;
        if inner.remaining().len() < 2 {
            return Err(ParseError::Truncated {
                what: "TPMS_ID_OBJECT.encIdentity",
            });
        }
        let start = r.remaining();
        let secret = r.tpm2b(MAX_ENCRYPTED_SECRET_BYTES, "TPM2B_ENCRYPTED_SECRET")?;
        let encrypted_secret = start[..2 + secret.len()].to_vec();
        r.finish("credential file")?;
        Ok(Self {
            id_object,
            encrypted_secret,
        })
    }
}

/// TPM2_MakeCredential in software, for an EK the verifier has no TPM for.
///
/// `ek_public` is the EK's `TPM2B_PUBLIC` (a restricted decryption key:
/// RSA with the default template's AES-CFB and RSA-OAEP, or ECC P-256 with
/// ECDH and KDFe), `credential` the secret to protect (1 to digest-size of
/// the EK's nameAlg bytes), `ak_name` the Name of the key the credential
/// is for (see [`Public::name`]).
///
/// What it proves: only a TPM holding the EK's private key recovers the
/// credential, and only by TPM2_ActivateCredential with an object loaded
/// in that TPM whose Name is `ak_name`. So a party that answers with the
/// credential shows that the AK lives in the same TPM as the EK. What it
/// does not prove: that the EK is a TPM's (check the EK certificate), or
/// anything about the AK's attributes (check its public area, whose Name
/// is `ak_name`).
pub fn make_credential(
    ek_public: &[u8],
    credential: &[u8],
    ak_name: &[u8],
) -> Result<MadeCredential, CredentialError> {
    let ek = Public::from_tpm2b(ek_public).map_err(CredentialError::EkPublic)?;
    let attrs = ek.attributes;
    if !attrs.has(ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT)
        || attrs.has(ObjectAttributes::SIGN)
    {
        return Err(CredentialError::EkNotStorageKey);
    }
    let sym = match ek.symmetric {
        Some(s) if s.algorithm == alg::AES && s.mode == alg::CFB => s,
        _ => return Err(CredentialError::EkUnsupported),
    };
    let name_alg = ek.name_alg;
    let digest_len = name_alg.digest_len();
    if credential.is_empty() || credential.len() > digest_len {
        return Err(CredentialError::CredentialSize { max: digest_len });
    }
    let name_ok = ak_name.len() >= 2
        && HashAlg::from_id(u16::from_be_bytes([ak_name[0], ak_name[1]]))
            .is_some_and(|h| ak_name.len() == 2 + h.digest_len());
    if !name_ok {
        return Err(CredentialError::InvalidName);
    }
    let (seed, secret) = match &ek.key {
        KeyParams::Rsa {
            modulus, exponent, ..
        } => rsa_seed(name_alg, modulus, *exponent)?,
        KeyParams::Ecc { curve, x, y, .. } => {
            if *curve != ECC_NIST_P256 {
                return Err(CredentialError::EkUnsupported);
            }
            ecc_seed(name_alg, x, y)?
        }
    };
    let mut encrypted_secret = Vec::with_capacity(secret.len() + 2);
    put_tpm2b(&mut encrypted_secret, &secret).map_err(|_| CredentialError::Crypto)?;

    // The credential, as a TPM2B_DIGEST, encrypted with the EK's symmetric
    // algorithm under a key bound to the AK's Name (Part 1 §24.4).
    let sym_key = Zeroizing::new(kdfa(
        name_alg,
        &seed,
        b"STORAGE",
        ak_name,
        &[],
        u32::from(sym.key_bits),
    ));
    let mut enc_identity = Zeroizing::new(Vec::with_capacity(credential.len() + 2));
    put_tpm2b(&mut enc_identity, credential).map_err(|_| CredentialError::Crypto)?;
    aes_cfb_encrypt(sym.key_bits, &sym_key, &mut enc_identity)?;

    // The HMAC over the ciphertext and the Name (Part 1 §24.5).
    let hmac_key = Zeroizing::new(kdfa(
        name_alg,
        &seed,
        b"INTEGRITY",
        &[],
        &[],
        (digest_len * 8) as u32,
    ));
    let outer_hmac = name_alg.hmac(&hmac_key, &[&enc_identity, ak_name]);
    let mut contents = Vec::with_capacity(2 + outer_hmac.len() + enc_identity.len());
    put_tpm2b(&mut contents, &outer_hmac).map_err(|_| CredentialError::Crypto)?;
    contents.extend_from_slice(&enc_identity);
    let mut id_object = Vec::with_capacity(contents.len() + 2);
    put_tpm2b(&mut id_object, &contents).map_err(|_| CredentialError::Crypto)?;
    Ok(MadeCredential {
        id_object,
        encrypted_secret,
    })
}

type Seed = Zeroizing<Vec<u8>>;

/// A random seed, RSA-OAEP encrypted to the EK with label "IDENTITY\0"
/// (Part 1 §24.3 and Annex B.10.3).
fn rsa_seed(
    name_alg: HashAlg,
    modulus: &[u8],
    exponent: u32,
) -> Result<(Seed, Vec<u8>), CredentialError> {
    let mut seed = Zeroizing::new(vec![0u8; name_alg.digest_len()]);
    aws_lc_rs::rand::fill(&mut seed).map_err(|_| CredentialError::Crypto)?;
    let e = exponent.to_be_bytes();
    let first = e.iter().position(|b| *b != 0).unwrap_or(3);
    let n_first = modulus.iter().position(|b| *b != 0).unwrap_or(0);
    let key: PublicEncryptingKey = PublicKeyComponents {
        n: &modulus[n_first..],
        e: &e[first..],
    }
    .try_into()
    .map_err(|_| CredentialError::EkUnsupported)?;
    let key = OaepPublicEncryptingKey::new(key).map_err(|_| CredentialError::EkUnsupported)?;
    let oaep: &'static OaepAlgorithm = match name_alg {
        HashAlg::Sha1 => &OAEP_SHA1_MGF1SHA1,
        HashAlg::Sha256 => &OAEP_SHA256_MGF1SHA256,
        HashAlg::Sha384 => &OAEP_SHA384_MGF1SHA384,
        HashAlg::Sha512 => &OAEP_SHA512_MGF1SHA512,
    };
    let mut out = vec![0u8; key.ciphertext_size()];
    let len = key
        .encrypt(oaep, &seed, &mut out, Some(b"IDENTITY\0"))
        .map_err(|_| CredentialError::Crypto)?
        .len();
    out.truncate(len);
    Ok((seed, out))
}

/// An ephemeral P-256 key agreed with the EK; the seed is
/// KDFe(Z.x, "IDENTITY", ephemeral.x, EK.x) and the secret is the
/// ephemeral point as a `TPMS_ECC_POINT` (Part 1 Annex C.6.4).
fn ecc_seed(name_alg: HashAlg, x: &[u8], y: &[u8]) -> Result<(Seed, Vec<u8>), CredentialError> {
    if x.len() != 32 || y.len() != 32 {
        return Err(CredentialError::EkUnsupported);
    }
    let mut ek_point = vec![4u8];
    ek_point.extend_from_slice(x);
    ek_point.extend_from_slice(y);
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let eph = EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| CredentialError::Crypto)?;
    let eph_pub = eph
        .compute_public_key()
        .map_err(|_| CredentialError::Crypto)?;
    let eph_pub = eph_pub.as_ref();
    if eph_pub.len() != 65 {
        return Err(CredentialError::Crypto);
    }
    let (eph_x, eph_y) = (&eph_pub[1..33], &eph_pub[33..65]);
    let bits = (name_alg.digest_len() * 8) as u32;
    let seed = agreement::agree_ephemeral(
        eph,
        UnparsedPublicKey::new(&agreement::ECDH_P256, &ek_point),
        CredentialError::EkUnsupported,
        |z| {
            Ok(Zeroizing::new(kdfe(
                name_alg,
                z,
                b"IDENTITY",
                eph_x,
                x,
                bits,
            )))
        },
    )?;
    let mut point = Vec::with_capacity(68);
    put_tpm2b(&mut point, eph_x).map_err(|_| CredentialError::Crypto)?;
    put_tpm2b(&mut point, eph_y).map_err(|_| CredentialError::Crypto)?;
    Ok((seed, point))
}

/// AES in CFB mode with a zero IV, in place (Part 1 §24.4: the key is used
/// once, so the IV is zero).
fn aes_cfb_encrypt(key_bits: u16, key: &[u8], data: &mut [u8]) -> Result<(), CredentialError> {
    let algorithm = match key_bits {
        128 => &aws_lc_rs::cipher::AES_128,
        192 => &aws_lc_rs::cipher::AES_192,
        256 => &aws_lc_rs::cipher::AES_256,
        _ => return Err(CredentialError::EkUnsupported),
    };
    let key = UnboundCipherKey::new(algorithm, key).map_err(|_| CredentialError::Crypto)?;
    let key = EncryptingKey::cfb128(key).map_err(|_| CredentialError::Crypto)?;
    key.less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from([0u8; 16])))
        .map_err(|_| CredentialError::Crypto)?;
    Ok(())
}

#[cfg(test)]
#[path = "credential_tests.rs"]
mod tests;
