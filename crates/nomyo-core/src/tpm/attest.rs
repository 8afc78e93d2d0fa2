//! What a TPM signs and how: `TPMS_ATTEST` for a quote (TPM 2.0 Part 2
//! §10.12) and `TPMT_SIGNATURE` (§11.3.4).

use super::marshal::{alg, Reader};
use super::public::{MAX_DIGEST_BYTES, MAX_ECC_KEY_BYTES, MAX_RSA_KEY_BYTES};
use super::ParseError;

/// `TPM_GENERATED_VALUE`: the first four bytes of everything a TPM signs
/// with a restricted key, and of nothing it signs for a caller.
pub const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// Largest `TPM2B_NAME` / `TPM2B_DATA` (a hash algorithm id and a SHA-512 digest).
pub const MAX_NAME_BYTES: usize = 66;
/// Most `TPMS_PCR_SELECTION`s in one `TPML_PCR_SELECTION` (`HASH_COUNT`).
pub const MAX_PCR_BANKS: usize = 16;
/// Largest `sizeofSelect` accepted (64 PCRs; TPMs implement 24).
pub const MAX_PCR_SELECT_BYTES: usize = 8;
/// Largest marshalled `TPMS_ATTEST` accepted.
pub const MAX_ATTEST_BYTES: usize = 2048;

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was made (roughly).
    pub clock: u64,
    /// TPM resets since the last clear.
    pub reset_count: u32,
    /// TPM restarts and resumes since the last reset.
    pub restart_count: u32,
    /// Whether `clock` cannot have been rolled back.
    pub safe: bool,
}

/// One `TPMS_PCR_SELECTION`: a bank and a bitmap of its PCRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// `TPM_ALG_ID` of the bank's hash.
    pub hash: u16,
    /// The bitmap: bit `j` of byte `i` selects PCR `8 * i + j`.
    pub select: Vec<u8>,
}

impl PcrSelection {
    /// The selected PCR indices, ascending (the order a TPM hashes them in).
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.select.iter().enumerate().flat_map(|(i, byte)| {
            (0..8u32)
                .filter(move |bit| byte & (1 << bit) != 0)
                .map(move |bit| 8 * i as u32 + bit)
        })
    }
}

/// `TPMS_QUOTE_INFO`: which PCRs were quoted and the digest of their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    /// `pcrSelect`, in the order the TPM concatenated the values.
    pub pcr_select: Vec<PcrSelection>,
    /// `pcrDigest`: H(selected PCR values), H being the signing scheme's hash.
    pub pcr_digest: Vec<u8>,
}

/// A parsed `TPMS_ATTEST` of type `TPM_ST_ATTEST_QUOTE`. Parsing checks the
/// magic and the type; it proves nothing about who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// `qualifiedSigner`: the qualified Name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the caller's nonce (here SHA-256(payload id)[..16]).
    pub extra_data: Vec<u8>,
    /// `clockInfo`.
    pub clock_info: ClockInfo,
    /// `firmwareVersion` (vendor specific).
    pub firmware_version: u64,
    /// The quote.
    pub quote: QuoteInfo,
}

impl Attest {
    /// Parses a marshalled `TPMS_ATTEST` (what `tpm2_quote -m` writes):
    /// magic `TPM_GENERATED_VALUE`, type `TPM_ST_ATTEST_QUOTE`, nothing after.
    pub fn parse_quote(bytes: &[u8]) -> Result<Self, ParseError> {
        if bytes.len() > MAX_ATTEST_BYTES {
            return Err(ParseError::TooLarge {
                what: "TPMS_ATTEST",
                size: bytes.len(),
                max: MAX_ATTEST_BYTES,
            });
        }
        let mut r = Reader::new(bytes);
        if r.u32("TPMS_ATTEST.magic")? != TPM_GENERATED_VALUE {
            return Err(ParseError::NotTpmGenerated);
        }
        let st = r.u16("TPMS_ATTEST.type")?;
        if st != ST_ATTEST_QUOTE {
            return Err(ParseError::NotAQuote { st });
        }
        let qualified_signer = r
            .tpm2b(MAX_NAME_BYTES, "TPMS_ATTEST.qualifiedSigner")?
            .to_vec();
        let extra_data = r.tpm2b(MAX_NAME_BYTES, "TPMS_ATTEST.extraData")?.to_vec();
        let clock_info = ClockInfo {
            clock: r.u64("TPMS_CLOCK_INFO.clock")?,
            reset_count: r.u32("TPMS_CLOCK_INFO.resetCount")?,
            restart_count: r.u32("TPMS_CLOCK_INFO.restartCount")?,
            safe: match r.u8("TPMS_CLOCK_INFO.safe")? {
                0 => false,
                1 => true,
                v => {
                    return Err(ParseError::Unsupported {
                        what: "TPMS_CLOCK_INFO.safe",
                        value: u16::from(v),
                    })
                }
            },
        };
        let firmware_version = r.u64("TPMS_ATTEST.firmwareVersion")?;
        let count = r.u32("TPML_PCR_SELECTION.count")? as usize;
        if count > MAX_PCR_BANKS {
            return Err(ParseError::TooLarge {
                what: "TPML_PCR_SELECTION.count",
                size: count,
                max: MAX_PCR_BANKS,
            });
        }
        let mut pcr_select = Vec::with_capacity(count);
        for _ in 0..count {
            let hash = r.u16("TPMS_PCR_SELECTION.hash")?;
            let size = usize::from(r.u8("TPMS_PCR_SELECTION.sizeofSelect")?);
            if size > MAX_PCR_SELECT_BYTES {
                return Err(ParseError::TooLarge {
                    what: "TPMS_PCR_SELECTION.sizeofSelect",
                    size,
                    max: MAX_PCR_SELECT_BYTES,
                });
            }
            let select = r.bytes(size, "TPMS_PCR_SELECTION.pcrSelect")?.to_vec();
            pcr_select.push(PcrSelection { hash, select });
        }
        let pcr_digest = r
            .tpm2b(MAX_DIGEST_BYTES, "TPMS_QUOTE_INFO.pcrDigest")?
            .to_vec();
        r.finish("TPMS_ATTEST")?;
        Ok(Self {
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            quote: QuoteInfo {
                pcr_select,
                pcr_digest,
            },
        })
    }
}

/// A parsed `TPMT_SIGNATURE`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signature {
    /// `TPM_ALG_RSASSA` (PKCS#1 v1.5).
    RsaSsa {
        /// `TPM_ALG_ID` of the hash.
        hash: u16,
        /// The signature, big-endian, as long as the modulus.
        sig: Vec<u8>,
    },
    /// `TPM_ALG_RSAPSS`.
    RsaPss {
        /// `TPM_ALG_ID` of the hash.
        hash: u16,
        /// The signature.
        sig: Vec<u8>,
    },
    /// `TPM_ALG_ECDSA`.
    Ecdsa {
        /// `TPM_ALG_ID` of the hash.
        hash: u16,
        /// `signatureR`, big-endian, possibly without leading zeros.
        r: Vec<u8>,
        /// `signatureS`.
        s: Vec<u8>,
    },
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public values, but long: print the scheme and hash only.
        let (name, hash) = match self {
            Self::RsaSsa { hash, .. } => ("RsaSsa", hash),
            Self::RsaPss { hash, .. } => ("RsaPss", hash),
            Self::Ecdsa { hash, .. } => ("Ecdsa", hash),
        };
        write!(f, "Signature::{name}(hash {hash:#06x})")
    }
}

impl Signature {
    /// Parses a marshalled `TPMT_SIGNATURE` (what `tpm2_quote -s` writes);
    /// nothing may follow it.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut r = Reader::new(bytes);
        let sig_alg = r.u16("TPMT_SIGNATURE.sigAlg")?;
        let sig = match sig_alg {
            alg::RSASSA | alg::RSAPSS => {
                let hash = r.u16("TPMS_SIGNATURE_RSA.hash")?;
                let sig = r
                    .tpm2b(MAX_RSA_KEY_BYTES, "TPMS_SIGNATURE_RSA.sig")?
                    .to_vec();
                if sig_alg == alg::RSASSA {
                    Self::RsaSsa { hash, sig }
                } else {
                    Self::RsaPss { hash, sig }
                }
            }
            alg::ECDSA => {
                let hash = r.u16("TPMS_SIGNATURE_ECC.hash")?;
                let r_ = r
                    .tpm2b(MAX_ECC_KEY_BYTES, "TPMS_SIGNATURE_ECC.signatureR")?
                    .to_vec();
                let s = r
                    .tpm2b(MAX_ECC_KEY_BYTES, "TPMS_SIGNATURE_ECC.signatureS")?
                    .to_vec();
                Self::Ecdsa { hash, r: r_, s }
            }
            value => {
                return Err(ParseError::Unsupported {
                    what: "TPMT_SIGNATURE.sigAlg",
                    value,
                })
            }
        };
        r.finish("TPMT_SIGNATURE")?;
        Ok(sig)
    }

    /// The `TPM_ALG_ID` of the signature's scheme.
    pub fn scheme(&self) -> u16 {
        match self {
            Self::RsaSsa { .. } => alg::RSASSA,
            Self::RsaPss { .. } => alg::RSAPSS,
            Self::Ecdsa { .. } => alg::ECDSA,
        }
    }

    /// The `TPM_ALG_ID` of the hash the TPM signed with.
    pub fn hash(&self) -> u16 {
        match self {
            Self::RsaSsa { hash, .. } | Self::RsaPss { hash, .. } | Self::Ecdsa { hash, .. } => {
                *hash
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcr_indices_in_bitmap_order() {
        let s = PcrSelection {
            hash: alg::SHA256,
            select: vec![0x81, 0x04, 0x00],
        };
        assert_eq!(s.indices().collect::<Vec<_>>(), vec![0, 7, 10]);
    }

    #[test]
    fn refuses_other_magic_and_type() {
        let mut q = TPM_GENERATED_VALUE.to_be_bytes().to_vec();
        q.extend(0x8017u16.to_be_bytes());
        assert!(matches!(
            Attest::parse_quote(&q),
            Err(ParseError::NotAQuote { st: 0x8017 })
        ));
        assert!(matches!(
            Attest::parse_quote(&[0, 0, 0, 0, 0x80, 0x18]),
            Err(ParseError::NotTpmGenerated)
        ));
        assert!(matches!(
            Signature::parse(&[0, 0x10]),
            Err(ParseError::Unsupported { .. })
        ));
    }
}
