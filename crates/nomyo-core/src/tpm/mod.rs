//! TPM 2.0 attestation, verified in pure Rust (no TPM, no libtss2).
//!
//! A server with a TPM answers with a `tpm_attestation` block in `_metadata`:
//! a quote (`TPMS_ATTEST`), its signature (`TPMT_SIGNATURE`) by an
//! attestation key (AK, a `TPM2B_PUBLIC`), and the quoted PCR values. The
//! quote's `extraData` is [`extra_data_for`]`(payload_id)`, which ties it
//! to one answer.
//!
//! - [`verify_quote`] checks a quote against an AK and optional PCR values.
//! - [`make_credential`] is TPM2_MakeCredential in software: it encrypts a
//!   secret that only the TPM holding a given EK can recover, and only for
//!   the AK of a given Name. Returning that secret is how a server shows
//!   its AK lives in the TPM whose EK (and EK certificate) the client trusts.
//! - [`Public`], [`Attest`], [`Signature`] parse the marshalled structures:
//!   bounded, never panicking, refusing trailing bytes.
//!
//! Trusting an AK in the first place (EK certificate chain, credential
//! activation, pinning) and judging PCR values (which firmware and kernel
//! are good) are policy and live above this module.

mod attest;
mod credential;
mod marshal;
mod public;
mod quote;
mod route;

pub use attest::{
    Attest, ClockInfo, PcrSelection, QuoteInfo, Signature, ST_ATTEST_QUOTE, TPM_GENERATED_VALUE,
};
pub use credential::{make_credential, MadeCredential, TOOLS_FILE_MAGIC, TOOLS_FILE_VERSION};
pub use marshal::HashAlg;
pub use public::{KeyParams, ObjectAttributes, Public, Scheme, SymmetricDef, ECC_NIST_P256};
pub use quote::{extra_data_for, verify_quote, PcrValues};
pub use route::{
    attestation_extra_data, ACTIVATE_PATH, ATTESTATION_PATH, ATTEST_CONTEXT, NONCE_LEN,
};

/// A marshalled TPM structure that does not parse. `what` names the
/// structure or field; no contents are echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input ended inside `what`.
    #[error("TPM structure truncated in {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A size field larger than the structure allows.
    #[error("TPM structure {what}: size {size} exceeds {max}")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// The size found.
        size: usize,
        /// The largest allowed.
        max: usize,
    },
    /// Bytes after the end of the structure.
    #[error("TPM structure {what}: {extra} trailing bytes")]
    TrailingBytes {
        /// The structure.
        what: &'static str,
        /// How many bytes follow it.
        extra: usize,
    },
    /// An algorithm, type or selector this parser does not know.
    #[error("TPM structure {what}: unsupported value {value:#06x}")]
    Unsupported {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u16,
    },
    /// A value that cannot be right (a wrong magic number).
    #[error("TPM structure {what}: invalid")]
    Invalid {
        /// The field.
        what: &'static str,
    },
    /// A `TPMS_ATTEST` without the `TPM_GENERATED_VALUE` magic.
    #[error("not a TPM-generated structure (wrong magic)")]
    NotTpmGenerated,
    /// A `TPMS_ATTEST` of another type than `TPM_ST_ATTEST_QUOTE`.
    #[error("TPMS_ATTEST of type {st:#06x}, not a quote")]
    NotAQuote {
        /// The `TPM_ST` found.
        st: u16,
    },
}

/// Why [`verify_quote`] refused a quote: each variant is one step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The AK's `TPM2B_PUBLIC` does not parse.
    #[error("TPM quote: the attestation key does not parse: {0}")]
    AkPublic(#[source] ParseError),
    /// The AK is not a restricted, fixedTPM signing key.
    #[error("TPM quote: the attestation key is not a restricted signing key")]
    AkNotRestrictedSigning,
    /// The AK's curve or size is not supported (ECC keys must be P-256).
    #[error("TPM quote: unsupported attestation key")]
    AkUnsupported,
    /// The `TPMT_SIGNATURE` does not parse.
    #[error("TPM quote: the signature does not parse: {0}")]
    Signature(#[source] ParseError),
    /// The signature's scheme or hash does not fit the AK or is not SHA-256.
    #[error("TPM quote: signature scheme does not match the attestation key")]
    SignatureSchemeMismatch,
    /// The signature does not verify.
    #[error("TPM quote: bad signature")]
    SignatureInvalid,
    /// The signed `TPMS_ATTEST` does not parse.
    #[error("TPM quote: the attestation does not parse: {0}")]
    Attest(#[source] ParseError),
    /// The signed structure lacks `TPM_GENERATED_VALUE`.
    #[error("TPM quote: not TPM-generated")]
    NotTpmGenerated,
    /// The signed structure is not a quote.
    #[error("TPM quote: the attestation is not a quote")]
    NotAQuote,
    /// `extraData` is not the expected value: the quote is for something else.
    #[error("TPM quote: extraData does not match")]
    ExtraDataMismatch,
    /// The quote selects a PCR bank with an unknown hash.
    #[error("TPM quote: unsupported PCR bank")]
    PcrBankUnsupported,
    /// A quoted PCR has no value among those given.
    #[error("TPM quote: no value for PCR {bank}:{index}")]
    PcrValueMissing {
        /// Bank name (`sha256`).
        bank: &'static str,
        /// PCR index.
        index: u32,
    },
    /// A given PCR value is not the size of its bank's digest.
    #[error("TPM quote: PCR {bank}:{index} has the wrong length")]
    PcrValueLength {
        /// Bank name.
        bank: &'static str,
        /// PCR index.
        index: u32,
    },
    /// A PCR value was given that the quote does not cover.
    #[error("TPM quote: PCR {bank}:{index} is not quoted")]
    PcrNotQuoted {
        /// Bank name.
        bank: &'static str,
        /// PCR index.
        index: u32,
    },
    /// The PCR values do not hash to the quote's `pcrDigest`.
    #[error("TPM quote: PCR values do not match the quoted digest")]
    PcrDigestMismatch,
}

/// Why [`make_credential`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The EK's `TPM2B_PUBLIC` does not parse.
    #[error("MakeCredential: the endorsement key does not parse: {0}")]
    EkPublic(#[source] ParseError),
    /// The EK is not a restricted decryption (storage) key.
    #[error("MakeCredential: the endorsement key is not a restricted decryption key")]
    EkNotStorageKey,
    /// Unsupported EK type: not RSA or ECC P-256, or no AES-CFB symmetric.
    #[error("MakeCredential: unsupported endorsement key type")]
    EkUnsupported,
    /// The credential is empty or longer than the EK nameAlg's digest.
    #[error("MakeCredential: the credential must be 1 to {max} bytes")]
    CredentialSize {
        /// Its largest size.
        max: usize,
    },
    /// The AK Name is not a hash algorithm id followed by its digest.
    #[error("MakeCredential: invalid object Name")]
    InvalidName,
    /// Random generation or encryption failed.
    #[error("MakeCredential: cryptographic operation failed")]
    Crypto,
}
