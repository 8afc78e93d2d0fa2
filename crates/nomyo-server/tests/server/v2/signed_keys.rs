//! The key list's `Nomyo-Keys-Signature`: by the current RSA key over the
//! exact body, cached per key set, made anew after HPKE and RSA rotations.

use nomyo_server::app;

use crate::common::*;

/// The key list and its `Nomyo-Keys-Signature` header.
async fn signed_keys(app: &axum::Router) -> (Vec<u8>, String) {
    let (h, b) = fetch_hpke_keys_with_headers(app).await;
    let sig = h[nomyo_core::keys_signature::HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    (b, sig)
}

/// The key list carries `Nomyo-Keys-Signature` by the current RSA key over
/// the exact body; it is made once per key set (the same header on every
/// fetch, though PSS is randomised), and made again after an HPKE rotation
/// and after an RSA key rotation (then by the new key).
#[tokio::test]
async fn key_list_is_signed_by_the_rsa_key_and_resigned_on_rotation() {
    use nomyo_core::keys_signature::{KeysSignature, KeysSignatureError};
    let st = state_with(&["m"]).build().unwrap();
    let app = app(st.clone());
    let rsa = server_key();
    let (body, header) = signed_keys(&app).await;
    assert!(
        header.starts_with(&format!(
            "rsa-pss-sha256;key={};nbf=",
            rsa.public_key().fingerprint()
        )),
        "{header}"
    );
    let sig = KeysSignature::parse(&header).unwrap();
    let now = nomyo_server::hpke_keys::unix_now();
    assert_eq!(sig.verify(rsa.public_key(), &body, now), Ok(()));
    // Valid for the rotation period (24 h without a schedule) plus the grace.
    let v = sig.validity();
    assert!(v.not_before() <= now && v.not_before() + 60 > now, "{v:?}");
    assert_eq!(
        v.not_after() - v.not_before(),
        24 * 3600 + st.hpke_store().grace().as_secs()
    );
    assert_eq!(body, st.hpke_keys().encoded());
    // Cached: the same signature again (a fresh PSS signature would differ).
    assert_eq!(signed_keys(&app).await, (body.clone(), header.clone()));

    // HPKE rotation: a new list, signed anew.
    st.rotate_hpke_keys().await.unwrap();
    let (body2, header2) = signed_keys(&app).await;
    assert_ne!(body2, body);
    assert_ne!(header2, header);
    let sig2 = KeysSignature::parse(&header2).unwrap();
    assert_eq!(sig2.verify(rsa.public_key(), &body2, now), Ok(()));
    // The old signature does not vouch for the new list.
    assert_eq!(
        sig.verify(rsa.public_key(), &body2, now),
        Err(KeysSignatureError::BadSignature)
    );

    // RSA rotation: the same list, now signed by the new key.
    let new_fp = st.rotate_key().await.unwrap();
    let (body3, header3) = signed_keys(&app).await;
    assert_eq!(body3, body2);
    let sig3 = KeysSignature::parse(&header3).unwrap();
    assert_eq!(sig3.key_fingerprint(), new_fp);
    let new_key = st.keys().current();
    assert_eq!(
        sig3.verify(new_key.private_key().public_key(), &body3, now),
        Ok(())
    );
    assert!(matches!(
        sig3.verify(rsa.public_key(), &body3, now),
        Err(KeysSignatureError::WrongKey { .. })
    ));
}
