//! TDREPORT_STRUCT (1024 bytes): REPORTMACSTRUCT (type, CPUSVN, hashes of TEE_TCB_INFO and
//! TDINFO, REPORTDATA, MAC), TEE_TCB_INFO (TDX module identity and SVN) and TDINFO (the TD's
//! attributes, XFAM, MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0-3, SERVTD_HASH). Parsed
//! from the guest's private buffer after TDG.MR.REPORT; the MAC is checked by the CPU when the
//! quoting enclave converts it into a quote, not here.

use super::TdxError;

/// Size of TDREPORT_STRUCT.
pub const LEN: usize = 1024;

/// TD attribute bit: DEBUG (a debug TD: its memory and state are not protected).
pub const ATTRIBUTE_DEBUG: u64 = 1;

/// The fields veilboot and its broker use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    /// CPUSVN.
    pub cpu_svn: [u8; 16],
    /// REPORTDATA as the TD asked for it.
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN of the TDX module.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: the TDX module's measurement.
    pub mr_seam: [u8; 48],
    /// TD attributes.
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRTD: the initial TD contents (the firmware).
    pub mr_td: [u8; 48],
    /// MRCONFIGID: the VMM's configuration ID (veilboot: the init-data digest).
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR0-3.
    pub rtmr: [[u8; 48]; 4],
}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    b[at..at + N].try_into().expect("in range: the length is checked first")
}

impl TdReport {
    /// Parse a TDREPORT.
    pub fn parse(bytes: &[u8]) -> Result<TdReport, TdxError> {
        if bytes.len() != LEN {
            return Err(TdxError::ReportSize(bytes.len()));
        }
        if bytes[0] != 0x81 {
            return Err(TdxError::ReportType(bytes[0]));
        }
        const TCB: usize = 256;
        const TD: usize = 512;
        Ok(TdReport {
            cpu_svn: array(bytes, 16),
            report_data: array(bytes, 128),
            tee_tcb_svn: array(bytes, TCB + 8),
            mr_seam: array(bytes, TCB + 24),
            attributes: u64::from_le_bytes(array(bytes, TD)),
            xfam: u64::from_le_bytes(array(bytes, TD + 8)),
            mr_td: array(bytes, TD + 16),
            mr_config_id: array(bytes, TD + 64),
            mr_owner: array(bytes, TD + 112),
            mr_owner_config: array(bytes, TD + 160),
            rtmr: core::array::from_fn(|i| array(bytes, TD + 208 + 48 * i)),
        })
    }

    /// Is this a debug TD?
    pub fn is_debug(&self) -> bool {
        self.attributes & ATTRIBUTE_DEBUG != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_wrong_sizes_and_types() {
        assert_eq!(TdReport::parse(&[0x81; 100]), Err(TdxError::ReportSize(100)));
        let mut r = [0u8; LEN];
        assert_eq!(TdReport::parse(&r), Err(TdxError::ReportType(0)));
        r[0] = 0x81;
        r[512] = 1;
        r[720] = 0xAA; // RTMR0
        r[912 - 48 + 47] = 0xBB; // last byte of RTMR3
        let p = TdReport::parse(&r).unwrap();
        assert!(p.is_debug());
        assert_eq!((p.rtmr[0][0], p.rtmr[3][47]), (0xAA, 0xBB));
    }
}
