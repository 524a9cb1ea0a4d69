//! A TD's evidence: the TDREPORT turned into a quote through TDG.VP.VMCALL<GetQuote> (GHCI
//! 3.3), and the quote with the CC event log in Trustee's `tdx` form
//! (`{"cc_eventlog": "<base64>", "quote": "<base64>"}`).
//!
//! The GetQuote buffer lives in shared memory, written by the VMM (untrusted):
//! `{u64 version = 1, u64 status, u32 in_len, u32 out_len, data[]}`; the TD puts the TDREPORT
//! in `data` and polls `status` until it leaves IN_FLIGHT; the quote comes back in `data`.
//! [`response`] checks every field before a byte of the quote is used.
//!
//! `model` (tests and the model ROM only): the quoting side a test stands up, signing quotes
//! with keys and a PCK chain the test made (accepted by a broker only with a test root).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::b64::STANDARD as B64;

/// The buffer's header length.
pub const HEADER: usize = 24;
/// GetQuote buffer format version.
pub const VERSION: u64 = 1;
/// Status while the quote is being made.
pub const IN_FLIGHT: u64 = u64::MAX;
/// Status: the quote is in the buffer.
pub const SUCCESS: u64 = 0;
/// Status: the quoting service failed.
pub const ERROR: u64 = 1 << 63;
/// Status: no quoting service.
pub const UNAVAILABLE: u64 = (1 << 63) | 1;

/// Why GetQuote gave no quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetQuoteError {
    /// The buffer is too small for a TDREPORT.
    Buffer(usize),
    /// The VMM changed the format version.
    Version(u64),
    /// The quoting service reported an error.
    ServiceError,
    /// There is no quoting service (QGS) behind the VMM.
    Unavailable,
    /// Another status.
    Status(u64),
    /// out_len is zero or does not fit the buffer.
    Length {
        /// What the VMM claims.
        out_len: u32,
        /// Room in the buffer.
        room: usize,
    },
    /// The status stayed IN_FLIGHT.
    Timeout,
}

impl fmt::Display for GetQuoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetQuoteError::Buffer(n) => write!(f, "GetQuote: a {n}-byte buffer cannot hold a TDREPORT"),
            GetQuoteError::Version(v) => write!(f, "GetQuote: the VMM answered with buffer version {v} (1 expected)"),
            GetQuoteError::ServiceError => write!(f, "GetQuote: the quoting service failed (status 1<<63)"),
            GetQuoteError::Unavailable => {
                write!(f, "GetQuote: no quoting service is reachable from the VMM (status (1<<63)|1)")
            }
            GetQuoteError::Status(s) => write!(f, "GetQuote: unknown status {s:#x}"),
            GetQuoteError::Length { out_len, room } => {
                write!(f, "GetQuote: a quote of {out_len} bytes claimed in a buffer with room for {room}")
            }
            GetQuoteError::Timeout => write!(f, "GetQuote: the quote never arrived (status stayed IN_FLIGHT)"),
        }
    }
}

/// Fill `buf` with a request for a quote of `tdreport`.
pub fn request(buf: &mut [u8], tdreport: &[u8]) -> Result<(), GetQuoteError> {
    if buf.len() < HEADER + tdreport.len() {
        return Err(GetQuoteError::Buffer(buf.len()));
    }
    buf.fill(0);
    buf[0..8].copy_from_slice(&VERSION.to_le_bytes());
    buf[8..16].copy_from_slice(&SUCCESS.to_le_bytes());
    buf[16..20].copy_from_slice(&(tdreport.len() as u32).to_le_bytes());
    buf[HEADER..HEADER + tdreport.len()].copy_from_slice(tdreport);
    Ok(())
}

/// The quote in `buf` once the VMM answered; Ok(None) while the status is IN_FLIGHT.
pub fn response(buf: &[u8]) -> Result<Option<Vec<u8>>, GetQuoteError> {
    if buf.len() < HEADER {
        return Err(GetQuoteError::Buffer(buf.len()));
    }
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().expect("8"));
    let version = u64_at(0);
    if version != VERSION {
        return Err(GetQuoteError::Version(version));
    }
    match u64_at(8) {
        IN_FLIGHT => return Ok(None),
        SUCCESS => {}
        ERROR => return Err(GetQuoteError::ServiceError),
        UNAVAILABLE => return Err(GetQuoteError::Unavailable),
        s => return Err(GetQuoteError::Status(s)),
    }
    let out_len = u32::from_le_bytes(buf[20..24].try_into().expect("4"));
    let room = buf.len() - HEADER;
    if out_len == 0 || out_len as usize > room {
        return Err(GetQuoteError::Length { out_len, room });
    }
    Ok(Some(buf[HEADER..HEADER + out_len as usize].to_vec()))
}

/// Trustee's `tdx` evidence: the quote and the CC event log, base64.
pub fn evidence_json(quote: &[u8], cc_eventlog: &[u8]) -> crate::json::Value {
    crate::json!({"cc_eventlog": B64.encode(cc_eventlog), "quote": B64.encode(quote)})
}

/// The quote and the event log (if sent) of `tdx` evidence (untrusted).
pub fn from_evidence(v: &crate::json::Value) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let quote = v
        .get("quote")
        .and_then(crate::json::Value::as_str)
        .and_then(|s| B64.decode(s).ok())
        .ok_or_else(|| String::from("tdx evidence: no base64 \"quote\""))?;
    let log = match v.get("cc_eventlog") {
        None | Some(crate::json::Value::Null) => None,
        Some(crate::json::Value::String(s)) => {
            Some(B64.decode(s).map_err(|_| String::from("tdx evidence: \"cc_eventlog\" is not base64"))?)
        }
        Some(_) => return Err(String::from("tdx evidence: \"cc_eventlog\" is not a string")),
    };
    Ok((quote, log))
}

/// The quoting side of the model: what a QGS and the TD quoting enclave do with a TDREPORT.
#[cfg(any(test, feature = "model"))]
pub mod model {
    use alloc::vec::Vec;

    use p256::ecdsa::signature::Signer;
    use sha2::Digest;

    /// Intel's QE vendor ID in quote headers.
    pub const QE_VENDOR_ID: [u8; 16] =
        [0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07];

    /// What the quoting enclave signs with, and the identity it reports.
    #[derive(Clone)]
    pub struct QuotingKeys {
        /// The attestation key (P-256 scalar).
        pub attestation: [u8; 32],
        /// The PCK (P-256 scalar) that certifies the QE report.
        pub pck: [u8; 32],
        /// The PCK certificate chain (PEM: PCK, CA, root).
        pub chain_pem: Vec<u8>,
        /// The QE's MRSIGNER.
        pub qe_mrsigner: [u8; 32],
        /// The QE's ISVSVN.
        pub qe_isvsvn: u16,
    }

    impl QuotingKeys {
        /// Parse the text form the model ROM reads from fw_cfg: lines `att HEX`, `pck HEX`,
        /// `mrsigner HEX`, `isvsvn N`, then the PEM chain.
        pub fn from_text(text: &str) -> Option<QuotingKeys> {
            let field = |name: &str| {
                text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' '))).map(str::trim)
            };
            let hex32 = |name: &str| -> Option<[u8; 32]> { hex::decode(field(name)?).ok()?.try_into().ok() };
            let chain_at = text.find("-----BEGIN CERTIFICATE-----")?;
            Some(QuotingKeys {
                attestation: hex32("att")?,
                pck: hex32("pck")?,
                chain_pem: text.as_bytes()[chain_at..].to_vec(),
                qe_mrsigner: hex32("mrsigner")?,
                qe_isvsvn: field("isvsvn")?.parse().ok()?,
            })
        }
    }

    fn sign(key: &[u8; 32], msg: &[u8]) -> [u8; 64] {
        let k = p256::ecdsa::SigningKey::from_slice(key).expect("a valid test key");
        let s: p256::ecdsa::Signature = k.sign(msg);
        s.to_bytes().into()
    }

    /// A v4 quote of `tdreport` (1024 bytes), signed as the TD QE signs it.
    pub fn quote(tdreport: &[u8], k: &QuotingKeys) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend(4u16.to_le_bytes());
        q.extend(2u16.to_le_bytes()); // ECDSA P-256
        q.extend(0x81u32.to_le_bytes());
        q.extend(0u16.to_le_bytes()); // QE SVN
        q.extend(0u16.to_le_bytes()); // PCE SVN
        q.extend(QE_VENDOR_ID);
        q.extend([0u8; 20]);
        // The TD report body: TEE_TCB_INFO's SVN, MRSEAM, MRSIGNERSEAM, SEAM attributes, then
        // TDINFO's first 400 bytes, then REPORTDATA.
        let (tcb, td) = (256, 512);
        q.extend(&tdreport[tcb + 8..tcb + 8 + 16 + 48 + 48 + 8]);
        q.extend(&tdreport[td..td + 400]);
        q.extend(&tdreport[128..192]);
        let att_pub = {
            let k = p256::ecdsa::SigningKey::from_slice(&k.attestation).expect("a valid test key");
            let p = k.verifying_key().to_sec1_point(false);
            let mut xy = [0u8; 64];
            xy.copy_from_slice(&p.as_bytes()[1..]);
            xy
        };
        let signature = sign(&k.attestation, &q);
        let auth_data = [0u8; 32];
        let mut qe_report = alloc::vec![0u8; 384];
        qe_report[48] = 0x11; // ATTRIBUTES: INIT, MODE64BIT
        qe_report[128..160].copy_from_slice(&k.qe_mrsigner);
        qe_report[256..258].copy_from_slice(&2u16.to_le_bytes()); // ISVPRODID: the TD QE
        qe_report[258..260].copy_from_slice(&k.qe_isvsvn.to_le_bytes());
        let mut h = sha2::Sha256::new();
        h.update(att_pub);
        h.update(auth_data);
        qe_report[320..352].copy_from_slice(&h.finalize());
        let qe_sig = sign(&k.pck, &qe_report);
        let mut cert = Vec::new();
        cert.extend(&qe_report);
        cert.extend(qe_sig);
        cert.extend((auth_data.len() as u16).to_le_bytes());
        cert.extend(auth_data);
        cert.extend(5u16.to_le_bytes());
        cert.extend((k.chain_pem.len() as u32).to_le_bytes());
        cert.extend(&k.chain_pem);
        let mut sig_data = Vec::new();
        sig_data.extend(signature);
        sig_data.extend(att_pub);
        sig_data.extend(6u16.to_le_bytes());
        sig_data.extend((cert.len() as u32).to_le_bytes());
        sig_data.extend(cert);
        q.extend((sig_data.len() as u32).to_le_bytes());
        q.extend(sig_data);
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_every_response_status() {
        let mut buf = alloc::vec![0u8; 4096];
        let report = [0x81u8; 1024];
        request(&mut buf, &report).unwrap();
        assert_eq!(buf[16..20], 1024u32.to_le_bytes());
        assert_eq!(request(&mut [0u8; 100], &report), Err(GetQuoteError::Buffer(100)));
        let with = |status: u64, out_len: u32| {
            let mut b = buf.clone();
            b[8..16].copy_from_slice(&status.to_le_bytes());
            b[20..24].copy_from_slice(&out_len.to_le_bytes());
            b
        };
        assert_eq!(response(&with(IN_FLIGHT, 0)), Ok(None));
        assert_eq!(response(&with(SUCCESS, 10)).unwrap().unwrap(), &buf[24..34]);
        assert_eq!(response(&with(ERROR, 10)), Err(GetQuoteError::ServiceError));
        assert_eq!(response(&with(UNAVAILABLE, 10)), Err(GetQuoteError::Unavailable));
        assert_eq!(response(&with(7, 10)), Err(GetQuoteError::Status(7)));
        assert_eq!(response(&with(SUCCESS, 0)), Err(GetQuoteError::Length { out_len: 0, room: 4072 }));
        assert_eq!(response(&with(SUCCESS, 4073)), Err(GetQuoteError::Length { out_len: 4073, room: 4072 }));
        let mut v2 = with(SUCCESS, 10);
        v2[0] = 2;
        assert_eq!(response(&v2), Err(GetQuoteError::Version(2)));
    }

    #[test]
    fn evidence_round_trips_and_refuses_junk() {
        let v = evidence_json(b"quote", b"log");
        assert_eq!(from_evidence(&v).unwrap(), (b"quote".to_vec(), Some(b"log".to_vec())));
        assert_eq!(from_evidence(&crate::json!({"quote": "cXVvdGU=", "cc_eventlog": null})).unwrap().1, None);
        assert!(from_evidence(&crate::json!({"cc_eventlog": "bG9n"})).is_err());
        assert!(from_evidence(&crate::json!({"quote": "cXVvdGU=", "cc_eventlog": 5})).is_err());
    }

    #[test]
    fn the_model_quote_parses_and_verifies_to_its_pck() {
        let keys = model::QuotingKeys {
            attestation: [7u8; 32],
            pck: [9u8; 32],
            chain_pem: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            qe_mrsigner: [1u8; 32],
            qe_isvsvn: 4,
        };
        let mut report = [0u8; 1024];
        report[0] = 0x81;
        report[128] = 0x5A; // REPORTDATA
        report[512 + 16] = 0x77; // MRTD
        let q = super::super::quote::parse(&model::quote(&report, &keys)).unwrap();
        assert_eq!((q.body.report_data[0], q.body.mr_td[0]), (0x5A, 0x77));
        let pck = p256::ecdsa::SigningKey::from_slice(&keys.pck).unwrap();
        q.verify_signatures(pck.verifying_key().to_sec1_point(false).as_bytes()).unwrap();
    }
}
