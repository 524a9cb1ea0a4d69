//! The pages the AMD-SP hands an SNP guest at launch, parsed from the guest's private copy:
//! the CPUID page (CPUID answers the AMD-SP checked against the hardware, which the #VC handler
//! answers CPUID from instead of asking the hypervisor) and the secrets page (the VMPCKs the
//! guest messages are encrypted with, and the OS area's message sequence numbers); and the CC
//! blob through which Linux finds both (boot_params setup_data, type SETUP_CC_BLOB).
//! Layouts: shared/reference/snp-tdx-guest.md A5 (Linux `snp_cpuid_table`,
//! `snp_secrets_page`, `cc_blob_sev_info`).

use alloc::vec::Vec;

use super::SnpError;

/// Entries a CPUID page can hold.
pub const CPUID_MAX_ENTRIES: usize = 64;

/// One CPUID page entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidEntry {
    /// Leaf (EAX in).
    pub leaf: u32,
    /// Subleaf (ECX in).
    pub subleaf: u32,
    /// XCR0 in (leaf 0xD).
    pub xcr0: u64,
    /// XSS in (leaf 0xD).
    pub xss: u64,
    /// EAX, EBX, ECX, EDX out.
    pub regs: [u32; 4],
}

/// The CPUID page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuidPage(pub Vec<CpuidEntry>);

/// Leaves whose answer depends on the subleaf (ECX).
fn indexed(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7
            | 0xB
            | 0xD
            | 0xF
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1D
            | 0x1E
            | 0x1F
            | 0x20
            | 0x23
            | 0x24
            | 0x8000_001D
            | 0x8000_0020
            | 0x8000_0026
    )
}

impl CpuidPage {
    /// Parse the 4 KiB page: count (at most 64), then 48-byte entries from offset 0x10.
    pub fn parse(page: &[u8]) -> Result<CpuidPage, SnpError> {
        if page.len() < 0x10 {
            return Err(SnpError::CpuidPage("shorter than its header"));
        }
        let count = u32::from_le_bytes(page[0..4].try_into().expect("4 bytes")) as usize;
        if count == 0 || count > CPUID_MAX_ENTRIES || page.len() < 0x10 + 48 * count {
            return Err(SnpError::CpuidPage("an entry count of 0 or more than fit the page"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(page[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().expect("8 bytes"));
        let entries = (0..count)
            .map(|i| {
                let e = 0x10 + 48 * i;
                CpuidEntry {
                    leaf: u32_at(e),
                    subleaf: u32_at(e + 4),
                    xcr0: u64_at(e + 8),
                    xss: u64_at(e + 16),
                    regs: [u32_at(e + 24), u32_at(e + 28), u32_at(e + 32), u32_at(e + 36)],
                }
            })
            .collect();
        Ok(CpuidPage(entries))
    }

    /// The answer for `leaf`/`subleaf` (the subleaf counts only for indexed leaves), or None
    /// when the page has no such entry (the guest then treats the leaf as all zeros, as Linux
    /// does for leaves above the range).
    pub fn lookup(&self, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        self.0.iter().find(|e| e.leaf == leaf && (!indexed(leaf) || e.subleaf == subleaf)).map(|e| e.regs)
    }

    /// The C-bit position the page states (leaf 0x8000001F EBX[5:0]).
    pub fn cbit(&self) -> Result<u8, SnpError> {
        let regs = self.lookup(0x8000_001F, 0).ok_or(SnpError::CpuidPage("no leaf 0x8000001F (memory encryption)"))?;
        if regs[0] & (1 << 4) == 0 {
            return Err(SnpError::CpuidPage("leaf 0x8000001F does not report SEV-SNP"));
        }
        Ok((regs[1] & 0x3F) as u8)
    }
}

/// Offsets in the secrets page.
mod secrets {
    pub const VERSION: usize = 0x000;
    pub const VMPCK0: usize = 0x020;
    pub const OS_SEQNO: usize = 0x0A0;
    pub const OS_SEQNO_HIGH: usize = 0x0B8;
}

/// The secrets page's VMPCK `n` (0..=3), by value (tests; the firmware borrows it with
/// [`vmpck_ref`]).
pub fn vmpck(page: &[u8; 4096], n: usize) -> Result<[u8; 32], SnpError> {
    vmpck_ref(page, n).copied()
}

/// The secrets page's VMPCK `n` (0..=3), borrowed where it lies: the firmware copies it once,
/// into the guest-message channel's zeroizing box, and nowhere else.
pub fn vmpck_ref(page: &[u8; 4096], n: usize) -> Result<&[u8; 32], SnpError> {
    if n > 3 {
        return Err(SnpError::SecretsPage("VMPCK index above 3"));
    }
    if u32::from_le_bytes(page[secrets::VERSION..secrets::VERSION + 4].try_into().expect("4 bytes")) < 2 {
        return Err(SnpError::SecretsPage("version below 2 (not an SNP secrets page)"));
    }
    let at = secrets::VMPCK0 + 32 * n;
    Ok(page[at..at + 32].try_into().expect("32 bytes"))
}

/// Zero VMPCK `n` in the page, so that the OS cannot use it (the firmware wipes VMPCK0 before
/// Linux runs: the OS attests with VMPCK1 and can neither forge VMPL0 reports nor derive the
/// firmware's keys). A VMPCK of all zeros is how Linux recognises a disabled key.
pub fn wipe_vmpck(page: &mut [u8; 4096], n: usize) {
    let at = secrets::VMPCK0 + 32 * n.min(3);
    page[at..at + 32].fill(0);
}

/// The OS area's message sequence number for VMPCK `n` (64 bits: the low half at
/// 0xA0 + 4n, the high half at 0xB8 + 4n since GHCB 2.01).
pub fn os_seqno(page: &[u8; 4096], n: usize) -> u64 {
    let n = n.min(3);
    let lo =
        u32::from_le_bytes(page[secrets::OS_SEQNO + 4 * n..secrets::OS_SEQNO + 4 * n + 4].try_into().expect("4 bytes"));
    let hi = u32::from_le_bytes(
        page[secrets::OS_SEQNO_HIGH + 4 * n..secrets::OS_SEQNO_HIGH + 4 * n + 4].try_into().expect("4 bytes"),
    );
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Linux's setup_data type of the CC blob.
pub const SETUP_CC_BLOB: u32 = 7;
/// "AMDE".
pub const CC_BLOB_MAGIC: u32 = 0x4544_4D41;

/// A setup_data node (next = 0) carrying `cc_blob_sev_info` for the secrets and CPUID pages.
pub fn cc_blob_setup_data(secrets: u64, cpuid: u64) -> [u8; 16 + 40] {
    let mut d = [0u8; 56];
    d[8..12].copy_from_slice(&SETUP_CC_BLOB.to_le_bytes());
    d[12..16].copy_from_slice(&40u32.to_le_bytes());
    let b = &mut d[16..];
    b[0..4].copy_from_slice(&CC_BLOB_MAGIC.to_le_bytes());
    b[4..6].copy_from_slice(&1u16.to_le_bytes());
    b[8..16].copy_from_slice(&secrets.to_le_bytes());
    b[16..20].copy_from_slice(&4096u32.to_le_bytes());
    b[24..32].copy_from_slice(&cpuid.to_le_bytes());
    b[32..36].copy_from_slice(&4096u32.to_le_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpuid_page(entries: &[(u32, u32, [u32; 4])]) -> [u8; 4096] {
        let mut p = [0u8; 4096];
        p[0..4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for (i, (leaf, sub, regs)) in entries.iter().enumerate() {
            let e = 0x10 + 48 * i;
            p[e..e + 4].copy_from_slice(&leaf.to_le_bytes());
            p[e + 4..e + 8].copy_from_slice(&sub.to_le_bytes());
            for (j, r) in regs.iter().enumerate() {
                p[e + 24 + 4 * j..e + 28 + 4 * j].copy_from_slice(&r.to_le_bytes());
            }
        }
        p
    }

    #[test]
    fn cpuid_page_lookup_and_cbit() {
        let page = cpuid_page(&[
            (0, 0, [0x10, 1, 2, 3]),
            (7, 0, [0, 0xAA, 0, 0]),
            (7, 1, [0, 0xBB, 0, 0]),
            (0x8000_001F, 0, [0x1_001B, 0x233, 0, 0]),
        ]);
        let c = CpuidPage::parse(&page).unwrap();
        assert_eq!(c.lookup(0, 5), Some([0x10, 1, 2, 3]), "leaf 0 ignores the subleaf");
        assert_eq!(c.lookup(7, 1).unwrap()[1], 0xBB);
        assert_eq!(c.lookup(7, 2), None);
        assert_eq!(c.cbit(), Ok(51));
        let no_snp = CpuidPage::parse(&cpuid_page(&[(0x8000_001F, 0, [0x3, 0x233, 0, 0])])).unwrap();
        assert_eq!(no_snp.cbit(), Err(SnpError::CpuidPage("leaf 0x8000001F does not report SEV-SNP")));
        let mut bad = page;
        bad[0..4].copy_from_slice(&65u32.to_le_bytes());
        assert!(CpuidPage::parse(&bad).is_err());
        assert!(CpuidPage::parse(&[0u8; 4096]).is_err());
    }

    #[test]
    fn secrets_page_vmpcks_and_wipe() {
        let mut page = [0u8; 4096];
        page[0] = 3;
        for n in 0..4 {
            page[0x20 + 32 * n..0x40 + 32 * n].fill(n as u8 + 1);
        }
        page[0xA4..0xA8].copy_from_slice(&7u32.to_le_bytes());
        page[0xBC..0xC0].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(vmpck(&page, 1), Ok([2; 32]));
        assert_eq!(os_seqno(&page, 1), (1 << 32) | 7);
        wipe_vmpck(&mut page, 0);
        assert_eq!(vmpck(&page, 0), Ok([0; 32]));
        assert_eq!(vmpck(&page, 1), Ok([2; 32]), "only VMPCK0 is wiped");
        assert_eq!(vmpck(&page, 4), Err(SnpError::SecretsPage("VMPCK index above 3")));
        page[0] = 1;
        assert!(vmpck(&page, 1).is_err());
    }

    #[test]
    fn cc_blob_layout() {
        let d = cc_blob_setup_data(0x90_0000, 0x90_1000);
        assert_eq!(hex::encode(&d[..16]), "00000000000000000700000028000000");
        assert_eq!(&d[16..20], b"AMDE");
        assert_eq!(u64::from_le_bytes(d[24..32].try_into().unwrap()), 0x90_0000);
        assert_eq!(u64::from_le_bytes(d[40..48].try_into().unwrap()), 0x90_1000);
    }
}
