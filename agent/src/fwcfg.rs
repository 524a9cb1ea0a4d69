//! Parsers for what QEMU's fw_cfg device hands the firmware: the file directory and the
//! `etc/e820` memory map. Both come from the host and are untrusted: counts and sizes are
//! checked against the bytes actually present, and nothing is indexed unchecked.
//!
//! Formats (QEMU docs/specs/fw_cfg.rst): the directory (selector 0x19) is a big-endian u32
//! count followed by 64-byte entries {u32 size BE, u16 select BE, u16 reserved, name[56]};
//! `etc/e820` is packed little-endian {u64 address, u64 length, u32 type} entries.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Selector of the signature ("QEMU").
pub const SEL_SIGNATURE: u16 = 0x0000;
/// Selector of the feature bitmap (bit 1: DMA interface).
pub const SEL_FEATURES: u16 = 0x0001;
/// Selector of the file directory.
pub const SEL_FILE_DIR: u16 = 0x0019;
/// Most directory entries accepted (QEMU has a few dozen).
pub const MAX_FILES: u32 = 4096;
/// Most e820 entries accepted.
pub const MAX_E820: usize = 128;

/// Why fw_cfg data was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FwCfgError {
    /// The directory's count does not match its bytes, or is absurd.
    Directory(String),
    /// A file name that is not NUL-terminated printable ASCII.
    FileName(usize),
    /// The e820 map is malformed.
    E820(String),
}

impl fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FwCfgError::Directory(m) => write!(f, "fw_cfg file directory: {m}"),
            FwCfgError::FileName(i) => write!(f, "fw_cfg file directory: entry {i} has a malformed name"),
            FwCfgError::E820(m) => write!(f, "etc/e820: {m}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FwCfgError {}

/// One fw_cfg file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u32,
    /// Selector to read it.
    pub select: u16,
    /// Name, e.g. `etc/e820`.
    pub name: String,
}

/// The fw_cfg DMA interface's ports: the high half of the descriptor's guest-physical address,
/// then the low half, whose write starts the transfer (both big-endian).
pub const DMA_PORT_HIGH: u16 = 0x514;
/// The low half (see [`DMA_PORT_HIGH`]).
pub const DMA_PORT_LOW: u16 = 0x518;

/// The guest memory a fw_cfg DMA transfer moves data to or from, from its 16-byte descriptor
/// (control, length, address; big-endian): `[address, address + length)` for a read or write
/// (control bits 1 and 4), None for a select or skip alone or an empty transfer. What the
/// models check the host can reach (shared memory only, on SEV-SNP and TDX).
pub fn dma_data_range(descriptor: &[u8; 16]) -> Option<(u64, u64)> {
    let control = u32::from_be_bytes(descriptor[0..4].try_into().expect("4 bytes"));
    let length = u32::from_be_bytes(descriptor[4..8].try_into().expect("4 bytes"));
    let address = u64::from_be_bytes(descriptor[8..16].try_into().expect("8 bytes"));
    (control & 0b1_0010 != 0 && length > 0).then(|| (address, address.saturating_add(u64::from(length))))
}

/// Parse the file directory.
pub fn parse_directory(bytes: &[u8]) -> Result<Vec<FileEntry>, FwCfgError> {
    let count = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| FwCfgError::Directory(String::from("shorter than its 4-byte count")))?;
    if count > MAX_FILES {
        return Err(FwCfgError::Directory(alloc::format!("claims {count} files (limit {MAX_FILES})")));
    }
    let needed = 4 + count as usize * 64;
    if bytes.len() < needed {
        return Err(FwCfgError::Directory(alloc::format!(
            "claims {count} files ({needed} bytes) but holds {} bytes",
            bytes.len()
        )));
    }
    let mut files = Vec::with_capacity(count as usize);
    for (i, e) in bytes[4..needed].chunks_exact(64).enumerate() {
        let raw = &e[8..64];
        let len = raw.iter().position(|c| *c == 0).ok_or(FwCfgError::FileName(i))?;
        let name = &raw[..len];
        if name.is_empty() || !name.iter().all(|c| c.is_ascii_graphic()) {
            return Err(FwCfgError::FileName(i));
        }
        files.push(FileEntry {
            size: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            select: u16::from_be_bytes([e[4], e[5]]),
            name: String::from_utf8_lossy(name).into_owned(),
        });
    }
    Ok(files)
}

/// An e820 range type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Kind {
    /// Usable RAM (1).
    Ram,
    /// Reserved (2).
    Reserved,
    /// ACPI reclaimable (3).
    Acpi,
    /// ACPI NVS (4).
    Nvs,
    /// Unusable (5).
    Unusable,
    /// Anything else.
    Other(u32),
}

impl E820Kind {
    /// From the on-wire type.
    pub fn from_u32(t: u32) -> Self {
        match t {
            1 => E820Kind::Ram,
            2 => E820Kind::Reserved,
            3 => E820Kind::Acpi,
            4 => E820Kind::Nvs,
            5 => E820Kind::Unusable,
            other => E820Kind::Other(other),
        }
    }

    /// The on-wire type.
    pub fn to_u32(self) -> u32 {
        match self {
            E820Kind::Ram => 1,
            E820Kind::Reserved => 2,
            E820Kind::Acpi => 3,
            E820Kind::Nvs => 4,
            E820Kind::Unusable => 5,
            E820Kind::Other(t) => t,
        }
    }

    /// Short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            E820Kind::Ram => "ram",
            E820Kind::Reserved => "reserved",
            E820Kind::Acpi => "acpi",
            E820Kind::Nvs => "nvs",
            E820Kind::Unusable => "unusable",
            E820Kind::Other(_) => "other",
        }
    }
}

/// One e820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes (non-zero).
    pub len: u64,
    /// Type.
    pub kind: E820Kind,
}

impl E820Entry {
    /// End address (exclusive).
    pub fn end(&self) -> u64 {
        self.addr + self.len
    }
}

/// Parse `etc/e820`: whole entries, at least one RAM range, no zero-length or wrapping
/// ranges, RAM in whole 4 KiB pages and not overlapping, types 1-5 only. Returned sorted by
/// address.
pub fn parse_e820(bytes: &[u8]) -> Result<Vec<E820Entry>, FwCfgError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(20) {
        return Err(FwCfgError::E820(alloc::format!("{} bytes is not a whole number of 20-byte entries", bytes.len())));
    }
    if bytes.len() / 20 > MAX_E820 {
        return Err(FwCfgError::E820(alloc::format!("{} entries (limit {MAX_E820})", bytes.len() / 20)));
    }
    let mut map = Vec::new();
    for (i, e) in bytes.chunks_exact(20).enumerate() {
        let addr = u64::from_le_bytes(e[0..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(e[8..16].try_into().expect("8 bytes"));
        let kind = E820Kind::from_u32(u32::from_le_bytes(e[16..20].try_into().expect("4 bytes")));
        // RAM in whole pages only: a page split between two RAM entries is in neither entry's
        // whole pages, so a confidential guest would neither validate nor accept it, yet Linux
        // merges the entries and uses it.
        let why = if len == 0 || addr.checked_add(len).is_none() {
            "is empty or wraps"
        } else if kind == E820Kind::Ram && (addr | len) & 0xFFF != 0 {
            "is RAM not in whole 4 KiB pages"
        } else if matches!(kind, E820Kind::Other(_)) {
            // Linux takes some as memory (128, E820_TYPE_RESERVED_KERN; 7 and 12, pmem) that
            // the firmware would neither validate nor accept; QEMU writes 1 and 2 only.
            "has a type other than 1-5"
        } else {
            ""
        };
        if !why.is_empty() {
            return Err(FwCfgError::E820(alloc::format!("entry {i} ({addr:#x}+{len:#x}) {why}")));
        }
        map.push(E820Entry { addr, len, kind });
    }
    sort_by_address(&mut map);
    let ram: Vec<&E820Entry> = map.iter().filter(|e| e.kind == E820Kind::Ram).collect();
    if ram.is_empty() {
        return Err(FwCfgError::E820(String::from("no RAM")));
    }
    for w in ram.windows(2) {
        if w[1].addr < w[0].end() {
            return Err(FwCfgError::E820(alloc::format!(
                "RAM ranges {:#x}-{:#x} and {:#x}-{:#x} overlap",
                w[0].addr,
                w[0].end(),
                w[1].addr,
                w[1].end()
            )));
        }
    }
    Ok(map)
}

/// The map with `[start, start + len)` turned into `kind` wherever it was RAM (RAM ranges
/// are split around it), sorted by address. Used to tell the kernel which memory the
/// firmware left in use (ACPI tables, legacy ROM area).
pub fn reserve(map: &[E820Entry], start: u64, len: u64, kind: E820Kind) -> Vec<E820Entry> {
    let end = start.saturating_add(len);
    let mut out = Vec::with_capacity(map.len() + 2);
    for e in map {
        if e.kind != E820Kind::Ram || e.end() <= start || e.addr >= end {
            out.push(*e);
            continue;
        }
        if e.addr < start {
            out.push(E820Entry { addr: e.addr, len: start - e.addr, kind: E820Kind::Ram });
        }
        let (s, t) = (e.addr.max(start), e.end().min(end));
        out.push(E820Entry { addr: s, len: t - s, kind });
        if e.end() > end {
            out.push(E820Entry { addr: end, len: e.end() - end, kind: E820Kind::Ram });
        }
    }
    sort_by_address(&mut out);
    out
}

/// Sort a map by address, then length and type: a total order, so the unstable sort gives
/// the same map every time.
fn sort_by_address(map: &mut [E820Entry]) {
    crate::heapsort::sort_by_key(map, |e| (e.addr, e.len, e.kind.to_u32()));
}

/// Is `[start, start + len)` entirely inside one RAM range?
pub fn is_ram(map: &[E820Entry], start: u64, len: u64) -> bool {
    let Some(end) = start.checked_add(len) else { return false };
    map.iter().any(|e| e.kind == E820Kind::Ram && e.addr <= start && end <= e.end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn dir(entries: &[(u32, u16, &str)]) -> Vec<u8> {
        let mut b = (entries.len() as u32).to_be_bytes().to_vec();
        for (size, sel, name) in entries {
            let mut e = vec![0u8; 64];
            e[..4].copy_from_slice(&size.to_be_bytes());
            e[4..6].copy_from_slice(&sel.to_be_bytes());
            e[8..8 + name.len()].copy_from_slice(name.as_bytes());
            b.extend(e);
        }
        b
    }

    #[test]
    fn directory() {
        let d = dir(&[(40, 0x20, "etc/e820"), (7, 0x21, "opt/veil/x")]);
        let files = parse_directory(&d).unwrap();
        assert_eq!(files[0], FileEntry { size: 40, select: 0x20, name: "etc/e820".into() });
        assert_eq!(files[1].name, "opt/veil/x");
        // Count that lies about the bytes present.
        let mut lying = d.clone();
        lying[3] = 3;
        assert!(matches!(parse_directory(&lying), Err(FwCfgError::Directory(m)) if m.contains("claims 3 files")));
        let mut huge = d.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_directory(&huge).is_err());
        assert!(parse_directory(&[0, 0]).is_err());
        // A name without its NUL, or with control characters.
        let mut noterm = d.clone();
        noterm[4 + 8..4 + 64].fill(b'a');
        assert_eq!(parse_directory(&noterm), Err(FwCfgError::FileName(0)));
        let mut ctl = d;
        ctl[4 + 8] = 0x07;
        assert_eq!(parse_directory(&ctl), Err(FwCfgError::FileName(0)));
    }

    fn e820(entries: &[(u64, u64, u32)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|(a, l, t)| {
                [a.to_le_bytes().to_vec(), l.to_le_bytes().to_vec(), t.to_le_bytes().to_vec()].concat()
            })
            .collect()
    }

    #[test]
    fn e820_map() {
        let m = parse_e820(&e820(&[(0x100000, 0x7f00000, 1), (0, 0xa0000, 1), (0xfeffc000, 0x4000, 2)])).unwrap();
        assert_eq!(m[0].addr, 0);
        assert_eq!((m[1].addr, m[1].end(), m[1].kind), (0x100000, 0x8000000, E820Kind::Ram));
        assert_eq!(m[2].kind, E820Kind::Reserved);
        assert!(parse_e820(&[]).is_err());
        assert!(parse_e820(&[0u8; 21]).is_err());
        assert!(parse_e820(&e820(&[(0, 0, 1)])).is_err());
        assert!(parse_e820(&e820(&[(u64::MAX, 2, 1)])).is_err());
        assert!(parse_e820(&e820(&[(0, 0x1000, 2)])).is_err(), "no RAM");
        // RAM split inside a page (issue 32): refused at either end; other kinds may be unaligned.
        let split = parse_e820(&e820(&[(0, 0x1000_0800, 1), (0x1000_0800, 0xFF_F800, 1)]));
        assert_eq!(
            split.unwrap_err().to_string(),
            "etc/e820: entry 0 (0x0+0x10000800) is RAM not in whole 4 KiB pages"
        );
        assert!(parse_e820(&e820(&[(0x800, 0x1000, 1)])).is_err());
        assert!(parse_e820(&e820(&[(0, 0x1000, 1), (0x9_FC00, 0x400, 2)])).is_ok());
        // Types Linux could take as memory, or that nobody defined (issue 32): refused.
        for t in [0, 6, 7, 12, 128, 0xEFFF_FFFF] {
            let e = parse_e820(&e820(&[(0, 0x1000_0000, 1), (0x1000_0000, 0x1000, t)])).unwrap_err();
            assert_eq!(e.to_string(), "etc/e820: entry 1 (0x10000000+0x1000) has a type other than 1-5", "type {t}");
        }
        assert!(parse_e820(&e820(&[(0, 0x1000, 1), (0x1000, 0x1000, 3), (0x2000, 0x1000, 4), (0x3000, 1, 5)])).is_ok());
        let overlap = parse_e820(&e820(&[(0, 0x200000, 1), (0x100000, 0x200000, 1)]));
        assert!(matches!(overlap, Err(FwCfgError::E820(m)) if m.contains("overlap")));
        assert!(parse_e820(&vec![0u8; 20 * (MAX_E820 + 1)]).is_err());
    }

    #[test]
    fn reserve_splits_ram() {
        let map = parse_e820(&e820(&[(0, 0x1000_0000, 1), (0xfeff_c000, 0x4000, 2)])).unwrap();
        let r = reserve(&map, 0xA_0000, 0x6_0000, E820Kind::Reserved);
        assert_eq!(r.len(), 4);
        assert_eq!((r[0].addr, r[0].len, r[0].kind), (0, 0xA_0000, E820Kind::Ram));
        assert_eq!((r[1].addr, r[1].len, r[1].kind), (0xA_0000, 0x6_0000, E820Kind::Reserved));
        assert_eq!((r[2].addr, r[2].end(), r[2].kind), (0x10_0000, 0x1000_0000, E820Kind::Ram));
        assert!(is_ram(&r, 0x10_0000, 0x100));
        assert!(!is_ram(&r, 0x9_F000, 0x2000));
        assert!(!is_ram(&r, u64::MAX, 2));
        // Reserving outside RAM changes nothing.
        assert_eq!(reserve(&map, 0xfeff_c000, 0x1000, E820Kind::Acpi), map);
    }
}
