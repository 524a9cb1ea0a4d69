//! The metadata an SNP VMM reads from an OVMF-style ROM (veilboot's `kernel/src/arch/boot.S`
//! builds the same structures): the edk2 GUID footer table that ends 0x20 bytes before the
//! ROM's end, and the SEV metadata descriptor ("ASEV") it points at, whose sections say which
//! guest pages the VMM adds to the launch, and as what.
//!
//! Footer table: `u16 total length` and the footer GUID end at `len - 0x20`; walking back from
//! there, each entry is `[data][u16 length of data + 18][GUID]`.

use alloc::vec::Vec;

use super::SnpError;
use super::hashes::guid;

/// 96b582de-1fb2-45f7-baea-a366c55a082d: the footer.
pub const FOOTER_GUID: [u8; 16] = guid(0x96b5_82de, 0x1fb2, 0x45f7, [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]);
/// dc886566-984a-4798-a75e-5585a7bf67cc: u32, the SEV metadata's distance from the ROM's end.
pub const SEV_METADATA_GUID: [u8; 16] =
    guid(0xdc88_6566, 0x984a, 0x4798, [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc]);
/// 7255371f-3a3b-4b04-927b-1da6efa8d454: u32 GPA, u32 size of the SEV hash table.
pub const HASH_TABLE_GUID: [u8; 16] =
    guid(0x7255_371f, 0x3a3b, 0x4b04, [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54]);
/// 00f771de-1a7e-4fcb-890e-68c77e2fb44e: u32, where application processors start.
pub const SEV_ES_RESET_GUID: [u8; 16] =
    guid(0x00f7_71de, 0x1a7e, 0x4fcb, [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e]);

/// What a metadata section holds (its page type at launch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// Pre-validated zero pages (SNP_SEC_MEM).
    SecMem,
    /// The secrets page.
    Secrets,
    /// The CPUID page.
    Cpuid,
    /// The SVSM calling area.
    SvsmCaa,
    /// The page QEMU writes the SEV hash table into (measured when kernel-hashes=on).
    KernelHashes,
}

impl SectionKind {
    fn from_u32(t: u32) -> Result<SectionKind, SnpError> {
        Ok(match t {
            1 => SectionKind::SecMem,
            2 => SectionKind::Secrets,
            3 => SectionKind::Cpuid,
            4 => SectionKind::SvsmCaa,
            0x10 => SectionKind::KernelHashes,
            other => return Err(SnpError::SectionType(other)),
        })
    }
}

/// One metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Guest-physical base.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// Type.
    pub kind: SectionKind,
}

/// What the VMM and the measurement read from the ROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RomMetadata {
    /// The SEV metadata sections, in order.
    pub sections: Vec<Section>,
    /// The application processors' reset address (SEV-ES reset block).
    pub ap_reset_eip: Option<u32>,
    /// Where QEMU writes the SEV hash table: (GPA, size).
    pub hash_table: Option<(u32, u32)>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The footer table's entries: (GUID, data).
pub fn footer_entries(rom: &[u8]) -> Result<Vec<([u8; 16], &[u8])>, SnpError> {
    if rom.len() < 4096 || !rom.len().is_multiple_of(4096) {
        return Err(SnpError::RomSize(rom.len()));
    }
    let end = rom.len() - 0x20;
    if rom[end - 16..end] != FOOTER_GUID {
        return Err(SnpError::FooterTable("no footer GUID at the ROM's end - 0x30"));
    }
    let total = usize::from(u16_at(rom, end - 18));
    if total < 18 || total > end {
        return Err(SnpError::FooterTable("a table length that does not fit the ROM"));
    }
    let start = end - total;
    let mut entries = Vec::new();
    let mut at = end - 18;
    while at > start {
        if at - start < 18 {
            return Err(SnpError::FooterTable("a truncated entry"));
        }
        let g: [u8; 16] = rom[at - 16..at].try_into().expect("16 bytes");
        let len = usize::from(u16_at(rom, at - 18));
        if len < 18 || len > at - start {
            return Err(SnpError::FooterTable("an entry length that runs outside the table"));
        }
        entries.push((g, &rom[at - len..at - 18]));
        at -= len;
    }
    Ok(entries)
}

/// Read the metadata a VMM uses from `rom`.
pub fn parse(rom: &[u8]) -> Result<RomMetadata, SnpError> {
    let entries = footer_entries(rom)?;
    let find = |g: &[u8; 16]| entries.iter().find(|(e, _)| e == g).map(|(_, d)| *d);
    let word = |d: &[u8], i: usize| -> Result<u32, SnpError> {
        d.get(i * 4..i * 4 + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or(SnpError::FooterTable("an entry too short for its data"))
    };
    let mut sections = Vec::new();
    if let Some(d) = find(&SEV_METADATA_GUID) {
        let offset = word(d, 0)? as usize;
        let at = rom
            .len()
            .checked_sub(offset)
            .filter(|a| a + 16 <= rom.len())
            .ok_or(SnpError::Metadata("its offset points outside the ROM"))?;
        if &rom[at..at + 4] != b"ASEV" {
            return Err(SnpError::Metadata("no \"ASEV\" signature where the footer table points"));
        }
        let (len, version, count) = (u32_at(rom, at + 4) as usize, u32_at(rom, at + 8), u32_at(rom, at + 12) as usize);
        if version != 1 {
            return Err(SnpError::Metadata("version is not 1"));
        }
        if len != 16 + 12 * count || at + len > rom.len() {
            return Err(SnpError::Metadata("its length does not match its section count"));
        }
        for i in 0..count {
            let s = at + 16 + 12 * i;
            sections.push(Section {
                gpa: u32_at(rom, s),
                size: u32_at(rom, s + 4),
                kind: SectionKind::from_u32(u32_at(rom, s + 8))?,
            });
        }
    }
    let ap_reset_eip = find(&SEV_ES_RESET_GUID).map(|d| word(d, 0)).transpose()?;
    let hash_table = find(&HASH_TABLE_GUID).map(|d| Ok::<_, SnpError>((word(d, 0)?, word(d, 1)?))).transpose()?;
    Ok(RomMetadata { sections, ap_reset_eip, hash_table })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 KiB ROM tail with `entries` in its footer table and an ASEV descriptor at 0x800.
    fn rom_tail(sections: &[(u32, u32, u32)], reset: u32, hash: Option<(u32, u32)>) -> Vec<u8> {
        let mut rom = alloc::vec![0u8; 4096];
        let asev = 0x800;
        rom[asev..asev + 4].copy_from_slice(b"ASEV");
        rom[asev + 4..asev + 8].copy_from_slice(&(16 + 12 * sections.len() as u32).to_le_bytes());
        rom[asev + 8..asev + 12].copy_from_slice(&1u32.to_le_bytes());
        rom[asev + 12..asev + 16].copy_from_slice(&(sections.len() as u32).to_le_bytes());
        for (i, (g, s, t)) in sections.iter().enumerate() {
            let at = asev + 16 + 12 * i;
            for (j, v) in [g, s, t].iter().enumerate() {
                rom[at + 4 * j..at + 4 * j + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        let mut table: Vec<u8> = Vec::new();
        let mut push = |data: &[u8], g: &[u8; 16]| {
            table.extend_from_slice(data);
            table.extend_from_slice(&((data.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(g);
        };
        push(&((4096 - asev) as u32).to_le_bytes(), &SEV_METADATA_GUID);
        push(&reset.to_le_bytes(), &SEV_ES_RESET_GUID);
        if let Some((g, s)) = hash {
            push(&[g.to_le_bytes(), s.to_le_bytes()].concat(), &HASH_TABLE_GUID);
        }
        let total = (table.len() + 18) as u16;
        table.extend_from_slice(&total.to_le_bytes());
        table.extend_from_slice(&FOOTER_GUID);
        let end = 4096 - 0x20;
        rom[end - table.len()..end].copy_from_slice(&table);
        rom
    }

    #[test]
    fn parses_what_it_wrote_and_refuses_damage() {
        let rom = rom_tail(
            &[(0x80_0000, 0x1000, 1), (0x90_0000, 0x1000, 2), (0x90_3000, 0x1000, 0x10)],
            0xffff_f000,
            Some((0x90_3000, 0x400)),
        );
        let m = parse(&rom).unwrap();
        assert_eq!(m.sections.len(), 3);
        assert_eq!(m.sections[2], Section { gpa: 0x90_3000, size: 0x1000, kind: SectionKind::KernelHashes });
        assert_eq!((m.ap_reset_eip, m.hash_table), (Some(0xffff_f000), Some((0x90_3000, 0x400))));
        let mut bad = rom.clone();
        bad[4096 - 0x21] ^= 1;
        assert_eq!(parse(&bad), Err(SnpError::FooterTable("no footer GUID at the ROM's end - 0x30")));
        let mut bad = rom.clone();
        bad[0x800] = b'X';
        assert!(matches!(parse(&bad), Err(SnpError::Metadata(_))));
        let bad = rom_tail(&[(0, 0x1000, 9)], 0, None);
        assert_eq!(parse(&bad), Err(SnpError::SectionType(9)));
        assert_eq!(parse(&rom[..100]), Err(SnpError::RomSize(100)));
    }
}
