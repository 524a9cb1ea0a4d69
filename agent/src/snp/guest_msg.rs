//! SEV-SNP guest messages (SNP firmware ABI, "Guest Messages"): requests to the AMD-SP
//! (attestation reports, derived keys) encrypted with a VMPCK, and its responses, with the
//! sequence-number rules that keep AES-GCM from ever reusing an IV:
//!
//! * a message is a 0x60-byte header (tag at 0x00, sequence number at 0x20, then algorithm,
//!   header version and size, message type, version and size, VMPCK index; bytes 0x30..0x60
//!   are the AAD) followed by the payload, AES-256-GCM with IV = sequence number (u64 LE)
//!   followed by four zero bytes;
//! * a request carries the channel's count + 1, its response count + 2, the type + 1 and the
//!   same version; only a verified response advances the count (by 2);
//! * while a request is outstanding no other is encrypted: a BUSY answer means resending the
//!   same ciphertext; any other failure, and any response that is not exactly the answer
//!   (header, length, type, version, sequence number, authentication), disables the channel
//!   and wipes the VMPCK, since the AMD-SP may have seen the sequence number.
//!
//! Encryption and decryption happen here, on private memory; the kernel copies only the
//! ciphertext to and from the shared pages.

use alloc::vec::Vec;
use core::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

/// Header size.
pub const HEADER_LEN: usize = 0x60;
/// A message page.
pub const PAGE: usize = 4096;
/// Largest payload: header and payload share one page.
pub const MAX_PAYLOAD: usize = PAGE - HEADER_LEN;

/// Message types used by veilboot (responses are the request's type + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    /// MSG_KEY_REQ.
    KeyRequest = 3,
    /// MSG_REPORT_REQ.
    ReportRequest = 5,
}

/// Why a guest message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMsgError {
    /// The channel was disabled after an earlier failure; its VMPCK is wiped.
    Disabled,
    /// A request is outstanding: it must be completed, resent or abandoned first.
    Outstanding,
    /// No request is outstanding.
    NoRequest,
    /// The payload does not fit a message page.
    PayloadSize(usize),
    /// The sequence number would wrap (Linux stops at u32::MAX for the OS area's count).
    SequenceExhausted,
    /// The response is shorter than its header or its stated size.
    Truncated,
    /// The response header is not what the request calls for: which field.
    Header(&'static str),
    /// The response does not authenticate under the VMPCK (the channel is now disabled).
    Authentication,
}

impl fmt::Display for GuestMsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestMsgError::Disabled => write!(f, "the guest-message channel is disabled and its VMPCK wiped"),
            GuestMsgError::Outstanding => write!(f, "a guest request is outstanding"),
            GuestMsgError::NoRequest => write!(f, "no guest request is outstanding"),
            GuestMsgError::PayloadSize(n) => write!(f, "a guest message payload of {n} bytes (at most {MAX_PAYLOAD})"),
            GuestMsgError::SequenceExhausted => write!(f, "the guest-message sequence numbers are used up"),
            GuestMsgError::Truncated => write!(f, "a truncated guest-message response"),
            GuestMsgError::Header(what) => write!(f, "guest-message response header: {what}"),
            GuestMsgError::Authentication => {
                write!(f, "the guest-message response does not authenticate: channel disabled, VMPCK wiped")
            }
        }
    }
}

/// An encrypted request, kept until its response arrives (resent as is on BUSY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The message bytes (header and ciphertext) for the shared request page.
    pub bytes: Vec<u8>,
    seqno: u64,
    msg_type: MsgType,
    version: u8,
}

/// A VMPCK and its sequence numbers. The key lives in one heap box, zeroized on drop and on
/// disable, and is never moved: a channel moves only the pointer.
pub struct Channel {
    vmpck: alloc::boxed::Box<Zeroizing<[u8; 32]>>,
    vmpck_id: u8,
    /// Messages exchanged so far (the OS area's count): the next request uses count + 1.
    count: u64,
    outstanding: Option<u64>,
    disabled: bool,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel").field("vmpck_id", &self.vmpck_id).field("count", &self.count).finish_non_exhaustive()
    }
}

fn header(seqno: u64, msg_type: u8, version: u8, len: usize, vmpck_id: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0x20..0x28].copy_from_slice(&seqno.to_le_bytes());
    h[0x30] = 1; // AES-256-GCM
    h[0x31] = 1; // header version
    h[0x32..0x34].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    h[0x34] = msg_type;
    h[0x35] = version;
    h[0x36..0x38].copy_from_slice(&(len as u16).to_le_bytes());
    h[0x3C] = vmpck_id;
    h
}

fn iv(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

impl Channel {
    /// A channel on VMPCK `vmpck_id` with `count` messages already exchanged on it. The key
    /// is copied from where it lies (the secrets page) straight into the channel's box.
    pub fn new(vmpck: &[u8; 32], vmpck_id: u8, count: u64) -> Channel {
        let mut key = alloc::boxed::Box::new(Zeroizing::new([0u8; 32]));
        key.copy_from_slice(vmpck);
        Channel { vmpck: key, vmpck_id, count, outstanding: None, disabled: false }
    }

    /// Messages exchanged so far (what the OS area's count must be set to before hand-off).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Encrypt a request. Refused while another is outstanding.
    pub fn request(&mut self, msg_type: MsgType, version: u8, payload: &[u8]) -> Result<Request, GuestMsgError> {
        if self.disabled {
            return Err(GuestMsgError::Disabled);
        }
        if self.outstanding.is_some() {
            return Err(GuestMsgError::Outstanding);
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(GuestMsgError::PayloadSize(payload.len()));
        }
        let seqno =
            self.count.checked_add(1).filter(|s| *s < u64::from(u32::MAX)).ok_or(GuestMsgError::SequenceExhausted)?;
        let mut hdr = header(seqno, msg_type as u8, version, payload.len(), self.vmpck_id);
        let mut body = payload.to_vec();
        let cipher = Aes256Gcm::new_from_slice(&self.vmpck[..]).expect("a 32-byte key");
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(iv(seqno)), &hdr[0x30..0x60], (&mut body[..]).into())
            .expect("a payload within GCM's limits");
        hdr[..16].copy_from_slice(&tag);
        self.outstanding = Some(seqno);
        let mut bytes = hdr.to_vec();
        bytes.extend_from_slice(&body);
        Ok(Request { bytes, seqno, msg_type, version })
    }

    /// The host failed the request in a way other than BUSY: the AMD-SP may have seen the
    /// sequence number, so the key is never used again.
    pub fn fail(&mut self) {
        self.disable();
    }

    fn disable(&mut self) {
        zeroize::Zeroize::zeroize(&mut **self.vmpck);
        self.disabled = true;
        self.outstanding = None;
    }

    /// Check and decrypt the response to `request` (the bytes copied from the shared
    /// response page into private memory). The request has left: any response that is not
    /// exactly its answer (header, length, type, version, sequence number, or a failed
    /// authentication) disables the channel and wipes the VMPCK, since the AMD-SP may have
    /// consumed the sequence number and the host has shown it tampers (as Linux's sev-guest).
    pub fn response(&mut self, request: &Request, page: &[u8]) -> Result<Zeroizing<Vec<u8>>, GuestMsgError> {
        if self.disabled {
            return Err(GuestMsgError::Disabled);
        }
        if self.outstanding != Some(request.seqno) {
            return Err(GuestMsgError::NoRequest);
        }
        let answer = self.open(request, page);
        if answer.is_err() {
            self.disable();
        }
        answer
    }

    /// [`Self::response`]'s checks and decryption, without the consequence of a failure.
    fn open(&mut self, request: &Request, page: &[u8]) -> Result<Zeroizing<Vec<u8>>, GuestMsgError> {
        if page.len() < HEADER_LEN {
            return Err(GuestMsgError::Truncated);
        }
        let hdr = &page[..HEADER_LEN];
        let seqno = u64::from_le_bytes(hdr[0x20..0x28].try_into().expect("8 bytes"));
        let len = usize::from(u16::from_le_bytes([hdr[0x36], hdr[0x37]]));
        let checks: [(bool, &'static str); 6] = [
            (hdr[0x30] == 1, "not AES-256-GCM"),
            (
                hdr[0x31] == 1 && hdr[0x32..0x34] == (HEADER_LEN as u16).to_le_bytes(),
                "an unknown header version or size",
            ),
            (seqno == request.seqno + 1, "the sequence number is not the request's + 1"),
            (hdr[0x34] == request.msg_type as u8 + 1, "the message type is not the request's + 1"),
            (hdr[0x35] == request.version, "the message version differs from the request's"),
            (hdr[0x3C] == self.vmpck_id, "another VMPCK"),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(GuestMsgError::Header(what));
        }
        if len > MAX_PAYLOAD || page.len() < HEADER_LEN + len {
            return Err(GuestMsgError::Truncated);
        }
        let mut body = Zeroizing::new(page[HEADER_LEN..HEADER_LEN + len].to_vec());
        let cipher = Aes256Gcm::new_from_slice(&self.vmpck[..]).expect("a 32-byte key");
        let tag = Tag::try_from(&hdr[..16]).expect("16 bytes");
        if cipher
            .decrypt_inout_detached(&Nonce::from(iv(seqno)), &hdr[0x30..0x60], (&mut body[..]).into(), &tag)
            .is_err()
        {
            return Err(GuestMsgError::Authentication);
        }
        self.count = seqno;
        self.outstanding = None;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with Python `cryptography` (AESGCM), key = bytes 0x40..0x5f, from the layout in
    /// the module doc:
    ///
    /// ```python
    /// hdr = bytearray(0x60); struct.pack_into('<Q', hdr, 0x20, seqno); hdr[0x30] = 1; hdr[0x31] = 1
    /// struct.pack_into('<H', hdr, 0x32, 0x60); hdr[0x34] = msg_type; hdr[0x35] = version
    /// struct.pack_into('<H', hdr, 0x36, len(payload)); hdr[0x3C] = vmpck_id
    /// ct = AESGCM(key).encrypt(struct.pack('<Q', seqno) + bytes(4), payload, bytes(hdr[0x30:0x60]))
    /// hdr[0:16] = ct[-16:]; message = bytes(hdr) + ct[:-16]
    /// ```
    ///
    /// REPORT_REQ, seqno 1: payload = user_data 0..63, vmpl 0, flags 0, 24 reserved bytes.
    const REPORT_REQ: &str = "05728d9f83c71e9b2144ec7e0c18c65f0000000000000000000000000000000001000000000000000000000000000000010160000501600000000000000000000000000000000000000000000000000000000000000000000000000000000000db1db5243a98e05f0957725abdd94cb2bccff2d9d647d03e83f85a731f9e9c38eb26065b94996c3783e8217f6a54b07a8dc8177f68fd52175d13848ef5b0d55eb487b10ef43d92e8a8a85b5d331dd7d97139f024bec2ff5763114dac89accdfb";
    /// KEY_RSP, seqno 2: status 0, 28 reserved bytes, derived key 0xa0..0xbf.
    const KEY_RSP: &str = "480dbcd210c44a90b52e4db483363b74000000000000000000000000000000000200000000000000000000000000000001016000040140000000000000000000000000000000000000000000000000000000000000000000000000000000000069974d3af0c3d4fd9b7090d6ead74d32442c4cffc2b92872ecc642fc1b8d276faca07aa3a448d27374c9ddcae1a611f22bf22e2b5b03b9ed2d35b11ef6c8f3b5";

    fn key() -> [u8; 32] {
        core::array::from_fn(|i| 0x40 + i as u8)
    }

    fn report_payload() -> Vec<u8> {
        let mut p: Vec<u8> = (0..64).collect();
        p.resize(96, 0);
        p
    }

    #[test]
    fn request_equals_the_independent_vector() {
        let mut ch = Channel::new(&key(), 0, 0);
        let req = ch.request(MsgType::ReportRequest, 1, &report_payload()).unwrap();
        assert_eq!(hex::encode(&req.bytes), REPORT_REQ);
    }

    #[test]
    fn response_decrypts_and_advances_by_two() {
        let mut ch = Channel::new(&key(), 0, 0);
        let req = ch.request(MsgType::KeyRequest, 1, &[0u8; 32]).unwrap();
        assert_eq!(ch.request(MsgType::KeyRequest, 1, &[0u8; 32]), Err(GuestMsgError::Outstanding));
        let body = ch.response(&req, &hex::decode(KEY_RSP).unwrap()).unwrap();
        assert_eq!(&body[32..], &core::array::from_fn::<u8, 32, _>(|i| 0xA0 + i as u8));
        assert_eq!(ch.count(), 2);
        // The next request uses sequence number 3.
        let next = ch.request(MsgType::KeyRequest, 1, &[0u8; 32]).unwrap();
        assert_eq!(u64::from_le_bytes(next.bytes[0x20..0x28].try_into().unwrap()), 3);
    }

    /// Issue 34: a response whose header or length the host changed was refused, but the
    /// channel stayed open and the VMPCK in memory. Every such path now disables and wipes.
    #[test]
    fn a_changed_header_or_length_disables_the_channel_and_wipes_the_vmpck() {
        let rsp = hex::decode(KEY_RSP).unwrap();
        let len_past_the_page = (MAX_PAYLOAD as u16 + 1).to_le_bytes();
        let cases: [(usize, &[u8], GuestMsgError); 8] = [
            (0x20, &[4], GuestMsgError::Header("the sequence number is not the request's + 1")),
            (0x34, &[6], GuestMsgError::Header("the message type is not the request's + 1")),
            (0x35, &[2], GuestMsgError::Header("the message version differs from the request's")),
            (0x3C, &[1], GuestMsgError::Header("another VMPCK")),
            (0x30, &[2], GuestMsgError::Header("not AES-256-GCM")),
            (0x31, &[2], GuestMsgError::Header("an unknown header version or size")),
            // The length: past the page, and past what was copied.
            (0x36, &len_past_the_page, GuestMsgError::Truncated),
            (0x36, &[0x40, 0x01], GuestMsgError::Truncated),
        ];
        for (at, value, want) in cases {
            let mut ch = Channel::new(&key(), 0, 0);
            let req = ch.request(MsgType::KeyRequest, 1, &[0u8; 32]).unwrap();
            let mut bad = rsp.clone();
            bad[at..at + value.len()].copy_from_slice(value);
            // A length within the page but past the bytes copied (0x140 > 0x40 of payload).
            let bad = if at == 0x36 && value == [0x40, 0x01] { bad[..HEADER_LEN + 0x40].to_vec() } else { bad };
            assert_eq!(ch.response(&req, &bad), Err(want), "byte {at:#x}");
            assert_eq!(**ch.vmpck, [0u8; 32], "byte {at:#x}: the VMPCK is wiped");
            assert_eq!(ch.response(&req, &rsp), Err(GuestMsgError::Disabled), "byte {at:#x}: the genuine one too late");
            assert_eq!(ch.request(MsgType::KeyRequest, 1, &[0u8; 32]), Err(GuestMsgError::Disabled));
        }
        // Shorter than a header.
        let mut ch = Channel::new(&key(), 0, 0);
        let req = ch.request(MsgType::KeyRequest, 1, &[0u8; 32]).unwrap();
        assert_eq!(ch.response(&req, &rsp[..HEADER_LEN - 1]), Err(GuestMsgError::Truncated));
        assert_eq!(**ch.vmpck, [0u8; 32]);
    }

    #[test]
    fn a_forged_response_disables_the_channel() {
        let mut ch = Channel::new(&key(), 0, 0);
        let req = ch.request(MsgType::KeyRequest, 1, &[0u8; 32]).unwrap();
        let mut forged = hex::decode(KEY_RSP).unwrap();
        forged[HEADER_LEN + 40] ^= 1;
        assert_eq!(ch.response(&req, &forged), Err(GuestMsgError::Authentication));
        assert_eq!(
            GuestMsgError::Authentication.to_string(),
            "the guest-message response does not authenticate: channel disabled, VMPCK wiped"
        );
        assert_eq!(**ch.vmpck, [0u8; 32], "the VMPCK is wiped");
        assert_eq!(ch.request(MsgType::KeyRequest, 1, &[0u8; 32]), Err(GuestMsgError::Disabled));
        // A host failure (not BUSY) does the same.
        let mut ch = Channel::new(&key(), 0, 0);
        ch.request(MsgType::KeyRequest, 1, &[0u8; 32]).unwrap();
        ch.fail();
        assert_eq!(ch.request(MsgType::KeyRequest, 1, &[0u8; 32]), Err(GuestMsgError::Disabled));
    }

    /// A response sealed as the AMD-SP seals one (the header's layout is the one the
    /// independent request vector above checks), for the request's sequence number + 1.
    fn sealed_response(req: &Request, payload: &[u8]) -> Vec<u8> {
        let seqno = req.seqno + 1;
        let mut hdr = header(seqno, req.msg_type as u8 + 1, req.version, payload.len(), 0);
        let mut body = payload.to_vec();
        let tag = Aes256Gcm::new_from_slice(&key())
            .unwrap()
            .encrypt_inout_detached(&Nonce::from(iv(seqno)), &hdr[0x30..0x60], (&mut body[..]).into())
            .unwrap();
        hdr[..16].copy_from_slice(&tag);
        [hdr.to_vec(), body].concat()
    }

    #[test]
    fn a_message_fills_at_most_the_4k_shared_page() {
        // A request: the 0x60-byte header and up to 4000 bytes of payload fill the page.
        let mut ch = Channel::new(&key(), 0, 0);
        let full = ch.request(MsgType::ReportRequest, 1, &[0xA5; 4096 - 0x60]).unwrap();
        assert_eq!(full.bytes.len(), 4096);
        // Its response: a whole page opens, and so does a header alone (no payload).
        let page = sealed_response(&full, &[0x5A; 4096 - 0x60]);
        assert_eq!(page.len(), 4096);
        assert_eq!(&ch.response(&full, &page).unwrap()[..], &[0x5A; 4096 - 0x60][..]);
        let req = ch.request(MsgType::KeyRequest, 1, &[]).unwrap();
        assert_eq!(ch.response(&req, &sealed_response(&req, &[])).unwrap().len(), 0);
        assert_eq!(ch.count(), 4);
        // One byte more does not fit.
        let mut ch = Channel::new(&key(), 0, 0);
        assert_eq!(ch.request(MsgType::ReportRequest, 1, &[0; 4096 - 0x60 + 1]), Err(GuestMsgError::PayloadSize(4001)));
    }

    #[test]
    fn limits() {
        let mut ch = Channel::new(&key(), 0, u64::from(u32::MAX) - 1);
        assert_eq!(ch.request(MsgType::KeyRequest, 1, &[]), Err(GuestMsgError::SequenceExhausted));
        let mut ch = Channel::new(&key(), 0, 0);
        assert_eq!(
            ch.request(MsgType::KeyRequest, 1, &[0; MAX_PAYLOAD + 1]),
            Err(GuestMsgError::PayloadSize(MAX_PAYLOAD + 1))
        );
        let req = ch.request(MsgType::KeyRequest, 1, &[0u8; 32]).unwrap();
        assert_eq!(ch.response(&req, &[0u8; 10]), Err(GuestMsgError::Truncated));
        assert_eq!(ch.request(MsgType::KeyRequest, 1, &[]), Err(GuestMsgError::Disabled));
    }
}
