//! The TPM itself, through `tss-esapi` (feature `tpm`): the endorsement
//! key, the attestation key created under it once and loaded at every
//! start, quotes and credential activation (docs/PROTOCOL.md §14.1).
//!
//! Everything here runs on the TPM's owner thread ([`super::Attestation`]):
//! an ESAPI context is not `Send`, and a TPM serves one command at a time.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::{CapabilityType, SessionType};
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    CapabilityData, Data, EncryptedSecret, IdObject, PcrSelectionList, PcrSelectionListBuilder,
    PcrSlot, Private, Public, PublicBuffer, SignatureScheme,
};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, TctiNameConf};

use super::{Device, Evidence, Quote, PCR_INDICES};

/// The AK's saved public area (`TPM2B_PUBLIC`, as `tpm2_createak -u` writes).
pub const AK_PUBLIC_FILE: &str = "ak.pub";
/// The AK's saved private blob (`TPM2B_PRIVATE`, wrapped by the EK: useless
/// outside this TPM).
pub const AK_PRIVATE_FILE: &str = "ak.priv";

/// The TPM with its EK and AK loaded (flushed when dropped).
pub(super) struct Tpm {
    ctx: Context,
    ek: KeyHandle,
    ak: KeyHandle,
}

fn tpm_err(what: &str) -> impl FnOnce(tss_esapi::Error) -> String + '_ {
    move |e| format!("TPM {what}: {e}")
}

/// TPM2B: a 16-bit big-endian size, then the bytes.
fn tpm2b(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend((bytes.len() as u16).to_be_bytes());
    out.extend(bytes);
    out
}

/// The contents of a TPM2B whose size must be exactly the rest.
pub(super) fn tpm2b_contents(bytes: &[u8]) -> Option<&[u8]> {
    let (size, rest) = bytes.split_first_chunk::<2>()?;
    (usize::from(u16::from_be_bytes(*size)) == rest.len()).then_some(rest)
}

fn public_tpm2b(public: &Public) -> Result<Vec<u8>, String> {
    PublicBuffer::try_from(public.clone())
        .and_then(|b| b.marshall())
        .map_err(tpm_err("marshalling a public area"))
}

fn pcr_selection() -> Result<PcrSelectionList, String> {
    let slots: Vec<PcrSlot> = PCR_INDICES
        .iter()
        .map(|i| PcrSlot::try_from(1u32 << i).map_err(tpm_err("PCR slot")))
        .collect::<Result<_, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(tpm_err("PCR selection"))
}

/// Opens the TPM at `tcti` (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`),
/// makes the EK, and loads the AK saved in `ak_dir` (creating and saving it
/// there on the first start; kept in memory only without a directory).
pub(super) fn open(tcti: &str, ak_dir: Option<&Path>) -> Result<(Tpm, Evidence), String> {
    let conf = TctiNameConf::from_str(tcti).map_err(|e| format!("TPM TCTI '{tcti}': {e}"))?;
    let mut ctx = Context::new(conf).map_err(|e| format!("TPM at '{tcti}': {e}"))?;
    if !has_resource_manager(tcti) {
        flush_leftovers(&mut ctx);
    }
    let rsa = AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048);
    let ek = ek::create_ek_object_2(&mut ctx, rsa, None).map_err(tpm_err("EK"))?;
    let mut tpm = Tpm {
        ctx,
        ek,
        ak: KeyHandle::Null,
    };
    let (ek_public, _, _) = tpm.ctx.read_public(ek).map_err(tpm_err("EK public"))?;
    // Only the indices the TPM has are read (an absent one makes libtss2
    // log an error).
    let defined = nv_indices(&mut tpm.ctx);
    let mut ek_certificates = Vec::new();
    for (index, alg) in [
        (RSA_EK_CERT_NV, rsa),
        (
            ECC_EK_CERT_NV,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        ),
    ] {
        if !defined.contains(&index) {
            continue;
        }
        match ek::retrieve_ek_pubcert(&mut tpm.ctx, alg) {
            Ok(cert) if !cert.is_empty() => ek_certificates.push(cert),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(index = format!("{index:#010x}"), error = %e, "TPM: the EK certificate cannot be read")
            }
        }
    }
    let (ak, ak_public) = load_or_create_ak(&mut tpm, ak_dir)?;
    tpm.ak = ak;
    let evidence = Evidence::new(public_tpm2b(&ek_public)?, ek_certificates, ak_public);
    Ok((tpm, evidence))
}

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile).
const RSA_EK_CERT_NV: u32 = 0x01c0_0002;
/// NV index of the ECC NIST P-256 EK certificate.
const ECC_EK_CERT_NV: u32 = 0x01c0_000a;

/// The NV indices of the EK certificate range the TPM defines.
fn nv_indices(ctx: &mut Context) -> Vec<u32> {
    match ctx.get_capability(CapabilityType::Handles, 0x01c0_0000, 64) {
        Ok((CapabilityData::Handles(list), _)) => {
            list.into_inner().into_iter().map(u32::from).collect()
        }
        _ => Vec::new(),
    }
}

/// The kernel's resource manager and `tpm2-abrmd` flush what a client
/// leaves behind; a raw device or a socket TPM does not.
fn has_resource_manager(tcti: &str) -> bool {
    tcti.starts_with("device:/dev/tpmrm") || tcti.starts_with("tabrmd")
}

/// Flushes transient objects and sessions a previous process left in a TPM
/// without a resource manager (one that was killed cannot flush its own):
/// such a TPM serves one owner, this server.
fn flush_leftovers(ctx: &mut Context) {
    // TPM_HT_TRANSIENT, then TPM_HT_HMAC_SESSION and TPM_HT_POLICY_SESSION.
    for first in [0x8000_0000u32, 0x0200_0000, 0x0300_0000] {
        let Ok((CapabilityData::Handles(list), _)) =
            ctx.get_capability(CapabilityType::Handles, first, 64)
        else {
            continue;
        };
        let mut flushed = 0;
        for handle in list.into_inner() {
            let Ok(tr) = ctx.execute_without_session(|c| c.tr_from_tpm_public(handle)) else {
                continue;
            };
            if ctx.flush_context(tr).is_ok() {
                flushed += 1;
            }
        }
        if flushed > 0 {
            tracing::info!(
                flushed,
                "TPM: flushed objects or sessions left by an earlier process"
            );
        }
    }
}

fn load_or_create_ak(tpm: &mut Tpm, dir: Option<&Path>) -> Result<(KeyHandle, Vec<u8>), String> {
    let files = dir.map(|d| (d.join(AK_PUBLIC_FILE), d.join(AK_PRIVATE_FILE)));
    if let Some((pub_path, priv_path)) = &files {
        if pub_path.exists() && priv_path.exists() {
            return load_saved_ak(tpm, pub_path, priv_path);
        }
    }
    let created = ak::create_ak(
        &mut tpm.ctx,
        tpm.ek,
        HashingAlgorithm::Sha256,
        SignatureSchemeAlgorithm::EcDsa,
        None,
        None,
    )
    .map_err(tpm_err("creating the AK"))?;
    let public = public_tpm2b(&created.out_public)?;
    let private = tpm2b(created.out_private.value());
    if let Some((pub_path, priv_path)) = &files {
        write_private_file(priv_path, &private)?;
        write_private_file(pub_path, &public)?;
        tracing::info!(dir = %pub_path.parent().unwrap_or(Path::new(".")).display(), "TPM attestation key created and saved");
    }
    let handle = ak::load_ak(
        &mut tpm.ctx,
        tpm.ek,
        None,
        created.out_private,
        created.out_public,
    )
    .map_err(tpm_err("loading the AK"))?;
    Ok((handle, public))
}

fn load_saved_ak(
    tpm: &mut Tpm,
    pub_path: &PathBuf,
    priv_path: &PathBuf,
) -> Result<(KeyHandle, Vec<u8>), String> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let public_bytes = read(pub_path)?;
    let private_bytes = read(priv_path)?;
    let bad = |p: &PathBuf| format!("{}: not a saved TPM attestation key", p.display());
    let public = PublicBuffer::unmarshall(&public_bytes)
        .and_then(Public::try_from)
        .map_err(|_| bad(pub_path))?;
    let private = tpm2b_contents(&private_bytes)
        .and_then(|b| Private::try_from(b.to_vec()).ok())
        .ok_or_else(|| bad(priv_path))?;
    let handle = ak::load_ak(&mut tpm.ctx, tpm.ek, None, private, public).map_err(|e| {
        format!(
            "TPM: the attestation key in {} does not load under this TPM's EK ({e}); \
             it was made by another TPM: move {AK_PUBLIC_FILE} and {AK_PRIVATE_FILE} away to create a new one",
            pub_path.parent().unwrap_or(Path::new(".")).display()
        )
    })?;
    Ok((handle, public_bytes))
}

/// Writes a file readable by its owner only (0600), replacing none.
fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Tpm {
    fn read_pcrs(&mut self) -> Result<Vec<(u32, Vec<u8>)>, String> {
        let (_, _, digests) = self.ctx.execute_without_session(|c| {
            c.pcr_read(pcr_selection()?).map_err(tpm_err("PCR read"))
        })?;
        let values: Vec<Vec<u8>> = digests.value().iter().map(|d| d.value().to_vec()).collect();
        if values.len() != PCR_INDICES.len() {
            return Err("TPM PCR read: not every PCR was returned".into());
        }
        Ok(PCR_INDICES.iter().copied().zip(values).collect())
    }
}

impl Device for Tpm {
    fn quote(&mut self, extra_data: &[u8]) -> Result<Quote, String> {
        let data = Data::try_from(extra_data.to_vec()).map_err(tpm_err("qualifying data"))?;
        // A PCR may be extended between the read and the quote: read again
        // until the values match the quoted digest.
        for _ in 0..3 {
            let pcrs = self.read_pcrs()?;
            let (attest, signature) =
                self.ctx
                    .execute_with_session(Some(AuthSession::Password), |c| {
                        c.quote(
                            self.ak,
                            data.clone(),
                            SignatureScheme::Null,
                            pcr_selection()?,
                        )
                        .map_err(tpm_err("quote"))
                    })?;
            let quote = Quote {
                attest: attest
                    .marshall()
                    .map_err(tpm_err("marshalling the quote"))?,
                signature: signature
                    .marshall()
                    .map_err(tpm_err("marshalling the signature"))?,
                pcrs,
            };
            if quote.pcrs_match() {
                return Ok(quote);
            }
        }
        Err("TPM quote: the PCRs kept changing between read and quote".into())
    }

    fn activate(
        &mut self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, String> {
        let blob = tpm2b_contents(credential_blob)
            .and_then(|b| IdObject::try_from(b.to_vec()).ok())
            .ok_or("credential blob is not a TPM2B_ID_OBJECT")?;
        let secret = tpm2b_contents(encrypted_secret)
            .and_then(|b| EncryptedSecret::try_from(b.to_vec()).ok())
            .ok_or("encrypted secret is not a TPM2B_ENCRYPTED_SECRET")?;
        // The EK's policy: PolicySecret(TPM_RH_ENDORSEMENT) in a policy
        // session of its own, flushed afterwards.
        let session = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                tss_esapi::structures::SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(tpm_err("policy session"))?
            .ok_or("TPM policy session: none returned")?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .build();
        let (ak, ek) = (self.ak, self.ek);
        let result = self.ctx.execute_with_temporary_object(
            ObjectHandle::from(SessionHandle::from(session)),
            |c, _| {
                c.tr_sess_set_attributes(session, attrs, mask)?;
                c.execute_with_session(Some(AuthSession::Password), |c| {
                    c.policy_secret(
                        PolicySession::try_from(session)?,
                        AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })?;
                c.execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
                    c.activate_credential(ak, ek, blob, secret)
                })
            },
        );
        result
            .map(|d| d.value().to_vec())
            .map_err(tpm_err("ActivateCredential"))
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        for h in [self.ak, self.ek] {
            if h != KeyHandle::Null {
                let _ = self.ctx.flush_context(h.into());
            }
        }
    }
}
