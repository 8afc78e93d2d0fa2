//! Every truncation, every single-byte deletion and every one-bit flip of
//! the wire bytes is refused.

use super::*;

#[test]
fn every_truncation_is_refused() {
    let (wire, _) = sealed();
    for n in 0..wire.len() {
        let err = Package::from_json(&wire[..n]).expect_err(&format!("prefix of {n} bytes parsed"));
        assert!(matches!(err, Error::Malformed(_)), "prefix {n}: {err:?}");
    }
    // The same for a package as Python lays it out (with spaces after ':' and ','),
    // from the known-answer vectors.
    let vectors: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/v1_packages.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let py = vectors["packages"][0]["package"]
        .as_str()
        .unwrap()
        .as_bytes();
    Package::from_json(py).unwrap();
    for n in 0..py.len() {
        assert!(
            Package::from_json(&py[..n]).is_err(),
            "python package prefix of {n} bytes parsed"
        );
    }
}

#[test]
fn every_single_byte_deletion_is_refused() {
    let (wire, _) = sealed();
    for i in 0..wire.len() {
        let mut w = wire.clone();
        w.remove(i);
        assert!(
            parse_and_open(&w).is_err(),
            "deleting byte {i} ({:?}) still opened",
            wire[i] as char
        );
    }
}

#[test]
fn every_one_bit_flip_is_refused() {
    let (wire, _) = sealed();
    for i in 0..wire.len() {
        for bit in [0x01u8, 0x20] {
            let mut w = wire.clone();
            w[i] ^= bit;
            match parse_and_open(&w) {
                Ok(_) => panic!(
                    "flipping bit {bit:#x} of byte {i} ({:?}) still opened",
                    wire[i] as char
                ),
                Err(
                    Error::DecryptionFailed
                    | Error::Malformed(_)
                    | Error::UnsupportedVersion { .. }
                    | Error::UnsupportedAlgorithm { .. },
                ) => {}
                Err(other) => panic!("byte {i}: unexpected error kind {other:?}"),
            }
        }
    }
}
