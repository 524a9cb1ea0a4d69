//! The payloads of the two guest requests veilboot makes (SNP firmware ABI): MSG_REPORT_REQ
//! (an attestation report binding 64 bytes of the guest's data) and MSG_KEY_REQ (a key
//! derived by the AMD-SP from the chip's root key and the fields the guest selects, e.g. the
//! launch measurement, for sealing), and checks of their responses.

use zeroize::Zeroizing;

use super::SnpError;
use super::evidence::REPORT_LEN;

/// MSG_KEY_REQ guest_field_select bit: mix in the guest policy.
pub const FIELD_GUEST_POLICY: u64 = 1 << 0;
/// ... the image ID.
pub const FIELD_IMAGE_ID: u64 = 1 << 1;
/// ... the family ID.
pub const FIELD_FAMILY_ID: u64 = 1 << 2;
/// ... the launch measurement.
pub const FIELD_MEASUREMENT: u64 = 1 << 3;
/// ... the guest SVN.
pub const FIELD_GUEST_SVN: u64 = 1 << 4;
/// ... the TCB version.
pub const FIELD_TCB_VERSION: u64 = 1 << 5;

/// Which key signs a report (KEY_SEL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKey {
    /// The VLEK if the host installed one, else the VCEK.
    Default = 0,
    /// The VCEK.
    Vcek = 1,
    /// The VLEK.
    Vlek = 2,
}

/// MSG_REPORT_REQ: user data, the VMPL the report is for, the signing key.
pub fn report_request(user_data: &[u8; 64], vmpl: u32, key: SigningKey) -> [u8; 96] {
    let mut p = [0u8; 96];
    p[..64].copy_from_slice(user_data);
    p[0x40..0x44].copy_from_slice(&vmpl.to_le_bytes());
    p[0x44..0x48].copy_from_slice(&(key as u32).to_le_bytes());
    p
}

fn status(payload: &[u8]) -> Result<(), SnpError> {
    let code = u32::from_le_bytes(payload[..4].try_into().expect("checked length"));
    match code {
        0 => Ok(()),
        0x16 => Err(SnpError::RequestRefused("invalid parameters (0x16)")),
        0x27 => Err(SnpError::RequestRefused("invalid key selection (0x27)")),
        _ => Err(SnpError::RequestRefused("an unknown firmware status")),
    }
}

/// The report in a MSG_REPORT_RSP payload (status, report size 0x4A0, the report at 0x20).
pub fn report_response(payload: &[u8]) -> Result<[u8; REPORT_LEN], SnpError> {
    if payload.len() < 0x20 + REPORT_LEN {
        return Err(SnpError::Report("a report response shorter than a report"));
    }
    status(payload)?;
    if u32::from_le_bytes(payload[4..8].try_into().expect("checked length")) as usize != REPORT_LEN {
        return Err(SnpError::Report("a report size other than 0x4A0"));
    }
    Ok(payload[0x20..0x20 + REPORT_LEN].try_into().expect("checked length"))
}

/// MSG_KEY_REQ (version 1): derived from the VCEK root (not the VMRK) with the default key
/// selection, mixing in `fields` (FIELD_*), for `vmpl`, with the given guest SVN and TCB.
pub fn key_request(fields: u64, vmpl: u32, guest_svn: u32, tcb_version: u64) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0x08..0x10].copy_from_slice(&fields.to_le_bytes());
    p[0x10..0x14].copy_from_slice(&vmpl.to_le_bytes());
    p[0x14..0x18].copy_from_slice(&guest_svn.to_le_bytes());
    p[0x18..0x20].copy_from_slice(&tcb_version.to_le_bytes());
    p
}

/// The derived key in a MSG_KEY_RSP payload (status, 28 reserved bytes, the key at 0x20).
pub fn key_response(payload: &[u8]) -> Result<Zeroizing<[u8; 32]>, SnpError> {
    if payload.len() < 0x40 {
        return Err(SnpError::Report("a key response shorter than 64 bytes"));
    }
    status(payload)?;
    Ok(Zeroizing::new(payload[0x20..0x40].try_into().expect("checked length")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_statuses() {
        let r = report_request(&[7; 64], 0, SigningKey::Vcek);
        assert_eq!((&r[..64], &r[0x40..0x48]), (&[7u8; 64][..], &[0, 0, 0, 0, 1, 0, 0, 0][..]));
        let k = key_request(FIELD_MEASUREMENT | FIELD_GUEST_POLICY, 0, 0, 0);
        assert_eq!(k[8], 0b1001);
        let mut rsp = [0u8; 64];
        rsp[0x20..].fill(0x5A);
        assert_eq!(*key_response(&rsp).unwrap(), [0x5A; 32]);
        rsp[0] = 0x27;
        assert_eq!(key_response(&rsp).map(|_| ()), Err(SnpError::RequestRefused("invalid key selection (0x27)")));
        let mut report = alloc::vec![0u8; 0x20 + REPORT_LEN];
        report[4..8].copy_from_slice(&(REPORT_LEN as u32).to_le_bytes());
        report[0x20] = 2;
        assert_eq!(report_response(&report).unwrap()[0], 2);
        report[4] = 0;
        assert!(report_response(&report).is_err());
        assert!(report_response(&[0u8; 10]).is_err());
    }
}
