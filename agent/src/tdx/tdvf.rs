//! The TDVF metadata of a ROM (found through the OVMF GUID footer table) and MRTD, the digest
//! the TDX module computes while the VMM adds the ROM's sections to a TD (TDH.MEM.PAGE.ADD and
//! TDH.MR.EXTEND). Layouts and the MRTD rules: shared/reference/snp-tdx-guest.md B3 (td-shim's
//! specification and `build_mrtd`, edk2's metadata). QEMU adds each page's 256-byte extends
//! right after the page (QEMU 9 and later) or all pages first and then all extends (QEMU 8):
//! [`PageOrder`].
//!
//! Not yet checked against a real TD's MRTD built from a known ROM (no such pair is at hand):
//! the layout of each hashed buffer follows the specification as quoted in the reference.

use alloc::vec::Vec;

use sha2::{Digest, Sha384};

use crate::snp::ovmf::footer_entries;

/// The footer-table GUID whose data is the offset of the TDVF descriptor from the ROM's end.
const TDX_METADATA_OFFSET_GUID: [u8; 16] =
    [0x35, 0x65, 0x7A, 0xE4, 0x4A, 0x98, 0x98, 0x47, 0x86, 0x5E, 0x46, 0x85, 0xA7, 0xBF, 0x8E, 0xC2];

/// Attribute: the section's contents are extended into MRTD.
pub const ATTR_MR_EXTEND: u32 = 1;
/// Attribute: the pages are added unaccepted (TDH.MEM.PAGE.AUG), not measured.
pub const ATTR_PAGE_AUG: u32 = 2;

/// One TDVF section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Offset of the raw data in the ROM file.
    pub data_offset: u32,
    /// Raw data size.
    pub raw_size: u32,
    /// Guest-physical address.
    pub gpa: u64,
    /// Memory size (4 KiB multiple, zero-filled beyond the raw data).
    pub mem_size: u64,
    /// Type (0 BFV, 1 CFV, 2 TD HOB, 3 TempMem, 4 PermMem, 5 Payload, 6 PayloadParam).
    pub kind: u32,
    /// Attributes.
    pub attributes: u32,
}

/// In which order QEMU adds pages and extends their contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOrder {
    /// Each page added, then its contents extended (QEMU 9 and later).
    Interleaved,
    /// Every page of every section added, then every extend (QEMU 8).
    AddsFirst,
}

/// The ROM's TDVF sections, in descriptor order.
pub fn sections(rom: &[u8]) -> Result<Vec<Section>, &'static str> {
    let entries = footer_entries(rom).map_err(|_| "no OVMF GUID footer table")?;
    let (_, data) =
        entries.iter().find(|(g, _)| *g == TDX_METADATA_OFFSET_GUID).ok_or("no TDX metadata offset in the footer")?;
    let off = u32::from_le_bytes(data.get(..4).ok_or("a short TDX metadata offset")?.try_into().expect("4"));
    let at = rom.len().checked_sub(off as usize).ok_or("a TDX metadata offset outside the ROM")?;
    let d = rom.get(at..at + 16).ok_or("a TDVF descriptor outside the ROM")?;
    if &d[0..4] != b"TDVF" || u32::from_le_bytes(d[8..12].try_into().expect("4")) != 1 {
        return Err("no version-1 TDVF descriptor at the offset");
    }
    let n = u32::from_le_bytes(d[12..16].try_into().expect("4")) as usize;
    let len = u32::from_le_bytes(d[4..8].try_into().expect("4")) as usize;
    if len != 16 + 32 * n || at + len > rom.len() || n > 64 {
        return Err("a TDVF descriptor length that does not match its sections");
    }
    let u32_at = |p: usize| u32::from_le_bytes(rom[p..p + 4].try_into().expect("4"));
    let u64_at = |p: usize| u64::from_le_bytes(rom[p..p + 8].try_into().expect("8"));
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let s = at + 16 + 32 * i;
        let sec = Section {
            data_offset: u32_at(s),
            raw_size: u32_at(s + 4),
            gpa: u64_at(s + 8),
            mem_size: u64_at(s + 16),
            kind: u32_at(s + 24),
            attributes: u32_at(s + 28),
        };
        if !sec.gpa.is_multiple_of(4096)
            || !sec.mem_size.is_multiple_of(4096)
            || u64::from(sec.raw_size) > sec.mem_size
            || sec.attributes & !(ATTR_MR_EXTEND | ATTR_PAGE_AUG) != 0
            || (sec.data_offset as usize).saturating_add(sec.raw_size as usize) > rom.len()
        {
            return Err("a TDVF section with an unaligned, oversized or out-of-file range, or unknown attributes");
        }
        out.push(sec);
    }
    Ok(out)
}

fn page_add(h: &mut Sha384, gpa: u64) {
    let mut b = [0u8; 128];
    b[..12].copy_from_slice(b"MEM.PAGE.ADD");
    b[16..24].copy_from_slice(&gpa.to_le_bytes());
    h.update(b);
}

fn extend_page(h: &mut Sha384, rom: &[u8], s: &Section, page: u64) {
    for chunk in 0..16u64 {
        let off = page + chunk * 256;
        let mut b = [0u8; 128];
        b[..9].copy_from_slice(b"MR.EXTEND");
        b[16..24].copy_from_slice(&(s.gpa + off).to_le_bytes());
        h.update(b);
        let mut data = [0u8; 256];
        let start = off as usize;
        if start < s.raw_size as usize {
            let n = (s.raw_size as usize - start).min(256);
            let at = s.data_offset as usize + start;
            data[..n].copy_from_slice(&rom[at..at + n]);
        }
        h.update(data);
    }
}

/// MRTD of a TD launched from `rom` with pages added in `order`.
pub fn mrtd(rom: &[u8], order: PageOrder) -> Result<[u8; 48], &'static str> {
    let sections = sections(rom)?;
    let mut h = Sha384::new();
    let added = |s: &Section| s.attributes & ATTR_PAGE_AUG == 0;
    let extended = |s: &Section| s.attributes & ATTR_MR_EXTEND != 0;
    match order {
        PageOrder::Interleaved => {
            for s in sections.iter().filter(|s| added(s)) {
                for page in (0..s.mem_size).step_by(4096) {
                    page_add(&mut h, s.gpa + page);
                    if extended(s) {
                        extend_page(&mut h, rom, s, page);
                    }
                }
            }
        }
        PageOrder::AddsFirst => {
            for s in sections.iter().filter(|s| added(s)) {
                for page in (0..s.mem_size).step_by(4096) {
                    page_add(&mut h, s.gpa + page);
                }
            }
            for s in sections.iter().filter(|s| added(s) && extended(s)) {
                for page in (0..s.mem_size).step_by(4096) {
                    extend_page(&mut h, rom, s, page);
                }
            }
        }
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ROM of one page with a TDVF descriptor (a BFV of that page, MR.EXTEND) and the
    /// footer table pointing at it.
    fn tiny_rom() -> Vec<u8> {
        let mut rom = alloc::vec![0x90u8; 4096];
        let desc_at = 0x100;
        rom[desc_at..desc_at + 4].copy_from_slice(b"TDVF");
        rom[desc_at + 4..desc_at + 8].copy_from_slice(&48u32.to_le_bytes());
        rom[desc_at + 8..desc_at + 12].copy_from_slice(&1u32.to_le_bytes());
        rom[desc_at + 12..desc_at + 16].copy_from_slice(&1u32.to_le_bytes());
        let s = desc_at + 16;
        rom[s..s + 4].copy_from_slice(&0u32.to_le_bytes());
        rom[s + 4..s + 8].copy_from_slice(&4096u32.to_le_bytes());
        rom[s + 8..s + 16].copy_from_slice(&0xFFFF_F000u64.to_le_bytes());
        rom[s + 16..s + 24].copy_from_slice(&4096u64.to_le_bytes());
        rom[s + 24..s + 28].copy_from_slice(&0u32.to_le_bytes());
        rom[s + 28..s + 32].copy_from_slice(&ATTR_MR_EXTEND.to_le_bytes());
        // Footer table at end - 0x20: entry {u32 offset, u16 len 22, GUID}, then {u16 total, GUID}.
        let end = 4096 - 0x20;
        let footer = crate::snp::ovmf::FOOTER_GUID;
        rom[end - 16..end].copy_from_slice(&footer);
        rom[end - 18..end - 16].copy_from_slice(&(18u16 + 22).to_le_bytes());
        let e = end - 18;
        rom[e - 16..e].copy_from_slice(&TDX_METADATA_OFFSET_GUID);
        rom[e - 18..e - 16].copy_from_slice(&22u16.to_le_bytes());
        rom[e - 22..e - 18].copy_from_slice(&((4096 - desc_at) as u32).to_le_bytes());
        rom
    }

    #[test]
    fn one_page_bfv() {
        let rom = tiny_rom();
        let s = sections(&rom).unwrap();
        assert_eq!(s.len(), 1);
        // By hand: one MEM.PAGE.ADD buffer, then 16 MR.EXTEND buffers each with 256 bytes.
        let mut h = Sha384::new();
        let mut add = [0u8; 128];
        add[..12].copy_from_slice(b"MEM.PAGE.ADD");
        add[16..24].copy_from_slice(&0xFFFF_F000u64.to_le_bytes());
        h.update(add);
        for c in 0..16u64 {
            let mut ext = [0u8; 128];
            ext[..9].copy_from_slice(b"MR.EXTEND");
            ext[16..24].copy_from_slice(&(0xFFFF_F000 + 256 * c).to_le_bytes());
            h.update(ext);
            h.update(&rom[(256 * c) as usize..(256 * c + 256) as usize]);
        }
        let want: [u8; 48] = h.finalize().into();
        assert_eq!(mrtd(&rom, PageOrder::Interleaved).unwrap(), want);
        // One page: both orders agree.
        assert_eq!(mrtd(&rom, PageOrder::AddsFirst).unwrap(), want);
    }

    #[test]
    fn a_damaged_descriptor_is_refused() {
        let mut rom = tiny_rom();
        rom[0x100] = b'X';
        assert!(sections(&rom).is_err());
    }
}
