//! Tampering with the cryptographic fields (ciphertext, nonce, tag, the
//! wrapped AES key, fields spliced from another package) is the one opaque
//! `DecryptionFailed`.

use super::*;

#[test]
fn ciphertext_tampering() {
    let (_, v) = sealed();
    let ct = b64_of(&v, "/encrypted_payload/ciphertext");
    for i in [0, 1, ct.len() / 2, ct.len() - 1] {
        for bit in [0x01u8, 0x80] {
            let mut c = ct.clone();
            c[i] ^= bit;
            expect(
                &format!("ciphertext byte {i} ^ {bit:#x}"),
                &with(&v, |v| set_b64(v, "/encrypted_payload/ciphertext", &c)),
                Want::Decryption,
            );
        }
    }
    let mut longer = ct.clone();
    longer.push(0);
    for (name, c) in [
        ("shortened", ct[..ct.len() - 1].to_vec()),
        ("lengthened", longer),
        ("emptied", Vec::new()),
    ] {
        expect(
            &format!("ciphertext {name}"),
            &with(&v, |v| set_b64(v, "/encrypted_payload/ciphertext", &c)),
            Want::Decryption,
        );
    }
}

#[test]
fn nonce_and_tag_tampering_and_lengths() {
    let (_, v) = sealed();
    for (field, len) in [("nonce", 12usize), ("tag", 16)] {
        let ptr = format!("/encrypted_payload/{field}");
        let good = b64_of(&v, &ptr);
        assert_eq!(good.len(), len);
        for i in 0..len {
            let mut b = good.clone();
            b[i] ^= 0x01;
            expect(
                &format!("{field} byte {i} flipped"),
                &with(&v, |v| set_b64(v, &ptr, &b)),
                Want::Decryption,
            );
        }
        for bad_len in [0, 1, len - 1, len + 1, 32] {
            let b = vec![0u8; bad_len];
            let msg = expect(
                &format!("{field} of {bad_len} bytes"),
                &with(&v, |v| set_b64(v, &ptr, &b)),
                Want::Malformed,
            );
            assert!(
                msg.contains(&format!("encrypted_payload.{field} must be {len} bytes")),
                "{msg}"
            );
        }
    }
}

#[test]
fn encrypted_aes_key_tampering() {
    let (_, v) = sealed();
    let ek = b64_of(&v, "/encrypted_aes_key");
    assert_eq!(ek.len(), 256);
    for i in [0, 1, 127, 255] {
        let mut b = ek.clone();
        b[i] ^= 0x01;
        expect(
            &format!("encrypted_aes_key byte {i} flipped"),
            &with(&v, |v| set_b64(v, "/encrypted_aes_key", &b)),
            Want::Decryption,
        );
    }
    expect(
        "encrypted_aes_key all zero",
        &with(&v, |v| set_b64(v, "/encrypted_aes_key", &[0u8; 256])),
        Want::Decryption,
    );
    expect(
        "encrypted_aes_key all 0xff (above the modulus)",
        &with(&v, |v| set_b64(v, "/encrypted_aes_key", &[0xffu8; 256])),
        Want::Decryption,
    );
    // Its length is public (the modulus size): a wrong length is malformed.
    for bad_len in [0usize, 255, 257, 512] {
        let b = vec![7u8; bad_len];
        let msg = expect(
            &format!("encrypted_aes_key of {bad_len} bytes"),
            &with(&v, |v| set_b64(v, "/encrypted_aes_key", &b)),
            Want::Malformed,
        );
        assert!(msg.contains("encrypted_aes_key"), "{msg}");
    }
}

/// Valid RSA-OAEP ciphertexts that are still wrong: OAEP with SHA-1, and a
/// correctly wrapped key of the wrong length. Both are the same opaque error.
#[test]
fn well_formed_but_wrong_key_wrapping() {
    let (_, v) = sealed();
    let public = PublicEncryptingKey::from_der(key().public_key().spki_der()).unwrap();
    let oaep = OaepPublicEncryptingKey::new(public).unwrap();
    let mut out = vec![0u8; oaep.ciphertext_size()];

    let n = oaep
        .encrypt(&OAEP_SHA1_MGF1SHA1, &[0x11; 32], &mut out, None)
        .unwrap()
        .len();
    expect(
        "AES key wrapped with OAEP-SHA1",
        &with(&v, |v| set_b64(v, "/encrypted_aes_key", &out[..n])),
        Want::Decryption,
    );
    for wrong_len in [0usize, 16, 24, 31, 33, 64] {
        let n = oaep
            .encrypt(
                &OAEP_SHA256_MGF1SHA256,
                &vec![0x22; wrong_len],
                &mut out,
                None,
            )
            .unwrap()
            .len();
        expect(
            &format!("a {wrong_len}-byte AES key"),
            &with(&v, |v| set_b64(v, "/encrypted_aes_key", &out[..n])),
            Want::Decryption,
        );
    }
    // A label other than the empty one.
    let n = oaep
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            &[0x11; 32],
            &mut out,
            Some(b"label"),
        )
        .unwrap()
        .len();
    expect(
        "OAEP with a label",
        &with(&v, |v| set_b64(v, "/encrypted_aes_key", &out[..n])),
        Want::Decryption,
    );
}

#[test]
fn fields_spliced_from_another_package() {
    let (_, a) = sealed();
    let (_, b) = sealed();
    for ptr in [
        "/encrypted_payload/ciphertext",
        "/encrypted_payload/nonce",
        "/encrypted_payload/tag",
        "/encrypted_aes_key",
    ] {
        let from_b = b.pointer(ptr).unwrap().clone();
        expect(
            &format!("{ptr} from another package"),
            &with(&a, |v| *v.pointer_mut(ptr).unwrap() = from_b),
            Want::Decryption,
        );
    }
    // To another recipient entirely.
    let other = PrivateKey::generate(RsaBits::B2048).unwrap();
    let for_other = v1::seal(PLAINTEXT, other.public_key()).unwrap().to_json();
    expect("sealed to another key", &for_other, Want::Decryption);
}
