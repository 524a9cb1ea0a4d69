//! Handing a TD's application processors to Linux: Linux cannot send INIT/SIPI in a TD, so
//! the firmware parks the APs in a mailbox loop and describes the mailbox in the MADT's
//! multiprocessor wakeup structure (ACPI 6.4, 5.2.12.19; TDVF design guide 4.3.5). This module
//! builds what the firmware hands over: the MADT with the structure appended (QEMU's MADT,
//! host-supplied bytes, so checked before use), and the identity page tables the APs wait on
//! (they must stay valid while Linux runs, so they live with the mailbox in ACPI NVS memory).
//! The AP loop itself is in kernel/src/arch/boot.S.

use alloc::vec::Vec;

/// MADT structure type of the multiprocessor wakeup structure.
pub const MP_WAKEUP_TYPE: u8 = 0x10;
/// Its length.
pub const MP_WAKEUP_LEN: usize = 16;
/// Mailbox offsets: command (u16), APIC ID (u32), wakeup vector (u64).
pub const MAILBOX_COMMAND: usize = 0;
/// APIC ID of the AP the command is for.
pub const MAILBOX_APIC_ID: usize = 4;
/// Where the AP jumps.
pub const MAILBOX_WAKEUP_VECTOR: usize = 8;
/// Mailbox command: wake the AP up.
pub const COMMAND_WAKEUP: u16 = 1;
/// The region the firmware reserves: the mailbox page, then the APs' page tables.
pub const REGION_PAGES: usize = 1 + AP_PAGE_TABLE_PAGES;
/// PML4, PDPT and four page directories (0-4 GiB in 2 MiB pages).
pub const AP_PAGE_TABLE_PAGES: usize = 6;

/// Why the MADT could not be extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MadtError {
    /// Not an "APIC" table.
    Signature,
    /// Header length shorter than a MADT header or longer than the bytes.
    Length(u32),
    /// A wakeup structure is there already (a VMM's: the firmware's own mailbox is the one the
    /// APs wait in).
    HasWakeup,
    /// The interrupt controller structures do not tile the table.
    Structure(usize),
}

impl core::fmt::Display for MadtError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MadtError::Signature => write!(f, "the table is not a MADT (signature APIC)"),
            MadtError::Length(l) => write!(f, "the MADT's length {l} is impossible"),
            MadtError::HasWakeup => write!(f, "the MADT has a multiprocessor wakeup structure already"),
            MadtError::Structure(at) => write!(f, "the MADT's structure at offset {at} overruns the table"),
        }
    }
}

/// The MADT header (36-byte SDT header, local APIC address, flags).
const MADT_HEADER: usize = 44;

/// `madt` with a multiprocessor wakeup structure (mailbox version 0) for `mailbox` appended,
/// length and checksum updated.
pub fn madt_with_wakeup(madt: &[u8], mailbox: u64) -> Result<Vec<u8>, MadtError> {
    if madt.get(0..4) != Some(b"APIC".as_slice()) {
        return Err(MadtError::Signature);
    }
    let len = u32::from_le_bytes(madt.get(4..8).ok_or(MadtError::Signature)?.try_into().expect("4 bytes"));
    if (len as usize) < MADT_HEADER || len as usize > madt.len() {
        return Err(MadtError::Length(len));
    }
    let body = &madt[..len as usize];
    let mut at = MADT_HEADER;
    while at < body.len() {
        let (kind, slen) = match body.get(at..at + 2) {
            Some(h) => (h[0], usize::from(h[1])),
            None => return Err(MadtError::Structure(at)),
        };
        if slen < 2 || at + slen > body.len() {
            return Err(MadtError::Structure(at));
        }
        if kind == MP_WAKEUP_TYPE {
            return Err(MadtError::HasWakeup);
        }
        at += slen;
    }
    let mut out = body.to_vec();
    out.push(MP_WAKEUP_TYPE);
    out.push(MP_WAKEUP_LEN as u8);
    out.extend(0u16.to_le_bytes()); // mailbox version
    out.extend(0u32.to_le_bytes()); // reserved
    out.extend(mailbox.to_le_bytes());
    let new_len = out.len() as u32;
    out[4..8].copy_from_slice(&new_len.to_le_bytes());
    out[9] = 0;
    out[9] = 0u8.wrapping_sub(out.iter().fold(0u8, |a, b| a.wrapping_add(*b)));
    Ok(out)
}

/// Page tables at `base` (4 KiB aligned, below 4 GiB) identity-mapping 0-4 GiB with 2 MiB
/// pages, present and writable: PML4, PDPT, then four page directories.
pub fn ap_page_tables(base: u64) -> Vec<u8> {
    let mut t = alloc::vec![0u8; AP_PAGE_TABLE_PAGES * 4096];
    let mut put = |page: usize, index: usize, value: u64| {
        let at = page * 4096 + index * 8;
        t[at..at + 8].copy_from_slice(&value.to_le_bytes());
    };
    put(0, 0, (base + 0x1000) | 3);
    for pd in 0..4 {
        put(1, pd, (base + 0x2000 + pd as u64 * 0x1000) | 3);
        for i in 0..512 {
            let addr = ((pd * 512 + i) as u64) << 21;
            put(2 + pd, i, addr | 0x83);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MADT as QEMU writes it for two CPUs: header, two local APIC structures, an I/O APIC.
    fn madt() -> Vec<u8> {
        let mut t = Vec::new();
        t.extend(b"APIC");
        t.extend(0u32.to_le_bytes());
        t.extend([1, 0]);
        t.extend(b"BOCHS BXPC    ");
        t.extend([0u8; 12]); // OEM revision, creator ID, creator revision
        t.extend(0xFEE0_0000u32.to_le_bytes());
        t.extend(1u32.to_le_bytes());
        t.extend([0, 8, 0, 0, 1, 0, 0, 0]);
        t.extend([0, 8, 1, 1, 1, 0, 0, 0]);
        t.extend([1, 12, 0, 0, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0]);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t[9] = 0u8.wrapping_sub(t.iter().fold(0u8, |a, b| a.wrapping_add(*b)));
        t
    }

    #[test]
    fn wakeup_structure_is_appended_with_a_valid_checksum() {
        let m = madt();
        let out = madt_with_wakeup(&m, 0x7FF0_1000).unwrap();
        assert_eq!(out.len(), m.len() + 16);
        assert_eq!(u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize, out.len());
        assert_eq!(out.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(
            &out[..9],
            &{
                let mut h = m[..9].to_vec();
                h[4..8].copy_from_slice(&(out.len() as u32).to_le_bytes());
                h
            }[..]
        );
        assert_eq!(&out[10..m.len()], &m[10..]);
        // ACPI 6.4 table 5.62: type 0x10, length 16, version 0, reserved, mailbox address.
        let s = &out[m.len()..];
        assert_eq!(s[..8], [0x10, 16, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u64::from_le_bytes(s[8..16].try_into().unwrap()), 0x7FF0_1000);
    }

    #[test]
    fn hostile_madts_are_refused() {
        let m = madt();
        let mut sig = m.clone();
        sig[0] = b'X';
        assert_eq!(madt_with_wakeup(&sig, 0), Err(MadtError::Signature));
        let mut long = m.clone();
        long[4..8].copy_from_slice(&(m.len() as u32 + 1).to_le_bytes());
        assert_eq!(madt_with_wakeup(&long, 0), Err(MadtError::Length(m.len() as u32 + 1)));
        let mut zero = m.clone();
        zero[45] = 0; // first structure's length 0: would loop for ever
        assert_eq!(madt_with_wakeup(&zero, 0), Err(MadtError::Structure(44)));
        let mut over = m.clone();
        let last = m.len() - 12;
        over[last + 1] = 13;
        assert_eq!(madt_with_wakeup(&over, 0), Err(MadtError::Structure(last)));
        let twice = madt_with_wakeup(&m, 0x1000).unwrap();
        assert_eq!(madt_with_wakeup(&twice, 0x2000), Err(MadtError::HasWakeup));
        assert_eq!(madt_with_wakeup(b"AP", 0), Err(MadtError::Signature));
    }

    #[test]
    fn ap_page_tables_identity_map_4_gib() {
        let base = 0x7FF0_2000u64;
        let t = ap_page_tables(base);
        let entry = |page: usize, i: usize| u64::from_le_bytes(t[page * 4096 + i * 8..][..8].try_into().unwrap());
        // Walk a few addresses the way the MMU does.
        for addr in [0u64, 0x9_F000, 0x7FF0_2000, 0xFEE0_0000, 0xFFFF_FFF0] {
            let pml4 = entry(0, (addr >> 39) as usize & 511);
            assert_eq!(pml4 & !0xFFF, base + 0x1000);
            let pdpt = entry(1, (addr >> 30) as usize & 511);
            let pd_page = ((pdpt & !0xFFF) - base) / 4096;
            let pde = entry(pd_page as usize, (addr >> 21) as usize & 511);
            assert_eq!(pde & 0x83, 0x83, "present, writable, 2 MiB");
            assert_eq!((pde & !0x1F_FFFF) | (addr & 0x1F_FFFF), addr);
        }
        assert_eq!(entry(0, 1), 0, "nothing above 512 GiB");
        assert_eq!(entry(1, 4), 0, "nothing above 4 GiB");
    }
}
