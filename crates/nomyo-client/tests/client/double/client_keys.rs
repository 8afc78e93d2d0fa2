//! The client's own key: generated once even for concurrent first
//! requests, password-protected key directories (never overwritten), an
//! empty directory given an encrypted key, explicit key files that must
//! match.

use std::time::Instant;

use nomyo_client::{Client, Error, KeySource, KnownServers, SecretString};
use nomyo_core::keys::{self, PrivateKey, RsaBits};

use super::{header_key, hello};
use crate::common::{shared_key, Double};

#[tokio::test]
async fn the_ephemeral_key_is_generated_once_even_concurrently() {
    let d = Double::start(shared_key(1)).await;
    let client = Client::builder()
        .base_url(d.url())
        .allow_http(true)
        .known_servers(KnownServers::Off)
        .build()
        .unwrap();
    let t = Instant::now();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.create(&hello()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    eprintln!(
        "6 concurrent first requests with RSA-4096 keygen: {:?}",
        t.elapsed()
    );
    let posts = d.posts();
    let k0 = header_key(&posts[0]);
    assert_eq!(k0.bits(), 4096);
    assert!(posts.iter().all(|p| header_key(p) == k0));
    assert_eq!(d.key_gets(), 1);
    assert_eq!(client.client_public_key().await.unwrap(), k0);
}

#[tokio::test]
async fn password_protected_key_directories_work_and_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::generate(RsaBits::B2048).unwrap();
    let pw = || SecretString::from("correct horse".to_owned());
    keys::save_key_pair(dir.path(), &key, Some(&pw()), false).unwrap();
    let private = std::fs::read(dir.path().join("private_key.pem")).unwrap();
    let public = std::fs::read(dir.path().join("public_key.pem")).unwrap();
    assert!(String::from_utf8_lossy(&private).contains("ENCRYPTED PRIVATE KEY"));

    let d = Double::start(shared_key(1)).await;
    let b = |password: Option<SecretString>| {
        Client::builder()
            .base_url(d.url())
            .allow_http(true)
            .known_servers(KnownServers::Off)
            .key_dir(dir.path(), password)
            .build()
            .unwrap()
    };
    let ok = b(Some(pw()));
    ok.create(&hello()).await.unwrap();
    assert_eq!(&header_key(&d.posts()[0]), key.public_key());

    let wrong = b(Some(SecretString::from("wrong".to_owned())));
    let e = wrong.create(&hello()).await.unwrap_err();
    assert!(
        matches!(&e, Error::ClientKey(nomyo_core::Error::WrongPassword(_))) && e.is_security(),
        "{e:?}"
    );
    assert!(!e.to_string().contains("wrong\""), "{e}");
    let none = b(None);
    let e = none.create(&hello()).await.unwrap_err();
    assert!(
        matches!(&e, Error::ClientKey(nomyo_core::Error::PasswordRequired(_))),
        "{e:?}"
    );
    assert!(e.to_string().contains("password"), "{e}");

    assert_eq!(d.posts().len(), 1, "no request without a usable key");
    assert_eq!(
        std::fs::read(dir.path().join("private_key.pem")).unwrap(),
        private
    );
    assert_eq!(
        std::fs::read(dir.path().join("public_key.pem")).unwrap(),
        public
    );
}

#[tokio::test]
async fn an_empty_key_directory_gets_an_encrypted_key_that_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let kd = dir.path().join("client_keys");
    let d = Double::start(shared_key(1)).await;
    let b = || {
        Client::builder()
            .base_url(d.url())
            .allow_http(true)
            .known_servers(KnownServers::Off)
            .key_dir(&kd, Some(SecretString::from("pw".to_owned())))
            .build()
            .unwrap()
    };
    b().create(&hello()).await.unwrap();
    let pem = std::fs::read_to_string(kd.join("private_key.pem")).unwrap();
    assert!(pem.contains("ENCRYPTED PRIVATE KEY"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kd.join("private_key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    b().create(&hello()).await.unwrap();
    let posts = d.posts();
    assert_eq!(header_key(&posts[0]), header_key(&posts[1]));
    assert_eq!(header_key(&posts[0]).bits(), 4096);
    assert_eq!(
        std::fs::read_to_string(kd.join("private_key.pem")).unwrap(),
        pem
    );
}

#[tokio::test]
async fn explicit_key_files_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let a = PrivateKey::generate(RsaBits::B2048).unwrap();
    let saved = keys::save_key_pair(dir.path(), &a, None, false).unwrap();
    let other = tempfile::tempdir().unwrap();
    let b = PrivateKey::generate(RsaBits::B2048).unwrap();
    let other_saved = keys::save_key_pair(other.path(), &b, None, false).unwrap();
    let d = Double::start(shared_key(1)).await;
    let client = |public| {
        Client::builder()
            .base_url(d.url())
            .allow_http(true)
            .known_servers(KnownServers::Off)
            .key_source(KeySource::Files {
                private_key: saved.private_key.clone(),
                public_key: Some(public),
                password: None,
            })
            .build()
            .unwrap()
    };
    client(saved.public_key.clone())
        .create(&hello())
        .await
        .unwrap();
    let e = client(other_saved.public_key.clone())
        .create(&hello())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
}
