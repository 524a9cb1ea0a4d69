//! LUKS2: open the volumes cryptsetup makes and make volumes cryptsetup opens.
//!
//! Reading: both binary header copies are read and checked (magic, version, offset, size,
//! checksum); the JSON metadata of each is parsed and validated with cryptsetup's rules;
//! the valid copy with the higher sequence id wins, and neither being valid is an error
//! that says what is wrong with each. A keyslot is unlocked by running its KDF (PBKDF2,
//! Argon2i, Argon2id, bounded by [`KdfLimits`]), decrypting its area, AF-merging the key and
//! checking it against the digest. The data segment is handed to [`crate::xts`].
//!
//! Writing ([`format`]): new volumes, keyslots and tokens, both header copies.

mod binary;
mod crypto;
pub mod format;
mod metadata;
mod validate;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::json::Value;
use zeroize::Zeroizing;

pub use binary::{BIN_LEN, BinaryFault, BinaryHeader, METADATA_SIZES};

/// The tokens of type `kind` in a LUKS2 header's JSON: (token number as written, token).
/// Anything else in the header is ignored; the caller parses each token it gets.
pub fn tokens_of_type<'a>(luks2_json: &'a Value, kind: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> {
    luks2_json
        .get("tokens")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(move |(_, t)| t.get("type").and_then(Value::as_str) == Some(kind))
        .map(|(n, t)| (n.as_str(), t))
}
pub use crypto::KdfLimits;
pub use metadata::{Area, Config, Digest, Kdf, Keyslot, Metadata, Numbered, Segment, SegmentSize, Token};

use crate::io::{IoError, ReadAt};
use crate::xts::{SectorCipher, XtsError};

/// A volume key in zeroizing storage.
pub type VolumeKey = Zeroizing<Vec<u8>>;

crate::boxed_error! {
    /// Why a LUKS2 operation failed: a [`Luks2ErrorKind`] behind one pointer, so that each `?`
    /// that forwards it moves 8 bytes (the firmware has hundreds of such sites).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Luks2Error(Luks2ErrorKind);
}

/// Why a LUKS2 operation failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Luks2ErrorKind {
    /// Reading the device failed.
    Io(IoError),
    /// Neither header copy is usable; why, for each.
    NoValidHeader {
        /// What is wrong with the primary copy.
        primary: String,
        /// What is wrong with the secondary copy.
        secondary: String,
    },
    /// The header and keyslots area do not fit on the device.
    DeviceTooSmall {
        /// Bytes the metadata claims.
        needed: u64,
        /// Device size.
        size: u64,
    },
    /// Metadata that is inconsistent in a way validation cannot express.
    Metadata(String),
    /// No keyslot with this number.
    NoSuchKeyslot(u32),
    /// The passphrase opens no (requested) keyslot.
    WrongPassphrase,
    /// A KDF, hash or cipher veilboot does not implement.
    Unsupported(String),
    /// A keyslot asks for more work or memory than the caller allows.
    KdfTooCostly(String),
    /// The volume requires features veilboot does not know.
    UnmetRequirements(Vec<String>),
    /// The volume has no data segment.
    NoDataSegment,
    /// The sector cipher refused.
    Xts(XtsError),
    /// A write-side request that cannot be satisfied.
    Format(String),
}

impl fmt::Display for Luks2ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Luks2ErrorKind::Io(e) => write!(f, "{e}"),
            Luks2ErrorKind::NoValidHeader { primary, secondary } => {
                write!(f, "no valid LUKS2 header: primary: {primary}; secondary: {secondary}")
            }
            Luks2ErrorKind::DeviceTooSmall { needed, size } => {
                write!(f, "LUKS2 metadata and keyslots need {needed} bytes but the device has {size}")
            }
            Luks2ErrorKind::Metadata(m) => write!(f, "bad LUKS2 metadata: {m}"),
            Luks2ErrorKind::NoSuchKeyslot(n) => write!(f, "keyslot {n} does not exist"),
            Luks2ErrorKind::WrongPassphrase => write!(f, "no keyslot opens with this passphrase"),
            Luks2ErrorKind::Unsupported(what) => write!(f, "unsupported {what}"),
            Luks2ErrorKind::KdfTooCostly(what) => write!(f, "keyslot KDF refused: {what}"),
            Luks2ErrorKind::UnmetRequirements(r) => {
                write!(f, "volume requires unsupported features: {}", r.join(", "))
            }
            Luks2ErrorKind::NoDataSegment => write!(f, "volume has no data segment"),
            Luks2ErrorKind::Xts(e) => write!(f, "{e}"),
            Luks2ErrorKind::Format(m) => write!(f, "{m}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Luks2Error {}

impl From<IoError> for Luks2Error {
    fn from(e: IoError) -> Self {
        Luks2ErrorKind::Io(e).into()
    }
}

/// Largest key a keyslot may hold or use (bytes).
const MAX_KEY_BYTES: u32 = 128;

/// Requirements veilboot understands (none of the reencryption or OPAL ones).
const KNOWN_REQUIREMENTS: &[&str] = &[];

/// One header copy that passed every check.
#[derive(Clone, Debug)]
struct GoodCopy {
    header: BinaryHeader,
    json: Value,
}

/// Read one copy at `offset`: the binary checks, then the JSON checks.
fn read_copy(dev: &mut dyn ReadAt, offset: u64, secondary: bool) -> Result<(BinaryHeader, Vec<u8>), String> {
    let mut raw = [0u8; BIN_LEN];
    dev.read_at(offset, &mut raw).map_err(|e| format!("{e}"))?;
    let header = BinaryHeader::parse(&raw, offset, secondary).map_err(|e| format!("{e}"))?;
    let mut area = vec![0u8; header.hdr_size as usize - BIN_LEN];
    dev.read_at(offset + BIN_LEN as u64, &mut area).map_err(|e| format!("{e}"))?;
    header.verify_checksum(&raw, &area).map_err(|e| format!("{e}"))?;
    Ok((header, area))
}

fn check_json(area: &[u8]) -> Result<Value, String> {
    let mut json = validate::parse_json_area(area)?;
    validate::repair_keyslots(&mut json);
    validate::validate(&json, area.len() as u64)?;
    Ok(json)
}

/// Check one JSON area (as it sits after a binary header) the way [`Volume::load`] does and
/// return its typed metadata. The entry point for fuzzing the JSON rules in isolation.
pub fn check_metadata_area(area: &[u8]) -> Result<Metadata, Luks2Error> {
    let json = check_json(area).map_err(Luks2ErrorKind::Metadata)?;
    Metadata::from_json(&json)
}

/// A LUKS2 volume's metadata, loaded and validated.
#[derive(Clone, Debug)]
pub struct Volume {
    header: BinaryHeader,
    json: Value,
    metadata: Metadata,
    /// The other copy was missing, damaged or older (cryptsetup would rewrite it).
    pub other_copy_stale: bool,
}

impl Volume {
    /// Load from a device: both copies checked, the newest valid one used.
    pub fn load(dev: &mut dyn ReadAt) -> Result<Self, Luks2Error> {
        // Primary at 0; its size says where the secondary is. If the primary's binary header
        // is unusable, look for the secondary at every offset LUKS2 allows.
        let primary_bin = read_copy(dev, 0, false);
        let (primary, secondary_bin) = match primary_bin {
            Ok((hdr, area)) => {
                let second = read_copy(dev, hdr.hdr_size, true);
                (check_json(&area).map(|json| GoodCopy { header: hdr, json }), second)
            }
            Err(e) => {
                // Report the first copy that had the magic but failed a later check.
                let mut second = Err(String::from("no secondary header at any LUKS2 offset"));
                for off in METADATA_SIZES {
                    if off >= dev.size() {
                        break;
                    }
                    match read_copy(dev, off, true) {
                        Ok(found) => {
                            second = Ok(found);
                            break;
                        }
                        Err(why) if second.is_err() && why != BinaryFault::Magic.to_string() => {
                            if second.as_ref().is_err_and(|s| s.starts_with("no secondary")) {
                                second = Err(format!("at offset {off}: {why}"));
                            }
                        }
                        Err(_) => {}
                    }
                }
                (Err(e), second)
            }
        };
        let secondary =
            secondary_bin.and_then(|(hdr, area)| check_json(&area).map(|json| GoodCopy { header: hdr, json }));
        let (chosen, stale) = match (primary, secondary) {
            (Ok(p), Ok(s)) => {
                if s.header.seqid > p.header.seqid {
                    (s, true)
                } else {
                    let stale = s.header.seqid < p.header.seqid;
                    (p, stale)
                }
            }
            (Ok(p), Err(_)) => (p, true),
            (Err(_), Ok(s)) => (s, true),
            (Err(primary), Err(secondary)) => {
                return Err(Luks2ErrorKind::NoValidHeader { primary, secondary }.into());
            }
        };
        let metadata = Metadata::from_json(&chosen.json)?;
        let needed = 2 * chosen.header.hdr_size + metadata.config.keyslots_size;
        if needed > dev.size() {
            return Err(Luks2ErrorKind::DeviceTooSmall { needed, size: dev.size() }.into());
        }
        Ok(Volume { header: chosen.header, json: chosen.json, metadata, other_copy_stale: stale })
    }

    /// The write that makes the other header copy equal to the one in use, when it was
    /// missing, damaged or older: what cryptsetup writes when it loads such a header. The
    /// copy in use is read from `dev` again (its bytes are the repair's) and must still be
    /// the one loaded; the new copy gets its own random salt. None when both copies agree.
    pub fn repair_other_copy(
        &self,
        dev: &mut dyn ReadAt,
        random: format::Random<'_>,
    ) -> Result<Option<(u64, Zeroizing<Vec<u8>>)>, Luks2Error> {
        if !self.other_copy_stale {
            return Ok(None);
        }
        let (header, area) = read_copy(dev, self.header.hdr_offset, self.header.secondary)
            .map_err(|e| Luks2ErrorKind::Metadata(format!("the header copy in use no longer reads: {e}")))?;
        if header != self.header {
            return Err(Luks2ErrorKind::Metadata(String::from("the header copy in use changed on the device")).into());
        }
        let mut other = header;
        other.secondary = !other.secondary;
        other.hdr_offset = if other.secondary { other.hdr_size } else { 0 };
        random(&mut other.salt);
        let bin = other
            .encode_with_checksum(&area)
            .ok_or_else(|| Luks2ErrorKind::Unsupported(format!("checksum algorithm `{}`", other.checksum_alg)))?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(other.hdr_size as usize));
        bytes.extend_from_slice(&bin);
        bytes.extend_from_slice(&area);
        Ok(Some((other.hdr_offset, bytes)))
    }

    /// The volume UUID.
    pub fn uuid(&self) -> &str {
        &self.header.uuid
    }

    /// The volume label.
    pub fn label(&self) -> &str {
        &self.header.label
    }

    /// The binary header that was used.
    pub fn header(&self) -> &BinaryHeader {
        &self.header
    }

    /// The typed metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The raw JSON metadata.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Mandatory requirements this implementation does not know.
    pub fn unmet_requirements(&self) -> Vec<String> {
        self.metadata
            .config
            .requirements
            .iter()
            .filter(|r| !KNOWN_REQUIREMENTS.contains(&r.as_str()))
            .cloned()
            .collect()
    }

    /// Open one keyslot with a passphrase and return the key it stores, verified against
    /// its digest. Wrong passphrase: [`Luks2ErrorKind::WrongPassphrase`].
    pub fn unlock_keyslot(
        &self,
        dev: &mut dyn ReadAt,
        keyslot: u32,
        passphrase: &[u8],
        limits: &KdfLimits,
    ) -> Result<VolumeKey, Luks2Error> {
        let slot = self.metadata.keyslots.get(&keyslot).ok_or(Luks2ErrorKind::NoSuchKeyslot(keyslot))?;
        let (Some(kdf), Some((af_hash, stripes))) = (&slot.kdf, &slot.af) else {
            return Err(Luks2ErrorKind::Unsupported(format!("keyslot type `{}`", slot.kind)).into());
        };
        let (_, digest) = self
            .metadata
            .digest_for_keyslot(keyslot)
            .ok_or_else(|| Luks2ErrorKind::Metadata(format!("keyslot {keyslot} has no digest")))?;
        if *stripes > limits.max_af_stripes {
            return Err(Luks2ErrorKind::KdfTooCostly(format!(
                "{stripes} AF stripes (limit {})",
                limits.max_af_stripes
            ))
            .into());
        }
        if digest.iterations > limits.max_pbkdf2_iterations {
            return Err(Luks2ErrorKind::KdfTooCostly(format!("digest with {} iterations", digest.iterations)).into());
        }
        // LUKS2 keys are at most 512 bits in practice; anything larger is a hostile header
        // trying to make us allocate.
        if slot.key_size == 0
            || slot.key_size > MAX_KEY_BYTES
            || slot.area.key_size == 0
            || slot.area.key_size > MAX_KEY_BYTES
        {
            return Err(Luks2ErrorKind::Unsupported(format!(
                "keyslot {keyslot}: key size {} / area key size {}",
                slot.key_size, slot.area.key_size
            ))
            .into());
        }
        let key_len = slot.key_size as usize;
        let material_len =
            key_len.checked_mul(*stripes as usize).filter(|n| *n > 0 && (*n as u64) <= slot.area.size).ok_or_else(
                || Luks2ErrorKind::Metadata(format!("keyslot {keyslot}: key material does not fit its area")),
            )?;
        let read_len = material_len.div_ceil(512) * 512;
        if read_len as u64 > slot.area.size {
            return Err(
                Luks2ErrorKind::Metadata(format!("keyslot {keyslot}: key material does not fit its area")).into()
            );
        }

        let mut area_key = Zeroizing::new(vec![0u8; slot.area.key_size as usize]);
        crypto::derive_area_key(kdf, passphrase, &mut area_key, limits)?;
        let mut material = Zeroizing::new(vec![0u8; read_len]);
        dev.read_at(slot.area.offset, &mut material)?;
        crypto::crypt_area(&slot.area.encryption, &area_key, &mut material, false)?;
        let key = crypto::af_merge(&material, key_len, *stripes, af_hash)?;
        if verify_digest(digest, &key)? { Ok(key) } else { Err(Luks2ErrorKind::WrongPassphrase.into()) }
    }

    /// Try every keyslot that can unlock the data segment, preferred ones first; return the
    /// keyslot number and the volume key.
    pub fn unlock(
        &self,
        dev: &mut dyn ReadAt,
        passphrase: &[u8],
        limits: &KdfLimits,
    ) -> Result<(u32, VolumeKey), Luks2Error> {
        let (segment, _) = self.metadata.data_segment().ok_or(Luks2ErrorKind::NoDataSegment)?;
        let mut candidates: Vec<(i64, u32)> = self
            .metadata
            .keyslots
            .iter()
            .filter(|(n, s)| {
                s.priority != 0
                    && s.kind == "luks2"
                    && self.metadata.digest_for_keyslot(**n).is_some_and(|(_, d)| d.segments.contains(&segment))
            })
            .map(|(n, s)| (-s.priority, *n))
            .collect();
        crate::heapsort::sort_by_key(&mut candidates, |c| *c);
        let mut last = Luks2Error::from(Luks2ErrorKind::WrongPassphrase);
        for (_, n) in candidates {
            match self.unlock_keyslot(dev, n, passphrase, limits) {
                Ok(key) => return Ok((n, key)),
                Err(e) => match e.kind() {
                    Luks2ErrorKind::WrongPassphrase => {}
                    // A slot we cannot run (cost, cipher) must not hide a slot we can.
                    Luks2ErrorKind::KdfTooCostly(_) | Luks2ErrorKind::Unsupported(_) => last = e,
                    _ => return Err(e),
                },
            }
        }
        Err(last)
    }

    /// The data segment and a sector cipher for it, keyed with `volume_key`.
    pub fn data_cipher(&self, volume_key: &[u8]) -> Result<(DataSegment, SectorCipher), Luks2Error> {
        let unmet = self.unmet_requirements();
        if !unmet.is_empty() {
            return Err(Luks2ErrorKind::UnmetRequirements(unmet).into());
        }
        let (_, seg) = self.metadata.data_segment().ok_or(Luks2ErrorKind::NoDataSegment)?;
        if seg.kind != "crypt" || seg.encryption != "aes-xts-plain64" {
            return Err(Luks2ErrorKind::Unsupported(format!(
                "data segment cipher `{}` ({})",
                seg.encryption, seg.kind
            ))
            .into());
        }
        let cipher = SectorCipher::new(volume_key, seg.sector_size as usize).map_err(Luks2ErrorKind::Xts)?;
        Ok((
            DataSegment { offset: seg.offset, size: seg.size, iv_tweak: seg.iv_tweak, sector_size: seg.sector_size },
            cipher,
        ))
    }
}

/// Where the encrypted data is and how its sectors are numbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSegment {
    /// Byte offset of the first data sector on the device.
    pub offset: u64,
    /// Size (dynamic: to the end of the device).
    pub size: SegmentSize,
    /// Added to each sector's number (512-byte units) to form its IV.
    pub iv_tweak: u64,
    /// Encryption sector size.
    pub sector_size: u32,
}

impl DataSegment {
    /// Length of the data on a device of `device_size` bytes.
    pub fn len(&self, device_size: u64) -> u64 {
        match self.size {
            SegmentSize::Bytes(n) => n,
            SegmentSize::Dynamic => device_size.saturating_sub(self.offset),
        }
    }

    /// True when the segment holds no data on a device of this size.
    pub fn is_empty(&self, device_size: u64) -> bool {
        self.len(device_size) == 0
    }

    /// The IV (512-byte sector number plus iv_tweak) of the data at byte `pos` of the
    /// segment, which must be sector-aligned.
    pub fn iv_sector(&self, pos: u64) -> u64 {
        (pos / 512).wrapping_add(self.iv_tweak)
    }
}

pub(crate) fn verify_digest(digest: &Digest, key: &[u8]) -> Result<bool, Luks2Error> {
    if digest.kind != "pbkdf2" {
        return Err(Luks2ErrorKind::Unsupported(format!("digest type `{}`", digest.kind)).into());
    }
    let mut out = Zeroizing::new(vec![0u8; digest.digest.len()]);
    crypto::pbkdf2(&digest.hash, key, &digest.salt, digest.iterations, &mut out)?;
    // Constant-time compare.
    let diff = out.iter().zip(&digest.digest).fold(0u8, |a, (x, y)| a | (x ^ y));
    Ok(diff == 0 && !digest.digest.is_empty())
}
