//! What the server's tests share: nomyo-testkit's server module (keys,
//! sealing, the backend and upstream doubles, the router in-process, the log
//! capture), and the TLS files only these tests use (their rcgen stays a
//! dev-dependency of this crate, out of the testkit's dependencies).

#![allow(clippy::unwrap_used)]

pub use nomyo_testkit::server::*;

/// A self-signed certificate for `localhost` and 127.0.0.1, written to
/// `dir` as `cert.pem` and `key.pem`: the files and the certificate's PEM.
pub fn self_signed_tls(dir: &std::path::Path) -> (nomyo_server::config::TlsFiles, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let files = nomyo_server::config::TlsFiles {
        cert: cert_path,
        key: key_path,
    };
    (files, cert.cert.pem())
}
