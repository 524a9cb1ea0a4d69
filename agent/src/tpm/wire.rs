//! The TPM 2.0 wire format of the commands veilboot sends (TPM 2.0 Library, Part 1 §18:
//! command and response frames; Part 2: the structures; Part 3: each command's fields): a
//! command builder and a bounds-checked response reader.
//!
//! Written here rather than with the `tpm2-protocol` crate (which host code still uses to
//! parse keys): the firmware sends fifteen fixed command layouts, and the crate's typed,
//! fixed-capacity structures cost about 90 KiB of ROM in moves and unions the firmware never
//! looks into (`cargo xtask bench rom`). The tests pin these bytes to frames recorded from
//! tpm2-tools, to the crate's marshalling of the same structures, and to a real TPM (swtpm).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::command::{TpmError, TpmErrorKind};

/// TPM_ST_NO_SESSIONS.
pub const ST_NO_SESSIONS: u16 = 0x8001;
/// TPM_ST_SESSIONS.
pub const ST_SESSIONS: u16 = 0x8002;
/// A command or response header: tag (2), size (4), command or response code (4).
pub const HEADER: usize = 10;

/// Algorithm identifiers (Part 2, 6.3) the commands, templates and host-side areas name.
pub mod alg {
    /// TPM_ALG_RSA.
    pub const RSA: u16 = 0x0001;
    /// TPM_ALG_AES.
    pub const AES: u16 = 0x0006;
    /// TPM_ALG_HMAC.
    pub const HMAC: u16 = 0x0005;
    /// TPM_ALG_KEYEDHASH.
    pub const KEYEDHASH: u16 = 0x0008;
    /// TPM_ALG_SHA256.
    pub const SHA256: u16 = 0x000B;
    /// TPM_ALG_NULL.
    pub const NULL: u16 = 0x0010;
    /// TPM_ALG_RSASSA.
    pub const RSASSA: u16 = 0x0014;
    /// TPM_ALG_RSAES.
    pub const RSAES: u16 = 0x0015;
    /// TPM_ALG_RSAPSS.
    pub const RSAPSS: u16 = 0x0016;
    /// TPM_ALG_ECDSA.
    pub const ECDSA: u16 = 0x0018;
    /// TPM_ALG_ECDAA.
    pub const ECDAA: u16 = 0x001A;
    /// TPM_ALG_SM2.
    pub const SM2: u16 = 0x001B;
    /// TPM_ALG_ECSCHNORR.
    pub const ECSCHNORR: u16 = 0x001C;
    /// TPM_ALG_ECC.
    pub const ECC: u16 = 0x0023;
    /// TPM_ALG_CFB.
    pub const CFB: u16 = 0x0043;
}

/// A command frame being built: header, handles and authorization area first, then the
/// parameters appended in order; [`CommandFrame::finish`] writes the size.
pub struct CommandFrame {
    bytes: Vec<u8>,
}

impl CommandFrame {
    /// A command `cc` on `handles`, authorised by `sessions` (session handles: TPM_RS_PW or a
    /// policy session; empty nonce, no attributes, empty HMAC, as a password or policy
    /// session without HMAC takes them).
    pub fn new(cc: u32, handles: &[u32], sessions: &[u32]) -> CommandFrame {
        let tag = if sessions.is_empty() { ST_NO_SESSIONS } else { ST_SESSIONS };
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&tag.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&cc.to_be_bytes());
        for h in handles {
            bytes.extend_from_slice(&h.to_be_bytes());
        }
        if !sessions.is_empty() {
            // TPMS_AUTH_COMMAND: handle (4), nonce (2), attributes (1), hmac (2).
            bytes.extend_from_slice(&(9 * sessions.len() as u32).to_be_bytes());
            for s in sessions {
                bytes.extend_from_slice(&s.to_be_bytes());
                bytes.extend_from_slice(&[0, 0, 0, 0, 0]);
            }
        }
        CommandFrame { bytes }
    }

    /// A byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.bytes.push(v);
        self
    }

    /// A big-endian u16.
    pub fn u16(mut self, v: u16) -> Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A big-endian u32.
    pub fn u32(mut self, v: u32) -> Self {
        self.bytes.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Bytes already in wire form.
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// A TPM2B of at most `max` bytes (the structure's own bound); `what` names it in the
    /// error.
    pub fn tpm2b(self, data: &[u8], max: usize, what: &'static str) -> Result<Self, TpmError> {
        if data.len() > max {
            return Err(TpmErrorKind::Marshal(what).into());
        }
        Ok(self.u16(data.len() as u16).raw(data))
    }

    /// An empty TPM2B.
    pub fn empty(self) -> Self {
        self.u16(0)
    }

    /// The frame, its size written.
    pub fn finish(mut self) -> Vec<u8> {
        let size = self.bytes.len() as u32;
        self.bytes[2..6].copy_from_slice(&size.to_be_bytes());
        self.bytes
    }
}

/// A TPML_PCR_SELECTION of `pcrs` in the bank with algorithm `alg` (one 3-byte bitmap, PCRs
/// 0..23).
pub fn pcr_selection(alg: u16, pcrs: &[u32]) -> Result<[u8; 10], TpmError> {
    let mut out = [0u8; 10];
    out[..4].copy_from_slice(&1u32.to_be_bytes());
    out[4..6].copy_from_slice(&alg.to_be_bytes());
    out[6] = 3;
    for &p in pcrs {
        if p >= 24 {
            return Err(TpmErrorKind::Marshal("PCR index above 23").into());
        }
        out[7 + (p / 8) as usize] |= 1 << (p % 8);
    }
    Ok(out)
}

/// A TPM2B of `data` (big-endian u16 size, then the bytes); `data` is under 64 KiB.
pub fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + data.len());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Check caller-supplied bytes that must be exactly one TPM2B of at most `max` bytes (a
/// credential blob, a duplicate, a sealed blob's areas), before they go into a command.
pub fn check_tpm2b(bytes: &[u8], max: usize, what: &'static str) -> Result<(), TpmError> {
    match bytes {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() && rest.len() <= max => Ok(()),
        _ => Err(TpmErrorKind::Marshal(what).into()),
    }
}

/// The response code of a response frame, after checking its header: a known tag and a
/// size field that matches the frame.
pub fn response_code(frame: &[u8], command: &'static str) -> Result<u32, TpmError> {
    let mut r = Reader::new(frame, command);
    let tag = r.u16()?;
    let size = r.u32()?;
    let rc = r.u32()?;
    if size as usize != frame.len() {
        return Err(r.error(alloc::format!("the header says {size} bytes, the frame has {}", frame.len())));
    }
    if tag != ST_NO_SESSIONS && tag != ST_SESSIONS {
        return Err(r.error(alloc::format!("unknown tag {tag:#06x}")));
    }
    Ok(rc)
}

/// A successful response: its handles and a reader over its parameters (the sessions area
/// that follows them on a TPM_ST_SESSIONS response is bounds-checked and skipped).
pub fn response<'a>(
    frame: &'a [u8],
    handles: usize,
    command: &'static str,
) -> Result<(Vec<u32>, Reader<'a>), TpmError> {
    let mut r = Reader::new(frame, command);
    let tag = r.u16()?;
    r.bytes(HEADER - 2)?;
    let handles = (0..handles).map(|_| r.u32()).collect::<Result<Vec<u32>, TpmError>>()?;
    let params = if tag == ST_SESSIONS {
        let size = r.u32()? as usize;
        r.bytes(size)?
    } else {
        r.rest()
    };
    Ok((handles, Reader::new(params, command)))
}

/// Reads a response's fields in order; running past the end is an error naming the command.
pub struct Reader<'a> {
    data: &'a [u8],
    command: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `data`, from a response to `command`.
    pub fn new(data: &'a [u8], command: &'static str) -> Reader<'a> {
        Reader { data, command }
    }

    /// A malformed-response error for this command.
    pub fn error(&self, why: String) -> TpmError {
        TpmErrorKind::Response { command: self.command, why }.into()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        if n > self.data.len() {
            return Err(self.error("a field runs past the response".to_string()));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.bytes(1)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, TpmError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, TpmError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A TPM2B's contents.
    pub fn tpm2b(&mut self) -> Result<&'a [u8], TpmError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// A TPM2B with its size field (the form callers store and send back).
    pub fn tpm2b_whole(&mut self) -> Result<&'a [u8], TpmError> {
        let start = self.data;
        let n = usize::from(self.u16()?);
        self.bytes(n)?;
        Ok(&start[..2 + n])
    }

    /// A TPML_PCR_SELECTION: (algorithm, bitmap) per entry.
    pub fn pcr_selection(&mut self) -> Result<Vec<(u16, &'a [u8])>, TpmError> {
        let count = self.u32()?;
        if count > 16 {
            return Err(self.error(alloc::format!("{count} PCR selections")));
        }
        (0..count)
            .map(|_| {
                let alg = self.u16()?;
                let n = self.u8()?;
                Ok((alg, self.bytes(usize::from(n))?))
            })
            .collect()
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.data)
    }

    /// Fail unless every byte was read.
    pub fn end(&self) -> Result<(), TpmError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(self.error(alloc::format!("{} bytes after the last field", self.data.len())))
        }
    }
}

/// TPMT_PUBLIC of an RSA key: (modulus, exponent), exponent 0 read as 65537 (Part 2, 12.2.3.5).
pub fn rsa_public(tpmt_public: &[u8]) -> Result<(Vec<u8>, u32), String> {
    let mut r = Reader::new(tpmt_public, "public area");
    let fields: Result<_, TpmError> = (|| {
        if r.u16()? != alg::RSA {
            return Ok(None);
        }
        r.u16()?; // nameAlg
        r.u32()?; // objectAttributes
        r.tpm2b()?; // authPolicy
        // TPMT_SYM_DEF_OBJECT: an algorithm, and key bits and mode unless it is NULL.
        if r.u16()? != alg::NULL {
            r.u16()?;
            r.u16()?;
        }
        // TPMT_RSA_SCHEME: a scheme, and a hash for every scheme but NULL and RSAES.
        let scheme = r.u16()?;
        if scheme != alg::NULL && scheme != alg::RSAES {
            r.u16()?;
        }
        r.u16()?; // keyBits
        let exponent = r.u32()?;
        let modulus = r.tpm2b()?.to_vec();
        r.end()?;
        Ok(Some((modulus, exponent)))
    })();
    match fields {
        Ok(Some((modulus, 0))) => Ok((modulus, 65537)),
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(String::from("not an RSA key")),
        Err(e) => match e.kind() {
            TpmErrorKind::Response { why, .. } => Err(alloc::format!("not a TPMT_PUBLIC: {why}")),
            _ => Err(e.to_string()),
        },
    }
}
