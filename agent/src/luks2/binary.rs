//! The 4096-byte LUKS2 binary header: layout, checksum, serialization.
//!
//! Layout (all integers big-endian), from the LUKS2 on-disk format specification:
//! magic[6] version u16 hdr_size u64 seqid u64 label[48] checksum_alg[32] salt[64] uuid[40]
//! subsystem[48] hdr_offset u64 padding[184] csum[64] padding[3584]. The checksum covers the
//! binary header (with `csum` zeroed) and the whole JSON area that follows it.

use alloc::string::String;
use alloc::vec::Vec;

use sha2::Digest;

/// Length of the binary header.
pub const BIN_LEN: usize = 4096;
/// Magic of the primary header.
pub const MAGIC_PRIMARY: &[u8; 6] = b"LUKS\xba\xbe";
/// Magic of the secondary header.
pub const MAGIC_SECONDARY: &[u8; 6] = b"SKUL\xba\xbe";
/// The metadata (binary header + JSON area) sizes LUKS2 allows; also where the secondary
/// header may start when the primary is unreadable.
pub const METADATA_SIZES: [u64; 9] = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];

const OFF_VERSION: usize = 6;
const OFF_HDR_SIZE: usize = 8;
const OFF_SEQID: usize = 16;
const OFF_LABEL: usize = 24;
const OFF_CSUM_ALG: usize = 72;
const OFF_SALT: usize = 104;
const OFF_UUID: usize = 168;
const OFF_SUBSYSTEM: usize = 208;
const OFF_HDR_OFFSET: usize = 256;
const OFF_CSUM: usize = 448;

/// One decoded binary header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryHeader {
    /// True for the secondary copy (magic `SKUL\xba\xbe`).
    pub secondary: bool,
    /// Format version (2).
    pub version: u16,
    /// Binary header + JSON area size.
    pub hdr_size: u64,
    /// Sequence number; incremented on every metadata update.
    pub seqid: u64,
    /// Label (NUL-terminated within 48 bytes).
    pub label: String,
    /// Checksum algorithm name, e.g. `sha256`.
    pub checksum_alg: String,
    /// Per-copy random salt.
    pub salt: [u8; 64],
    /// Volume UUID as text.
    pub uuid: String,
    /// Subsystem (NUL-terminated within 48 bytes).
    pub subsystem: String,
    /// Where this copy lives on the device.
    pub hdr_offset: u64,
    /// Stored checksum.
    pub csum: [u8; 64],
}

/// Why one header copy is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryFault {
    /// Wrong magic: not a LUKS2 header (copy).
    Magic,
    /// Version other than 2.
    Version(u16),
    /// `hdr_offset` does not say where the copy was found.
    Offset {
        /// Value in the header.
        stored: u64,
        /// Where it was read.
        actual: u64,
    },
    /// A metadata size LUKS2 does not allow.
    Size(u64),
    /// Checksum algorithm not supported here.
    ChecksumAlgorithm(String),
    /// Checksum does not match the header and JSON area.
    Checksum,
}

impl core::fmt::Display for BinaryFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BinaryFault::Magic => write!(f, "no LUKS2 magic"),
            BinaryFault::Version(v) => write!(f, "unsupported LUKS version {v}"),
            BinaryFault::Offset { stored, actual } => {
                write!(f, "header says it lives at offset {stored} but was read at {actual}")
            }
            BinaryFault::Size(s) => write!(f, "metadata size {s} is not one LUKS2 allows"),
            BinaryFault::ChecksumAlgorithm(a) => write!(f, "unsupported checksum algorithm `{a}`"),
            BinaryFault::Checksum => write!(f, "checksum mismatch"),
        }
    }
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn put_c_string(dst: &mut [u8], s: &str) {
    // Always leave room for the terminating NUL, as cryptsetup does.
    let n = s.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Is `size` one of the metadata sizes LUKS2 allows?
pub fn valid_metadata_size(size: u64) -> bool {
    METADATA_SIZES.contains(&size)
}

impl BinaryHeader {
    /// Decode and sanity-check a binary header read at `offset`, before its checksum is
    /// verified (cryptsetup's `hdr_disk_sanity_check_pre`).
    pub fn parse(raw: &[u8; BIN_LEN], offset: u64, secondary: bool) -> Result<Self, BinaryFault> {
        let magic = if secondary { MAGIC_SECONDARY } else { MAGIC_PRIMARY };
        if &raw[..6] != magic {
            return Err(BinaryFault::Magic);
        }
        let version = u16::from_be_bytes([raw[OFF_VERSION], raw[OFF_VERSION + 1]]);
        if version != 2 {
            return Err(BinaryFault::Version(version));
        }
        let hdr_size = be64(raw, OFF_HDR_SIZE);
        let hdr_offset = be64(raw, OFF_HDR_OFFSET);
        if hdr_offset != offset {
            return Err(BinaryFault::Offset { stored: hdr_offset, actual: offset });
        }
        if !valid_metadata_size(hdr_size) || (secondary && hdr_size != offset) {
            return Err(BinaryFault::Size(hdr_size));
        }
        let checksum_alg = c_string(&raw[OFF_CSUM_ALG..OFF_CSUM_ALG + 32]);
        Ok(BinaryHeader {
            secondary,
            version,
            hdr_size,
            seqid: be64(raw, OFF_SEQID),
            label: c_string(&raw[OFF_LABEL..OFF_LABEL + 48]),
            checksum_alg,
            salt: raw[OFF_SALT..OFF_SALT + 64].try_into().expect("64 bytes"),
            uuid: c_string(&raw[OFF_UUID..OFF_UUID + 40]),
            subsystem: c_string(&raw[OFF_SUBSYSTEM..OFF_SUBSYSTEM + 48]),
            hdr_offset,
            csum: raw[OFF_CSUM..OFF_CSUM + 64].try_into().expect("64 bytes"),
        })
    }

    /// Encode with a zero checksum field.
    pub fn encode(&self) -> [u8; BIN_LEN] {
        let mut raw = [0u8; BIN_LEN];
        raw[..6].copy_from_slice(if self.secondary { MAGIC_SECONDARY } else { MAGIC_PRIMARY });
        raw[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&self.version.to_be_bytes());
        raw[OFF_HDR_SIZE..OFF_HDR_SIZE + 8].copy_from_slice(&self.hdr_size.to_be_bytes());
        raw[OFF_SEQID..OFF_SEQID + 8].copy_from_slice(&self.seqid.to_be_bytes());
        put_c_string(&mut raw[OFF_LABEL..OFF_LABEL + 48], &self.label);
        put_c_string(&mut raw[OFF_CSUM_ALG..OFF_CSUM_ALG + 32], &self.checksum_alg);
        raw[OFF_SALT..OFF_SALT + 64].copy_from_slice(&self.salt);
        put_c_string(&mut raw[OFF_UUID..OFF_UUID + 40], &self.uuid);
        put_c_string(&mut raw[OFF_SUBSYSTEM..OFF_SUBSYSTEM + 48], &self.subsystem);
        raw[OFF_HDR_OFFSET..OFF_HDR_OFFSET + 8].copy_from_slice(&self.hdr_offset.to_be_bytes());
        raw
    }

    /// Verify the stored checksum against `raw` (as read) and the JSON area.
    pub fn verify_checksum(&self, raw: &[u8; BIN_LEN], json_area: &[u8]) -> Result<(), BinaryFault> {
        let mut zeroed = *raw;
        zeroed[OFF_CSUM..OFF_CSUM + 64].fill(0);
        let digest = checksum(&self.checksum_alg, &zeroed, json_area)
            .ok_or_else(|| BinaryFault::ChecksumAlgorithm(self.checksum_alg.clone()))?;
        if self.csum[..digest.len()] != digest[..] {
            return Err(BinaryFault::Checksum);
        }
        Ok(())
    }

    /// Encode with the checksum over this header and `json_area` filled in.
    pub fn encode_with_checksum(&self, json_area: &[u8]) -> Option<[u8; BIN_LEN]> {
        let mut raw = self.encode();
        let digest = checksum(&self.checksum_alg, &raw, json_area)?;
        raw[OFF_CSUM..OFF_CSUM + digest.len()].copy_from_slice(&digest);
        Some(raw)
    }
}

/// Hash of the binary header followed by the JSON area, with `alg` as cryptsetup names it.
fn checksum(alg: &str, bin: &[u8], json_area: &[u8]) -> Option<Vec<u8>> {
    fn run<D: Digest>(bin: &[u8], json: &[u8]) -> Vec<u8> {
        let mut h = D::new();
        h.update(bin);
        h.update(json);
        h.finalize().to_vec()
    }
    Some(match alg {
        "sha256" => run::<sha2::Sha256>(bin, json_area),
        "sha1" => run::<sha1::Sha1>(bin, json_area),
        "sha384" => run::<sha2::Sha384>(bin, json_area),
        "sha512" => run::<sha2::Sha512>(bin, json_area),
        _ => return None,
    })
}
