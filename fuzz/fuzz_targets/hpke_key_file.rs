//! The server's HPKE key file codec (`nomyo_core::v2::key_file`, what
//! `nomyo serve` reads from `KEY_DIR/hpke_keys.key` at start and on every
//! reload): never panics; what it accepts is one X25519 then one X-Wing key
//! with distinct ids, encodes again, and that encoding parses to the same
//! keys (same configs, same private keys) and is its own encoding; what it
//! refuses gets a one-line message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_core::v2::key_file;
use nomyo_core::v2::keys::Kem;

fuzz_target!(|data: &[u8]| {
    let keys = match key_file::parse(data) {
        Ok(keys) => keys,
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.is_empty() && msg.len() < 300 && !msg.contains('\n'),
                "{msg}"
            );
            return;
        }
    };
    assert_eq!(data.len(), key_file::MAGIC.len() + 2 * key_file::RECORD_LEN);
    assert_eq!((keys[0].kem(), keys[1].kem()), (Kem::X25519, Kem::XWing));
    assert_ne!(keys[0].key_id(), keys[1].key_id());
    let encoded = key_file::encode(&keys).expect("what parses encodes");
    assert_eq!(encoded.len(), data.len());
    let again = key_file::parse(encoded.expose_secret()).expect("the encoding parses");
    for (a, b) in keys.iter().zip(&again) {
        assert_eq!(a.config(), b.config());
        assert_eq!(
            a.secret_bytes().expose_secret(),
            b.secret_bytes().expose_secret()
        );
    }
    let twice = key_file::encode(&again).expect("encodes again");
    assert_eq!(
        twice.expose_secret(),
        encoded.expose_secret(),
        "canonical after one round"
    );
});
