//! The downgrade guard: a changed version or algorithm name is
//! `Unsupported*` naming what was expected; absent optional names are fine.

use super::*;

#[test]
fn version_is_the_downgrade_guard() {
    let (_, v) = sealed();
    for bad in ["1.1", "0.9", "2.0", "1", "1.0 ", " 1.0", "", "v1"] {
        let msg = expect(
            &format!("version {bad:?}"),
            &with(&v, |v| v["version"] = json!(bad)),
            Want::Version,
        );
        assert!(msg.contains("expected '1.0'"), "{msg}");
    }
    for bad in [json!(1.0), json!(null), json!(["1.0"]), json!({"v": "1.0"})] {
        expect(
            &format!("version {bad}"),
            &with(&v, |v| v["version"] = bad.clone()),
            Want::Malformed,
        );
    }
    let msg = expect(
        "version missing",
        &with(&v, |v| {
            v.as_object_mut().unwrap().remove("version");
        }),
        Want::Malformed,
    );
    assert!(msg.contains("version"), "{msg}");
    // An attacker-sized version string is echoed truncated and without
    // control characters.
    let long = format!("\u{1b}[31m{}", "9".repeat(10_000));
    let msg = expect(
        "long version",
        &with(&v, |v| v["version"] = json!(long)),
        Want::Version,
    );
    assert!(msg.len() < 200, "{msg}");
    assert!(!msg.contains('\u{1b}'), "{msg:?}");
}

#[test]
fn algorithms_are_the_downgrade_guard() {
    let (_, v) = sealed();
    let cases = [
        (
            "algorithm",
            "hybrid-aes128-rsa2048",
            "hybrid-aes256-rsa4096",
        ),
        (
            "algorithm",
            "HYBRID-AES256-RSA4096",
            "hybrid-aes256-rsa4096",
        ),
        ("algorithm", "none", "hybrid-aes256-rsa4096"),
        ("key_algorithm", "RSA-OAEP-SHA1", "RSA-OAEP-SHA256"),
        ("key_algorithm", "RSA-PKCS1v15", "RSA-OAEP-SHA256"),
        ("payload_algorithm", "AES-128-GCM", "AES-256-GCM"),
        ("payload_algorithm", "AES-256-CBC", "AES-256-GCM"),
        ("payload_algorithm", "", "AES-256-GCM"),
    ];
    for (field, bad, expected) in cases {
        let msg = expect(
            &format!("{field} {bad:?}"),
            &with(&v, |v| v[field] = json!(bad)),
            Want::Algorithm,
        );
        assert!(msg.contains(field), "{msg}");
        assert!(msg.contains(&format!("expected '{expected}'")), "{msg}");
    }
    expect(
        "algorithm missing",
        &with(&v, |v| {
            v.as_object_mut().unwrap().remove("algorithm");
        }),
        Want::Malformed,
    );
}

#[test]
fn optional_algorithm_names_may_be_absent() {
    // The reference client's response check requires only version,
    // algorithm, encrypted_payload and encrypted_aes_key, so a package
    // without key_algorithm/payload_algorithm is valid v1.
    let (_, v) = sealed();
    let bytes = with(&v, |v| {
        let o = v.as_object_mut().unwrap();
        o.remove("key_algorithm");
        o.remove("payload_algorithm");
    });
    assert_eq!(parse_and_open(&bytes).unwrap(), PLAINTEXT);
}
