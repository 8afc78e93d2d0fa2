//! A quote's collateral (TCB info, QE identity, CRLs): reading it and the
//! span of time in which it is current.

use dcap_qvl::QuoteCollateralV3;
use serde::Deserialize;
use x509_cert::der::Decode;

use super::super::sev_snp::one_line;
use super::super::CvmError;
use super::rfc3339::rfc3339_utc;

/// The collateral of a quote: TCB info, QE identity, the PCK and root CRLs
/// and their issuer chains, as fetched from Intel's PCS or a PCCS.
#[derive(Clone, Debug)]
pub struct TdxCollateral {
    pub(super) inner: QuoteCollateralV3,
}

impl TdxCollateral {
    /// Reads the JSON layout `dcap-qvl` uses (and its sample files): an
    /// object with `pck_crl_issuer_chain`, `root_ca_crl` (hex DER),
    /// `pck_crl` (hex DER), `tcb_info_issuer_chain` (PEM), `tcb_info` (the
    /// signed JSON text), `tcb_info_signature` (hex), `qe_identity_issuer_chain`,
    /// `qe_identity`, `qe_identity_signature`, and optionally
    /// `pck_certificate_chain`.
    pub fn from_json(json: &[u8]) -> Result<Self, CvmError> {
        serde_json::from_slice::<QuoteCollateralV3>(json)
            .map(|inner| Self { inner })
            .map_err(|e| CvmError::Collateral(one_line(&e.to_string())))
    }

    /// The span of time in which every dated part of the collateral is
    /// current, as unix seconds `(not_before, not_after)`: the latest
    /// `issueDate` / `thisUpdate` and the earliest `nextUpdate` of the TCB
    /// info, the QE identity and both CRLs. An error names the part whose
    /// date does not parse.
    pub fn validity(&self) -> Result<(u64, u64), String> {
        let c = &self.inner;
        let mut not_before = 0u64;
        let mut not_after = u64::MAX;
        for (what, json) in [("TCB info", &c.tcb_info), ("QE identity", &c.qe_identity)] {
            let (issue, next) = json_dates(json).map_err(|e| format!("{what}: {e}"))?;
            not_before = not_before.max(issue);
            not_after = not_after.min(next);
        }
        for (what, der) in [("root CA CRL", &c.root_ca_crl), ("PCK CRL", &c.pck_crl)] {
            let crl = x509_cert::crl::CertificateList::from_der(der)
                .map_err(|_| format!("{what}: not a DER CRL"))?;
            let this = crl.tbs_cert_list.this_update.to_unix_duration().as_secs();
            not_before = not_before.max(this);
            if let Some(next) = crl.tbs_cert_list.next_update {
                not_after = not_after.min(next.to_unix_duration().as_secs());
            }
        }
        Ok((not_before, not_after))
    }
}

/// `issueDate` and `nextUpdate` of a TCB info or QE identity document, unix
/// seconds.
fn json_dates(signed_json: &str) -> Result<(u64, u64), String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Dates {
        issue_date: String,
        next_update: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(alias = "tcbInfo", alias = "enclaveIdentity")]
        body: Option<Dates>,
    }
    // The signed text is the inner object ({"id":...}); some sources wrap
    // it ({"tcbInfo": {...}}).
    let dates = match serde_json::from_str::<Dates>(signed_json) {
        Ok(d) => d,
        Err(_) => serde_json::from_str::<Body>(signed_json)
            .ok()
            .and_then(|b| b.body)
            .ok_or_else(|| "no issueDate / nextUpdate".to_owned())?,
    };
    Ok((
        rfc3339_utc(&dates.issue_date)?,
        rfc3339_utc(&dates.next_update)?,
    ))
}

/// Parses a collateral JSON and, if it parses, its validity; for the fuzz
/// targets (bounded, never panics).
#[doc(hidden)]
pub fn fuzz_collateral(json: &[u8]) -> Option<Result<(u64, u64), String>> {
    TdxCollateral::from_json(json).ok().map(|c| c.validity())
}
