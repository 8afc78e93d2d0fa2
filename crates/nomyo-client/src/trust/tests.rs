//! Tests of the known-servers file and the trust decisions.

use std::fs;

use super::*;
use nomyo_core::v2::keys::Kem;

fn fp(b: u8) -> Fingerprint {
    Fingerprint([b; 32])
}

fn recording(file: &Path) -> Trust {
    Trust {
        pins: vec![],
        known: Some(file.to_owned()),
    }
}

#[test]
fn first_use_then_known_then_changed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/known_servers");
    let t = recording(&file);
    assert_eq!(
        t.verify("https://a.example", fp(1)).unwrap(),
        TrustDecision::FirstUse { file: file.clone() }
    );
    assert_eq!(
        t.verify("https://a.example", fp(1)).unwrap(),
        TrustDecision::Known { file: file.clone() }
    );
    // Another origin is independent.
    assert!(matches!(
        t.verify("https://b.example", fp(2)).unwrap(),
        TrustDecision::FirstUse { .. }
    ));
    let before = fs::read_to_string(&file).unwrap();
    assert_eq!(
        before,
        format!(
            "{FORMAT_HEADER}\n{FORMAT_HELP}\nhttps://a.example v1={}\nhttps://b.example v1={}\n",
            fp(1),
            fp(2)
        )
    );
    match t.verify("https://a.example", fp(3)) {
        Err(e @ Error::ServerKeyChanged { .. }) => {
            let Error::ServerKeyChanged {
                known, found, line, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*known, *found, *line), (fp(1), fp(3), 3));
            assert!(
                e.to_string()
                    .contains(&format!("delete line 3 of {}", file.display())),
                "{e}"
            );
        }
        other => panic!("expected a key change, got {other:?}"),
    }
    // A changed key is never recorded.
    assert_eq!(fs::read_to_string(&file).unwrap(), before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

/// A file of the earlier format (one `ORIGIN sha256:FP` line per key,
/// `ORIGIN#v2-KEM` for unsigned v2 configs, comments, no final newline)
/// loads as it did, and is rewritten in the v2 format at the next change,
/// comments kept and each server's keys on one line.
#[test]
fn a_file_in_the_earlier_format_loads_and_is_rewritten_as_v2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ks");
    fs::write(
        &file,
        format!(
            "# comment\n\nhttps://a.example {}\nhttps://a.example {}\nhttps://e.example#v2-x-wing {}",
            fp(1),
            fp(2),
            fp(7)
        ),
    )
    .unwrap();
    let t = recording(&file);
    assert!(matches!(
        t.verify("https://a.example", fp(2)).unwrap(),
        TrustDecision::Known { .. }
    ));
    assert!(matches!(
        t.verify_unsigned_v2("https://e.example", Kem::XWing, fp(7), false)
            .unwrap(),
        TrustDecision::Known { .. }
    ));
    match t.verify("https://a.example", fp(9)).unwrap_err() {
        Error::ServerKeyChanged { line, .. } => assert_eq!(line, 3),
        other => panic!("{other:?}"),
    }
    // Reading changed nothing.
    assert!(fs::read_to_string(&file)
        .unwrap()
        .starts_with("# comment\n"));
    t.verify("https://c.example", fp(5)).unwrap();
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!(
            "{FORMAT_HEADER}\n{FORMAT_HELP}\n# comment\n\nhttps://a.example v1={} v1={}\nhttps://e.example v2=unsigned v2-key=x-wing:{}\nhttps://c.example v1={}\n",
            fp(1),
            fp(2),
            fp(7),
            fp(5)
        )
    );
    // ... and reads back the same.
    assert!(matches!(
        t.verify("https://a.example", fp(1)).unwrap(),
        TrustDecision::Known { .. }
    ));
}

/// Fields a later version adds are kept through a rewrite; a file of a
/// later format is refused, not misread.
#[test]
fn unknown_fields_survive_and_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ks");
    fs::write(
        &file,
        format!(
            "{FORMAT_HEADER}\nhttps://a.example v1={} attest=tdx:sha256:00 v2=signed\n",
            fp(1)
        ),
    )
    .unwrap();
    let t = recording(&file);
    assert!(t.take_v1_warning("https://a.example").unwrap());
    assert!(!t.take_v1_warning("https://a.example").unwrap());
    let text = fs::read_to_string(&file).unwrap();
    assert!(
        text.ends_with(&format!(
            "https://a.example v1={} v2=signed warned=v1 attest=tdx:sha256:00\n",
            fp(1)
        )),
        "{text}"
    );
    fs::write(&file, "# nomyo known-servers v3\nhttps://a.example x\n").unwrap();
    let e = t.verify("https://a.example", fp(1)).unwrap_err();
    assert!(e.to_string().contains("newer nomyo"), "{e}");
}

#[test]
fn malformed_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ks");
    let t = recording(&file);
    for text in [
        "https://a.example sha256:zz\n".to_owned(),
        format!("{FORMAT_HEADER}\nhttps://a.example v1=sha256:zz\n"),
        format!("{FORMAT_HEADER}\nhttps://a.example v2=maybe\n"),
        format!("{FORMAT_HEADER}\nhttps://a.example v2-key=rsa:{}\n", fp(1)),
        format!("{FORMAT_HEADER}\nhttps://a.example bare\n"),
    ] {
        fs::write(&file, &text).unwrap();
        let e = t.verify("https://a.example", fp(1)).unwrap_err();
        assert!(e.to_string().contains("line "), "{text}: {e}");
        assert_eq!(fs::read_to_string(&file).unwrap(), text, "never rewritten");
    }
}

/// Two first contacts at once, each seeing another key (a middleman
/// answering one of them): exactly one key is recorded, and the other
/// contact is refused as a changed key. Before the file was locked both
/// were appended.
#[test]
fn two_first_uses_at_once_record_one_key() {
    for round in 0..20u8 {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_servers");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4u8)
            .map(|i| {
                let (file, barrier) = (file.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let t = recording(&file);
                    barrier.wait();
                    t.verify("https://race.example", fp(10 + i))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let first = results
            .iter()
            .filter(|r| matches!(r, Ok(TrustDecision::FirstUse { .. })))
            .count();
        let changed = results
            .iter()
            .filter(|r| matches!(r, Err(Error::ServerKeyChanged { .. })))
            .count();
        assert_eq!((first, changed), (1, 3), "round {round}: {results:?}");
        let text = fs::read_to_string(&file).unwrap();
        let keys = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.matches(" v1=").count())
            .sum::<usize>();
        assert_eq!(keys, 1, "round {round}: {text}");
    }
}

#[test]
fn unsigned_v2_lists_are_refused_for_a_server_known_to_sign() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ks");
    let t = recording(&file);
    // Unknown server: trusted on first use, then known, then changed.
    assert!(matches!(
        t.verify_unsigned_v2("https://e.example", Kem::XWing, fp(1), false)
            .unwrap(),
        TrustDecision::FirstUse { .. }
    ));
    assert!(matches!(
        t.verify_unsigned_v2("https://e.example", Kem::XWing, fp(1), false)
            .unwrap(),
        TrustDecision::Known { .. }
    ));
    assert!(matches!(
        t.verify_unsigned_v2("https://e.example", Kem::XWing, fp(2), false),
        Err(Error::ServerKeyChanged { .. })
    ));
    // Its signing key would be new: refused.
    assert!(matches!(
        t.check_new_signer("https://e.example"),
        Err(Error::Downgrade {
            refused: Downgrade::NewSigningKey,
            ..
        })
    ));
    // A server with a recorded v1 key, or recorded as signing.
    t.verify("https://n.example", fp(3)).unwrap();
    let err = t
        .verify_unsigned_v2("https://n.example", Kem::XWing, fp(4), false)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Downgrade {
                refused: Downgrade::UnsignedKeyList,
                known_by: KnownBy::Record { line: 4, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_security());
    assert!(err.to_string().contains("delete line 4 of"), "{err}");
    t.record_signed_v2("https://s.example").unwrap();
    assert!(t.check_no_v2("https://s.example").is_err());
    assert!(t.check_no_v2("https://n.example").is_ok());
    assert!(t
        .verify_unsigned_v2("https://s.example", Kem::X25519, fp(5), false)
        .is_err());
    // A pinned server is a known one: auto does not fall back to v1
    // when its key list answers 404.
    let pinned = Trust {
        pins: vec![fp(7)],
        known: None,
    };
    let err = pinned.check_no_v2("https://p.example").unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Downgrade {
                refused: Downgrade::NoV2Keys,
                known_by: KnownBy::Pin,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("--protocol v1"), "{err}");
    // Seen signed in this session: refused even with no record.
    let off = Trust {
        pins: vec![],
        known: None,
    };
    assert!(matches!(
        off.verify_unsigned_v2("https://x.example", Kem::XWing, fp(6), true),
        Err(Error::Downgrade {
            known_by: KnownBy::SignedListSeen,
            ..
        })
    ));
    // Under a v1 pin: refused; a pin of the config itself: accepted.
    let pinned = Trust {
        pins: vec![fp(3)],
        known: None,
    };
    assert!(matches!(
        pinned.verify_unsigned_v2("https://n.example", Kem::XWing, fp(4), false),
        Err(Error::Downgrade {
            known_by: KnownBy::Pin,
            ..
        })
    ));
    assert_eq!(
        pinned
            .verify_unsigned_v2("https://n.example", Kem::XWing, fp(3), false)
            .unwrap(),
        TrustDecision::Pinned
    );
}

#[test]
fn pins_take_precedence() {
    let t = Trust {
        pins: vec![fp(1), fp(2)],
        known: None,
    };
    assert_eq!(t.verify("https://a", fp(2)).unwrap(), TrustDecision::Pinned);
    assert!(matches!(
        t.verify("https://a", fp(3)),
        Err(Error::PinMismatch { .. })
    ));
    let off = Trust {
        pins: vec![],
        known: None,
    };
    assert_eq!(
        off.verify("https://a", fp(3)).unwrap(),
        TrustDecision::Unverified
    );
}

#[test]
fn list_and_remove_known_servers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_servers");
    assert!(list_known_servers(&file).unwrap().is_empty());
    assert!(!remove_known_server(&file, "https://a.example").unwrap());
    assert!(!file.exists(), "removal must not create the file");
    let t = recording(&file);
    t.verify("https://a.example", fp(1)).unwrap();
    t.verify("https://b.example:8443", fp(2)).unwrap();
    let listed = list_known_servers(&file).unwrap();
    let origins: Vec<&str> = listed.iter().map(|k| k.origin.as_str()).collect();
    assert_eq!(origins, ["https://a.example", "https://b.example:8443"]);
    assert_eq!(listed[1].fields, format!("v1={}", fp(2)));
    assert!(listed[0].line > 0);

    assert_eq!(origin_of("HTTPS://A.example:443/v1/"), "https://a.example");
    assert!(remove_known_server(&file, &origin_of("https://a.example/")).unwrap());
    assert!(!remove_known_server(&file, "https://a.example").unwrap());
    let listed = list_known_servers(&file).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].origin, "https://b.example:8443");
    // Forgotten: the next contact is a first use again, with any key.
    assert!(matches!(
        t.verify("https://a.example", fp(9)).unwrap(),
        TrustDecision::FirstUse { .. }
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with(FORMAT_HEADER));
}

#[test]
fn attestation_keys_are_recorded_per_origin_beside_the_other_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("known_servers");
    let t = recording(&file);
    t.verify("https://a.example", fp(1)).unwrap();
    assert!(t.recorded_aks("https://a.example").unwrap().is_empty());
    // Two replicas' keys, each once.
    assert!(t.record_ak("https://a.example", fp(7)).unwrap());
    assert!(t.record_ak("https://a.example", fp(8)).unwrap());
    assert!(!t.record_ak("https://a.example", fp(7)).unwrap());
    assert_eq!(t.recorded_aks("https://a.example").unwrap(), [fp(7), fp(8)]);
    assert!(t.recorded_aks("https://b.example").unwrap().is_empty());
    let text = fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&format!(
            "https://a.example v1={} ak={} ak={}",
            fp(1),
            fp(7),
            fp(8)
        )),
        "{text}"
    );
    // The v1 key is still the one on record.
    assert_eq!(
        t.verify("https://a.example", fp(1)).unwrap(),
        TrustDecision::Known { file: file.clone() }
    );
    // A malformed ak field is an error, never skipped.
    fs::write(
        &file,
        format!("{FORMAT_HEADER}\nhttps://a.example ak=sha256:00\n"),
    )
    .unwrap();
    assert!(t.recorded_aks("https://a.example").is_err());
    // Without a file nothing is recorded.
    let off = Trust {
        pins: vec![fp(1)],
        known: None,
    };
    assert!(!off.record_ak("https://a.example", fp(7)).unwrap());
    assert!(off.recorded_aks("https://a.example").unwrap().is_empty());
}
