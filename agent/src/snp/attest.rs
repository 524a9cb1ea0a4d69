//! Guest requests to the AMD-SP through the GHCB (GUEST_REQUEST and EXT_GUEST_REQUEST exits):
//! the encrypted message goes to a shared request page, the hypervisor passes it on, the
//! encrypted answer comes back on a shared response page ([`guest_request`]); and the host's
//! certificate table an extended request returns ([`parse_cert_table`]).
//!
//! Sequence numbers (guest_msg::Channel) are never reused: BUSY resends the identical
//! ciphertext; an extended request whose certificate buffer is too small is resent, identical,
//! as a plain request (the AMD-SP has not seen it, so its sequence number is consumed by that
//! one), as Linux does; any other failure disables the channel and wipes its VMPCK.

use alloc::vec::Vec;
use core::fmt;

use zeroize::Zeroizing;

use super::evidence::CertType;
use super::ghcb::{Ghcb, GhcbError, exit};
use super::guest_msg::{Channel, GuestMsgError, MsgType, PAGE};

/// Resends of a request the hypervisor calls BUSY before giving up.
const BUSY_RETRIES: u32 = 10_000;

/// The shared pages a guest request uses (guest-physical addresses, 4 KiB aligned).
#[derive(Debug, Clone, Copy)]
pub struct RequestPages {
    /// The request page.
    pub request: u64,
    /// The response page.
    pub response: u64,
    /// The certificate buffer for an extended request (GPA, pages), if any.
    pub certs: Option<(u64, u64)>,
}

/// Why a guest request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestError {
    /// The message layer refused (sequence numbers, authentication, size).
    Message(GuestMsgError),
    /// The GHCB exit failed.
    Ghcb(GhcbError),
    /// The AMD-SP's firmware status (low half of SW_EXITINFO2), or the hypervisor's error
    /// (high half) other than BUSY and INVALID_LEN.
    Refused {
        /// Firmware status.
        firmware: u32,
        /// Hypervisor error.
        hypervisor: u32,
    },
    /// The hypervisor stayed BUSY.
    Busy,
    /// The certificate table is malformed: what is wrong.
    CertTable(&'static str),
}

impl fmt::Display for AttestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttestError::Message(e) => write!(f, "{e}"),
            AttestError::Ghcb(e) => write!(f, "guest request: {e}"),
            AttestError::Refused { firmware, hypervisor } => write!(
                f,
                "guest request refused: AMD-SP status {firmware:#x}, hypervisor error {hypervisor:#x} (channel disabled, VMPCK wiped)"
            ),
            AttestError::Busy => write!(f, "guest request: the hypervisor stayed busy (channel disabled, VMPCK wiped)"),
            AttestError::CertTable(why) => write!(f, "the host's certificate table: {why}"),
        }
    }
}

impl From<GuestMsgError> for AttestError {
    fn from(e: GuestMsgError) -> Self {
        AttestError::Message(e)
    }
}

/// What a guest request returned: the decrypted payload and, for an extended request that
/// the host answered with one, the certificate table's bytes.
pub struct Answer {
    /// The response payload (decrypted, authenticated).
    pub payload: Zeroizing<Vec<u8>>,
    /// The certificate table, if the host provided one.
    pub certs: Option<Vec<u8>>,
}

/// Send `payload` as a `msg_type` message on `channel` and return the answer.
pub fn guest_request(
    ghcb: &mut Ghcb<'_>,
    channel: &mut Channel,
    msg_type: MsgType,
    version: u8,
    payload: &[u8],
    pages: RequestPages,
) -> Result<Answer, AttestError> {
    let request = channel.request(msg_type, version, payload)?;
    let mut page = Zeroizing::new([0u8; PAGE]);
    page[..request.bytes.len()].copy_from_slice(&request.bytes);
    ghcb.cpu().write_shared(pages.request, page.as_ref());
    let mut certs = pages.certs;
    let mut tries = 0;
    let outcome = loop {
        let (code, regs) = match certs {
            Some((gpa, n)) => (exit::EXT_GUEST_REQUEST, Some((gpa, n))),
            None => (exit::GUEST_REQUEST, None),
        };
        let status = match ghcb.guest_request_exit(code, pages.request, pages.response, regs) {
            Ok(s) => s,
            Err(e) => break Err(AttestError::Ghcb(e)),
        };
        let (firmware, hypervisor) = (status as u32, (status >> 32) as u32);
        match (firmware, hypervisor) {
            (0, 0) => break Ok(()),
            (_, 2) if tries < BUSY_RETRIES => tries += 1, // BUSY: the same ciphertext again
            (_, 2) => break Err(AttestError::Busy),
            (_, 1) if certs.is_some() => certs = None, // INVALID_LEN: resend without certificates
            _ => break Err(AttestError::Refused { firmware, hypervisor }),
        }
    };
    if let Err(e) = outcome {
        channel.fail();
        return Err(e);
    }
    let mut answer = Zeroizing::new([0u8; PAGE]);
    ghcb.cpu().read_shared(pages.response, answer.as_mut());
    let payload = channel.response(&request, answer.as_ref())?;
    let certs = match certs {
        Some((gpa, n)) => {
            let mut table = alloc::vec![0u8; (n as usize) * PAGE];
            for (i, chunk) in table.chunks_mut(PAGE).enumerate() {
                ghcb.cpu().read_shared(gpa + (i * PAGE) as u64, chunk);
            }
            Some(table)
        }
        None => None,
    };
    Ok(Answer { payload, certs })
}

/// The certificate-table GUIDs (GHCB specification), in the byte order hosts write them
/// (RFC 4122: as the text reads; virtee/sev, go-sev-guest and snphost agree).
const CERT_GUIDS: [(CertType, [u8; 16]); 4] = [
    (CertType::Vcek, guid(0x63da758d, 0xe664, 0x4564, [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd])),
    (CertType::Vlek, guid(0xa8074bc2, 0xa25a, 0x483e, [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1])),
    (CertType::Ask, guid(0x4ab7b379, 0xbbac, 0x4fe4, [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82])),
    (CertType::Ark, guid(0xc0b406a4, 0xa803, 0x4952, [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae])),
];

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let (a, b, c) = (a.to_be_bytes(), b.to_be_bytes(), c.to_be_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

/// The GUID of a certificate type in the table.
pub fn cert_guid(t: CertType) -> [u8; 16] {
    CERT_GUIDS.iter().find(|(c, _)| *c == t).map(|(_, g)| *g).expect("every type has a GUID")
}

/// Parse the host's certificate table: entries `{GUID, u32 offset, u32 length}` up to an
/// all-zero entry, each blob inside the table; known types only (others are skipped), each at
/// most once.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<(CertType, Vec<u8>)>, AttestError> {
    let mut certs: Vec<(CertType, Vec<u8>)> = Vec::new();
    let mut at = 0;
    loop {
        let entry = table.get(at..at + 24).ok_or(AttestError::CertTable("no terminating entry"))?;
        if entry.iter().all(|b| *b == 0) {
            return Ok(certs);
        }
        let offset = u32::from_le_bytes(entry[16..20].try_into().expect("4 bytes")) as usize;
        let len = u32::from_le_bytes(entry[20..24].try_into().expect("4 bytes")) as usize;
        let blob = offset
            .checked_add(len)
            .and_then(|end| table.get(offset..end))
            .ok_or(AttestError::CertTable("an entry whose blob lies outside the table"))?;
        if let Some((t, _)) = CERT_GUIDS.iter().find(|(_, g)| entry[..16] == *g) {
            if certs.iter().any(|(c, _)| c == t) {
                return Err(AttestError::CertTable("a certificate type that appears twice"));
            }
            certs.push((*t, blob.to_vec()));
        }
        at += 24;
    }
}

/// Build a certificate table (the host's side; for the model and tests).
pub fn build_cert_table(certs: &[(CertType, Vec<u8>)]) -> Vec<u8> {
    let header = 24 * (certs.len() + 1);
    let mut t = alloc::vec![0u8; header];
    for (i, (ty, der)) in certs.iter().enumerate() {
        let offset = t.len();
        t[24 * i..24 * i + 16].copy_from_slice(&cert_guid(*ty));
        t[24 * i + 16..24 * i + 20].copy_from_slice(&(offset as u32).to_le_bytes());
        t[24 * i + 20..24 * i + 24].copy_from_slice(&(der.len() as u32).to_le_bytes());
        t.extend_from_slice(der);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_table_round_trip_and_refusals() {
        let certs = alloc::vec![(CertType::Vcek, alloc::vec![1u8, 2, 3]), (CertType::Ask, alloc::vec![4u8; 10])];
        let t = build_cert_table(&certs);
        assert_eq!(parse_cert_table(&t).unwrap(), certs);
        // The VCEK GUID's wire bytes as virtee/sev's Uuid::from_slice reads them.
        assert_eq!(
            t[..16],
            [0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd]
        );
        assert_eq!(parse_cert_table(&t[..20]), Err(AttestError::CertTable("no terminating entry")));
        let mut bad = t.clone();
        bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_cert_table(&bad), Err(AttestError::CertTable("an entry whose blob lies outside the table")));
        let twice = build_cert_table(&[(CertType::Ark, alloc::vec![1]), (CertType::Ark, alloc::vec![2])]);
        assert_eq!(parse_cert_table(&twice), Err(AttestError::CertTable("a certificate type that appears twice")));
    }
}
