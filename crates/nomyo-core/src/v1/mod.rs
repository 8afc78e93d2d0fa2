//! Protocol v1: hybrid AES-256-GCM + RSA-OAEP-SHA256 (docs/PROTOCOL.md §3).
//!
//! [`seal`] and [`open`] serve both directions: a client seals a request to the
//! server key and opens the response with its own key; a server does the reverse.

mod package;

pub use package::{
    Package, ALGORITHM, KEY_ALGORITHM, NONCE_LEN, PAYLOAD_ALGORITHM, TAG_LEN, VERSION,
};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, OaepPublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{Error, Result};
use crate::keys::{PrivateKey, PublicKey};
use crate::secure_memory::SecretBuf;

/// The reference client's plaintext limit: 10 MiB.
pub const MAX_PLAINTEXT: usize = 10 * 1024 * 1024;

/// `GET`: the server's RSA public key, PEM SPKI (docs/PROTOCOL.md §3).
pub const PUBLIC_KEY_PATH: &str = "/pki/public_key";
/// `POST`: a sealed chat completion, answered with a sealed package.
pub const SECURE_COMPLETION_PATH: &str = "/v1/chat/secure_completion";
/// Request header: the client's id of the request, echoed in `_metadata`
/// (1–128 of `[A-Za-z0-9._-]`; a UUID in practice).
pub const HEADER_PAYLOAD_ID: &str = "x-payload-id";
/// Request header: the client's RSA public key, PEM, percent-encoded
/// ([`encode_public_key_header`]).
pub const HEADER_PUBLIC_KEY: &str = "x-public-key";

/// AES-256 key length.
const AES_KEY_LEN: usize = 32;

/// Seals `plaintext` to `recipient`: a fresh AES-256 key and nonce from the OS
/// CSPRNG, AES-256-GCM without associated data, the key wrapped with
/// RSA-OAEP-SHA256 (MGF1-SHA256, empty label).
///
/// The AES key lives only in a [`SecretBuf`] (locked, zeroed on drop) and in
/// aws-lc's context, which cleanses it on free.
pub fn seal(plaintext: &[u8], recipient: &PublicKey) -> Result<Package> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(Error::PayloadTooLarge {
            size: plaintext.len(),
            limit: MAX_PLAINTEXT,
        });
    }
    let mut key = SecretBuf::zeroed(AES_KEY_LEN);
    aws_lc_rs::rand::fill(key.expose_secret_mut()).map_err(|_| Error::EncryptionFailed)?;
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::EncryptionFailed)?;

    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.expose_secret()).map_err(|_| Error::EncryptionFailed)?,
    );
    let mut ciphertext = plaintext.to_vec();
    let tag = aead
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut ciphertext,
        )
        .map_err(|_| Error::EncryptionFailed)?;

    let oaep = OaepPublicEncryptingKey::new(recipient.inner().clone())
        .map_err(|_| Error::EncryptionFailed)?;
    let mut encrypted_key = vec![0u8; oaep.ciphertext_size()];
    let n = oaep
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            key.expose_secret(),
            &mut encrypted_key,
            None,
        )
        .map_err(|_| Error::EncryptionFailed)?
        .len();
    encrypted_key.truncate(n);

    let mut tag_bytes = [0u8; TAG_LEN];
    tag_bytes.copy_from_slice(tag.as_ref());
    Ok(Package {
        ciphertext,
        nonce,
        tag: tag_bytes,
        encrypted_key,
        payload_id: None,
        processed_at: None,
    })
}

/// Opens a package with `key`, returning the plaintext in secure memory.
///
/// Every cryptographic failure (wrong key, bad OAEP padding, a key that does
/// not unwrap to 32 bytes, a bad tag) is the same [`Error::DecryptionFailed`].
pub fn open(package: &Package, key: &PrivateKey) -> Result<SecretBuf> {
    if package.ciphertext.len() > MAX_PLAINTEXT {
        return Err(Error::PayloadTooLarge {
            size: package.ciphertext.len(),
            limit: MAX_PLAINTEXT,
        });
    }
    let oaep =
        OaepPrivateDecryptingKey::new(key.inner().clone()).map_err(|_| Error::DecryptionFailed)?;
    // The wrapped key's length is public (the modulus size): a mismatch is a
    // malformed package, not a decryption oracle.
    if package.encrypted_key.len() != oaep.key_size_bytes() {
        return Err(Error::Malformed(format!(
            "encrypted_aes_key must be {} bytes for this {}-bit key, found {}",
            oaep.key_size_bytes(),
            oaep.key_size_bits(),
            package.encrypted_key.len()
        )));
    }
    let mut unwrapped = SecretBuf::zeroed(oaep.min_output_size());
    let n = oaep
        .decrypt(
            &OAEP_SHA256_MGF1SHA256,
            &package.encrypted_key,
            unwrapped.expose_secret_mut(),
            None,
        )
        .map_err(|_| Error::DecryptionFailed)?
        .len();
    if n != AES_KEY_LEN {
        return Err(Error::DecryptionFailed);
    }
    unwrapped.truncate(AES_KEY_LEN);
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, unwrapped.expose_secret())
            .map_err(|_| Error::DecryptionFailed)?,
    );
    let mut plaintext = SecretBuf::zeroed(package.ciphertext.len());
    aead.open_separate_gather(
        Nonce::assume_unique_for_key(package.nonce),
        Aad::empty(),
        &package.ciphertext,
        &package.tag,
        plaintext.expose_secret_mut(),
    )
    .map_err(|_| Error::DecryptionFailed)?;
    Ok(plaintext)
}

/// Python's `urllib.parse.quote(s)` with its default safe set `/`: everything
/// but ASCII letters, digits, `_.-~` and `/` is percent-encoded (upper-case hex).
const QUOTE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');

/// Encodes a public key PEM for the `X-Public-Key` header, byte-identical to
/// the reference client's `urllib.parse.quote(pem)`.
pub fn encode_public_key_header(pem: &str) -> String {
    utf8_percent_encode(pem, QUOTE_SET).to_string()
}

/// Longest `X-Public-Key` value accepted (an 8192-bit key's PEM, quoted, is
/// under 3 KiB).
pub const MAX_PUBLIC_KEY_HEADER: usize = 8 * 1024;

/// Decodes and parses an `X-Public-Key` header value.
pub fn decode_public_key_header(value: &str) -> Result<PublicKey> {
    if value.len() > MAX_PUBLIC_KEY_HEADER {
        return Err(Error::Key("X-Public-Key is too long".into()));
    }
    let pem = percent_decode_str(value)
        .decode_utf8()
        .map_err(|_| Error::Key("X-Public-Key is not valid percent-encoded UTF-8".into()))?;
    PublicKey::from_pem(&pem).map_err(|e| {
        Error::Key(format!(
            "X-Public-Key does not hold a usable RSA public key: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RsaBits;
    use std::sync::OnceLock;

    fn key() -> &'static PrivateKey {
        static K: OnceLock<PrivateKey> = OnceLock::new();
        K.get_or_init(|| PrivateKey::generate(RsaBits::B2048).unwrap())
    }

    #[test]
    fn round_trip() {
        let p = seal(b"{\"model\":\"m\"}", key().public_key()).unwrap();
        let back = Package::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            open(&back, key()).unwrap().expose_secret(),
            b"{\"model\":\"m\"}"
        );
    }

    #[test]
    fn fresh_key_and_nonce_every_time() {
        let a = seal(b"same", key().public_key()).unwrap();
        let b = seal(b"same", key().public_key()).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.encrypted_key, b.encrypted_key);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn header_quote_matches_python() {
        // urllib.parse.quote("-----BEGIN PUBLIC KEY-----\nAB+/c=\n") in CPython 3.11
        assert_eq!(
            encode_public_key_header("-----BEGIN PUBLIC KEY-----\nAB+/c=\n"),
            "-----BEGIN%20PUBLIC%20KEY-----%0AAB%2B/c%3D%0A"
        );
        assert_eq!(encode_public_key_header("a_b.c~d-e"), "a_b.c~d-e");
        let pem = key().public_key().to_pem();
        let back = decode_public_key_header(&encode_public_key_header(&pem)).unwrap();
        assert_eq!(&back, key().public_key());
    }

    #[test]
    fn oversize_plaintext_refused() {
        let big = vec![b'a'; MAX_PLAINTEXT + 1];
        assert!(matches!(
            seal(&big, key().public_key()),
            Err(Error::PayloadTooLarge { .. })
        ));
    }
}
