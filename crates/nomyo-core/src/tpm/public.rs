//! The public area of a TPM key: `TPM2B_PUBLIC` / `TPMT_PUBLIC` (TPM 2.0
//! Part 2 §12.2) for RSA and ECC keys, and the key's Name.

use super::marshal::{alg, HashAlg, Reader};
use super::ParseError;

/// Largest RSA modulus accepted (`MAX_RSA_KEY_BYTES` for 4096-bit keys).
pub const MAX_RSA_KEY_BYTES: usize = 512;
/// Largest ECC coordinate accepted (P-521 needs 66; room for 638-bit curves).
pub const MAX_ECC_KEY_BYTES: usize = 128;
/// Largest digest (`TPM2B_DIGEST`, SHA-512).
pub const MAX_DIGEST_BYTES: usize = 64;
/// Largest marshalled `TPMT_PUBLIC` accepted inside a `TPM2B_PUBLIC`.
pub const MAX_PUBLIC_BYTES: usize = 1024;

/// `TPM_ECC_NIST_P256`.
pub const ECC_NIST_P256: u16 = 0x0003;

/// `TPMA_OBJECT`: the attribute bits of an object (Part 2 §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    /// `fixedTPM`: the key cannot be duplicated out of its TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// `fixedParent`: the key cannot be duplicated to another parent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// `sensitiveDataOrigin`: the TPM generated the private part.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// `userWithAuth`.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// `adminWithPolicy`.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// `restricted`: a signing key signs only TPM-generated structures, a
    /// decryption key decrypts only TPM-formatted data.
    pub const RESTRICTED: u32 = 1 << 16;
    /// `decrypt`.
    pub const DECRYPT: u32 = 1 << 17;
    /// `sign` (also `encrypt`).
    pub const SIGN: u32 = 1 << 18;

    /// Whether every bit of `mask` is set.
    pub fn has(self, mask: u32) -> bool {
        self.0 & mask == mask
    }
}

/// `TPMT_SYM_DEF_OBJECT` when not `TPM_ALG_NULL`: the symmetric algorithm
/// of a storage (parent) key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymmetricDef {
    /// `TPM_ALG_ID` of the cipher (0x0006 is AES).
    pub algorithm: u16,
    /// Key size in bits.
    pub key_bits: u16,
    /// `TPM_ALG_ID` of the mode (0x0043 is CFB).
    pub mode: u16,
}

/// A key's scheme (`TPMT_RSA_SCHEME` / `TPMT_ECC_SCHEME`) when not NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// `TPM_ALG_ID` of the scheme (RSASSA 0x0014, RSAPSS 0x0016, ECDSA 0x0018, ...).
    pub algorithm: u16,
    /// `TPM_ALG_ID` of its hash; `None` for schemes without one (RSAES).
    pub hash: Option<u16>,
}

/// The key itself (`TPMU_PUBLIC_PARMS` with `TPMU_PUBLIC_ID`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyParams {
    /// An RSA key.
    Rsa {
        /// Declared modulus size in bits.
        key_bits: u16,
        /// Public exponent (a marshalled 0 means 65537 and is given as 65537).
        exponent: u32,
        /// Modulus, big-endian.
        modulus: Vec<u8>,
    },
    /// An ECC key.
    Ecc {
        /// `TPM_ECC_CURVE` (0x0003 is NIST P-256).
        curve: u16,
        /// The key's KDF scheme (`TPMT_KDF_SCHEME`) when not NULL: (alg, hash).
        kdf: Option<(u16, u16)>,
        /// The point's x coordinate, big-endian as marshalled.
        x: Vec<u8>,
        /// The point's y coordinate.
        y: Vec<u8>,
    },
}

/// A parsed `TPMT_PUBLIC` of an RSA or ECC key. It proves nothing by
/// itself: it is what the bytes say, checked only for shape and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// `nameAlg`: the hash of the key's Name.
    pub name_alg: HashAlg,
    /// `objectAttributes`.
    pub attributes: ObjectAttributes,
    /// `authPolicy` (empty when none).
    pub auth_policy: Vec<u8>,
    /// The symmetric algorithm of a storage key; `None` when NULL.
    pub symmetric: Option<SymmetricDef>,
    /// The scheme; `None` when NULL.
    pub scheme: Option<Scheme>,
    /// Key type specific parameters and the public key.
    pub key: KeyParams,
    marshalled: Vec<u8>,
}

impl Public {
    /// Parses a `TPM2B_PUBLIC` (what `tpm2_createak -u` and
    /// `tpm2_createek -u` write): the size must cover the `TPMT_PUBLIC`
    /// exactly and nothing may follow.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let inner = r.tpm2b(MAX_PUBLIC_BYTES, "TPM2B_PUBLIC")?;
        r.finish("TPM2B_PUBLIC")?;
        Self::from_tpmt(inner)
    }

    /// Parses a marshalled `TPMT_PUBLIC`; nothing may follow it.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self, ParseError> {
        if bytes.len() > MAX_PUBLIC_BYTES {
            return Err(ParseError::TooLarge {
                what: "TPMT_PUBLIC",
                size: bytes.len(),
                max: MAX_PUBLIC_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        let key_type = r.u16("TPMT_PUBLIC.type")?;
        let name_alg_id = r.u16("TPMT_PUBLIC.nameAlg")?;
        let name_alg = HashAlg::from_id(name_alg_id).ok_or(ParseError::Unsupported {
            what: "TPMT_PUBLIC.nameAlg",
            value: name_alg_id,
        })?;
        let attributes = ObjectAttributes(r.u32("TPMT_PUBLIC.objectAttributes")?);
        let auth_policy = r
            .tpm2b(MAX_DIGEST_BYTES, "TPMT_PUBLIC.authPolicy")?
            .to_vec();
        let symmetric = read_sym_def_object(&mut r)?;
        let (scheme, key) = match key_type {
            alg::RSA => {
                let scheme = read_scheme(&mut r, "TPMT_RSA_SCHEME")?;
                let key_bits = r.u16("TPMS_RSA_PARMS.keyBits")?;
                let exponent = match r.u32("TPMS_RSA_PARMS.exponent")? {
                    0 => 65537,
                    e => e,
                };
                let modulus = r.tpm2b(MAX_RSA_KEY_BYTES, "TPM2B_PUBLIC_KEY_RSA")?.to_vec();
                let key = KeyParams::Rsa {
                    key_bits,
                    exponent,
                    modulus,
                };
                (scheme, key)
            }
            alg::ECC => {
                let scheme = read_scheme(&mut r, "TPMT_ECC_SCHEME")?;
                let curve = r.u16("TPMS_ECC_PARMS.curveID")?;
                let kdf = match r.u16("TPMT_KDF_SCHEME")? {
                    alg::NULL => None,
                    kdf @ (0x0007 | 0x0020 | 0x0021 | 0x0022) => {
                        Some((kdf, r.u16("TPMT_KDF_SCHEME.hashAlg")?))
                    }
                    value => {
                        return Err(ParseError::Unsupported {
                            what: "TPMT_KDF_SCHEME",
                            value,
                        })
                    }
                };
                let x = r.tpm2b(MAX_ECC_KEY_BYTES, "TPMS_ECC_POINT.x")?.to_vec();
                let y = r.tpm2b(MAX_ECC_KEY_BYTES, "TPMS_ECC_POINT.y")?.to_vec();
                (scheme, KeyParams::Ecc { curve, kdf, x, y })
            }
            value => {
                return Err(ParseError::Unsupported {
                    what: "TPMT_PUBLIC.type",
                    value,
                })
            }
        };
        r.finish("TPMT_PUBLIC")?;
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            symmetric,
            scheme,
            key,
            marshalled: bytes.to_vec(),
        })
    }

    /// The marshalled `TPMT_PUBLIC` this was parsed from.
    pub fn marshalled(&self) -> &[u8] {
        &self.marshalled
    }

    /// The object's Name: `nameAlg ‖ H_nameAlg(TPMT_PUBLIC)` (Part 1 §16).
    /// It identifies this exact public area; it says nothing about where
    /// the private part lives.
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.id().to_be_bytes().to_vec();
        name.extend(self.name_alg.digest(&[&self.marshalled]));
        name
    }
}

fn read_sym_def_object(r: &mut Reader<'_>) -> Result<Option<SymmetricDef>, ParseError> {
    match r.u16("TPMT_SYM_DEF_OBJECT.algorithm")? {
        alg::NULL => Ok(None),
        algorithm @ (alg::AES | 0x0013 | 0x0026) => Ok(Some(SymmetricDef {
            algorithm,
            key_bits: r.u16("TPMT_SYM_DEF_OBJECT.keyBits")?,
            mode: r.u16("TPMT_SYM_DEF_OBJECT.mode")?,
        })),
        value => Err(ParseError::Unsupported {
            what: "TPMT_SYM_DEF_OBJECT.algorithm",
            value,
        }),
    }
}

fn read_scheme(r: &mut Reader<'_>, what: &'static str) -> Result<Option<Scheme>, ParseError> {
    let algorithm = r.u16(what)?;
    let hash = match algorithm {
        alg::NULL => return Ok(None),
        // RSAES: no details.
        0x0015 => None,
        // RSASSA, RSAPSS, OAEP, ECDSA, ECDH, SM2, ECSCHNORR, ECMQV: a hash.
        alg::RSASSA | alg::RSAPSS | 0x0017 | alg::ECDSA | 0x0019 | 0x001B | 0x001C | 0x001D => {
            Some(r.u16("scheme hashAlg")?)
        }
        // ECDAA: a hash and a count.
        alg::ECDAA => {
            let hash = r.u16("scheme hashAlg")?;
            r.u16("TPMS_SCHEME_ECDAA.count")?;
            Some(hash)
        }
        value => return Err(ParseError::Unsupported { what, value }),
    };
    Ok(Some(Scheme { algorithm, hash }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ECC P-256 AK as `tpm2_createak -G ecc -g sha256 -s ecdsa -u ak.pub`
    /// wrote it (swtpm), with the Name it printed (`-n ak.name`).
    const AK_PUB: &str = "00580023000b00050072000000100018000b000300100020f85c15bf2cb41d1dd0ac3bda572868b2e60ca23595a4892b1a6784575fcf8fd20020a44066a33abf23a2aafc10dfa0c9ab4de18bd6ade039a71bc8b4ced9fd3eb943";
    const AK_NAME: &str = "000be86438840d4f18b928b16fa86872843c04c6bb8a0e7361e2c93fe9856ecd11e4";

    #[test]
    fn parses_a_real_ecc_ak_and_its_name() {
        let bytes = hex::decode(AK_PUB).unwrap_or_default();
        let p = Public::from_tpm2b(&bytes).expect("parses");
        assert_eq!(p.name_alg, HashAlg::Sha256);
        assert!(p.attributes.has(
            ObjectAttributes::RESTRICTED | ObjectAttributes::SIGN | ObjectAttributes::FIXED_TPM
        ));
        assert_eq!(
            p.scheme,
            Some(Scheme {
                algorithm: alg::ECDSA,
                hash: Some(alg::SHA256)
            })
        );
        assert!(
            matches!(p.key, KeyParams::Ecc { curve: ECC_NIST_P256, ref x, ref y, .. } if x.len() == 32 && y.len() == 32)
        );
        assert_eq!(hex::encode(p.name()), AK_NAME);
        for cut in 0..bytes.len() {
            assert!(Public::from_tpm2b(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Public::from_tpm2b(&longer),
            Err(ParseError::TrailingBytes { .. })
        ));
    }
}
