//! The TPM 2.0 wire encoding (TPM 2.0 Part 2 and Part 1 §11.4.10): a
//! bounded big-endian reader and writer, the hash algorithms a verifier
//! meets, and the key derivation functions KDFa and KDFe.

use aws_lc_rs::{digest, hmac};

use super::ParseError;

/// `TPM_ALG_ID` values used by this module (TPM 2.0 Part 2, table 9).
pub(crate) mod alg {
    pub const RSA: u16 = 0x0001;
    pub const SHA1: u16 = 0x0004;
    pub const AES: u16 = 0x0006;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const NULL: u16 = 0x0010;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAPSS: u16 = 0x0016;
    pub const ECDSA: u16 = 0x0018;
    pub const ECDAA: u16 = 0x001A;
    pub const ECC: u16 = 0x0023;
    pub const CFB: u16 = 0x0043;
}

/// A hash algorithm a TPM names objects and PCR banks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HashAlg {
    /// `TPM_ALG_SHA1` (0x0004).
    Sha1,
    /// `TPM_ALG_SHA256` (0x000B).
    Sha256,
    /// `TPM_ALG_SHA384` (0x000C).
    Sha384,
    /// `TPM_ALG_SHA512` (0x000D).
    Sha512,
}

impl HashAlg {
    /// The algorithm of a `TPM_ALG_ID`, or `None` for anything else.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            alg::SHA1 => Some(Self::Sha1),
            alg::SHA256 => Some(Self::Sha256),
            alg::SHA384 => Some(Self::Sha384),
            alg::SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Its `TPM_ALG_ID`.
    pub fn id(self) -> u16 {
        match self {
            Self::Sha1 => alg::SHA1,
            Self::Sha256 => alg::SHA256,
            Self::Sha384 => alg::SHA384,
            Self::Sha512 => alg::SHA512,
        }
    }

    /// The bank name tpm2-tools and the wire block use: `sha1`, `sha256`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// The algorithm of a bank name (`sha256`), or `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Sha1, Self::Sha256, Self::Sha384, Self::Sha512]
            .into_iter()
            .find(|a| a.name() == name)
    }

    /// The digest size in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            Self::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => &digest::SHA256,
            Self::Sha384 => &digest::SHA384,
            Self::Sha512 => &digest::SHA512,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            Self::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha384 => hmac::HMAC_SHA384,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    /// The digest of the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = digest::Context::new(self.digest_alg());
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }

    /// HMAC with this hash over the concatenation of `parts`.
    pub(crate) fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let key = hmac::Key::new(self.hmac_alg(), key);
        let mut ctx = hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p);
        }
        ctx.sign().as_ref().to_vec()
    }
}

/// Reads marshalled TPM structures: every read is bounds-checked and a
/// short input is a [`ParseError::Truncated`] naming the field.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        if self.buf.len() < n {
            return Err(ParseError::Truncated { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A `TPM2B_*`: a 16-bit size then that many bytes, at most `max`.
    pub(crate) fn tpm2b(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let size = usize::from(self.u16(what)?);
        if size > max {
            return Err(ParseError::TooLarge { what, size, max });
        }
        self.bytes(size, what)
    }

    /// The whole input must have been read.
    pub(crate) fn finish(self, what: &'static str) -> Result<(), ParseError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ParseError::TrailingBytes {
                what,
                extra: self.buf.len(),
            })
        }
    }

    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.buf
    }
}

/// Appends a `TPM2B_*` (16-bit size, then the bytes). `data` must be shorter
/// than 64 KiB; the callers' inputs are bounded far below that.
pub(crate) fn put_tpm2b(out: &mut Vec<u8>, data: &[u8]) -> Result<(), ParseError> {
    let size = u16::try_from(data.len()).map_err(|_| ParseError::TooLarge {
        what: "TPM2B",
        size: data.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// KDFa (TPM 2.0 Part 1 §11.4.10.2, SP 800-108 counter mode with HMAC):
/// `bits` bits from HMAC(key, [i]₃₂ ‖ label ‖ 00 ‖ contextU ‖ contextV ‖ [bits]₃₂).
/// `label` is given without its terminating zero octet.
pub(crate) fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + hash.digest_len());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend(hash.hmac(
            key,
            &[
                &counter.to_be_bytes(),
                label,
                &[0],
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        ));
        counter += 1;
    }
    out.truncate(bytes);
    mask_top_bits(&mut out, bits);
    out
}

/// KDFe (TPM 2.0 Part 1 §11.4.10.3, SP 800-56A concatenation KDF):
/// `bits` bits from H([i]₃₂ ‖ Z ‖ label ‖ 00 ‖ partyUInfo ‖ partyVInfo).
pub(crate) fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + hash.digest_len());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend(hash.digest(&[&counter.to_be_bytes(), z, label, &[0], party_u, party_v]));
        counter += 1;
    }
    out.truncate(bytes);
    mask_top_bits(&mut out, bits);
    out
}

fn mask_top_bits(out: &mut [u8], bits: u32) {
    let rem = bits % 8;
    if rem != 0 {
        if let Some(first) = out.first_mut() {
            *first &= (1u8 << rem) - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_bounds() {
        let mut r = Reader::new(&[0, 3, 1, 2]);
        assert!(matches!(
            r.tpm2b(8, "x"),
            Err(ParseError::Truncated { what: "x" })
        ));
        let mut r = Reader::new(&[0, 9]);
        assert!(matches!(
            r.tpm2b(8, "x"),
            Err(ParseError::TooLarge {
                size: 9,
                max: 8,
                ..
            })
        ));
        let mut r = Reader::new(&[0, 1, 7, 5]);
        assert_eq!(r.tpm2b(8, "x").ok(), Some(&[7u8][..]));
        assert!(matches!(
            r.finish("y"),
            Err(ParseError::TrailingBytes { extra: 1, .. })
        ));
    }

    /// KDFa against an independent computation (Python's hmac module):
    /// `kdfa(sha256, key=00..1f, "STORAGE", "ctx", "", 128)`.
    #[test]
    fn kdfa_known_answer() {
        let key: Vec<u8> = (0u8..32).collect();
        let out = kdfa(HashAlg::Sha256, &key, b"STORAGE", b"ctx", b"", 128);
        assert_eq!(hex::encode(out), KDFA_EXPECTED);
        let long = kdfa(HashAlg::Sha256, &key, b"INTEGRITY", b"", b"", 520);
        assert_eq!(long.len(), 65);
        assert_eq!(hex::encode(&long), KDFA_LONG_EXPECTED);
        assert_eq!(kdfa(HashAlg::Sha256, &key, b"X", b"", b"", 12)[0] & 0xF0, 0);
    }

    #[test]
    fn kdfe_known_answer() {
        let z = [7u8; 32];
        let out = kdfe(HashAlg::Sha256, &z, b"IDENTITY", b"u", b"v", 256);
        assert_eq!(hex::encode(out), KDFE_EXPECTED);
    }

    const KDFA_EXPECTED: &str = "f763a5020921590b4f84e47d4b20bbd9";
    const KDFA_LONG_EXPECTED: &str = "7dafa373893777b31b17cb30ce771741db80d9f34b47ee8ad27ab3931d0ebbadb81d2a665e2458fa1add33fe132072316e02d6a9bc5ea325914c9b42fae8eda9e3";
    const KDFE_EXPECTED: &str = "cbfa0b0b1324ee6ca65772b3d0073f8923100246a5c7d1c5c0e0832156c0390b";
}
