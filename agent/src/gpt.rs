//! GUID Partition Table: read (primary, or the backup when the primary is damaged; header
//! and entry-array CRC32s checked), find partitions by name or type, and build a new table.
//!
//! Layout from the UEFI specification (section 5.3): protective MBR at LBA 0, header at LBA 1
//! ("EFI PART", CRC32 over `header_size` bytes with the CRC field zeroed), entry array
//! (usually 128 entries of 128 bytes from LBA 2), and at the end of the disk the backup entry
//! array followed by the backup header in the last LBA. GUIDs are stored mixed-endian.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::io::{IoError, ReadAt};

/// Logical block size (virtio-blk and image files here use 512).
pub const LBA: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Largest entry array accepted (bounds memory on hostile tables).
const MAX_ENTRY_ARRAY: u64 = 1 << 20;

/// Linux LUKS partition type (what `veil image build` uses for veil-boot and veil-root).
pub const TYPE_LINUX_LUKS: Guid = Guid::from_str_const("CA7D7CCB-63ED-4C53-861C-1742536059CC");
/// Linux filesystem data partition type.
pub const TYPE_LINUX_DATA: Guid = Guid::from_str_const("0FC63DAF-8483-4772-8E79-3D69D8477DE4");

/// A GUID in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Guid(pub [u8; 16]);

const fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit"),
    }
}

impl Guid {
    /// Parse the canonical text form at compile time (panics on malformed input).
    pub const fn from_str_const(s: &str) -> Guid {
        let b = s.as_bytes();
        assert!(b.len() == 36);
        let mut text = [0u8; 16];
        let (mut i, mut j) = (0, 0);
        while i < 36 {
            if b[i] == b'-' {
                i += 1;
                continue;
            }
            text[j] = hex_val(b[i]) << 4 | hex_val(b[i + 1]);
            i += 2;
            j += 1;
        }
        // First three fields are little-endian on disk.
        let mut d = text;
        d[0] = text[3];
        d[1] = text[2];
        d[2] = text[1];
        d[3] = text[0];
        d[4] = text[5];
        d[5] = text[4];
        d[6] = text[7];
        d[7] = text[6];
        Guid(d)
    }

    /// Parse the canonical text form.
    pub fn parse(s: &str) -> Option<Guid> {
        let ok = s.len() == 36
            && s.bytes().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_hexdigit(),
            });
        ok.then(|| Guid::from_str_const(s))
    }

    /// From 16 random bytes: a version-4 GUID.
    pub fn random_v4(mut bytes: [u8; 16]) -> Guid {
        // Text byte 6 is on-disk byte 7; text byte 8 stays at 8.
        bytes[7] = (bytes[7] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Guid(bytes)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9]
        )?;
        d[10..].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Index in the entry array.
    pub index: u32,
    /// Partition type.
    pub type_guid: Guid,
    /// Unique partition GUID.
    pub guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
    /// Name (UTF-16 on disk).
    pub name: String,
}

impl Partition {
    /// Byte offset on the disk.
    pub fn offset(&self) -> u64 {
        self.first_lba * LBA
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * LBA
    }
}

/// Why a partition table was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GptError {
    /// Reading failed.
    Io(IoError),
    /// Neither header is valid; why, for each.
    NoValidTable {
        /// The primary's fault.
        primary: String,
        /// The backup's fault.
        backup: String,
    },
    /// A request to build a table that cannot be satisfied.
    Layout(String),
}

impl fmt::Display for GptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GptError::Io(e) => write!(f, "{e}"),
            GptError::NoValidTable { primary, backup } => {
                write!(f, "no valid GPT: primary: {primary}; backup: {backup}")
            }
            GptError::Layout(m) => write!(f, "GPT layout: {m}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for GptError {}

/// A parsed partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
    /// Disk GUID.
    pub disk_guid: Guid,
    /// First and last usable LBA.
    pub usable: (u64, u64),
    /// Non-empty partitions.
    pub partitions: Vec<Partition>,
    /// True if the primary header was damaged and the backup was used.
    pub used_backup: bool,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// CRC-32 (IEEE, as UEFI's GPT uses it) with a byte-wise table: 1 KiB of ROM.
const CRC32: crc::Crc<u32, crc::Table<1>> = crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISO_HDLC);

fn crc32(data: &[u8]) -> u32 {
    CRC32.checksum(data)
}

/// Read and check the header at `lba`; return the table it describes.
fn read_table(dev: &mut dyn ReadAt, lba: u64) -> Result<Gpt, String> {
    let disk_lbas = dev.size() / LBA;
    let mut hdr = [0u8; LBA as usize];
    dev.read_at(lba * LBA, &mut hdr).map_err(|e| format!("{e}"))?;
    if &hdr[..8] != SIGNATURE {
        return Err(String::from("no \"EFI PART\" signature"));
    }
    let header_size = le32(&hdr, 12) as usize;
    if !(92..=LBA as usize).contains(&header_size) {
        return Err(format!("header size {header_size} out of range"));
    }
    let stored_crc = le32(&hdr, 16);
    let mut copy = hdr;
    copy[16..20].fill(0);
    if crc32(&copy[..header_size]) != stored_crc {
        return Err(String::from("header CRC32 mismatch"));
    }
    if le64(&hdr, 24) != lba {
        return Err(format!("header claims LBA {} but was read at {lba}", le64(&hdr, 24)));
    }
    let (first_usable, last_usable) = (le64(&hdr, 40), le64(&hdr, 48));
    if first_usable > last_usable || last_usable >= disk_lbas {
        return Err(format!("usable range {first_usable}..={last_usable} does not fit the disk"));
    }
    let mut disk_guid = Guid::default();
    disk_guid.0.copy_from_slice(&hdr[56..72]);
    let (entries_lba, count, entry_size) = (le64(&hdr, 72), le32(&hdr, 80), le32(&hdr, 84));
    if entry_size < 128 || entry_size % 128 != 0 {
        return Err(format!("entry size {entry_size} is not a multiple of 128"));
    }
    let array_len = u64::from(count) * u64::from(entry_size);
    if array_len > MAX_ENTRY_ARRAY {
        return Err(format!("entry array of {array_len} bytes is too large"));
    }
    let array_end = entries_lba
        .checked_mul(LBA)
        .and_then(|o| o.checked_add(array_len))
        .filter(|end| *end <= dev.size())
        .ok_or_else(|| String::from("entry array runs past the end of the disk"))?;
    let mut array = vec![0u8; array_len as usize];
    dev.read_at(array_end - array_len, &mut array).map_err(|e| format!("{e}"))?;
    if crc32(&array) != le32(&hdr, 88) {
        return Err(String::from("entry array CRC32 mismatch"));
    }
    let mut partitions = Vec::new();
    for (i, e) in array.chunks_exact(entry_size as usize).enumerate() {
        let mut type_guid = Guid::default();
        type_guid.0.copy_from_slice(&e[..16]);
        if type_guid == Guid::default() {
            continue;
        }
        let mut guid = Guid::default();
        guid.0.copy_from_slice(&e[16..32]);
        let (first_lba, last_lba) = (le64(e, 32), le64(e, 40));
        if first_lba > last_lba || first_lba < first_usable || last_lba > last_usable {
            return Err(format!("partition {i} ({first_lba}..={last_lba}) lies outside the usable area"));
        }
        let units: Vec<u16> =
            e[56..128].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0).collect();
        partitions.push(Partition {
            index: i as u32,
            type_guid,
            guid,
            first_lba,
            last_lba,
            attributes: le64(e, 48),
            name: String::from_utf16_lossy(&units),
        });
    }
    Ok(Gpt { disk_guid, usable: (first_usable, last_usable), partitions, used_backup: false })
}

impl Gpt {
    /// Read the table: the primary, or the backup in the last LBA if the primary is bad.
    pub fn read(dev: &mut dyn ReadAt) -> Result<Gpt, GptError> {
        let lbas = dev.size() / LBA;
        if lbas < 3 {
            return Err(GptError::NoValidTable {
                primary: format!("disk of {} bytes is too small for a GPT", dev.size()),
                backup: String::from("not present"),
            });
        }
        let primary = match read_table(dev, 1) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        match read_table(dev, lbas - 1) {
            Ok(mut t) => {
                t.used_backup = true;
                Ok(t)
            }
            Err(backup) => Err(GptError::NoValidTable { primary, backup }),
        }
    }

    /// The partition with this name.
    pub fn by_name(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }

    /// Partitions of this type.
    pub fn by_type(&self, t: Guid) -> impl Iterator<Item = &Partition> {
        self.partitions.iter().filter(move |p| p.type_guid == t)
    }
}

/// A partition to create: name, type, size in bytes (rounded up to 1 MiB alignment).
#[derive(Clone, Debug)]
pub struct NewPartition {
    /// Name.
    pub name: String,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID.
    pub guid: Guid,
    /// Size in bytes; None for "the rest of the disk" (last partition only).
    pub size: Option<u64>,
}

/// Build a GPT for a disk of `disk_size` bytes: the writes (offset, bytes) for the
/// protective MBR, both headers and both entry arrays, and the partitions as laid out
/// (1 MiB aligned).
pub fn build(
    disk_size: u64,
    disk_guid: Guid,
    parts: &[NewPartition],
) -> Result<(Vec<(u64, Vec<u8>)>, Vec<Partition>), GptError> {
    const ENTRIES: u32 = 128;
    const ENTRY: usize = 128;
    const ARRAY_LBAS: u64 = (ENTRIES as u64 * ENTRY as u64) / LBA;
    const ALIGN: u64 = (1 << 20) / LBA;
    let lbas = disk_size / LBA;
    if !disk_size.is_multiple_of(LBA) || lbas < 2 * ALIGN + 2 * (ARRAY_LBAS + 2) {
        return Err(GptError::Layout(format!("disk of {disk_size} bytes is too small or not whole sectors")));
    }
    if parts.len() > ENTRIES as usize {
        return Err(GptError::Layout(String::from("more than 128 partitions")));
    }
    let first_usable = 2 + ARRAY_LBAS;
    let last_usable = lbas - 2 - ARRAY_LBAS;
    let mut next = ALIGN;
    let mut laid = Vec::new();
    let mut array = vec![0u8; ENTRIES as usize * ENTRY];
    for (i, p) in parts.iter().enumerate() {
        let last = match p.size {
            Some(bytes) => next + bytes.div_ceil(LBA).max(1) - 1,
            None if i == parts.len() - 1 => (last_usable + 1) / ALIGN * ALIGN - 1,
            None => {
                return Err(GptError::Layout(String::from("only the last partition may take the rest of the disk")));
            }
        };
        if last > last_usable || last < next {
            return Err(GptError::Layout(format!("partition \"{}\" does not fit on the disk", p.name)));
        }
        let units: Vec<u16> = p.name.encode_utf16().collect();
        if units.len() > 36 {
            return Err(GptError::Layout(format!("partition name \"{}\" is longer than 36 UTF-16 units", p.name)));
        }
        let e = &mut array[i * ENTRY..(i + 1) * ENTRY];
        e[..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&p.guid.0);
        e[32..40].copy_from_slice(&next.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        for (j, u) in units.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
        laid.push(Partition {
            index: i as u32,
            type_guid: p.type_guid,
            guid: p.guid,
            first_lba: next,
            last_lba: last,
            attributes: 0,
            name: p.name.clone(),
        });
        next = (last + 1).div_ceil(ALIGN) * ALIGN;
    }
    let array_crc = crc32(&array);
    let header = |my: u64, alt: u64, entries: u64| {
        let mut h = vec![0u8; LBA as usize];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.0);
        h[72..80].copy_from_slice(&entries.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    // Protective MBR: one 0xEE partition covering the disk.
    let mut mbr = vec![0u8; LBA as usize];
    let p = &mut mbr[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    p[4] = 0xEE;
    p[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    p[12..16].copy_from_slice(&u32::try_from(lbas - 1).unwrap_or(u32::MAX).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let backup_entries = lbas - 1 - ARRAY_LBAS;
    let writes = vec![
        (0, mbr),
        (LBA, header(1, lbas - 1, 2)),
        (2 * LBA, array.clone()),
        (backup_entries * LBA, array),
        ((lbas - 1) * LBA, header(lbas - 1, 1, backup_entries)),
    ];
    Ok((writes, laid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(size: u64, parts: &[NewPartition]) -> (Vec<u8>, Vec<Partition>) {
        let (writes, laid) = build(size, Guid::random_v4([9; 16]), parts).unwrap();
        let mut d = vec![0u8; size as usize];
        for (off, bytes) in writes {
            d[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
        }
        (d, laid)
    }

    fn parts() -> Vec<NewPartition> {
        vec![
            NewPartition {
                name: "veil-boot".into(),
                type_guid: TYPE_LINUX_LUKS,
                guid: Guid::random_v4([1; 16]),
                size: Some(3 << 20),
            },
            NewPartition {
                name: "veil-root".into(),
                type_guid: TYPE_LINUX_LUKS,
                guid: Guid::random_v4([2; 16]),
                size: None,
            },
        ]
    }

    #[test]
    fn guid_text_round_trip_is_mixed_endian() {
        let g = TYPE_LINUX_LUKS;
        assert_eq!(g.0[..4], [0xCB, 0x7C, 0x7D, 0xCA]);
        assert_eq!(g.to_string(), "ca7d7ccb-63ed-4c53-861c-1742536059cc");
        assert_eq!(Guid::parse(&g.to_string()), Some(g));
        assert_eq!(Guid::parse("ca7d7ccb-63ed-4c53-861c-1742536059c"), None);
    }

    #[test]
    fn build_then_read() {
        let (d, laid) = disk(16 << 20, &parts());
        let gpt = Gpt::read(&mut d.as_slice()).unwrap();
        assert!(!gpt.used_backup);
        assert_eq!(gpt.partitions, laid);
        let boot = gpt.by_name("veil-boot").unwrap();
        assert_eq!((boot.offset(), boot.size()), (1 << 20, 3 << 20));
        let root = gpt.by_name("veil-root").unwrap();
        assert_eq!(root.offset(), 4 << 20);
        assert_eq!(gpt.by_type(TYPE_LINUX_LUKS).count(), 2);
        assert!(gpt.by_name("nope").is_none());
    }

    #[test]
    fn damaged_primary_falls_back_to_backup() {
        let (mut d, laid) = disk(16 << 20, &parts());
        d[512 + 40] ^= 0xff; // primary header field: CRC breaks
        let gpt = Gpt::read(&mut d.as_slice()).unwrap();
        assert!(gpt.used_backup);
        assert_eq!(gpt.partitions, laid);
        // A damaged entry array is caught by its CRC too.
        let (mut d, _) = disk(16 << 20, &parts());
        d[1024 + 56] ^= 1;
        assert!(Gpt::read(&mut d.as_slice()).unwrap().used_backup);
        // Both gone: both reasons reported.
        let len = d.len();
        d[len - 512] = 0;
        match Gpt::read(&mut d.as_slice()) {
            Err(GptError::NoValidTable { primary, backup }) => {
                assert!(primary.contains("entry array CRC32"), "{primary}");
                assert!(backup.contains("signature"), "{backup}");
            }
            other => panic!("{other:?}"),
        }
        assert!(Gpt::read(&mut &[0u8; 1000][..]).is_err());
    }

    #[test]
    fn layout_errors() {
        assert!(build(1 << 20, Guid::default(), &parts()).is_err());
        let too_big = vec![NewPartition {
            name: "x".into(),
            type_guid: TYPE_LINUX_DATA,
            guid: Guid::default(),
            size: Some(64 << 20),
        }];
        assert!(matches!(build(16 << 20, Guid::default(), &too_big), Err(GptError::Layout(_))));
    }
}
