//! TPM 2.0 commands veilboot sends: Startup, GetCapability(PCRS), PCR_Extend, PCR_Read,
//! CreatePrimary, Create, Load, Import, Quote, NV_ReadPublic, NV_Read, StartAuthSession,
//! PolicyPCR, PolicySecret, ActivateCredential, Unseal, FlushContext, in the wire format of
//! [`super::wire`].
//!
//! The transport is a trait ([`Transport`]: the TIS driver in the firmware, a recorded or
//! simulated TPM in tests). Every response's header is checked and its fields are read with
//! bounds checks to the last byte; a non-zero response code becomes [`TpmErrorKind::Rc`] naming
//! the command.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use zeroize::Zeroizing;

use super::Bank;
use super::wire::{self, CommandFrame, Reader, alg};

/// Moves one command to the TPM and its response back.
pub trait Transport {
    /// Send `command`, return the response frame.
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError>;
}

/// Why a transport could not carry a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The TIS interface (the firmware's transport) failed.
    Tis(super::tis::TisError),
    /// A host transport's I/O failed (swtpm's socket, /dev/tpmrm0): the OS's words, the only
    /// form an I/O error has without std.
    Io(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Tis(e) => write!(f, "{e}"),
            TransportError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<super::tis::TisError> for TransportError {
    fn from(e: super::tis::TisError) -> Self {
        TransportError::Tis(e)
    }
}

#[cfg(feature = "std")]
impl From<std::io::Error> for TransportError {
    fn from(e: std::io::Error) -> Self {
        TransportError::Io(e.to_string())
    }
}

crate::boxed_error! {
    /// Why a TPM command failed: a [`TpmErrorKind`] behind one pointer, so that the `?` at each
    /// of the TPM code's many fallible reads forwards 8 bytes rather than 40.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TpmError(TpmErrorKind);
}

/// Why a TPM command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmErrorKind {
    /// The transport failed (TIS timeout, no TPM).
    Transport(TransportError),
    /// The TPM answered `command` with a non-zero response code.
    Rc {
        /// Command name.
        command: &'static str,
        /// The response code.
        rc: u32,
    },
    /// A command could not be marshalled (an argument too large for its TPM2B).
    Marshal(&'static str),
    /// The response was malformed.
    Response {
        /// Command name.
        command: &'static str,
        /// What the unmarshaller said.
        why: String,
    },
}

impl fmt::Display for TpmErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TpmErrorKind::Transport(e) => write!(f, "TPM: {e}"),
            TpmErrorKind::Rc { command, rc } => {
                write!(f, "TPM2_{command} failed with response code {rc:#x}{}", rc_hint(*rc))
            }
            TpmErrorKind::Marshal(what) => write!(f, "TPM command marshalling: {what}"),
            TpmErrorKind::Response { command, why } => write!(f, "TPM2_{command}: malformed response: {why}"),
        }
    }
}

/// A readable note for the response codes an operator meets.
fn rc_hint(rc: u32) -> &'static str {
    // Format-one codes carry a parameter/handle/session number in bits 8..11; compare the base.
    let base = if rc & 0x80 != 0 { rc & 0xBF } else { rc };
    match base {
        0x100 => " (TPM_RC_INITIALIZE: already started)",
        0x101 => " (TPM_RC_FAILURE: the TPM is in failure mode)",
        0x128 => " (TPM_RC_PCR_CHANGED)",
        0x82 => " (TPM_RC_ATTRIBUTES)",
        0x84 => " (TPM_RC_VALUE)",
        0x8B => " (TPM_RC_HANDLE)",
        0x8E => " (TPM_RC_AUTH_FAIL)",
        0x95 => " (TPM_RC_SIZE)",
        0x9D => " (TPM_RC_POLICY_FAIL: the PCRs differ from those the object is sealed to)",
        0x9F => " (TPM_RC_INTEGRITY: the sealed blob was not made by this TPM or was altered)",
        0x902 => " (TPM_RC_OBJECT_MEMORY)",
        0x903 => " (TPM_RC_SESSION_MEMORY)",
        0x921 => " (TPM_RC_LOCKOUT: dictionary-attack lockout)",
        0x922 => " (TPM_RC_RETRY)",
        _ => "",
    }
}

/// TPM_RS_PW: the password session (empty password) for the owner hierarchy and objects
/// without an auth value.
const RS_PW: u32 = 0x4000_0009;
/// TPM_RH_OWNER.
pub const RH_OWNER: u32 = 0x4000_0001;
/// TPM_RH_NULL.
const RH_NULL: u32 = 0x4000_0007;
/// TPM_RC_INITIALIZE: TPM2_Startup after the TPM was already started.
const RC_INITIALIZE: u32 = 0x100;

const RC_YIELDED: u32 = 0x908;
const RC_TESTING: u32 = 0x90A;
const RC_RETRY: u32 = 0x922;
const MAX_RETRIES: u32 = 100;

const MAX_COMMAND: usize = super::tis::MAX_FRAME;

/// Command codes (Part 2, 6.5.2).
mod cc {
    pub const STARTUP: u32 = 0x144;
    pub const GET_CAPABILITY: u32 = 0x17A;
    pub const PCR_EXTEND: u32 = 0x182;
    pub const PCR_READ: u32 = 0x17E;
    pub const CREATE_PRIMARY: u32 = 0x131;
    pub const CREATE: u32 = 0x153;
    pub const LOAD: u32 = 0x157;
    pub const IMPORT: u32 = 0x156;
    pub const QUOTE: u32 = 0x158;
    pub const NV_READ_PUBLIC: u32 = 0x169;
    pub const NV_READ: u32 = 0x14E;
    pub const START_AUTH_SESSION: u32 = 0x176;
    pub const POLICY_PCR: u32 = 0x17F;
    pub const POLICY_SECRET: u32 = 0x151;
    pub const ACTIVATE_CREDENTIAL: u32 = 0x147;
    pub const UNSEAL: u32 = 0x15E;
    pub const FLUSH_CONTEXT: u32 = 0x165;
}

/// TPM_CAP_PCRS.
const CAP_PCRS: u32 = 5;
/// TPM_SE_POLICY.
const SE_POLICY: u8 = 1;
/// TPM2B_DATA holds a TPMT_HA at most.
const MAX_DATA: usize = 66;
/// TPM2B_DIGEST and TPM2B_NONCE: the largest digest.
const MAX_DIGEST: usize = 64;
/// TPM2B_SENSITIVE_DATA: MAX_SYM_DATA.
const MAX_SENSITIVE_DATA: usize = 128;

/// A response to `command`, checked to the last byte by `read`.
fn parse<'a, R>(
    frame: &'a [u8],
    handles: usize,
    command: &'static str,
    read: impl FnOnce(&[u32], &mut Reader<'a>) -> Result<R, TpmError>,
) -> Result<R, TpmError> {
    let (handles, mut params) = wire::response(frame, handles, command)?;
    let out = read(&handles, &mut params)?;
    params.end()?;
    Ok(out)
}

/// A TPMT_SIGNATURE (Part 2, 11.3.4): the signature algorithm, then its fields.
fn skip_signature(r: &mut Reader<'_>) -> Result<(), TpmError> {
    match r.u16()? {
        alg::NULL => {}
        alg::RSASSA | alg::RSAPSS => {
            r.u16()?;
            r.tpm2b()?;
        }
        alg::ECDSA | alg::ECDAA | alg::SM2 | alg::ECSCHNORR => {
            r.u16()?;
            r.tpm2b()?;
            r.tpm2b()?;
        }
        alg::HMAC => {
            let hash = r.u16()?;
            let bank = Bank::from_alg(hash).ok_or_else(|| r.error(alloc::format!("HMAC with hash {hash:#06x}")))?;
            r.bytes(bank.size())?;
        }
        other => return Err(r.error(alloc::format!("signature algorithm {other:#06x}"))),
    }
    Ok(())
}

/// TPMT_PUBLIC of a sealed data object bound to `policy` (a SHA-256 policy digest):
/// keyedhash, no scheme, fixedTPM | fixedParent | noDA, no userWithAuth (the policy is the
/// only way to use it).
pub fn sealed_object_template(policy: &[u8; 32]) -> Vec<u8> {
    keyedhash_public(SEALED_OBJECT_ATTRIBUTES, policy, &[])
}

/// TPMT_PUBLIC of a keyed-hash data object (no scheme) with `attributes`, authPolicy `policy`
/// and `unique` (empty for TPM2_Create, which fills it; the digest of the sensitive part in an
/// object made outside the TPM for TPM2_Import).
pub fn keyedhash_public(attributes: u32, policy: &[u8], unique: &[u8]) -> Vec<u8> {
    let mut t = public_head(alg::KEYEDHASH, attributes, policy);
    t.extend_from_slice(&alg::NULL.to_be_bytes()); // TPMT_KEYEDHASH_SCHEME
    t.extend_from_slice(&wire::tpm2b(unique));
    t
}

/// fixedTPM | fixedParent | noDA.
pub const SEALED_OBJECT_ATTRIBUTES: u32 = 0x0000_0412;

/// TPMT_SYM_DEF_OBJECT AES-128-CFB.
fn aes_128_cfb(t: &mut Vec<u8>) {
    t.extend_from_slice(&alg::AES.to_be_bytes());
    t.extend_from_slice(&128u16.to_be_bytes());
    t.extend_from_slice(&alg::CFB.to_be_bytes());
}

/// The head of a TPMT_PUBLIC: type, nameAlg SHA-256, attributes, authPolicy.
fn public_head(kind: u16, attributes: u32, policy: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(300);
    t.extend_from_slice(&kind.to_be_bytes());
    t.extend_from_slice(&alg::SHA256.to_be_bytes());
    t.extend_from_slice(&attributes.to_be_bytes());
    t.extend_from_slice(&wire::tpm2b(policy));
    t
}

/// The storage primary key veilboot seals under (TPMT_PUBLIC): systemd's template (ECC NIST
/// P-256, AES-128 CFB, attributes 0x00030072 = fixedTPM | fixedParent | sensitiveDataOrigin
/// | userWithAuth | restricted | decrypt, empty unique), so that `systemd-cryptenroll
/// --tpm2-device` objects load under the same key. CreatePrimary is deterministic for a
/// template and the owner seed.
pub fn storage_primary_template() -> Vec<u8> {
    let mut t = public_head(alg::ECC, 0x0003_0072, &[]);
    aes_128_cfb(&mut t);
    t.extend_from_slice(&alg::NULL.to_be_bytes()); // scheme
    t.extend_from_slice(&0x0003u16.to_be_bytes()); // TPM_ECC_NIST_P256
    t.extend_from_slice(&alg::NULL.to_be_bytes()); // kdf
    t.extend_from_slice(&[0, 0, 0, 0]); // unique: empty x and y
    t
}

/// TPM_RH_ENDORSEMENT.
pub const RH_ENDORSEMENT: u32 = 0x4000_000B;

/// The attestation key veilboot quotes with (TPMT_PUBLIC): a primary in the endorsement
/// hierarchy (the same key on every boot of the same TPM, so a verifier can pin it; it lives
/// on the TPM whose EK certifies it through MakeCredential/ActivateCredential), RSA-2048 with
/// RSASSA-SHA256 (the only signature Trustee's TPM verifier accepts), fixedTPM | fixedParent
/// | sensitiveDataOrigin | userWithAuth | restricted | sign.
pub fn attestation_key_template() -> Vec<u8> {
    let mut t = public_head(alg::RSA, 0x0005_0072, &[]);
    t.extend_from_slice(&alg::NULL.to_be_bytes()); // no symmetric
    t.extend_from_slice(&alg::RSASSA.to_be_bytes());
    t.extend_from_slice(&alg::SHA256.to_be_bytes());
    t.extend_from_slice(&2048u16.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes()); // exponent 65537
    t.extend_from_slice(&[0, 0]); // unique: empty
    t
}

/// The TCG EK Credential Profile's default RSA-2048 EK template (L-1, TPMT_PUBLIC): fixedTPM
/// | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt, authPolicy =
/// PolicySecret(TPM_RH_ENDORSEMENT), AES-128-CFB, 256 zero bytes of unique. swtpm_setup's EK
/// certificate certifies this key.
pub fn ek_rsa2048_template() -> Vec<u8> {
    let mut t = public_head(alg::RSA, 0x0003_00B2, &EK_POLICY);
    aes_128_cfb(&mut t);
    t.extend_from_slice(&alg::NULL.to_be_bytes()); // scheme
    t.extend_from_slice(&2048u16.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&wire::tpm2b(&[0u8; 256]));
    t
}

/// NV index of the RSA-2048 EK certificate (TCG EK Credential Profile).
pub const EK_CERT_RSA_NV_INDEX: u32 = 0x01C0_0002;
/// Largest NV_Read chunk asked for (TPMs guarantee at least 1024).
const NV_CHUNK: usize = 1024;

/// PolicySecret(TPM_RH_ENDORSEMENT): the EK's authPolicy.
pub const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd, 0x52, 0xd7,
    0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];

/// A quote: the TPMS_ATTEST the TPM signed and its TPMT_SIGNATURE, both marshalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// TPMS_ATTEST (the signed message; what `tpm2_quote -m` writes).
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE (what `tpm2_quote -s` writes).
    pub signature: Vec<u8>,
}

/// A TPM reached through `T`.
pub struct Tpm<T> {
    transport: T,
}

impl<T: Transport> Tpm<T> {
    /// Wrap a transport.
    pub fn new(transport: T) -> Self {
        Tpm { transport }
    }

    /// The transport back.
    pub fn into_inner(self) -> T {
        self.transport
    }

    /// The transport, borrowed.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    fn run(&mut self, command: &[u8], name: &'static str) -> Result<Vec<u8>, TpmError> {
        let mut attempts = 0;
        loop {
            let response = self.transport.transact(command).map_err(TpmErrorKind::Transport)?;
            match wire::response_code(&response, name)? {
                0 => return Ok(response),
                // TPM_RC_YIELDED, TPM_RC_TESTING, TPM_RC_RETRY: the command did not start; the
                // TPM asks for it again (Part 2, 6.6.3). Bounded, so a broken TPM cannot hang us.
                RC_YIELDED | RC_TESTING | RC_RETRY if attempts < MAX_RETRIES => attempts += 1,
                rc => return Err(TpmErrorKind::Rc { command: name, rc }.into()),
            }
        }
    }

    /// Run a command that returns no parameters, and check that none came.
    fn run_empty(&mut self, command: &[u8], name: &'static str) -> Result<(), TpmError> {
        let response = self.run(command, name)?;
        parse(&response, 0, name, |_, _| Ok(()))
    }

    /// TPM2_Startup(CLEAR). Returns false when the TPM had already been started.
    pub fn startup_clear(&mut self) -> Result<bool, TpmError> {
        let cmd = CommandFrame::new(cc::STARTUP, &[], &[]).u16(0).finish();
        match self.run_empty(&cmd, "Startup") {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.kind(), TpmErrorKind::Rc { rc: RC_INITIALIZE, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The PCR banks with at least one PCR allocated.
    pub fn active_banks(&mut self) -> Result<Vec<Bank>, TpmError> {
        let cmd = CommandFrame::new(cc::GET_CAPABILITY, &[], &[]).u32(CAP_PCRS).u32(0).u32(1).finish();
        let response = self.run(&cmd, "GetCapability")?;
        parse(&response, 0, "GetCapability", |_, r| {
            r.u8()?; // moreData
            if r.u32()? != CAP_PCRS {
                return Err(r.error("not a PCR list".to_string()));
            }
            let mut banks = Vec::new();
            for (alg, bitmap) in r.pcr_selection()? {
                if bitmap.iter().any(|b| *b != 0)
                    && let Some(bank) = Bank::from_alg(alg)
                {
                    banks.push(bank);
                }
            }
            Ok(banks)
        })
    }

    /// TPM2_PCR_Extend of `pcr` with one digest per bank.
    pub fn pcr_extend(&mut self, pcr: u32, digests: &[(Bank, Vec<u8>)]) -> Result<(), TpmError> {
        let mut cmd = CommandFrame::new(cc::PCR_EXTEND, &[pcr], &[RS_PW]).u32(digests.len() as u32);
        for (bank, d) in digests {
            if d.len() != bank.size() {
                return Err(TpmErrorKind::Marshal("digest").into());
            }
            cmd = cmd.u16(bank.alg_id()).raw(d);
        }
        self.run_empty(&cmd.finish(), "PCR_Extend")
    }

    /// TPM2_PCR_Read of `pcrs` in `bank`, in index order. Reads in rounds: a TPM returns at
    /// most eight digests per call.
    pub fn pcr_read(&mut self, bank: Bank, pcrs: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, TpmError> {
        let mut wanted: Vec<u32> = pcrs.to_vec();
        crate::heapsort::sort_by_key(&mut wanted, |p| *p);
        wanted.dedup();
        let mut out = Vec::new();
        while !wanted.is_empty() {
            let cmd =
                CommandFrame::new(cc::PCR_READ, &[], &[]).raw(&wire::pcr_selection(bank.alg_id(), &wanted)?).finish();
            let response = self.run(&cmd, "PCR_Read")?;
            let (returned, values) = parse(&response, 0, "PCR_Read", |_, r| {
                r.u32()?; // pcrUpdateCounter
                let mut returned = Vec::new();
                for (alg, bitmap) in r.pcr_selection()? {
                    if alg != bank.alg_id() {
                        return Err(r.error(alloc::format!("values of bank {alg:#06x}, not {}", bank.name())));
                    }
                    for (byte, bits) in bitmap.iter().enumerate() {
                        for bit in 0..8 {
                            if bits & (1 << bit) != 0 {
                                returned.push(byte as u32 * 8 + bit);
                            }
                        }
                    }
                }
                let count = r.u32()?;
                if count > 8 {
                    return Err(r.error(alloc::format!("{count} digests")));
                }
                let values = (0..count).map(|_| Ok(r.tpm2b()?.to_vec())).collect::<Result<Vec<Vec<u8>>, TpmError>>()?;
                Ok((returned, values))
            })?;
            if returned.is_empty() || returned.len() != values.len() || values.iter().any(|v| v.len() != bank.size()) {
                return Err(TpmErrorKind::Response {
                    command: "PCR_Read",
                    why: "selection and digests disagree".to_string(),
                }
                .into());
            }
            for (p, v) in returned.into_iter().zip(values) {
                if !wanted.contains(&p) {
                    return Err(TpmErrorKind::Response {
                        command: "PCR_Read",
                        why: alloc::format!("PCR {p} was not asked for"),
                    }
                    .into());
                }
                wanted.retain(|w| *w != p);
                out.push((p, v));
            }
        }
        crate::heapsort::sort_by_key(&mut out, |(p, _)| *p);
        Ok(out)
    }

    /// TPM2_CreatePrimary of `template` (a TPMT_PUBLIC) in the owner hierarchy; returns the
    /// transient handle.
    pub fn create_primary(&mut self, template: &[u8]) -> Result<u32, TpmError> {
        self.create_primary_with_public(template).map(|(h, _)| h)
    }

    /// TPM2_CreatePrimary; returns the handle and the key's marshalled TPM2B_PUBLIC (what
    /// `veil seal` needs to seal to this TPM without access to it).
    pub fn create_primary_with_public(&mut self, template: &[u8]) -> Result<(u32, Vec<u8>), TpmError> {
        self.create_primary_in(RH_OWNER, template)
    }

    /// TPM2_CreatePrimary of `template` in `hierarchy`: handle and TPM2B_PUBLIC.
    fn create_primary_in(&mut self, hierarchy: u32, template: &[u8]) -> Result<(u32, Vec<u8>), TpmError> {
        let cmd = CommandFrame::new(cc::CREATE_PRIMARY, &[hierarchy], &[RS_PW])
            .raw(&[0, 4, 0, 0, 0, 0]) // inSensitive: empty userAuth and data
            .tpm2b(template, MAX_COMMAND, "public template")?
            .empty() // outsideInfo
            .u32(0) // creationPCR: no selection
            .finish();
        let response = self.run(&cmd, "CreatePrimary")?;
        parse(&response, 1, "CreatePrimary", |handles, r| {
            let public = r.tpm2b_whole()?.to_vec();
            skip_creation(r)?;
            r.tpm2b()?; // name
            Ok((handles[0], public))
        })
    }

    /// The attestation key (see attestation_key_template): handle and TPM2B_PUBLIC.
    pub fn create_attestation_key(&mut self) -> Result<(u32, Vec<u8>), TpmError> {
        self.create_primary_in(RH_ENDORSEMENT, &attestation_key_template())
    }

    /// TPM2_Quote of `pcrs` in `bank` with `qualifying_data` (at most 64 bytes: a nonce or
    /// a report-data digest) signed by `ak` with its own scheme.
    pub fn quote(&mut self, ak: u32, qualifying_data: &[u8], bank: Bank, pcrs: &[u32]) -> Result<Quote, TpmError> {
        let cmd = CommandFrame::new(cc::QUOTE, &[ak], &[RS_PW])
            .tpm2b(qualifying_data, MAX_DATA, "qualifying data larger than a TPM2B_DATA")?
            .u16(alg::NULL) // inScheme: the key's own
            .raw(&wire::pcr_selection(bank.alg_id(), pcrs)?)
            .finish();
        let response = self.run(&cmd, "Quote")?;
        parse(&response, 0, "Quote", |_, r| {
            let attest = r.tpm2b()?.to_vec();
            let signature = r.rest();
            let mut check = Reader::new(signature, "Quote");
            skip_signature(&mut check)?;
            check.end()?;
            Ok(Quote { attest, signature: signature.to_vec() })
        })
    }

    /// The endorsement key (TCG default RSA-2048 template): handle and TPM2B_PUBLIC.
    pub fn create_ek(&mut self) -> Result<(u32, Vec<u8>), TpmError> {
        self.create_primary_in(RH_ENDORSEMENT, &ek_rsa2048_template())
    }

    /// TPM2_ActivateCredential: recover the credential a verifier bound to `key` (the AK's
    /// name) and encrypted to `ek`. The EK is used through a PolicySecret(endorsement)
    /// session, as its template demands. The credential proves `key` lives on this EK's TPM.
    pub fn activate_credential(
        &mut self,
        key: u32,
        ek: u32,
        credential_blob: &[u8],
        secret: &[u8],
        nonce: &[u8; 32],
    ) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        wire::check_tpm2b(credential_blob, MAX_COMMAND, "credential blob")?;
        wire::check_tpm2b(secret, MAX_COMMAND, "credential secret")?;
        let session = self.start_policy_session(nonce)?;
        let result = (|| {
            let policy = CommandFrame::new(cc::POLICY_SECRET, &[RH_ENDORSEMENT, session], &[RS_PW])
                .empty() // nonceTPM
                .empty() // cpHashA
                .empty() // policyRef
                .u32(0) // expiration
                .finish();
            let response = self.run(&policy, "PolicySecret")?;
            parse(&response, 0, "PolicySecret", |_, r| {
                r.tpm2b()?; // timeout
                let _ticket = (r.u16()?, r.u32()?, r.tpm2b()?);
                Ok(())
            })?;
            let cmd = CommandFrame::new(cc::ACTIVATE_CREDENTIAL, &[key, ek], &[RS_PW, session])
                .raw(credential_blob)
                .raw(secret)
                .finish();
            let response = Zeroizing::new(self.run(&cmd, "ActivateCredential")?);
            parse(&response, 0, "ActivateCredential", |_, r| Ok(Zeroizing::new(r.tpm2b()?.to_vec())))
        })();
        if result.is_err() {
            let _ = self.flush(session);
        }
        result
    }

    /// The contents of NV index `index`, read with owner authorization in chunks of at most
    /// 1024 bytes (e.g. the EK certificate at EK_CERT_RSA_NV_INDEX).
    pub fn nv_read(&mut self, index: u32) -> Result<Vec<u8>, TpmError> {
        let cmd = CommandFrame::new(cc::NV_READ_PUBLIC, &[index], &[]).finish();
        let response = self.run(&cmd, "NV_ReadPublic")?;
        let size = parse(&response, 0, "NV_ReadPublic", |_, r| {
            let mut public = Reader::new(r.tpm2b()?, "NV_ReadPublic");
            public.u32()?; // nvIndex
            public.u16()?; // nameAlg
            public.u32()?; // attributes
            public.tpm2b()?; // authPolicy
            let size = public.u16()?;
            public.end()?;
            r.tpm2b()?; // nvName
            Ok(usize::from(size))
        })?;
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            let chunk = (size - out.len()).min(NV_CHUNK);
            let cmd = CommandFrame::new(cc::NV_READ, &[RH_OWNER, index], &[RS_PW])
                .u16(chunk as u16)
                .u16(out.len() as u16)
                .finish();
            let response = self.run(&cmd, "NV_Read")?;
            let data = parse(&response, 0, "NV_Read", |_, r| Ok(r.tpm2b()?.to_vec()))?;
            if data.is_empty() || data.len() > chunk {
                return Err(TpmErrorKind::Response {
                    command: "NV_Read",
                    why: alloc::format!("{} bytes where {chunk} were asked for", data.len()),
                }
                .into());
            }
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// TPM2_Import of a duplicate made for `parent` (outer wrapper only, no inner symmetric
    /// key); returns the TPM2B_PRIVATE that TPM2_Load then takes with `public`.
    pub fn import(&mut self, parent: u32, public: &[u8], duplicate: &[u8], seed: &[u8]) -> Result<Vec<u8>, TpmError> {
        wire::check_tpm2b(public, MAX_COMMAND, "import: public area")?;
        wire::check_tpm2b(duplicate, MAX_COMMAND, "import: duplicate")?;
        wire::check_tpm2b(seed, MAX_COMMAND, "import: seed")?;
        let cmd = CommandFrame::new(cc::IMPORT, &[parent], &[RS_PW])
            .empty() // encryptionKey
            .raw(public)
            .raw(duplicate)
            .raw(seed)
            .u16(alg::NULL) // symmetricAlg: no inner wrapper
            .finish();
        let response = self.run(&cmd, "Import")?;
        parse(&response, 0, "Import", |_, r| Ok(r.tpm2b_whole()?.to_vec()))
    }

    /// TPM2_Create of a sealed data object holding `secret` under `parent`; returns the
    /// marshalled TPM2B_PRIVATE and TPM2B_PUBLIC (what TPM2_Load takes back).
    pub fn create_sealed(&mut self, parent: u32, policy: &[u8; 32], secret: &[u8]) -> Result<SealedBlob, TpmError> {
        if secret.len() > MAX_SENSITIVE_DATA {
            return Err(TpmErrorKind::Marshal("secret larger than a sealed object holds").into());
        }
        let cmd = CommandFrame::new(cc::CREATE, &[parent], &[RS_PW])
            .u16(4 + secret.len() as u16) // inSensitive: empty userAuth, then the data
            .empty()
            .tpm2b(secret, MAX_SENSITIVE_DATA, "sealed data")?
            .tpm2b(&sealed_object_template(policy), MAX_COMMAND, "public template")?
            .empty() // outsideInfo
            .u32(0) // creationPCR
            .finish();
        let cmd = Zeroizing::new(cmd);
        let response = self.run(&cmd, "Create")?;
        parse(&response, 0, "Create", |_, r| {
            let private = r.tpm2b_whole()?.to_vec();
            let public = r.tpm2b_whole()?.to_vec();
            skip_creation(r)?;
            Ok(SealedBlob { private, public })
        })
    }

    /// TPM2_Load of a sealed blob under `parent`; returns the transient handle.
    pub fn load(&mut self, parent: u32, blob: &SealedBlob) -> Result<u32, TpmError> {
        wire::check_tpm2b(&blob.private, MAX_COMMAND, "sealed blob: private area")?;
        wire::check_tpm2b(&blob.public, MAX_COMMAND, "sealed blob: public area")?;
        let cmd = CommandFrame::new(cc::LOAD, &[parent], &[RS_PW]).raw(&blob.private).raw(&blob.public).finish();
        let response = self.run(&cmd, "Load")?;
        parse(&response, 1, "Load", |handles, r| {
            r.tpm2b()?; // name
            Ok(handles[0])
        })
    }

    /// Start a policy session (unsalted, unbound, SHA-256) with `nonce` as nonceCaller.
    pub fn start_policy_session(&mut self, nonce: &[u8; 32]) -> Result<u32, TpmError> {
        let cmd = CommandFrame::new(cc::START_AUTH_SESSION, &[RH_NULL, RH_NULL], &[])
            .tpm2b(nonce, MAX_DIGEST, "nonce")?
            .empty() // encryptedSalt
            .u8(SE_POLICY)
            .u16(alg::NULL) // symmetric
            .u16(alg::SHA256)
            .finish();
        let response = self.run(&cmd, "StartAuthSession")?;
        parse(&response, 1, "StartAuthSession", |handles, r| {
            r.tpm2b()?; // nonceTPM
            Ok(handles[0])
        })
    }

    /// TPM2_PolicyPCR with an empty pcrDigest: the TPM folds in its current values of `pcrs`.
    pub fn policy_pcr(&mut self, session: u32, bank: Bank, pcrs: &[u32]) -> Result<(), TpmError> {
        let cmd = CommandFrame::new(cc::POLICY_PCR, &[session], &[])
            .empty()
            .raw(&wire::pcr_selection(bank.alg_id(), pcrs)?)
            .finish();
        self.run_empty(&cmd, "PolicyPCR")
    }

    /// TPM2_Unseal of `object` authorised by the policy `session` (which the TPM closes).
    pub fn unseal(&mut self, object: u32, session: u32) -> Result<Zeroizing<Vec<u8>>, TpmError> {
        let cmd = CommandFrame::new(cc::UNSEAL, &[object], &[session]).finish();
        let response = Zeroizing::new(self.run(&cmd, "Unseal")?);
        parse(&response, 0, "Unseal", |_, r| Ok(Zeroizing::new(r.tpm2b()?.to_vec())))
    }

    /// TPM2_FlushContext.
    pub fn flush(&mut self, handle: u32) -> Result<(), TpmError> {
        let cmd = CommandFrame::new(cc::FLUSH_CONTEXT, &[], &[]).u32(handle).finish();
        self.run_empty(&cmd, "FlushContext")
    }
}

/// What CreatePrimary and Create return after the key: creationData, creationHash and the
/// creation ticket (TPMT_TK_CREATION: tag, hierarchy, digest).
fn skip_creation(r: &mut Reader<'_>) -> Result<(), TpmError> {
    r.tpm2b()?;
    r.tpm2b()?;
    r.u16()?;
    r.u32()?;
    r.tpm2b()?;
    Ok(())
}

/// A sealed object as TPM2_Create returned it: marshalled TPM2B_PRIVATE and TPM2B_PUBLIC
/// (the layout of `tpm2_create -r/-u` and of systemd's `tpm2-blob`, concatenated there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    /// TPM2B_PRIVATE (the sensitive area encrypted by the parent).
    pub private: Vec<u8>,
    /// TPM2B_PUBLIC.
    pub public: Vec<u8>,
}

impl SealedBlob {
    /// Split systemd's `tpm2-blob` (TPM2B_PRIVATE || TPM2B_PUBLIC).
    pub fn from_concatenated(blob: &[u8]) -> Result<SealedBlob, TpmError> {
        let size = |b: &[u8]| -> Option<usize> { Some(2 + usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]))) };
        let p = size(blob)
            .filter(|n| *n <= blob.len())
            .ok_or(TpmErrorKind::Marshal("tpm2-blob: private area runs past the blob"))?;
        let rest = &blob[p..];
        let q = size(rest)
            .filter(|n| *n == rest.len())
            .ok_or(TpmErrorKind::Marshal("tpm2-blob: public area does not end the blob"))?;
        Ok(SealedBlob { private: blob[..p].to_vec(), public: rest[..q].to_vec() })
    }

    /// TPM2B_PRIVATE || TPM2B_PUBLIC.
    pub fn concatenated(&self) -> Vec<u8> {
        let mut v = self.private.clone();
        v.extend_from_slice(&self.public);
        v
    }
}

/// The command-code of each command, for tests and logs.
pub fn command_code(name: &str) -> Option<u32> {
    match name {
        "Startup" => Some(cc::STARTUP),
        "PCR_Extend" => Some(cc::PCR_EXTEND),
        "Unseal" => Some(cc::UNSEAL),
        _ => None,
    }
}

/// Largest TPM response a host transport accepts (TPM2 responses are a few KiB at most).
#[cfg(feature = "std")]
const MAX_RESPONSE: usize = 1 << 16;

/// A TPM on a byte stream that carries raw commands and responses (swtpm's TCP server): the
/// response header's size field says where the response ends.
#[cfg(feature = "std")]
pub struct StreamTransport<S>(pub S);

#[cfg(feature = "std")]
impl<S: std::io::Read + std::io::Write> Transport for StreamTransport<S> {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.0.write_all(command)?;
        let mut response = alloc::vec![0u8; 10];
        self.0.read_exact(&mut response)?;
        let size = u32::from_be_bytes(response[2..6].try_into().expect("4 bytes")) as usize;
        if !(10..=MAX_RESPONSE).contains(&size) {
            return Err(TransportError::Io(alloc::format!("a response header claiming {size} bytes")));
        }
        response.resize(size, 0);
        self.0.read_exact(&mut response[10..])?;
        Ok(response)
    }
}

/// A TPM character device (/dev/tpm0, /dev/tpmrm0): one write per command, one read per
/// response.
#[cfg(feature = "std")]
pub struct DeviceTransport(pub std::fs::File);

#[cfg(feature = "std")]
impl Transport for DeviceTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        use std::io::{Read, Write};
        self.0.write_all(command)?;
        let mut response = alloc::vec![0u8; MAX_RESPONSE];
        let n = self.0.read(&mut response)?;
        response.truncate(n);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every command with `response` and keeps what it was sent.
    struct Recorder {
        sent: Vec<Vec<u8>>,
        response: Vec<u8>,
    }

    impl Transport for &mut Recorder {
        fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
            self.sent.push(command.to_vec());
            Ok(self.response.clone())
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        ::hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    // Recorded with swtpm 0.7.1 (`--log level=20`) serving tpm2-tools 5.4:
    // `tpm2_startup -c`, `tpm2_pcrextend 4:sha256=aa..aa`, `tpm2_pcrread sha256:0,4`.
    const STARTUP: &str = "80 01 00 00 00 0C 00 00 01 44 00 00";
    const STARTUP_OK: &str = "80 01 00 00 00 0A 00 00 00 00";
    const EXTEND: &str =
        "80 02 00 00 00 41 00 00 01 82 00 00 00 04 00 00 00 09 40 00 00 09 00 00 00 00 00 00 00 00 01 00 0B
        AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA AA";
    const EXTEND_OK: &str = "80 02 00 00 00 13 00 00 00 00 00 00 00 00 00 00 01 00 00";
    const PCR_READ: &str = "80 01 00 00 00 14 00 00 01 7E 00 00 00 01 00 0B 03 11 00 00";
    const PCR_READ_OK: &str =
        "80 01 00 00 00 60 00 00 00 00 00 00 00 15 00 00 00 01 00 0B 03 11 00 00 00 00 00 02 00 20
        00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 20
        9E F8 14 B4 2F A0 BE 12 D1 97 C4 4D 3E 8E 03 44 1A 4B 11 18 23 76 58 36 8B A1 35 10 90 E5 56 ED";

    #[test]
    fn commands_match_bytes_recorded_from_tpm2_tools() {
        let mut rec = Recorder { sent: vec![], response: hex(STARTUP_OK) };
        assert!(Tpm::new(&mut rec).startup_clear().unwrap());
        assert_eq!(rec.sent, [hex(STARTUP)]);

        let mut rec = Recorder { sent: vec![], response: hex(EXTEND_OK) };
        Tpm::new(&mut rec).pcr_extend(4, &[(Bank::Sha256, vec![0xAA; 32])]).unwrap();
        assert_eq!(rec.sent, [hex(EXTEND)]);

        let mut rec = Recorder { sent: vec![], response: hex(PCR_READ_OK) };
        let values = Tpm::new(&mut rec).pcr_read(Bank::Sha256, &[4, 0]).unwrap();
        assert_eq!(rec.sent, [hex(PCR_READ)]);
        assert_eq!(values[0], (0, vec![0; 32]));
        assert_eq!(values[1].0, 4);
        assert_eq!(values[1].1, Bank::Sha256.extend(&[0; 32], &[0xAA; 32]));
    }

    /// The templates as the tpm2-protocol crate marshals the same TPMT_PUBLIC structures (an
    /// independent implementation of Part 2): the hand-written bytes must agree with it.
    #[test]
    fn templates_match_tpm2_protocol_marshalling() {
        use tpm2_protocol::basic::{TpmUint16, TpmUint32};
        use tpm2_protocol::data::*;
        fn bytes(p: &TpmtPublic) -> Vec<u8> {
            let mut buf = vec![0u8; 1024];
            let mut w = tpm2_protocol::TpmWriter::new(&mut buf);
            tpm2_protocol::TpmMarshal::marshal(p, &mut w).unwrap();
            let n = w.len();
            buf.truncate(n);
            buf
        }
        let aes = TpmtSymDef {
            algorithm: TpmAlgId::Aes,
            key_bits: TpmuSymKeyBits::Aes(TpmUint16::new(128)),
            mode: TpmuSymMode::Aes(TpmAlgId::Cfb),
        };
        let null_sym =
            TpmtSymDef { algorithm: TpmAlgId::Null, key_bits: TpmuSymKeyBits::Null, mode: TpmuSymMode::Null };
        let policy = [0x5Au8; 32];
        let sealed = TpmtPublic {
            object_type: TpmAlgId::KeyedHash,
            name_alg: TpmAlgId::Sha256,
            object_attributes: TpmaObject::from_bits_truncate(SEALED_OBJECT_ATTRIBUTES),
            auth_policy: Tpm2bDigest::try_from(&policy[..]).unwrap(),
            parameters: TpmuPublicParms::KeyedHash(TpmsKeyedhashParms::default()),
            unique: TpmuPublicId::KeyedHash(Tpm2bDigest::default()),
        };
        assert_eq!(sealed_object_template(&policy), bytes(&sealed));
        let srk = TpmtPublic {
            object_type: TpmAlgId::Ecc,
            name_alg: TpmAlgId::Sha256,
            object_attributes: TpmaObject::from_bits_truncate(0x0003_0072),
            auth_policy: Tpm2bDigest::default(),
            parameters: TpmuPublicParms::Ecc(TpmsEccParms {
                symmetric: aes,
                scheme: Default::default(),
                curve_id: TpmEccCurve::NistP256,
                kdf: Default::default(),
            }),
            unique: TpmuPublicId::Ecc(TpmsEccPoint::default()),
        };
        assert_eq!(storage_primary_template(), bytes(&srk));
        let ak = TpmtPublic {
            object_type: TpmAlgId::Rsa,
            name_alg: TpmAlgId::Sha256,
            object_attributes: TpmaObject::from_bits_truncate(0x0005_0072),
            auth_policy: Tpm2bDigest::default(),
            parameters: TpmuPublicParms::Rsa(TpmsRsaParms {
                symmetric: null_sym,
                scheme: TpmtRsaScheme {
                    scheme: TpmAlgId::Rsassa,
                    details: TpmuAsymScheme::Hash(TpmsSchemeHash { hash_alg: TpmAlgId::Sha256 }),
                },
                key_bits: TpmUint16::new(2048),
                exponent: TpmUint32::new(0),
            }),
            unique: TpmuPublicId::Rsa(Tpm2bPublicKeyRsa::default()),
        };
        assert_eq!(attestation_key_template(), bytes(&ak));
        let ek = TpmtPublic {
            object_type: TpmAlgId::Rsa,
            name_alg: TpmAlgId::Sha256,
            object_attributes: TpmaObject::from_bits_truncate(0x0003_00B2),
            auth_policy: Tpm2bDigest::try_from(&EK_POLICY[..]).unwrap(),
            parameters: TpmuPublicParms::Rsa(TpmsRsaParms {
                symmetric: aes,
                scheme: Default::default(),
                key_bits: TpmUint16::new(2048),
                exponent: TpmUint32::new(0),
            }),
            unique: TpmuPublicId::Rsa(Tpm2bPublicKeyRsa::try_from(&[0u8; 256][..]).unwrap()),
        };
        assert_eq!(ek_rsa2048_template(), bytes(&ek));
        // And the RSA parser reads the crate's marshalling of a key with a modulus back.
        let mut with_key = ak;
        with_key.unique = TpmuPublicId::Rsa(Tpm2bPublicKeyRsa::try_from(&[0xC3u8; 256][..]).unwrap());
        let (modulus, e) = crate::tpm::rsa_public_parts(&wire::tpm2b(&bytes(&with_key))).unwrap();
        assert_eq!((modulus, e), (vec![0xC3; 256], 65537));
        assert!(crate::tpm::rsa_public_parts(&wire::tpm2b(&bytes(&srk))).unwrap_err().contains("not an RSA key"));
        let mut trailing = wire::tpm2b(&bytes(&with_key));
        trailing.push(0);
        assert!(crate::tpm::rsa_public_parts(&trailing).is_err());
    }

    /// Responses a hostile or broken TPM could send for commands with handles and sessions.
    #[test]
    fn hostile_responses_are_refused() {
        // Load: handle, parameterSize, name; then an (ignored) session area.
        let good = hex("80 02 00 00 00 1B 00 00 00 00 80 00 00 01 00 00 00 04 00 02 AB CD 00 00 01 00 00");
        let blob = SealedBlob { private: vec![0, 1, 7], public: vec![0, 1, 8] };
        let mut rec = Recorder { sent: vec![], response: good.clone() };
        assert_eq!(Tpm::new(&mut rec).load(0x8100_0001, &blob).unwrap(), 0x8000_0001);
        // parameterSize past the end of the frame.
        let mut bad = good.clone();
        bad[17] = 0x40;
        let mut rec = Recorder { sent: vec![], response: bad };
        assert!(Tpm::new(&mut rec).load(0x8100_0001, &blob).unwrap_err().to_string().contains("runs past"));
        // A name longer than its parameters.
        let mut bad = good.clone();
        bad[19] = 0x09;
        let mut rec = Recorder { sent: vec![], response: bad };
        assert!(Tpm::new(&mut rec).load(0x8100_0001, &blob).is_err());
        // The size field disagrees with the frame.
        let mut bad = good.clone();
        bad.push(0);
        let mut rec = Recorder { sent: vec![], response: bad };
        assert!(Tpm::new(&mut rec).load(0x8100_0001, &blob).unwrap_err().to_string().contains("the header says"));
        // Caller bytes that are not one TPM2B never reach the TPM.
        let mut rec = Recorder { sent: vec![], response: good };
        let bad_blob = SealedBlob { private: vec![0, 5, 7], public: vec![0, 1, 8] };
        assert_eq!(
            Tpm::new(&mut rec).load(1, &bad_blob),
            Err(TpmErrorKind::Marshal("sealed blob: private area").into())
        );
        assert!(rec.sent.is_empty());
        // A quote whose signature has bytes after it.
        let quote = hex("80 02 00 00 00 1F 00 00 00 00 00 00 00 0C 00 02 FF 54 00 14 00 0B 00 02 01 02 00 00 01 00 00");
        let mut rec = Recorder { sent: vec![], response: quote.clone() };
        let q = Tpm::new(&mut rec).quote(1, &[1; 32], Bank::Sha256, &[0]).unwrap();
        assert_eq!((q.attest, q.signature), (vec![0xFF, 0x54], hex("00 14 00 0B 00 02 01 02")));
        let mut bad = quote;
        bad[13] = 0x0D;
        bad.insert(26, 0);
        bad[5] += 1;
        let mut rec = Recorder { sent: vec![], response: bad };
        assert!(
            Tpm::new(&mut rec)
                .quote(1, &[1; 32], Bank::Sha256, &[0])
                .unwrap_err()
                .to_string()
                .contains("after the last")
        );
        let mut rec = Recorder { sent: vec![], response: vec![] };
        assert!(Tpm::new(&mut rec).quote(1, &[0; 67], Bank::Sha256, &[0]).is_err());
        assert!(rec.sent.is_empty());
    }

    #[test]
    fn error_codes_and_malformed_responses() {
        // TPM_RC_LOCKOUT as a bare header.
        let mut rec = Recorder { sent: vec![], response: hex("80 01 00 00 00 0A 00 00 09 21") };
        let err = Tpm::new(&mut rec).pcr_extend(4, &[(Bank::Sha256, vec![0; 32])]).unwrap_err();
        assert_eq!(*err.kind(), TpmErrorKind::Rc { command: "PCR_Extend", rc: 0x921 });
        assert!(err.to_string().contains("LOCKOUT"));
        // TPM_RC_RETRY forever: bounded retries, then the error.
        let mut rec = Recorder { sent: vec![], response: hex("80 01 00 00 00 0A 00 00 09 22") };
        assert!(matches!(Tpm::new(&mut rec).startup_clear().unwrap_err().kind(), TpmErrorKind::Rc { rc: 0x922, .. }));
        assert_eq!(rec.sent.len() as u32, MAX_RETRIES + 1);
        // A PCR_Read answer that names PCRs nobody asked for.
        let mut bad = hex(PCR_READ_OK);
        bad[21] = 0x13; // selection bitmap now 0,1,4
        let mut rec = Recorder { sent: vec![], response: bad };
        assert!(matches!(
            Tpm::new(&mut rec).pcr_read(Bank::Sha256, &[0, 4]).unwrap_err().kind(),
            TpmErrorKind::Response { .. }
        ));
        // Values of another bank.
        let mut bad = hex(PCR_READ_OK);
        bad[19] = 0x0C;
        let mut rec = Recorder { sent: vec![], response: bad };
        assert!(Tpm::new(&mut rec).pcr_read(Bank::Sha256, &[0, 4]).unwrap_err().to_string().contains("not sha256"));
        // Truncated.
        let mut rec = Recorder { sent: vec![], response: hex(PCR_READ_OK)[..40].to_vec() };
        assert!(Tpm::new(&mut rec).pcr_read(Bank::Sha256, &[0, 4]).is_err());
    }
}
