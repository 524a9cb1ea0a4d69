//! ELF -> flat ROM image: every loadable segment is placed at its physical (load) address in
//! an image that ends at 4 GiB. Its size is the linker script's ROM_SIZE (linker/veilboot.ld:
//! the contents rounded up to 64 KiB), which the payload's load address, 4 GiB - ROM_SIZE,
//! carries; [`from_elf`] checks it against the contents and against the TDVF metadata boot.S
//! built from the same constant. The program headers are read by hand: the input is our own
//! linker output and only these few fields are needed; the checks below are the point.

use anyhow::{Result, bail, ensure};

/// QEMU takes a -bios file of any multiple of 64 KiB; the ROM is its contents rounded up to it.
pub const ROM_GRANULE: u64 = 64 * 1024;
/// The ROM tail (boot.S: reset code, metadata, GUID footer table, reset vector) at its end.
const TAIL: u64 = 4096;
/// Where the payload runs (linker/veilboot.ld: FW_RAM).
const FW_RAM: u64 = 0x00A0_0000;
/// 4 GiB, where the ROM ends.
const TOP: u64 = 0x1_0000_0000;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A PT_LOAD program header: where its bytes are in the file and where they go.
pub struct LoadSegment {
    /// Its index among the program headers.
    pub index: usize,
    /// File offset of its bytes.
    pub offset: u64,
    /// Link (virtual) address.
    pub vaddr: u64,
    /// Load (physical) address.
    pub paddr: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Bytes in memory (more than `filesz` for .bss).
    pub memsz: u64,
}

/// The loadable segments of a little-endian ELF64 file, each checked to lie inside it.
pub fn load_segments(elf: &[u8]) -> Result<Vec<LoadSegment>> {
    ensure!(elf.len() > 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2 && elf[5] == 1, "not a little-endian ELF64 file");
    let (phoff, phentsize, phnum) = (u64_at(elf, 32) as usize, u16_at(elf, 54) as usize, u16_at(elf, 56) as usize);
    let mut segments = Vec::new();
    for index in 0..phnum {
        let ph = elf
            .get(phoff + index * phentsize..phoff + (index + 1) * phentsize)
            .filter(|ph| ph.len() >= 48)
            .ok_or_else(|| anyhow::anyhow!("program header {index} lies outside the file"))?;
        if u32_at(ph, 0) != 1 {
            continue; // not PT_LOAD
        }
        let segment = LoadSegment {
            index,
            offset: u64_at(ph, 8),
            vaddr: u64_at(ph, 16),
            paddr: u64_at(ph, 24),
            filesz: u64_at(ph, 32),
            memsz: u64_at(ph, 40),
        };
        ensure!(
            segment.offset.checked_add(segment.filesz).is_some_and(|end| end <= elf.len() as u64),
            "segment {index}'s bytes lie outside the file"
        );
        segments.push(segment);
    }
    Ok(segments)
}

/// The bytes a loadable segment takes from the file.
pub fn segment_bytes<'a>(elf: &'a [u8], segment: &LoadSegment) -> &'a [u8] {
    &elf[segment.offset as usize..(segment.offset + segment.filesz) as usize]
}

/// Build the ROM image.
pub fn from_elf(elf: &[u8]) -> Result<Vec<u8>> {
    let segments: Vec<LoadSegment> = load_segments(elf)?.into_iter().filter(|s| s.filesz > 0).collect();
    ensure!(segments.len() >= 2, "no loadable segments found");
    // The payload's load address is ROM_BASE = 4 GiB - ROM_SIZE (the linker script's).
    let rom_base = segments.iter().map(|s| s.paddr).min().expect("two segments");
    ensure!(rom_base < TOP, "the lowest load address {rom_base:#x} is not below 4 GiB");
    let rom_size = TOP - rom_base;
    ensure!(rom_size.is_multiple_of(ROM_GRANULE), "the ROM size {rom_size:#x} is not a multiple of 64 KiB");
    let mut rom = vec![0xFFu8; rom_size as usize];
    let mut payload_end = rom_base;
    for segment in &segments {
        let LoadSegment { index: i, vaddr, paddr, filesz, .. } = *segment;
        if paddr < rom_base || paddr + filesz > TOP {
            bail!(
                "segment {i} (load address {paddr:#x}, {filesz} bytes) lies outside the ROM: the firmware is too large"
            );
        }
        let at = (paddr - rom_base) as usize;
        rom[at..at + filesz as usize].copy_from_slice(segment_bytes(elf, segment));
        // Segments that run from RAM must keep the ROM's layout (boot.S copies one block).
        if vaddr != paddr {
            ensure!(
                vaddr.wrapping_sub(paddr) == FW_RAM.wrapping_sub(rom_base),
                "segment {i}: RAM and ROM layouts differ ({vaddr:#x} vs {paddr:#x})"
            );
            payload_end = payload_end.max(paddr + filesz);
        } else {
            ensure!(paddr == TOP - TAIL && filesz == TAIL, "segment {i} runs in place but is not the 4 KiB ROM tail");
        }
    }
    // As large as its contents rounded up to 64 KiB, no larger.
    let contents = payload_end - rom_base + TAIL;
    ensure!(
        rom_size == contents.next_multiple_of(ROM_GRANULE),
        "the ROM is {rom_size:#x} bytes for {contents:#x} bytes of contents (linker/veilboot.ld: ROM_SIZE)"
    );
    // The reset vector and the GUID footer table must be where VMMs look for them.
    ensure!(rom[rom.len() - 16] == 0x0f, "reset vector missing at 4 GiB - 16");
    let footer = &rom[rom.len() - 48..rom.len() - 32];
    ensure!(
        footer == [0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
        "GUID footer table missing at 4 GiB - 0x30"
    );
    ensure!(
        tdvf_bfv(&rom[rom.len() - TAIL as usize..]) == Some((0, rom_size as u32, rom_base, rom_size)),
        "the TDVF metadata's BFV section is not the whole {rom_size:#x}-byte ROM at {rom_base:#x}"
    );
    Ok(rom)
}

/// The first TDVF section (the BFV: data offset, raw size, address, memory size) of the
/// descriptor in the ROM tail, found by its signature (not through the footer table, as
/// veil_agent::tdx::tdvf does).
fn tdvf_bfv(tail: &[u8]) -> Option<(u32, u32, u64, u64)> {
    let at = tail.windows(4).position(|w| w == b"TDVF")?;
    let s = tail.get(at + 16..at + 48)?;
    Some((u32_at(s, 0), u32_at(s, 4), u64_at(s, 8), u64_at(s, 16)))
}

/// Bytes of the ROM that hold something (not erased-flash 0xFF): from the first non-erased
/// byte to the last one before the 4 KiB tail, and the tail.
pub fn used(rom: &[u8]) -> usize {
    let first = rom.iter().position(|b| *b != 0xFF).unwrap_or(rom.len());
    let body = &rom[..rom.len().saturating_sub(4096)];
    let end = body.iter().rposition(|b| *b != 0xFF).map_or(first, |i| i + 1);
    end.saturating_sub(first) + rom.len().min(4096)
}
