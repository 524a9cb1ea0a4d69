//! A model of the AMD-SP's side of guest messages (SNP firmware ABI, "Guest Messages",
//! MSG_REPORT_REQ and MSG_KEY_REQ), written from the specification: it decrypts a request
//! with the VMPCK it names, insists on the sequence number it expects next, and answers with
//! an ATTESTATION_REPORT signed by a VCEK whose key the test supplies, or a key derived from
//! its own secret and the fields the guest selected. Tests and the model ROM only (feature
//! `model`), never a release ROM.
//!
//! Its report is a version-3 report of a Milan part (family 0x19, model 0x01), so that
//! virtee/sev and Trustee parse it as they parse real ones.

use alloc::vec::Vec;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use p384::ecdsa::signature::Signer;
use sha2::Digest;

use super::evidence::REPORT_LEN;
use super::guest_msg::{HEADER_LEN, PAGE};

/// The AMD-SP model.
pub struct Psp {
    /// VMPCK0..3 (the secrets page's), kept masked: inside the model ROM this model lives in
    /// guest memory, which the tests search for VMPCK0 after the firmware wiped it, and the
    /// AMD-SP's own copy is not the guest's to leak.
    vmpck_masked: [[u8; 32]; 4],
    /// The sequence number expected next, per VMPCK.
    pub next_seqno: [u64; 4],
    /// The VCEK's private scalar (P-384, big-endian).
    pub vcek: Option<[u8; 48]>,
    /// MEASUREMENT (the launch digest).
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// The guest policy.
    pub policy: u64,
    /// CHIP_ID.
    pub chip_id: [u8; 64],
    /// The TCB version (current, reported, committed, launch).
    pub tcb: u64,
    /// The secret keys are derived from.
    pub key_secret: [u8; 32],
    /// Requests answered.
    pub answered: u32,
}

const MASK: u8 = 0xA5;

fn masked(k: [u8; 32]) -> [u8; 32] {
    k.map(|b| b ^ MASK)
}

/// Firmware status for a request the AMD-SP cannot authenticate or whose sequence number is
/// not the expected one (the guest must then give up the VMPCK).
pub const STATUS_INVALID_PARAM: u32 = 0x16;

impl Psp {
    /// An AMD-SP with these VMPCKs, no VCEK yet, a policy with SMT allowed and debugging off.
    pub fn new(vmpck: [[u8; 32]; 4]) -> Psp {
        Psp {
            vmpck_masked: vmpck.map(masked),
            next_seqno: [1; 4],
            vcek: None,
            measurement: [0; 48],
            host_data: [0; 32],
            policy: 0x3_0000, // SMT allowed, reserved bit 17 set
            chip_id: [0x5C; 64],
            tcb: 0xDB18_0000_0000_0003, // microcode 0xDB, SNP 0x18, bootloader 3
            key_secret: [0x3C; 32],
            answered: 0,
        }
    }

    /// Answer the request `page`: Ok(response page) or Err(firmware status).
    pub fn answer(&mut self, page: &[u8]) -> Result<Vec<u8>, u32> {
        if page.len() < HEADER_LEN {
            return Err(STATUS_INVALID_PARAM);
        }
        let hdr: [u8; HEADER_LEN] = page[..HEADER_LEN].try_into().expect("checked");
        let seqno = u64::from_le_bytes(hdr[0x20..0x28].try_into().expect("8 bytes"));
        let (msg_type, version) = (hdr[0x34], hdr[0x35]);
        let len = usize::from(u16::from_le_bytes([hdr[0x36], hdr[0x37]]));
        let id = usize::from(hdr[0x3C]);
        if hdr[0x30] != 1 || hdr[0x31] != 1 || hdr[0x32..0x34] != [0x60, 0] || id > 3 || len > PAGE - HEADER_LEN {
            return Err(STATUS_INVALID_PARAM);
        }
        if seqno != self.next_seqno[id] {
            return Err(STATUS_INVALID_PARAM);
        }
        let cipher =
            Aes256Gcm::new_from_slice(&zeroize::Zeroizing::new(masked(self.vmpck_masked[id]))[..]).expect("32 bytes");
        let mut payload = page[HEADER_LEN..HEADER_LEN + len].to_vec();
        let tag = Tag::try_from(&hdr[..16]).expect("16 bytes");
        cipher
            .decrypt_inout_detached(&Nonce::from(iv(seqno)), &hdr[0x30..0x60], (&mut payload[..]).into(), &tag)
            .map_err(|_| STATUS_INVALID_PARAM)?;
        let answer = match msg_type {
            5 => self.report(&payload)?,
            3 => self.key(&payload)?,
            _ => return Err(STATUS_INVALID_PARAM),
        };
        self.next_seqno[id] += 2;
        self.answered += 1;
        let mut rsp = [0u8; HEADER_LEN];
        rsp[0x20..0x28].copy_from_slice(&(seqno + 1).to_le_bytes());
        rsp[0x30] = 1;
        rsp[0x31] = 1;
        rsp[0x32..0x34].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        rsp[0x34] = msg_type + 1;
        rsp[0x35] = version;
        rsp[0x36..0x38].copy_from_slice(&(answer.len() as u16).to_le_bytes());
        rsp[0x3C] = id as u8;
        let mut body = answer;
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(iv(seqno + 1)), &rsp[0x30..0x60], (&mut body[..]).into())
            .expect("within GCM's limits");
        rsp[..16].copy_from_slice(&tag);
        let mut out = rsp.to_vec();
        out.extend_from_slice(&body);
        out.resize(PAGE, 0);
        Ok(out)
    }

    /// MSG_REPORT_RSP's payload for a MSG_REPORT_REQ payload.
    fn report(&self, req: &[u8]) -> Result<Vec<u8>, u32> {
        if req.len() < 0x48 {
            return Err(STATUS_INVALID_PARAM);
        }
        let vmpl = u32::from_le_bytes(req[0x40..0x44].try_into().expect("4 bytes"));
        if vmpl > 3 {
            return Err(STATUS_INVALID_PARAM);
        }
        let mut r = [0u8; REPORT_LEN];
        r[0..4].copy_from_slice(&3u32.to_le_bytes());
        r[0x08..0x10].copy_from_slice(&self.policy.to_le_bytes());
        r[0x30..0x34].copy_from_slice(&vmpl.to_le_bytes());
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes()); // ECDSA P-384 with SHA-384
        for at in [0x38, 0x180, 0x1E0, 0x1F0] {
            r[at..at + 8].copy_from_slice(&self.tcb.to_le_bytes());
        }
        r[0x40..0x48].copy_from_slice(&1u64.to_le_bytes()); // platform info: SMT enabled
        r[0x50..0x90].copy_from_slice(&req[..64]);
        r[0x90..0xC0].copy_from_slice(&self.measurement);
        r[0xC0..0xE0].copy_from_slice(&self.host_data);
        r[0x140..0x160].copy_from_slice(&sha2::Sha256::digest(self.measurement));
        (r[0x188], r[0x189], r[0x18A]) = (0x19, 0x01, 0x01);
        r[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        (r[0x1E8], r[0x1E9], r[0x1EA]) = (3, 55, 1);
        (r[0x1EC], r[0x1ED], r[0x1EE]) = (3, 55, 1);
        let scalar = self.vcek.ok_or(STATUS_INVALID_PARAM)?;
        let key = p384::ecdsa::SigningKey::from_slice(&scalar).map_err(|_| STATUS_INVALID_PARAM)?;
        let sig: p384::ecdsa::Signature = key.sign(&r[..0x2A0]);
        let (rb, sb) = (sig.r().to_bytes(), sig.s().to_bytes());
        for (at, v) in [(0x2A0, rb.as_slice()), (0x2E8, sb.as_slice())] {
            // Little-endian, in 72-byte fields.
            for (i, b) in v.iter().rev().enumerate() {
                r[at + i] = *b;
            }
        }
        let mut out = alloc::vec![0u8; 0x20];
        out[4..8].copy_from_slice(&(REPORT_LEN as u32).to_le_bytes());
        out.extend_from_slice(&r);
        Ok(out)
    }

    /// MSG_KEY_RSP's payload for a MSG_KEY_REQ payload: SHA-256 over the secret, the chip's
    /// key (the VCEK root: another chip derives other keys), the VMPL, the field selection and
    /// each selected field, so that a key bound to the measurement changes with it. A request
    /// the AMD-SP refuses is answered in the response's status field (the request itself went
    /// through: the channel stays usable): a selection outside bits 0-5 or a VMPL above 3 with
    /// INVALID_KEY (0x27); a TCB_VERSION (bit 5) above the committed TCB, in any of its
    /// components, with INVALID_PARAM (0x16), as the SNP firmware ABI requires of TCB_VERSION
    /// ("must not exceed CommittedTcb"): a key for a TCB the platform has not committed to
    /// cannot be derived, so a rolled-back AMD-SP cannot derive the keys of newer firmware.
    fn key(&self, req: &[u8]) -> Result<Vec<u8>, u32> {
        if req.len() < 0x20 {
            return Err(STATUS_INVALID_PARAM);
        }
        let refused = |status: u32| {
            let mut out = alloc::vec![0u8; 0x40];
            out[..4].copy_from_slice(&status.to_le_bytes());
            Ok(out)
        };
        let fields = u64::from_le_bytes(req[0x08..0x10].try_into().expect("8 bytes"));
        let vmpl = u32::from_le_bytes(req[0x10..0x14].try_into().expect("4 bytes"));
        if fields >> 6 != 0 || vmpl > 3 {
            return refused(0x27);
        }
        let requested_tcb = &req[0x18..0x20];
        // Each byte of TCB_VERSION is one component's SPL or reserved (zero), in Milan's,
        // Genoa's and Turin's layouts alike: compared byte by byte.
        let committed = self.committed_tcb().to_le_bytes();
        if fields & super::requests::FIELD_TCB_VERSION != 0 && requested_tcb.iter().zip(committed).any(|(r, c)| *r > c)
        {
            return refused(STATUS_INVALID_PARAM);
        }
        let mut h = sha2::Sha256::new();
        h.update(self.key_secret);
        h.update(self.vcek.unwrap_or([0; 48]));
        h.update(req[0..4].iter().map(|b| b & 1).collect::<Vec<u8>>()); // root key select
        h.update(vmpl.to_le_bytes());
        h.update(fields.to_le_bytes());
        if fields & super::requests::FIELD_GUEST_POLICY != 0 {
            h.update(self.policy.to_le_bytes());
        }
        if fields & super::requests::FIELD_MEASUREMENT != 0 {
            h.update(self.measurement);
        }
        if fields & super::requests::FIELD_TCB_VERSION != 0 {
            h.update(requested_tcb);
        }
        let mut out = alloc::vec![0u8; 0x20];
        out.extend_from_slice(&h.finalize());
        Ok(out)
    }

    /// The committed TCB: the model keeps one TCB for current, reported, committed and launch
    /// (a test that rolls the AMD-SP back lowers all four, as loading older firmware does).
    pub fn committed_tcb(&self) -> u64 {
        self.tcb
    }
}

fn iv(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}
