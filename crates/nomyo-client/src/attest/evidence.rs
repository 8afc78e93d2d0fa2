//! The attestation route's answer (docs/PROTOCOL.md §14.3), decoded, and
//! the qualifying data its quote must carry.

use std::collections::BTreeMap;

use base64::Engine as _;
use nomyo_core::tpm::{HashAlg, PcrValues};
use serde::Deserialize;

/// The JSON of `GET /.well-known/nomyo-attestation`, as sent.
#[derive(Deserialize)]
struct Wire {
    version: u32,
    ek_public_b64: String,
    #[serde(default)]
    ek_certificates_b64: Vec<String>,
    ak_public_b64: String,
    v1_key_fingerprint: String,
    #[serde(default)]
    v2_keys_b64: Option<String>,
    pcr_values: BTreeMap<String, BTreeMap<String, String>>,
    quote_b64: String,
    signature_b64: String,
}

/// The evidence, decoded: bytes where the wire has base64 or hex.
#[derive(Debug, Clone)]
pub(crate) struct Evidence {
    pub(crate) ek_public: Vec<u8>,
    pub(crate) ek_certificates: Vec<Vec<u8>>,
    pub(crate) ak_public: Vec<u8>,
    pub(crate) v1_key_fingerprint: String,
    pub(crate) v2_keys: Option<Vec<u8>>,
    pub(crate) pcr_values: PcrValues,
    pub(crate) quote: Vec<u8>,
    pub(crate) signature: Vec<u8>,
}

impl Evidence {
    /// Parses the route's body; the message says which field is wrong and
    /// never quotes the body.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        let wire: Wire = decode_answer(body, |w: &Wire| w.version)?;
        let mut ek_certificates = Vec::with_capacity(wire.ek_certificates_b64.len());
        for c in &wire.ek_certificates_b64 {
            ek_certificates.push(b64("ek_certificates_b64", c)?);
        }
        let pcr_values = pcr_values(&wire.pcr_values)?;
        Ok(Self {
            ek_public: b64("ek_public_b64", &wire.ek_public_b64)?,
            ek_certificates,
            ak_public: b64("ak_public_b64", &wire.ak_public_b64)?,
            v1_key_fingerprint: wire.v1_key_fingerprint,
            v2_keys: wire
                .v2_keys_b64
                .as_deref()
                .map(|v| b64("v2_keys_b64", v))
                .transpose()?,
            pcr_values,
            quote: b64("quote_b64", &wire.quote_b64)?,
            signature: b64("signature_b64", &wire.signature_b64)?,
        })
    }
}

/// Decodes the attestation route's JSON answer and checks its version
/// (1); the message names the place or the version, never the body.
pub(crate) fn decode_answer<T: serde::de::DeserializeOwned>(
    body: &[u8],
    version: impl Fn(&T) -> u32,
) -> Result<T, String> {
    let wire: T = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the attestation answer is not the documented JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    match version(&wire) {
        1 => Ok(wire),
        v => Err(format!(
            "the attestation answer has version {v}; this client knows version 1"
        )),
    }
}

/// A base64 field of the answer; the message names the field.
pub(crate) fn b64(field: &str, value: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|_| format!("the attestation answer's {field} is not base64"))
}

/// The wire's PCR values (bank name → index → hex) as [`PcrValues`].
pub(crate) fn pcr_values(
    wire: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<PcrValues, String> {
    let mut out = PcrValues::new();
    for (bank, values) in wire {
        let alg = HashAlg::from_name(bank)
            .ok_or_else(|| "the attestation names an unknown PCR bank".to_owned())?;
        let mut bank_values = BTreeMap::new();
        for (index, value) in values {
            let index: u32 = index
                .parse()
                .map_err(|_| "the attestation has a PCR index that is not a number")?;
            let value = hex::decode(value)
                .map_err(|_| "the attestation has a PCR value that is not hex")?;
            bank_values.insert(index, value);
        }
        out.insert(alg, bank_values);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(version: u32) -> String {
        format!(
            r#"{{"version":{version},"ek_public_b64":"AAE=","ek_certificates_b64":["MAA="],
            "ak_public_b64":"AAI=","ak_fingerprint":"sha256:00","v1_key_fingerprint":"sha256:11",
            "v2_keys_b64":"AAM=","pcr_banks":"sha256:0","pcr_values":{{"sha256":{{"0":"00ff"}}}},
            "quote_b64":"AAQ=","signature_b64":"AAU="}}"#
        )
    }

    #[test]
    fn the_documented_answer_decodes() {
        let e = Evidence::parse(body(1).as_bytes()).unwrap();
        assert_eq!(e.ek_public, [0, 1]);
        assert_eq!(e.ek_certificates, [vec![0x30, 0]]);
        assert_eq!(e.v2_keys.as_deref(), Some(&[0u8, 3][..]));
        assert_eq!(e.pcr_values[&HashAlg::Sha256][&0], [0, 0xff]);
        assert_eq!(e.quote, [0, 4]);
    }

    #[test]
    fn bad_answers_are_refused_without_echoing_them() {
        assert!(Evidence::parse(body(2).as_bytes())
            .unwrap_err()
            .contains("version 2"));
        let e = Evidence::parse(b"{\"secret words\": 1}").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        let bad = body(1).replace("\"AAQ=\"", "\"not base64!\"");
        assert!(Evidence::parse(bad.as_bytes())
            .unwrap_err()
            .contains("quote_b64"));
        let bad = body(1).replace("\"00ff\"", "\"zz\"");
        assert!(Evidence::parse(bad.as_bytes()).unwrap_err().contains("hex"));
        let bad = body(1).replace("{\"sha256\"", "{\"md5\"");
        assert!(Evidence::parse(bad.as_bytes())
            .unwrap_err()
            .contains("PCR bank"));
    }
}
