//! Key files as `save_key_pair` writes them: modes, PBES2 parameters,
//! no overwrite, no temporary files left behind, and a reload that gives the
//! same key. (Python loads these files in tests/python/test_core_interop.py.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;

use der::Decode as _;
use nomyo_core::keys::{
    load_private_key_file, save_key_pair, LoadOptions, PrivateKey, RsaBits, PBKDF2_ITERATIONS,
};
use nomyo_core::{Error, SecretString};

fn key() -> &'static PrivateKey {
    static K: OnceLock<PrivateKey> = OnceLock::new();
    K.get_or_init(|| PrivateKey::generate(RsaBits::B2048).expect("keygen"))
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// (salt, iv, iterations) of an `ENCRYPTED PRIVATE KEY` PEM, checking the
/// scheme is PBES2 / PBKDF2-HMAC-SHA256 / AES-256-CBC.
fn pbes2_params(pem: &str) -> (Vec<u8>, Vec<u8>, u32) {
    let (label, doc) = der::SecretDocument::from_pem(pem).unwrap();
    assert_eq!(label, "ENCRYPTED PRIVATE KEY");
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes()).unwrap();
    let pkcs5::EncryptionScheme::Pbes2(params) = &info.encryption_algorithm else {
        panic!("not PBES2");
    };
    let kdf = params.kdf.pbkdf2().expect("PBKDF2");
    assert_eq!(kdf.prf, pkcs5::pbes2::Pbkdf2Prf::HmacWithSha256);
    let pkcs5::pbes2::EncryptionScheme::Aes256Cbc { iv } = params.encryption else {
        panic!("not AES-256-CBC");
    };
    (kdf.salt.to_vec(), iv.to_vec(), kdf.iteration_count)
}

#[test]
fn password_protected_pair() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("keys");
    let pw = SecretString::from("pa55 wörd".to_owned());
    let saved = save_key_pair(&d, key(), Some(&pw), false).unwrap();
    assert_eq!(saved.private_key, d.join("private_key.pem"));
    assert_eq!(saved.public_key, d.join("public_key.pem"));
    assert_eq!(mode(&saved.private_key), 0o600);
    assert_eq!(mode(&saved.public_key), 0o644);
    assert_eq!(mode(&d) & 0o077, 0, "a new key directory is private");

    let pem = std::fs::read_to_string(&saved.private_key).unwrap();
    assert!(!pem.contains("pa55"));
    let (salt, iv, iterations) = pbes2_params(&pem);
    assert!(iterations >= 600_000, "{iterations}");
    assert_eq!(iterations, PBKDF2_ITERATIONS);
    assert!(salt.len() >= 16, "salt of {} bytes", salt.len());
    assert_eq!(iv.len(), 16);

    let back =
        load_private_key_file(&saved.private_key, Some(&pw), LoadOptions::default()).unwrap();
    assert_eq!(back.public_key(), key().public_key());
    let public = nomyo_core::keys::load_public_key_file(&saved.public_key).unwrap();
    assert_eq!(&public, key().public_key());
    assert_eq!(
        std::fs::read_to_string(&saved.public_key).unwrap(),
        key().public_key().to_pem()
    );

    // Only the two key files: no temporary file left behind.
    let mut names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["private_key.pem", "public_key.pem"]);

    let wrong = SecretString::from("pa55 word".to_owned());
    assert!(matches!(
        load_private_key_file(&saved.private_key, Some(&wrong), LoadOptions::default()),
        Err(Error::WrongPassword(_))
    ));
}

#[test]
fn fresh_salt_and_iv_every_time() {
    let pw = SecretString::from("x".to_owned());
    let a = key().to_pkcs8_pem(Some(&pw)).unwrap();
    let b = key().to_pkcs8_pem(Some(&pw)).unwrap();
    let (sa, ia, _) = pbes2_params(&a);
    let (sb, ib, _) = pbes2_params(&b);
    assert_ne!(sa, sb);
    assert_ne!(ia, ib);
}

#[test]
fn unencrypted_pair_is_plain_pkcs8() {
    let dir = tempfile::tempdir().unwrap();
    let saved = save_key_pair(dir.path(), key(), None, false).unwrap();
    let pem = std::fs::read_to_string(&saved.private_key).unwrap();
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "{pem:.40}"
    );
    assert_eq!(mode(&saved.private_key), 0o600);
    let back = load_private_key_file(&saved.private_key, None, LoadOptions::default()).unwrap();
    assert_eq!(back.public_key(), key().public_key());
}

#[test]
fn existing_keys_are_never_overwritten_silently() {
    let dir = tempfile::tempdir().unwrap();
    let first = save_key_pair(dir.path(), key(), None, false).unwrap();
    let before = std::fs::read(&first.private_key).unwrap();
    let other = PrivateKey::generate(RsaBits::B2048).unwrap();

    let err = save_key_pair(dir.path(), &other, None, false).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&first.private_key).unwrap(), before);

    // Only the public key present: still refused (it would be replaced).
    std::fs::remove_file(&first.private_key).unwrap();
    assert!(matches!(
        save_key_pair(dir.path(), &other, None, false),
        Err(Error::AlreadyExists(_))
    ));

    // With overwrite, replaced, modes kept.
    let again = save_key_pair(dir.path(), &other, None, true).unwrap();
    let back = load_private_key_file(&again.private_key, None, LoadOptions::default()).unwrap();
    assert_eq!(back.public_key(), other.public_key());
    assert_eq!(mode(&again.private_key), 0o600);
    assert_eq!(mode(&again.public_key), 0o644);
}

#[test]
fn world_readable_key_refused_with_chmod_hint() {
    let dir = tempfile::tempdir().unwrap();
    let saved = save_key_pair(dir.path(), key(), None, false).unwrap();
    for m in [0o604, 0o640, 0o644, 0o660] {
        std::fs::set_permissions(&saved.private_key, std::fs::Permissions::from_mode(m)).unwrap();
        let err =
            load_private_key_file(&saved.private_key, None, LoadOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(msg.contains(&format!("{m:04o}")), "{msg}");
    }
    std::fs::set_permissions(&saved.private_key, std::fs::Permissions::from_mode(0o400)).unwrap();
    load_private_key_file(&saved.private_key, None, LoadOptions::default()).unwrap();
}

#[test]
fn write_new_never_replaces_and_leaves_no_temporary_file() {
    use nomyo_core::keys::{check_secret_file_permissions, write_new};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.key");
    // Racing writers: exactly one wins, the file holds all of its bytes.
    let winners: Vec<_> = (0..8u8)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || write_new(&path, &[i; 4096], 0o600).is_ok().then_some(i))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![winners[0]; 4096]);
    assert_eq!(mode(&path), 0o600);
    let err = write_new(&path, b"other", 0o600).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![winners[0]; 4096]);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    // The permission check other key files use.
    check_secret_file_permissions(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let msg = check_secret_file_permissions(&path)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("0644") && msg.contains("chmod 600"), "{msg}");
}
