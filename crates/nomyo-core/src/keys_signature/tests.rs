//! The signed key list header's unit tests: the signed message, validity
//! windows, signing and verification, and strict parsing.

use super::*;
use crate::keys::RsaBits;
use std::sync::OnceLock;

fn key(i: usize) -> &'static PrivateKey {
    static KEYS: OnceLock<[PrivateKey; 2]> = OnceLock::new();
    &KEYS.get_or_init(|| {
        [
            PrivateKey::generate(RsaBits::B2048).unwrap(),
            PrivateKey::generate(RsaBits::B2048).unwrap(),
        ]
    })[i]
}

const BODY: &[u8] = b"\x00\x20\x00\x00\x00\x01\x00\x01keys";
const T0: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn v() -> Validity {
    Validity::new(T0, T0 + DAY).unwrap()
}

#[test]
fn message_is_context_validity_then_body() {
    let m = signed_message(Validity::new(1, 0x0102).unwrap(), b"ab");
    let mut want = b"nomyo v2 hpke-keys validity\0".to_vec();
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2]);
    want.extend_from_slice(b"ab");
    assert_eq!(m, want);
}

#[test]
fn validity_windows() {
    assert!(Validity::new(5, 5).is_none());
    assert!(Validity::new(6, 5).is_none());
    assert!(Validity::new(0, MAX_VALIDITY_SECS).is_some());
    assert!(Validity::new(0, MAX_VALIDITY_SECS + 1).is_none());
    let w = v();
    assert_eq!(w.check(T0), Ok(()));
    assert_eq!(w.check(T0 + DAY), Ok(()));
    assert_eq!(w.check(T0 - CLOCK_SKEW_SECS), Ok(()));
    assert_eq!(w.check(T0 + DAY + CLOCK_SKEW_SECS), Ok(()));
    assert!(matches!(
        w.check(T0 - CLOCK_SKEW_SECS - 1),
        Err(KeysSignatureError::NotYetValid { .. })
    ));
    assert!(matches!(
        w.check(T0 + DAY + CLOCK_SKEW_SECS + 1),
        Err(KeysSignatureError::Expired { .. })
    ));
    assert!(w.check(u64::MAX).is_err());
}

#[test]
fn pss_is_randomised_and_verifies() {
    let k = key(0);
    let a = k.sign_pss_sha256(b"m").unwrap();
    let b = k.sign_pss_sha256(b"m").unwrap();
    assert_eq!(a.len(), 256);
    assert_ne!(a, b, "PSS uses a random salt");
    assert!(k.public_key().verify_pss_sha256(b"m", &a).is_ok());
    assert!(k.public_key().verify_pss_sha256(b"m", &b).is_ok());
    assert!(k.public_key().verify_pss_sha256(b"n", &a).is_err());
    assert!(key(1).public_key().verify_pss_sha256(b"m", &a).is_err());
    let mut flipped = a.clone();
    flipped[100] ^= 1;
    assert!(k.public_key().verify_pss_sha256(b"m", &flipped).is_err());
    assert!(k.public_key().verify_pss_sha256(b"m", &a[1..]).is_err());
    assert!(k.public_key().verify_pss_sha256(b"m", &[]).is_err());
}

#[test]
fn header_round_trip_and_verification() {
    let s = KeysSignature::sign(key(0), BODY, v()).unwrap();
    let h = s.to_header_value();
    assert!(
        h.starts_with(&format!(
            "rsa-pss-sha256;key={};nbf={T0};exp={};sig=",
            key(0).public_key().fingerprint(),
            T0 + DAY
        )),
        "{h}"
    );
    let p = KeysSignature::parse(&h).unwrap();
    assert_eq!(p, s);
    assert_eq!(p.validity(), v());
    assert_eq!(p.verify(key(0).public_key(), BODY, T0 + 10), Ok(()));
    // Another body (tampered key list): refused.
    assert_eq!(
        p.verify(key(0).public_key(), b"other", T0 + 10),
        Err(KeysSignatureError::BadSignature)
    );
    // The signature is not over the body alone (domain separation).
    assert!(key(0)
        .public_key()
        .verify_pss_sha256(BODY, p.signature())
        .is_err());
    // Another trusted key: refused before any RSA work.
    assert!(matches!(
        p.verify(key(1).public_key(), BODY, T0 + 10),
        Err(KeysSignatureError::WrongKey { .. })
    ));
    // A signature by key 1 that claims to be by key 0.
    let forged = KeysSignature {
        key: key(0).public_key().fingerprint(),
        validity: v(),
        signature: key(1).sign_pss_sha256(&signed_message(v(), BODY)).unwrap(),
    };
    assert_eq!(
        forged.verify(key(0).public_key(), BODY, T0 + 10),
        Err(KeysSignatureError::BadSignature)
    );
    // Spaces and parameter order are tolerated.
    let fp = key(0).public_key().fingerprint();
    let b64 = base64::engine::general_purpose::STANDARD.encode(s.signature());
    let loose = format!(
        "RSA-PSS-SHA256 ; exp={} ; sig={b64} ; nbf={T0}; key={fp}",
        T0 + DAY
    );
    assert_eq!(KeysSignature::parse(&loose).unwrap(), s);
}

/// A list captured while valid and replayed after its window, and a
/// window moved by the replayer: both refused.
#[test]
fn replayed_expired_list_is_refused() {
    let s = KeysSignature::sign(key(0), BODY, v()).unwrap();
    let p = KeysSignature::parse(&s.to_header_value()).unwrap();
    let later = T0 + DAY + CLOCK_SKEW_SECS + 1;
    assert_eq!(
        p.verify(key(0).public_key(), BODY, later),
        Err(KeysSignatureError::Expired {
            not_after: T0 + DAY,
            now: later
        })
    );
    assert!(matches!(
        p.verify(key(0).public_key(), BODY, T0 - 3600),
        Err(KeysSignatureError::NotYetValid { .. })
    ));
    // Stretching the window in the header breaks the signature.
    let b64 = base64::engine::general_purpose::STANDARD.encode(s.signature());
    let fp = key(0).public_key().fingerprint();
    let stretched = format!(
        "rsa-pss-sha256;key={fp};nbf={T0};exp={};sig={b64}",
        T0 + 2 * DAY
    );
    let p = KeysSignature::parse(&stretched).unwrap();
    assert_eq!(
        p.verify(key(0).public_key(), BODY, T0 + DAY + DAY / 2),
        Err(KeysSignatureError::BadSignature)
    );
}

#[test]
fn malformed_headers_are_refused() {
    let fp = key(0).public_key().fingerprint();
    let sig = "AAAA";
    let w = format!("nbf={T0};exp={}", T0 + DAY);
    for bad in [
        String::new(),
        "rsa-pss-sha256".to_owned(),
        format!("key={fp};{w};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};{w}"),
        format!("rsa-pss-sha256;{w};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};{w};sig={sig};key={fp}"),
        format!("rsa-pss-sha256;key={fp};{w};sig={sig};x=1"),
        format!("rsa-pss-sha256;key=sha256:12;{w};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};{w};sig=not base64!"),
        format!("rsa-pss-sha256;key={fp};{w};sig="),
        format!("rsa-pss-sha256;key={fp};{w};sig"),
        format!("rsa-pss-sha256;key={fp};{w};sig={}", "A".repeat(1500)),
        format!("rsa-pss-sha256;key={fp};{w};sig={}", "A".repeat(3000)),
        // The old syntax, without a validity window.
        format!("rsa-pss-sha256;key={fp};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};nbf={T0};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};exp={T0};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};{w};nbf={T0};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};nbf=-1;exp={T0};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};nbf=+1;exp={T0};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};nbf=1;exp=99999999999999999999999;sig={sig}"),
        format!("rsa-pss-sha256;key={fp};nbf={T0};exp={T0};sig={sig}"),
        format!("rsa-pss-sha256;key={fp};nbf={};exp={T0};sig={sig}", T0 + 1),
        format!("rsa-pss-sha256;key={fp};nbf=0;exp={};sig={sig}", 40 * DAY),
    ] {
        assert!(
            matches!(
                KeysSignature::parse(&bad),
                Err(KeysSignatureError::Malformed(_))
            ),
            "{bad}"
        );
    }
    assert_eq!(
        KeysSignature::parse(&format!("rsa-pkcs1-sha1;key={fp};{w};sig={sig}")),
        Err(KeysSignatureError::UnsupportedAlgorithm)
    );
}

#[test]
fn debug_shows_no_signature_bytes() {
    let s = KeysSignature::sign(key(0), BODY, v()).unwrap();
    let d = format!("{s:?}");
    assert!(d.contains("signature_bytes: 256"), "{d}");
}
