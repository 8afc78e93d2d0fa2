//! Package::from_json never panics, and whatever it accepts serialises back
//! to a package that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nomyo_core::v1::Package;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Package::from_json(data) {
        let again = Package::from_json(&p.to_json()).expect("our own serialisation parses");
        assert_eq!(again, p);
    }
});
