//! What AMD's certificates say beyond their keys (the VCEK's TCB and chip
//! id extensions) and the certificate table a host gives its guest.

use x509_cert::der::asn1::{Ia5String, OctetString};
use x509_cert::der::Decode;

use super::{one_line, SnpTcb};

/// What a VCEK/VLEK certificate says beyond its key: AMD's extensions
/// (OID arc 1.3.6.1.4.1.3704.1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VcekInfo {
    pub(crate) product_name: Option<String>,
    pub(crate) bootloader: Option<u8>,
    pub(crate) tee: Option<u8>,
    pub(crate) snp: Option<u8>,
    pub(crate) microcode: Option<u8>,
    pub(crate) fmc: Option<u8>,
    pub(crate) hw_id: Option<Vec<u8>>,
    pub(crate) subject_vlek: bool,
}

impl VcekInfo {
    /// Reads the extensions of a DER certificate. Errors for a certificate
    /// that does not parse or an AMD extension of the wrong shape.
    pub(crate) fn parse(der: &[u8]) -> Result<Self, String> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| format!("not DER X.509: {}", one_line(&e.to_string())))?;
        let mut info = VcekInfo {
            subject_vlek: cert
                .tbs_certificate
                .subject
                .to_string()
                .contains("SEV-VLEK"),
            ..VcekInfo::default()
        };
        let int = |v: &[u8], what: &str| -> Result<Option<u8>, String> {
            u8::from_der(v)
                .map(Some)
                .map_err(|_| format!("the {what} extension is not an INTEGER 0..255"))
        };
        for ext in cert.tbs_certificate.extensions.iter().flatten() {
            let v = ext.extn_value.as_bytes();
            match ext.extn_id.to_string().as_str() {
                "1.3.6.1.4.1.3704.1.2" => {
                    info.product_name = Ia5String::from_der(v)
                        .map(|s| s.to_string())
                        .ok()
                        .or_else(|| std::str::from_utf8(v).ok().map(str::to_owned));
                }
                "1.3.6.1.4.1.3704.1.3.1" => info.bootloader = int(v, "blSPL")?,
                "1.3.6.1.4.1.3704.1.3.2" => info.tee = int(v, "teeSPL")?,
                "1.3.6.1.4.1.3704.1.3.3" => info.snp = int(v, "snpSPL")?,
                "1.3.6.1.4.1.3704.1.3.8" => info.microcode = int(v, "ucodeSPL")?,
                "1.3.6.1.4.1.3704.1.3.9" => info.fmc = int(v, "fmcSPL")?,
                "1.3.6.1.4.1.3704.1.4" => {
                    // The 64-byte chip id, raw (AMD's VCEKs) or wrapped in
                    // an OCTET STRING.
                    info.hw_id = if v.len() == 64 {
                        Some(v.to_vec())
                    } else {
                        match OctetString::from_der(v) {
                            Ok(o) if o.as_bytes().len() == 64 => Some(o.as_bytes().to_vec()),
                            _ => return Err("the hwID extension is not 64 bytes".into()),
                        }
                    };
                }
                _ => {}
            }
        }
        Ok(info)
    }

    pub(super) fn tcb(&self) -> Option<SnpTcb> {
        Some(SnpTcb {
            bootloader: self.bootloader?,
            tee: self.tee?,
            snp: self.snp?,
            microcode: self.microcode?,
            fmc: self.fmc,
        })
    }

    pub(super) fn is_vlek(&self) -> bool {
        self.subject_vlek && self.hw_id.is_none()
    }

    pub(super) fn kind(&self) -> &'static str {
        if self.is_vlek() {
            "VLEK"
        } else {
            "VCEK"
        }
    }
}

/// The certificates of an SEV-SNP certificate table: the layout of the GHCB
/// extended guest request, which Linux's configfs-tsm returns as `auxblob`
/// for the `sev_guest` provider (PROTOCOL.md §15.1).
///
/// The table is a list of 24-byte entries (a GUID naming the certificate,
/// its offset from the table's start and its length, both `u32` little
/// endian) ended by an all-zero entry; the certificates (DER) follow. GUIDs
/// are accepted in RFC 4122 byte order and in the mixed-endian (UEFI)
/// order. Entries of other kinds (the CRL, unknown GUIDs) are skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnpCertTable {
    /// The ARK (DER).
    pub ark: Option<Vec<u8>>,
    /// The ASK, or for a VLEK the ASVK (DER).
    pub ask: Option<Vec<u8>>,
    /// The VCEK (DER).
    pub vcek: Option<Vec<u8>>,
    /// The VLEK (DER).
    pub vlek: Option<Vec<u8>>,
}

/// The most entries a table may have before its terminator.
const CERT_TABLE_MAX_ENTRIES: usize = 64;

impl SnpCertTable {
    /// Reads a certificate table. Errors (one line) for a table without its
    /// terminating entry, an entry pointing outside the table, or a kind of
    /// certificate given twice; never panics.
    pub fn parse(table: &[u8]) -> Result<Self, String> {
        const ARK: &str = "c0b406a4a803495297433fb6014cd0ae";
        const ASK: &str = "4ab7b379bbac4fe4a02f05aef327c782";
        const VCEK: &str = "63da758de6644564adc5f4b93be8accd";
        const VLEK: &str = "a8074bc2a25a483eaae639c045a0b8a1";
        let mut out = Self::default();
        for index in 0..=CERT_TABLE_MAX_ENTRIES {
            let entry = table.get(index * 24..index * 24 + 24).ok_or_else(|| {
                "the certificate table ends before its terminating entry".to_owned()
            })?;
            if entry.iter().all(|&b| b == 0) {
                return Ok(out);
            }
            if index == CERT_TABLE_MAX_ENTRIES {
                break;
            }
            let guid = &entry[..16];
            let word = |at: usize| {
                u32::from_le_bytes([entry[at], entry[at + 1], entry[at + 2], entry[at + 3]])
            };
            let (offset, length) = (word(16) as usize, word(20) as usize);
            let data = offset
                .checked_add(length)
                .and_then(|end| table.get(offset..end))
                .ok_or_else(|| {
                    format!("certificate table entry {index} points outside the table")
                })?;
            let slot = if guid_is(guid, ARK) {
                &mut out.ark
            } else if guid_is(guid, ASK) {
                &mut out.ask
            } else if guid_is(guid, VCEK) {
                &mut out.vcek
            } else if guid_is(guid, VLEK) {
                &mut out.vlek
            } else {
                continue;
            };
            if slot.is_some() {
                return Err(format!(
                    "certificate table entry {index} repeats a kind of certificate"
                ));
            }
            *slot = Some(data.to_vec());
        }
        Err(format!(
            "the certificate table has more than {CERT_TABLE_MAX_ENTRIES} entries"
        ))
    }

    /// The key that signs reports: the VLEK when there is one, else the
    /// VCEK. The `vcek_der` of [`verify_sev_snp`](super::verify_sev_snp).
    pub fn endorsement_key(&self) -> Option<&[u8]> {
        self.vlek.as_deref().or(self.vcek.as_deref())
    }

    /// The ASK (ASVK) then the ARK, PEM: the `chain_pem` of
    /// [`verify_sev_snp`](super::verify_sev_snp). `None` unless the table holds both.
    pub fn chain_pem(&self) -> Option<Vec<u8>> {
        let (ask, ark) = (self.ask.as_deref()?, self.ark.as_deref()?);
        let mut pem = String::new();
        for der in [ask, ark] {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                pem.push_str(std::str::from_utf8(line).unwrap_or_default());
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        Some(pem.into_bytes())
    }
}

/// Whether `guid` (16 bytes) is `hex32` in RFC 4122 byte order or in the
/// mixed-endian order (first three fields little endian).
fn guid_is(guid: &[u8], hex32: &str) -> bool {
    let Ok(rfc) = ::hex::decode(hex32) else {
        return false;
    };
    if guid == rfc.as_slice() {
        return true;
    }
    let mut mixed = rfc.clone();
    mixed[0..4].reverse();
    mixed[4..6].reverse();
    mixed[6..8].reverse();
    guid == mixed.as_slice()
}
