//! ELF -> flat ROM image: every loadable segment is placed at its physical (load) address in
//! a ROM_SIZE image that ends at 4 GiB. The program headers are read by hand: the input is our
//! own linker output and only these few fields are needed; the checks below are the point.

use anyhow::{Result, bail, ensure};

/// ROM size. The boot-only firmware fitted 256 KiB; with the encrypted-disk path (LUKS2,
/// JSON, KDFs, virtio) it needs more, so the ROM is 512 KiB; measured boot with offline sealing outgrew that too: 1 MiB (QEMU maps it below 4 GiB).
pub const ROM_SIZE: u64 = 1024 * 1024;
/// Where the ROM starts in guest-physical memory.
pub const ROM_BASE: u64 = 0x1_0000_0000 - ROM_SIZE;

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
    let mut rom = vec![0xFFu8; ROM_SIZE as usize];
    let mut placed = 0;
    for segment in load_segments(elf)? {
        let LoadSegment { index: i, vaddr, paddr, filesz, .. } = segment;
        if filesz == 0 {
            continue; // .bss
        }
        if paddr < ROM_BASE || paddr + filesz > 0x1_0000_0000 {
            bail!(
                "segment {i} (load address {paddr:#x}, {filesz} bytes) lies outside the ROM: the firmware is too large"
            );
        }
        let at = (paddr - ROM_BASE) as usize;
        rom[at..at + filesz as usize].copy_from_slice(segment_bytes(elf, &segment));
        placed += 1;
        // Segments that run from RAM must keep the ROM's layout (boot.S copies one block).
        if vaddr != paddr {
            ensure!(
                vaddr.wrapping_sub(paddr) == 0x00A0_0000u64.wrapping_sub(ROM_BASE),
                "segment {i}: RAM and ROM layouts differ ({vaddr:#x} vs {paddr:#x})"
            );
        }
    }
    ensure!(placed >= 2, "no loadable segments found");
    // The reset vector and the GUID footer table must be where VMMs look for them.
    ensure!(rom[rom.len() - 16] == 0x0f, "reset vector missing at 4 GiB - 16");
    let footer = &rom[rom.len() - 48..rom.len() - 32];
    ensure!(
        footer == [0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
        "GUID footer table missing at 4 GiB - 0x30"
    );
    Ok(rom)
}

/// Bytes of the ROM that hold something (not erased-flash 0xFF).
pub fn used(rom: &[u8]) -> usize {
    let first = rom.iter().position(|b| *b != 0xFF).unwrap_or(rom.len());
    let gap = rom[first..].windows(4096).position(|w| w.iter().all(|b| *b == 0xFF)).map_or(rom.len() - first, |g| g);
    gap + 4096
}
