//! Seeds for the v2 fuzz targets, in the layouts their doc comments give,
//! under the same fixed server keys the `ehbp_request` target uses.
use std::fs;
use std::path::Path;

use nomyo_core::v2::key_file;
use nomyo_core::v2::keys::{Kem, KeyConfig, ServerKeyPair};
use nomyo_core::v2::request::{RequestOpener, RequestSealer};

fn write(target: &str, name: &str, data: &[u8]) {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../seeds")
        .join(target);
    fs::create_dir_all(&d).expect("seed directory");
    fs::write(d.join(name), data).expect("seed file");
}

fn main() {
    let x = ServerKeyPair::from_secret_bytes(0, Kem::X25519, &[0x42; 32]).expect("x25519");
    let xw = ServerKeyPair::from_secret_bytes(1, Kem::XWing, &[0x43; 32]).expect("x-wing");
    write(
        "hpke_key_configs",
        "x25519-then-xwing",
        &KeyConfig::encode_list(&[x.config().clone(), xw.config().clone()]),
    );
    write("hpke_key_configs", "x25519-only", &x.config().encode());
    write("hpke_key_configs", "xwing-only", &xw.config().encode());
    let mut two = x.config().clone();
    two.suites.push((0x0001, 0x0001));
    write("hpke_key_configs", "x25519-two-suites", &two.encode());

    // hpke_key_file: the file these two keys make (the X25519 scalar
    // clamped), the same records in the wrong order, the header alone.
    let file = key_file::encode([&x, &xw]).expect("key file");
    let file = file.expose_secret();
    write("hpke_key_file", "x25519-then-xwing", file);
    let (head, records) = file.split_at(key_file::MAGIC.len());
    let (first, second) = records.split_at(key_file::RECORD_LEN);
    write(
        "hpke_key_file",
        "xwing-then-x25519",
        &[head, second, first].concat(),
    );
    write("hpke_key_file", "header-only", head);

    let body = br#"{"model":"m","messages":[{"role":"user","content":"hello fuzz"}],"stream":true}"#;
    let events = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "data: [DONE]\n\n",
    ];
    for (kem_sel, key, name) in [(0u8, &x, "x25519"), (1u8, &xw, "xwing")] {
        for (chunks, label) in [(1usize, "one-chunk"), (3, "three-chunks")] {
            // ehbp_request: selector | enc | framed request body.
            let (enc, mut sealer) = RequestSealer::new(key.config()).expect("sealer");
            let mut seed = vec![kem_sel];
            seed.extend_from_slice(&enc);
            for c in body.chunks(body.len().div_ceil(chunks)) {
                seed.extend_from_slice(&sealer.seal_chunk(c).expect("seal"));
            }
            write("ehbp_request", &format!("{name}-{label}"), &seed);

            // ehbp_frames: selector | exported secret | enc length (BE) | enc
            // | response nonce | framed response body.
            let opener = RequestOpener::new(key, &enc).expect("opener");
            let nonce = [0x5au8; 32];
            let mut response = opener.response_sealer(&nonce).expect("response sealer");
            let mut f = vec![kem_sel * 7 + chunks as u8];
            f.extend_from_slice(sealer.exported_secret().expect("export").expose_secret());
            f.extend_from_slice(&(enc.len() as u16).to_be_bytes());
            f.extend_from_slice(&enc);
            f.extend_from_slice(&nonce);
            for ev in events.iter().take(chunks.min(2)) {
                f.extend_from_slice(&response.seal_chunk(ev.as_bytes()).expect("seal"));
            }
            write("ehbp_frames", &format!("{name}-{label}"), &f);
        }
    }
    // Framing edge case: an empty enc, then only zero-length frames.
    write("ehbp_frames", "zero-length-frames", &[0u8; 1 + 32 + 2 + 40]);
}
