//! The attestation route's wire constants (docs/PROTOCOL.md §14.3, §14.4):
//! its paths and the qualifying data its quote carries.

use crate::keys::Fingerprint;

use super::HashAlg;

/// `GET` path of the platform evidence (`?nonce=HEX`).
pub const ATTESTATION_PATH: &str = "/.well-known/nomyo-attestation";
/// `POST` path of credential activation.
pub const ACTIVATE_PATH: &str = "/.well-known/nomyo-attestation/activate";
/// The domain separator of the route's qualifying data.
pub const ATTEST_CONTEXT: &[u8] = b"nomyo-attest-v1";
/// Smallest and largest nonce, in bytes.
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=64;

/// The route's quote `extraData`: SHA-256 of [`ATTEST_CONTEXT`], the nonce,
/// the SHA-256 of the v1 key's SPKI DER (its [`Fingerprint`]) and the
/// SHA-256 of the v2 key-list body the answer binds (an empty body when the
/// server has no v2 keys). 32 bytes, which every TPM accepts as qualifying
/// data.
pub fn attestation_extra_data(nonce: &[u8], v1_key: &Fingerprint, v2_keys: &[u8]) -> [u8; 32] {
    let v2 = HashAlg::Sha256.digest(&[v2_keys]);
    let digest = HashAlg::Sha256.digest(&[ATTEST_CONTEXT, nonce, &v1_key.0, &v2]);
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extra_data_binds_every_input() {
        let fp = Fingerprint([7; 32]);
        let a = attestation_extra_data(b"nonce-1", &fp, b"keys");
        assert_ne!(a, attestation_extra_data(b"nonce-2", &fp, b"keys"));
        assert_ne!(
            a,
            attestation_extra_data(b"nonce-1", &Fingerprint([8; 32]), b"keys")
        );
        assert_ne!(a, attestation_extra_data(b"nonce-1", &fp, b"keyz"));
        // SHA-256("nomyo-attest-v1" || nonce || fp || SHA-256(keys)), by hand.
        let mut msg = ATTEST_CONTEXT.to_vec();
        msg.extend(b"nonce-1");
        msg.extend([7u8; 32]);
        msg.extend(HashAlg::Sha256.digest(&[b"keys"]));
        assert_eq!(a.to_vec(), HashAlg::Sha256.digest(&[&msg]));
    }
}
