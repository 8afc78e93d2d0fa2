//! The verification policy file (`nomyo attest --policy FILE`): one TOML
//! file with a section per kind of evidence; `[tpm]` says which PCR values
//! are allowed.
//!
//! ```toml
//! [tpm.pcrs.sha256]
//! # each PCR listed must have one of its values
//! "0" = ["3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"]
//! "7" = ["65caf8dd1e0ea7a6347b635d2b379c93b9a1351edc2afc3ecda700e534eb3068"]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use nomyo_core::tpm::{HashAlg, PcrValues};
use serde::Deserialize;

/// A parsed policy file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Allowed PCR values: bank → PCR index → the values allowed.
    tpm_pcrs: BTreeMap<HashAlg, BTreeMap<u32, Vec<Vec<u8>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tpm: Option<TpmSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TpmSection {
    #[serde(default)]
    pcrs: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Policy {
    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the policy file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("the policy file {}: {e}", path.display()))
    }

    /// Parses a policy's TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut tpm_pcrs = BTreeMap::new();
        for (bank, pcrs) in file.tpm.map(|t| t.pcrs).unwrap_or_default() {
            let alg = HashAlg::from_name(&bank)
                .ok_or_else(|| format!("[tpm.pcrs.{bank}]: unknown PCR bank"))?;
            let mut out = BTreeMap::new();
            for (index, values) in pcrs {
                let i: u32 = index.parse().ok().filter(|i| *i < 24).ok_or_else(|| {
                    format!("[tpm.pcrs.{bank}]: \"{index}\" is not a PCR (0 to 23)")
                })?;
                if values.is_empty() {
                    return Err(format!("[tpm.pcrs.{bank}] PCR {i}: no value is allowed"));
                }
                let mut decoded = Vec::with_capacity(values.len());
                for v in values {
                    let d = hex::decode(v.trim())
                        .ok()
                        .filter(|d| d.len() == alg.digest_len())
                        .ok_or_else(|| {
                            format!(
                                "[tpm.pcrs.{bank}] PCR {i}: a value is not {} hex digits",
                                alg.digest_len() * 2
                            )
                        })?;
                    decoded.push(d);
                }
                out.insert(i, decoded);
            }
            tpm_pcrs.insert(alg, out);
        }
        Ok(Self { tpm_pcrs })
    }

    /// Whether the policy says anything about TPM PCRs.
    pub fn has_tpm_rules(&self) -> bool {
        self.tpm_pcrs.values().any(|p| !p.is_empty())
    }

    /// Checks quoted PCR values (already verified against the quote's
    /// digest) against the `[tpm]` rules: every PCR the policy lists must be
    /// quoted and have an allowed value.
    pub(crate) fn check_tpm(&self, quoted: &PcrValues) -> Result<String, String> {
        let mut checked = 0;
        for (alg, rules) in &self.tpm_pcrs {
            for (index, allowed) in rules {
                let value = quoted
                    .get(alg)
                    .and_then(|b| b.get(index))
                    .ok_or_else(|| format!("PCR {}:{index} is not quoted", alg.name()))?;
                if !allowed.contains(value) {
                    return Err(format!(
                        "PCR {}:{index} is {}, which the policy does not allow",
                        alg.name(),
                        hex::encode(value)
                    ));
                }
                checked += 1;
            }
        }
        Ok(format!("{checked} PCR value(s) allowed by the policy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn quoted(v0: u8) -> PcrValues {
        let mut bank = BTreeMap::new();
        bank.insert(0, vec![v0; 32]);
        bank.insert(7, vec![7; 32]);
        PcrValues::from([(HashAlg::Sha256, bank)])
    }

    #[test]
    fn allowed_values_pass_and_others_fail() {
        let p = Policy::parse(&format!(
            "[tpm.pcrs.sha256]\n\"0\" = [\"{ZERO}\", \"{}\"]\n",
            "01".repeat(32)
        ))
        .unwrap();
        assert!(p.has_tpm_rules());
        assert!(p.check_tpm(&quoted(0)).is_ok());
        assert!(p.check_tpm(&quoted(1)).is_ok());
        let e = p.check_tpm(&quoted(2)).unwrap_err();
        assert!(
            e.contains("PCR sha256:0") && e.contains("does not allow"),
            "{e}"
        );
        // A listed PCR that is not quoted fails.
        let p = Policy::parse(&format!("[tpm.pcrs.sha256]\n\"10\" = [\"{ZERO}\"]\n")).unwrap();
        assert!(p.check_tpm(&quoted(0)).unwrap_err().contains("not quoted"));
    }

    #[test]
    fn malformed_policies_are_refused_with_the_place() {
        for (text, want) in [
            ("[tpm.pcrs.md5]\n\"0\" = []", "unknown PCR bank"),
            ("[tpm.pcrs.sha256]\n\"x\" = []", "is not a PCR"),
            ("[tpm.pcrs.sha256]\n\"24\" = []", "is not a PCR"),
            ("[tpm.pcrs.sha256]\n\"0\" = []", "no value"),
            ("[tpm.pcrs.sha256]\n\"0\" = [\"abcd\"]", "64 hex digits"),
            ("[tmp]\n", "unknown field"),
            ("not toml", ""),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(!Policy::parse("").unwrap().has_tpm_rules());
    }
}
