//! TD quotes (Intel TDX DCAP quote format, versions 4 and 5): the header, the TD report body
//! (what the TD's TDREPORT said: MRTD, RTMRs, MRCONFIGID, attributes, report data) and the
//! ECDSA-P256 signature data (the attestation key's signature over header and body, and the
//! quoting enclave's report certifying that key, signed by the PCK). Untrusted input: every
//! length is checked against the buffer; trailing bytes after the quote are tolerated (as
//! upstream parsers do).
//!
//! [`Quote::verify_signatures`] checks the two signatures that bind the body to a PCK key:
//! the attestation key signs header and body; the QE report's REPORTDATA holds
//! SHA-256(attestation key || QE authentication data); the PCK key signs the QE report. The
//! PCK certificate chain to Intel's root and the TCB status from collateral are the DCAP
//! verifier's next steps (not here yet).

use alloc::vec::Vec;

/// TDX's TEE type in the quote header.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// ECDSA-256-with-P-256 attestation keys.
pub const ATT_KEY_ECDSA_P256: u16 = 2;
const BODY_10_LEN: usize = 584;
const BODY_15_LEN: usize = 648;

/// The TD report body of a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the TDREPORT fields, by their specification names
pub struct TdReportBody {
    pub tee_tcb_svn: [u8; 16],
    pub mr_seam: [u8; 48],
    pub mr_signer_seam: [u8; 48],
    pub seam_attributes: [u8; 8],
    pub td_attributes: [u8; 8],
    pub xfam: [u8; 8],
    pub mr_td: [u8; 48],
    pub mr_config_id: [u8; 48],
    pub mr_owner: [u8; 48],
    pub mr_owner_config: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub report_data: [u8; 64],
    /// TD report 1.5 (quote v5, body type 3) only: the current TEE TCB SVN (after a
    /// TD-preserving module update; TEE_TCB_SVN is the launch one).
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// TD report 1.5 only: the hash of the service TDs bound to this TD (zero: none).
    pub mr_service_td: Option<[u8; 48]>,
}

impl TdReportBody {
    /// The TD attributes as a number (TDX module ABI: bits 7:0 TUD, 31:8 SEC, 63:32 OTHER).
    pub fn attributes(&self) -> u64 {
        u64::from_le_bytes(self.td_attributes)
    }
}

/// A parsed quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Quote version (4 or 5).
    pub version: u16,
    /// Attestation key type (2: ECDSA P-256).
    pub att_key_type: u16,
    /// QE security version.
    pub qe_svn: u16,
    /// PCE security version.
    pub pce_svn: u16,
    /// QE vendor ID.
    pub qe_vendor_id: [u8; 16],
    /// The TD report body.
    pub body: TdReportBody,
    /// The signed bytes (header and body, as the attestation key signed them).
    pub signed: Vec<u8>,
    /// The attestation key's signature (r || s, big-endian).
    pub signature: [u8; 64],
    /// The attestation key (x || y).
    pub attestation_key: [u8; 64],
    /// The QE report (384 bytes, an SGX report body).
    pub qe_report: Vec<u8>,
    /// The PCK's signature over the QE report.
    pub qe_report_signature: [u8; 64],
    /// The QE authentication data.
    pub qe_auth_data: Vec<u8>,
    /// The certification data type (5: the PCK certificate chain in PEM) and its bytes.
    pub certification: (u16, Vec<u8>),
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        let s = self.b.get(self.at..self.at.checked_add(n).ok_or(what)?).ok_or(what)?;
        self.at += n;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, &'static str> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2")))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4")))
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], &'static str> {
        Ok(self.take(N, what)?.try_into().expect("N"))
    }
}

fn body(b: &[u8]) -> TdReportBody {
    let mut r = Reader { b, at: 0 };
    let mut f = |n: usize| r.take(n, "body").expect("a checked body length").to_vec();
    let a16 = |v: Vec<u8>| -> [u8; 16] { v.try_into().expect("16") };
    let a48 = |v: Vec<u8>| -> [u8; 48] { v.try_into().expect("48") };
    let a8 = |v: Vec<u8>| -> [u8; 8] { v.try_into().expect("8") };
    TdReportBody {
        tee_tcb_svn: a16(f(16)),
        mr_seam: a48(f(48)),
        mr_signer_seam: a48(f(48)),
        seam_attributes: a8(f(8)),
        td_attributes: a8(f(8)),
        xfam: a8(f(8)),
        mr_td: a48(f(48)),
        mr_config_id: a48(f(48)),
        mr_owner: a48(f(48)),
        mr_owner_config: a48(f(48)),
        rtmr: [a48(f(48)), a48(f(48)), a48(f(48)), a48(f(48))],
        report_data: f(64).try_into().expect("64"),
        tee_tcb_svn2: None,
        mr_service_td: None,
    }
}

/// A TD report 1.5 body: the 1.0 fields, then TEE_TCB_SVN2 and MRSERVICETD.
fn body_15(b: &[u8]) -> TdReportBody {
    let mut out = body(&b[..BODY_10_LEN]);
    out.tee_tcb_svn2 = Some(b[BODY_10_LEN..BODY_10_LEN + 16].try_into().expect("16"));
    out.mr_service_td = Some(b[BODY_10_LEN + 16..BODY_15_LEN].try_into().expect("48"));
    out
}

/// Parse a TD quote (version 4, or 5 with a TD report 1.0 or 1.5 body).
pub fn parse(bytes: &[u8]) -> Result<Quote, &'static str> {
    let mut r = Reader { b: bytes, at: 0 };
    let version = r.u16("a truncated header")?;
    let att_key_type = r.u16("a truncated header")?;
    let tee_type = r.u32("a truncated header")?;
    let qe_svn = r.u16("a truncated header")?;
    let pce_svn = r.u16("a truncated header")?;
    let qe_vendor_id = r.array::<16>("a truncated header")?;
    r.take(20, "a truncated header")?; // user data
    if tee_type != TEE_TYPE_TDX {
        return Err("not a TDX quote (TEE type is not 0x81)");
    }
    if att_key_type != ATT_KEY_ECDSA_P256 {
        return Err("an attestation key type other than ECDSA P-256");
    }
    let body_bytes = match version {
        4 => r.take(BODY_10_LEN, "a truncated TD report body")?,
        5 => {
            let kind = r.u16("a truncated v5 body header")?;
            let size = r.u32("a truncated v5 body header")? as usize;
            match (kind, size) {
                (2, BODY_10_LEN) | (3, BODY_15_LEN) => r.take(size, "a truncated TD report body")?,
                _ => return Err("a v5 body that is not a TD report 1.0 or 1.5"),
            }
        }
        _ => return Err("a quote version other than 4 or 5"),
    };
    let signed = bytes[..r.at].to_vec();
    let sig_len = r.u32("no signature data length")? as usize;
    let sig_data = r.take(sig_len, "signature data shorter than its length")?;
    let mut s = Reader { b: sig_data, at: 0 };
    let signature = s.array::<64>("a truncated signature")?;
    let attestation_key = s.array::<64>("a truncated attestation key")?;
    let cert_type = s.u16("no certification data")?;
    let cert_len = s.u32("no certification data")? as usize;
    let cert = s.take(cert_len, "certification data shorter than its length")?;
    if cert_type != 6 {
        return Err("outer certification data is not the QE report (type 6)");
    }
    let mut c = Reader { b: cert, at: 0 };
    let qe_report = c.take(384, "a truncated QE report")?.to_vec();
    let qe_report_signature = c.array::<64>("a truncated QE report signature")?;
    let auth_len = usize::from(c.u16("no QE authentication data")?);
    let qe_auth_data = c.take(auth_len, "QE authentication data shorter than its length")?.to_vec();
    let inner_type = c.u16("no inner certification data")?;
    let inner_len = c.u32("no inner certification data")? as usize;
    let inner = c.take(inner_len, "inner certification data shorter than its length")?.to_vec();
    Ok(Quote {
        version,
        att_key_type,
        qe_svn,
        pce_svn,
        qe_vendor_id,
        body: if body_bytes.len() == BODY_15_LEN { body_15(body_bytes) } else { body(body_bytes) },
        signed,
        signature,
        attestation_key,
        qe_report,
        qe_report_signature,
        qe_auth_data,
        certification: (inner_type, inner),
    })
}

fn verifying_key(xy: &[u8; 64]) -> Result<p256::ecdsa::VerifyingKey, &'static str> {
    let mut sec1 = [4u8; 65];
    sec1[1..].copy_from_slice(xy);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| "a key that is not a P-256 point")
}

impl Quote {
    /// Check the signatures that bind the body to `pck` (the PCK's public key, SEC1
    /// uncompressed): the attestation key's over header and body, the QE report's binding of
    /// that key, the PCK's over the QE report.
    pub fn verify_signatures(&self, pck: &[u8]) -> Result<(), &'static str> {
        use p256::ecdsa::signature::Verifier;
        use sha2::Digest;
        let sig = |b: &[u8; 64]| p256::ecdsa::Signature::from_slice(b).map_err(|_| "a malformed ECDSA signature");
        verifying_key(&self.attestation_key)?
            .verify(&self.signed, &sig(&self.signature)?)
            .map_err(|_| "the attestation key's signature over the quote does not verify")?;
        let mut h = sha2::Sha256::new();
        h.update(self.attestation_key);
        h.update(&self.qe_auth_data);
        if self.qe_report[320..352] != h.finalize()[..] {
            return Err("the QE report does not certify this attestation key");
        }
        p256::ecdsa::VerifyingKey::from_sec1_bytes(pck)
            .map_err(|_| "the PCK key is not a P-256 point")?
            .verify(&self.qe_report, &sig(&self.qe_report_signature)?)
            .map_err(|_| "the PCK's signature over the QE report does not verify")
    }
}
