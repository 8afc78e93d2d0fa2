//! The verification policy file (`nomyo attest --policy FILE`): one TOML
//! file with a section per kind of evidence. `[tpm]` says which PCR values
//! are allowed; `[sev_snp]` and `[tdx]` which measurements, which TCB and
//! (SEV-SNP) which VMPL (docs/PROTOCOL.md §16.4).
//!
//! ```toml
//! [tpm.pcrs.sha256]
//! # each PCR listed must have one of its values
//! "0" = ["3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"]
//! "7" = ["65caf8dd1e0ea7a6347b635d2b379c93b9a1351edc2afc3ecda700e534eb3068"]
//!
//! [sev_snp]
//! measurements = ["<96 hex digits: a launch measurement>"]
//! min_tcb = { bootloader = 4, tee = 0, snp = 22, microcode = 213 }
//! vmpl = 0
//!
//! [tdx]
//! accepted_tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
//! [[tdx.measurements]]
//! mrtd = "<96 hex digits>"
//! rtmr1 = "<96 hex digits>"   # rtmr0 to rtmr3, each optional
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use nomyo_core::cvm::{SevSnpExpectations, SnpTcb, TdxExpectations, TdxMeasurement, TdxTcbStatus};
use nomyo_core::tpm::{HashAlg, PcrValues};
use serde::Deserialize;

/// A parsed policy file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Allowed PCR values: bank → PCR index → the values allowed.
    tpm_pcrs: BTreeMap<HashAlg, BTreeMap<u32, Vec<Vec<u8>>>>,
    /// `[sev_snp]`: what an SEV-SNP guest must match (the report data is
    /// set per check).
    sev_snp: SevSnpExpectations,
    /// `[tdx]`: what a TD must match.
    tdx: TdxExpectations,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tpm: Option<TpmSection>,
    #[serde(default)]
    sev_snp: Option<SevSnpSection>,
    #[serde(default)]
    tdx: Option<TdxSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SevSnpSection {
    #[serde(default)]
    measurements: Option<Vec<String>>,
    #[serde(default)]
    min_tcb: Option<SnpTcbSection>,
    #[serde(default)]
    vmpl: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnpTcbSection {
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
    #[serde(default)]
    fmc: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TdxSection {
    #[serde(default)]
    accepted_tcb_statuses: Option<Vec<String>>,
    #[serde(default)]
    measurements: Option<Vec<TdxMeasurementSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TdxMeasurementSection {
    mrtd: String,
    #[serde(default)]
    rtmr0: Option<String>,
    #[serde(default)]
    rtmr1: Option<String>,
    #[serde(default)]
    rtmr2: Option<String>,
    #[serde(default)]
    rtmr3: Option<String>,
}

/// 48 bytes from 96 hex digits, or an error naming `place`.
fn digest48(place: &str, text: &str) -> Result<[u8; 48], String> {
    hex::decode(text.trim())
        .ok()
        .and_then(|d| <[u8; 48]>::try_from(d).ok())
        .ok_or_else(|| format!("{place}: a value is not 96 hex digits (48 bytes)"))
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
        let mut sev_snp = SevSnpExpectations::default();
        if let Some(section) = file.sev_snp {
            if let Some(list) = section.measurements {
                sev_snp.measurements = Some(
                    list.iter()
                        .map(|m| digest48("[sev_snp] measurements", m))
                        .collect::<Result<_, _>>()?,
                );
            }
            sev_snp.min_tcb = section.min_tcb.map(|t| SnpTcb {
                bootloader: t.bootloader,
                tee: t.tee,
                snp: t.snp,
                microcode: t.microcode,
                fmc: t.fmc,
            });
            sev_snp.vmpl = section.vmpl;
            if sev_snp.vmpl.is_some_and(|v| v > 3) {
                return Err("[sev_snp] vmpl: a VMPL is 0 to 3".into());
            }
        }
        let mut tdx = TdxExpectations::default();
        if let Some(section) = file.tdx {
            if let Some(names) = section.accepted_tcb_statuses {
                let mut statuses = Vec::with_capacity(names.len());
                for name in &names {
                    let status: TdxTcbStatus = name.parse().map_err(|e| {
                        format!(
                            "[tdx] accepted_tcb_statuses: {e} (known: {})",
                            TdxTcbStatus::ALL.map(|s| s.name()).join(", ")
                        )
                    })?;
                    if status == TdxTcbStatus::Revoked {
                        return Err("[tdx] accepted_tcb_statuses: Revoked is never accepted".into());
                    }
                    statuses.push(status);
                }
                if statuses.is_empty() {
                    return Err("[tdx] accepted_tcb_statuses: no status is accepted".into());
                }
                tdx.accepted_tcb_statuses = statuses;
            }
            if let Some(list) = section.measurements {
                let mut out = Vec::with_capacity(list.len());
                for m in list {
                    let rtmr = |i: usize, v: &Option<String>| {
                        v.as_deref()
                            .map(|v| digest48(&format!("[[tdx.measurements]] rtmr{i}"), v))
                            .transpose()
                    };
                    out.push(TdxMeasurement {
                        mrtd: digest48("[[tdx.measurements]] mrtd", &m.mrtd)?,
                        rtmr: [
                            rtmr(0, &m.rtmr0)?,
                            rtmr(1, &m.rtmr1)?,
                            rtmr(2, &m.rtmr2)?,
                            rtmr(3, &m.rtmr3)?,
                        ],
                    });
                }
                tdx.measurements = Some(out);
            }
        }
        Ok(Self {
            tpm_pcrs,
            sev_snp,
            tdx,
        })
    }

    /// What an SEV-SNP report must match: the `[sev_snp]` rules and the
    /// given report data (the binding; `None` leaves it not requested).
    pub fn sev_snp_expectations(&self, report_data: Option<[u8; 64]>) -> SevSnpExpectations {
        SevSnpExpectations {
            report_data,
            ..self.sev_snp.clone()
        }
    }

    /// What a TDX quote must match: the `[tdx]` rules (accepted TCB
    /// statuses: `UpToDate` unless the policy lists others) and the given
    /// report data.
    pub fn tdx_expectations(&self, report_data: Option<[u8; 64]>) -> TdxExpectations {
        TdxExpectations {
            report_data,
            ..self.tdx.clone()
        }
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

    #[test]
    fn sev_snp_and_tdx_sections_become_expectations() {
        let m = "ab".repeat(48);
        let p = Policy::parse(&format!(
            "[sev_snp]\nmeasurements = [\"{m}\"]\nmin_tcb = {{ bootloader = 4, tee = 0, snp = 22, microcode = 213, fmc = 1 }}\nvmpl = 0\n\
             [tdx]\naccepted_tcb_statuses = [\"UpToDate\", \"OutOfDate\"]\n\
             [[tdx.measurements]]\nmrtd = \"{m}\"\nrtmr2 = \"{}\"\n",
            "cd".repeat(48)
        ))
        .unwrap();
        let e = p.sev_snp_expectations(Some([7; 64]));
        assert_eq!(e.report_data, Some([7; 64]));
        assert_eq!(e.measurements, Some(vec![[0xab; 48]]));
        assert_eq!(e.vmpl, Some(0));
        let tcb = e.min_tcb.unwrap();
        assert_eq!(
            (tcb.bootloader, tcb.snp, tcb.microcode, tcb.fmc),
            (4, 22, 213, Some(1))
        );
        let t = p.tdx_expectations(None);
        assert_eq!(
            t.accepted_tcb_statuses,
            [TdxTcbStatus::UpToDate, TdxTcbStatus::OutOfDate]
        );
        let ms = t.measurements.unwrap();
        assert_eq!(ms[0].mrtd, [0xab; 48]);
        assert_eq!(ms[0].rtmr, [None, None, Some([0xcd; 48]), None]);
        // Without the sections: authenticity only, and an up-to-date TD.
        let none = Policy::parse("").unwrap();
        assert_eq!(
            none.sev_snp_expectations(None),
            SevSnpExpectations::default()
        );
        assert_eq!(none.tdx_expectations(None), TdxExpectations::default());
    }

    #[test]
    fn malformed_cvm_sections_are_refused_with_the_place() {
        for (text, want) in [
            (
                "[sev_snp]\nmeasurements = [\"abcd\"]",
                "[sev_snp] measurements: a value is not 96 hex",
            ),
            ("[sev_snp]\nmin_tcb = { bootloader = 1 }", "missing field"),
            (
                "[sev_snp]\nmin_tcb = { bootloader = 300, tee = 0, snp = 0, microcode = 0 }",
                "",
            ),
            ("[sev_snp]\nvmpl = 4", "VMPL is 0 to 3"),
            ("[sev_snp]\nmeasurment = []", "unknown field"),
            (
                "[tdx]\naccepted_tcb_statuses = [\"Fine\"]",
                "unknown TCB status",
            ),
            (
                "[tdx]\naccepted_tcb_statuses = [\"Revoked\"]",
                "never accepted",
            ),
            ("[tdx]\naccepted_tcb_statuses = []", "no status"),
            (
                "[[tdx.measurements]]\nrtmr0 = \"00\"",
                "missing field `mrtd`",
            ),
            (
                "[[tdx.measurements]]\nmrtd = \"00\"",
                "mrtd: a value is not 96 hex",
            ),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
