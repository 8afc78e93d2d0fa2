//! Known-answer tests against data made by an independent implementation,
//! Python `cryptography` (see `tests/vectors/gen_vectors.py`, which wrote
//! `keys.json` and `v1_packages.json`): Python-sealed v1 packages that Rust
//! must open field for field, and key files in every encoding the reference
//! client writes, with the fingerprints Python computes.
//!
//! The other direction (Rust seals, Python opens; `nomyo keygen` writes, Python
//! loads) runs live in `tests/python/test_core_interop.py`, because it needs a
//! Python interpreter at test time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use nomyo_core::keys::{load_private_key_file, LoadOptions, PrivateKey, PublicKey};
use nomyo_core::v1::{self, Package};
use nomyo_core::{Error, SecretString};
use serde_json::Value;

fn vectors(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vector file is JSON")
}

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {field} missing in {v}"))
}

fn password(v: &Value) -> Option<SecretString> {
    v["password"]
        .as_str()
        .map(|p| SecretString::from(p.to_owned()))
}

/// Loads a private key from `keys.json` by name.
fn key_by_name(name: &str) -> PrivateKey {
    let keys = vectors("keys.json");
    let k = keys["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key {name} in keys.json"));
    PrivateKey::from_pem(s(k, "private_pem"), password(k).as_ref(), name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn python_key_files_load_with_python_fingerprints() {
    let keys = vectors("keys.json");
    let keys = keys["keys"].as_array().expect("keys array");
    assert!(keys.len() >= 3, "too few key vectors");
    for k in keys {
        let name = s(k, "name");
        let key = PrivateKey::from_pem(s(k, "private_pem"), password(k).as_ref(), name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.bits() as u64, k["bits"].as_u64().unwrap(), "{name}");
        assert_eq!(
            key.public_key().fingerprint().to_string(),
            s(k, "fingerprint"),
            "{name}: fingerprint differs from Python's sha256(DER SPKI)"
        );
        // The PEM we would publish is byte-identical to Python's.
        assert_eq!(key.public_key().to_pem(), s(k, "public_pem"), "{name}");
        // And the public key file alone gives the same fingerprint.
        let public = PublicKey::from_pem(s(k, "public_pem")).unwrap();
        assert_eq!(&public, key.public_key(), "{name}");
        assert_eq!(public.fingerprint().to_string(), s(k, "fingerprint"));
        // X-Public-Key: our encoding equals urllib.parse.quote(pem), and we
        // decode Python's back to the same key.
        assert_eq!(
            v1::encode_public_key_header(s(k, "public_pem")),
            s(k, "x_public_key"),
            "{name}: X-Public-Key encoding differs from urllib.parse.quote"
        );
        assert_eq!(
            &v1::decode_public_key_header(s(k, "x_public_key")).unwrap(),
            key.public_key()
        );
        // The fingerprint round-trips through its string form.
        let fp: nomyo_core::Fingerprint = s(k, "fingerprint").parse().unwrap();
        assert_eq!(fp, key.public_key().fingerprint());
    }
}

/// What `BestAvailableEncryption` writes (the reference client with a
/// password): PBES2, PBKDF2-HMAC-SHA256 with 2048 iterations, AES-256-CBC.
/// If a future `cryptography` changes this, this test says so, and the
/// loader test above says whether we still read it.
#[test]
fn best_available_encryption_parameters_are_what_we_expect() {
    use der::Decode as _;
    let keys = vectors("keys.json");
    let k = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "rsa4096-pkcs8-best-available")
        .unwrap();
    let (label, doc) = der::SecretDocument::from_pem(s(k, "private_pem")).unwrap();
    assert_eq!(label, "ENCRYPTED PRIVATE KEY");
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes()).unwrap();
    let pkcs5::EncryptionScheme::Pbes2(params) = &info.encryption_algorithm else {
        panic!("not PBES2");
    };
    let kdf = params.kdf.pbkdf2().expect("PBKDF2");
    assert_eq!(kdf.prf, pkcs5::pbes2::Pbkdf2Prf::HmacWithSha256);
    assert_eq!(kdf.iteration_count, 2048);
    assert!(matches!(
        params.encryption,
        pkcs5::pbes2::EncryptionScheme::Aes256Cbc { .. }
    ));
}

#[test]
fn encrypted_python_key_needs_the_right_password() {
    let keys = vectors("keys.json");
    for k in keys["keys"].as_array().unwrap() {
        let Some(right) = k["password"].as_str() else {
            continue;
        };
        let name = s(k, "name");
        let pem = s(k, "private_pem");
        match PrivateKey::from_pem(pem, None, name) {
            Err(e @ Error::PasswordRequired(_)) => {
                assert!(e.is_security());
                assert!(e.to_string().contains("password"), "{e}");
            }
            other => panic!("{name} without password: {other:?}"),
        }
        let wrong = SecretString::from(format!("{right}x"));
        match PrivateKey::from_pem(pem, Some(&wrong), name) {
            Err(e @ Error::WrongPassword(_)) => {
                let msg = e.to_string();
                assert!(msg.contains("wrong password"), "{msg}");
                assert!(msg.contains(name), "message should name the key: {msg}");
                assert!(!msg.contains(right), "password leaked into: {msg}");
            }
            other => panic!("{name} with a wrong password: {other:?}"),
        }
        // The empty password is a wrong password too, not a panic.
        let empty = SecretString::from(String::new());
        assert!(matches!(
            PrivateKey::from_pem(pem, Some(&empty), name),
            Err(Error::WrongPassword(_))
        ));
    }
}

#[test]
fn python_keys_that_must_be_refused() {
    let keys = vectors("keys.json");
    let refused = keys["refused"].as_array().expect("refused array");
    assert!(refused.len() >= 4);
    for r in refused {
        let name = s(r, "name");
        let result = match s(r, "kind") {
            "public" => PublicKey::from_pem(s(r, "pem")).map(|_| ()),
            _ => PrivateKey::from_pem(s(r, "pem"), password(r).as_ref(), name).map(|_| ()),
        };
        let err = result.expect_err(name);
        let msg = err.to_string();
        match s(r, "error") {
            "KeyTooSmall" => {
                assert!(
                    matches!(
                        err,
                        Error::KeyTooSmall {
                            bits: 1024,
                            min: 2048
                        }
                    ),
                    "{name}: {err:?}"
                );
                assert!(msg.contains("1024") && msg.contains("2048"), "{msg}");
                assert!(err.is_security());
            }
            "Key" => {
                // Legacy "Proc-Type: 4,ENCRYPTED" PEM: refused with a way out.
                assert!(matches!(err, Error::Key(_)), "{name}: {err:?}");
                assert!(msg.contains("openssl pkcs8"), "{msg}");
            }
            other => panic!("unknown expectation {other}"),
        }
        if let Some(pw) = r["password"].as_str() {
            assert!(!msg.contains(pw), "password leaked into: {msg}");
        }
    }
}

#[test]
fn python_sealed_packages_open_field_for_field() {
    let v = vectors("v1_packages.json");
    let packages = v["packages"].as_array().expect("packages");
    assert!(packages.len() >= 5);
    for p in packages {
        let name = s(p, "name");
        let key = key_by_name(s(p, "key"));
        let wire = s(p, "package").as_bytes();
        let package = Package::from_json(wire).unwrap_or_else(|e| panic!("{name}: {e}"));

        assert_eq!(hex::encode(package.nonce), s(p, "nonce_hex"), "{name}");
        assert_eq!(hex::encode(package.tag), s(p, "tag_hex"), "{name}");
        assert_eq!(package.encrypted_key.len(), key.bits() / 8, "{name}");
        assert_eq!(package.payload_id.as_deref(), p["payload_id"].as_str());
        assert_eq!(package.processed_at, p["processed_at"].as_i64(), "{name}");

        let expected = B64.decode(s(p, "plaintext_b64")).unwrap();
        assert_eq!(package.ciphertext.len(), expected.len(), "{name}");
        let opened = v1::open(&package, &key).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(opened.expose_secret(), &expected[..], "{name}: plaintext");

        // Our serialisation of the same package parses back to it, and opens.
        let again = Package::from_json(&package.to_json()).unwrap();
        assert_eq!(again, package, "{name}");
        assert_eq!(
            v1::open(&again, &key).unwrap().expose_secret(),
            &expected[..]
        );
    }
}

#[test]
fn python_sealed_request_plaintext_is_the_chat_json() {
    // Not just bytes: the request vector is a chat request a server would parse.
    let v = vectors("v1_packages.json");
    let p = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "request-chat-to-4096")
        .unwrap();
    let key = key_by_name(s(p, "key"));
    assert_eq!(key.bits(), 4096);
    let opened = v1::open(
        &Package::from_json(s(p, "package").as_bytes()).unwrap(),
        &key,
    )
    .unwrap();
    let chat: Value = serde_json::from_slice(opened.expose_secret()).unwrap();
    assert_eq!(chat["model"], "Qwen/Qwen3-0.6B");
    assert_eq!(chat["messages"][0]["role"], "user");
    assert!(chat["messages"][0]["content"]
        .as_str()
        .unwrap()
        .ends_with("\u{e9}\u{4e2d}\u{1f600}"));
}

#[test]
fn python_package_for_another_key_is_decryption_failed() {
    let v = vectors("v1_packages.json");
    for p in v["wrong_key"].as_array().unwrap() {
        let key = key_by_name(s(p, "key"));
        let package = Package::from_json(s(p, "package").as_bytes()).unwrap();
        match v1::open(&package, &key) {
            Err(Error::DecryptionFailed) => {}
            other => panic!("{}: {other:?}", s(p, "name")),
        }
    }
    // A 4096-bit package offered to a 2048-bit key: the wrapped key has the
    // wrong (public) size, which is reported as malformed, not as an oracle.
    let p4096 = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "request-chat-to-4096")
        .unwrap();
    let package = Package::from_json(s(p4096, "package").as_bytes()).unwrap();
    let err = v1::open(&package, &key_by_name("rsa2048-pkcs8")).unwrap_err();
    assert!(matches!(err, Error::Malformed(_)), "{err:?}");
    assert!(err.to_string().contains("encrypted_aes_key"), "{err}");
}

#[test]
fn python_key_files_through_the_file_loader() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = vectors("keys.json");
    for k in keys["keys"].as_array().unwrap() {
        let name = s(k, "name");
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, s(k, "private_pem")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = load_private_key_file(&path, password(k).as_ref(), LoadOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            key.public_key().fingerprint().to_string(),
            s(k, "fingerprint")
        );
        // nomyo fingerprint's helper: same answer from the private key file.
        let public = nomyo_core::keys::public_key_of_pem_file(&path, password(k).as_ref()).unwrap();
        assert_eq!(public.fingerprint().to_string(), s(k, "fingerprint"));

        // Group-readable (as the reference client leaves a file between its
        // write and its chmod): refused, naming the fix.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err =
            load_private_key_file(&path, password(k).as_ref(), LoadOptions::default()).unwrap_err();
        assert!(
            matches!(err, Error::InsecurePermissions { mode: 0o640, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(err.is_security());
        // ... unless explicitly allowed.
        let opts = LoadOptions {
            allow_insecure_permissions: true,
        };
        load_private_key_file(&path, password(k).as_ref(), opts).unwrap();
    }
}
