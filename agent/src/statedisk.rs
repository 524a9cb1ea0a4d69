//! What the firmware may do with its state disk (the second virtio disk, which Linux keeps its
//! data on), decided from what is on it:
//! - blank (its first MiB, the MiB where a volume's data would start and its last MiB read
//!   as zeros): formatted LUKS2;
//! - nothing but the firmware's own format cut short by a power loss (non-zero bytes only
//!   inside the ranges a format writes, each looking like what the format puts there: a
//!   random-looking keyslot area, header copies of the format's own geometry, torn or not):
//!   formatted again;
//! - a LUKS2 volume: its key is handed over only when one of its keyslots opens with the disk
//!   key; a header whose keyslot area was never written (the host reordered the writes) or
//!   that this cluster's key does not open is refused, saying which;
//! - anything else: left untouched, saying why.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::disksig;
use crate::io::{IoError, ReadAt};
use crate::luks2::format::{FormatOptions, keyslot_area_len};
use crate::luks2::{BIN_LEN, BinaryHeader, KdfLimits, Luks2ErrorKind, Volume};

/// Bytes read at each probe.
pub const PROBE: u64 = 1 << 20;
/// The smallest disk the firmware formats (the 16 MiB of metadata and room for data).
pub const MIN_SIZE: u64 = 32 << 20;
/// A sector of the keyslot area, as written, is ciphertext: 512 random bytes take some 222
/// distinct values, and fewer than this many essentially never (text, tables and code do).
const MIN_DISTINCT_IN_CIPHERTEXT: usize = 128;

/// How the firmware formats its state disk: cryptsetup's defaults (16 KiB header copies,
/// data at 16 MiB, AES-256-XTS, 4096-byte sectors, one PBKDF2 keyslot) with this UUID.
pub fn format_options(uuid: String) -> FormatOptions {
    FormatOptions { uuid: Some(uuid), ..FormatOptions::default() }
}

/// The byte ranges a format with [`format_options`] writes, and where its data would start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Size of each header copy (binary header and JSON area): the primary at 0, the
    /// secondary right after it.
    pub metadata: u64,
    /// Keyslot 0's area: (offset, length).
    pub keyslot_area: (u64, u64),
    /// Where the data segment starts (a format never writes there).
    pub data_offset: u64,
}

impl Footprint {
    /// The firmware's format's.
    pub fn of_format() -> Self {
        let o = FormatOptions::default();
        Footprint {
            metadata: o.metadata_size,
            keyslot_area: (2 * o.metadata_size, keyslot_area_len(o.key_size)),
            data_offset: 2 * o.metadata_size + o.keyslots_size,
        }
    }

    /// One past the last byte a format writes.
    pub fn end(&self) -> u64 {
        self.keyslot_area.0 + self.keyslot_area.1
    }
}

/// What to read from a disk of `size` bytes, as (offset, length): its head, the first MiB
/// where a volume's data would start, its tail. Each at most [`PROBE`] and inside the disk.
pub fn probes(size: u64) -> [(u64, u64); 3] {
    let data_offset = Footprint::of_format().data_offset.min(size);
    [(0, PROBE.min(size)), (data_offset, PROBE.min(size - data_offset)), (size - PROBE.min(size), PROBE.min(size))]
}

/// What is on a state disk whose LUKS2 header does not load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing: format it.
    Blank,
    /// Only the firmware's own format, cut short (what of it is there): format it again.
    InterruptedFormat(String),
    /// Something else (why it is not blank): leave it alone.
    Foreign(String),
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

/// Decide from the three probes of [`probes`] of a `size`-byte disk whose LUKS2 header did
/// not load.
pub fn classify(size: u64, head: &[u8], data: &[u8], tail: &[u8]) -> Found {
    let too_small = || Found::Foreign(format!("it is only {size} bytes, too small for LUKS2 with data"));
    if is_zero(data) && is_zero(tail) {
        if is_zero(head) {
            return if size < MIN_SIZE { too_small() } else { Found::Blank };
        }
        if let Some(what) = interrupted_format(head) {
            return if size < MIN_SIZE { too_small() } else { Found::InterruptedFormat(what) };
        }
    }
    if let Some(sig) = disksig::signature(head) {
        return Found::Foreign(format!("it carries {sig}"));
    }
    let places: Vec<&str> = [(head, "first MiB"), (data, "MiB at 16 MiB"), (tail, "last MiB")]
        .into_iter()
        .filter(|(b, _)| !is_zero(b))
        .map(|(_, name)| name)
        .collect();
    Found::Foreign(format!("its {} hold data (not blank)", places.join(", ")))
}

/// What of the firmware's format `head` holds, when it holds nothing else.
fn interrupted_format(head: &[u8]) -> Option<String> {
    let fp = Footprint::of_format();
    let (meta, end) = (fp.metadata as usize, fp.end() as usize);
    if head.len() < end || !is_zero(&head[end..]) {
        return None;
    }
    let primary = header_copy(&head[..meta], 0, false, fp.metadata)?;
    let secondary = header_copy(&head[meta..2 * meta], fp.metadata, true, fp.metadata)?;
    let (area_at, area_len) = (fp.keyslot_area.0 as usize, fp.keyslot_area.1 as usize);
    let area = keyslot_area(&head[area_at..area_at + area_len])?;
    Some(format!(
        "keyslot area {area} of {} sectors written, primary header copy {primary}, secondary {secondary}",
        area_len / 512
    ))
}

/// A header copy region of the format (`offset`, `metadata` bytes): absent, or what its
/// writes put there, in any subset of its sectors: a binary header of this copy and this
/// geometry (its fields all sit in the first sector, the rest is zero padding), and a JSON
/// area of text and zero padding. Its checksum is not asked for: it is torn.
fn header_copy(region: &[u8], offset: u64, secondary: bool, metadata: u64) -> Option<&'static str> {
    if is_zero(region) {
        return Some("absent");
    }
    if !is_zero(&region[..512]) {
        let raw: &[u8; BIN_LEN] = region[..BIN_LEN].try_into().ok()?;
        let header = BinaryHeader::parse(raw, offset, secondary).ok()?;
        if header.hdr_size != metadata {
            return None;
        }
    }
    let json_text = |b: &u8| *b == 0 || (0x20..0x7f).contains(b);
    (is_zero(&region[512..BIN_LEN]) && region[BIN_LEN..].iter().all(json_text)).then_some("damaged or torn")
}

/// How many sectors of the keyslot area are written, when each sector is either zero or
/// looks like ciphertext.
fn keyslot_area(area: &[u8]) -> Option<usize> {
    let mut written = 0;
    for sector in area.chunks(512) {
        if is_zero(sector) {
            continue;
        }
        let mut seen = [false; 256];
        sector.iter().for_each(|b| seen[*b as usize] = true);
        if seen.iter().filter(|s| **s).count() < MIN_DISTINCT_IN_CIPHERTEXT {
            return None;
        }
        written += 1;
    }
    Some(written)
}

/// What a LUKS2 state volume's keyslots say about handing its key over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keyslots {
    /// This keyslot opens with the disk key: hand the key over.
    Open(u32),
    /// No keyslot can open with it (why): refuse.
    Refused(String),
    /// The firmware cannot try them (why: a KDF too costly or unknown to it); Linux may.
    Unchecked(String),
}

/// Try `disk_key` on the volume's keyslots; when none opens, say whether their areas were
/// ever written.
pub fn check_keyslots(
    volume: &Volume,
    dev: &mut dyn ReadAt,
    disk_key: &[u8],
    limits: &KdfLimits,
) -> Result<Keyslots, IoError> {
    let e = match volume.unlock(dev, disk_key, limits) {
        Ok((slot, _key)) => return Ok(Keyslots::Open(slot)),
        Err(e) => e.into_kind(),
    };
    match e {
        Luks2ErrorKind::WrongPassphrase => {}
        Luks2ErrorKind::Io(e) => return Err(e),
        other => return Ok(Keyslots::Unchecked(format!("{other}"))),
    }
    let mut never_written = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    for (n, slot) in volume.metadata().keyslots.iter() {
        let (mut at, end) = (slot.area.offset, slot.area.offset.saturating_add(slot.area.size).min(dev.size()));
        let mut zero = true;
        while zero && at < end {
            let len = (end - at).min(chunk.len() as u64) as usize;
            dev.read_at(at, &mut chunk[..len])?;
            zero = is_zero(&chunk[..len]);
            at += len as u64;
        }
        if zero {
            never_written.push(format!("{n}"));
        }
    }
    let slots = volume.metadata().keyslots.len();
    Ok(Keyslots::Refused(if slots > 0 && never_written.len() == slots {
        format!(
            "both LUKS2 header copies are there but the area of keyslot {} holds only zeros (a format whose header reached the disk before its keyslot): nothing can open it",
            never_written.join(", ")
        )
    } else {
        String::from("no keyslot opens with this cluster's disk key for it")
    }))
}
