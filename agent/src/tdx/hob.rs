//! The TD HOB: the hand-off block list the VMM writes into the TD before it starts (UEFI PI
//! specification volume 3, "HOB Code Definitions"; TDVF design guide: the memory map of a TD).
//! Untrusted input: every HOB's length is checked against the buffer, the list must start
//! with the phase hand-off information table and end with the end-of-list HOB, and resource
//! ranges must be 4 KiB aligned and must not overflow or overlap.
//!
//! Layouts: generic header `{u16 type, u16 length, u32 reserved}`; PHIT (type 1) adds the
//! version and boot mode and five u64 memory pointers; a resource descriptor (type 3, 48
//! bytes) adds an owner GUID, `u32 resource type` (0 system memory, 1 MMIO, 5 reserved memory,
//! 7 unaccepted memory, ...), `u32 attributes`, `u64 start`, `u64 length`.

use alloc::vec::Vec;
use core::fmt;

/// HOB types used here.
const HOB_PHIT: u16 = 0x0001;
const HOB_RESOURCE: u16 = 0x0003;
const HOB_END: u16 = 0xFFFF;

/// Resource types of a resource descriptor HOB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// Accepted (initialized) system memory.
    SystemMemory,
    /// Memory the TD must accept (TDG.MEM.PAGE.ACCEPT) before use.
    Unaccepted,
    /// Memory-mapped I/O.
    Mmio,
    /// Reserved memory.
    Reserved,
    /// Any other type (its number).
    Other(u32),
}

/// One resource descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// What it is.
    pub kind: ResourceKind,
    /// Start (guest-physical).
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Resource {
    /// One past the end.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Why a TD HOB list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HobError {
    /// A HOB header or body runs past the buffer, at this offset.
    Truncated(usize),
    /// A HOB whose length is below its header's or not a multiple of 8, at this offset.
    Length(usize),
    /// The list does not start with the phase hand-off information table.
    NoPhit,
    /// No end-of-list HOB.
    NoEnd,
    /// A resource that is not 4 KiB aligned, empty, or wraps around: its start.
    Range(u64),
    /// Two memory resources overlap: the second's start.
    Overlap(u64),
}

impl fmt::Display for HobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HobError::Truncated(at) => write!(f, "TD HOB: the HOB at offset {at:#x} runs past the list"),
            HobError::Length(at) => write!(f, "TD HOB: the HOB at offset {at:#x} has an impossible length"),
            HobError::NoPhit => write!(f, "TD HOB: the list does not start with the hand-off information table"),
            HobError::NoEnd => write!(f, "TD HOB: no end-of-list HOB"),
            HobError::Range(at) => write!(f, "TD HOB: the resource at {at:#x} is empty, unaligned or wraps"),
            HobError::Overlap(at) => write!(f, "TD HOB: the memory resource at {at:#x} overlaps another"),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("in range"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("in range"))
}

/// Parse the TD HOB list in `hob` (the page the VMM filled): the resources it describes, in
/// order.
pub fn parse(hob: &[u8]) -> Result<Vec<Resource>, HobError> {
    let mut resources: Vec<Resource> = Vec::new();
    let mut at = 0usize;
    let mut first = true;
    loop {
        let header = hob.get(at..at + 8).ok_or(HobError::Truncated(at))?;
        let (kind, len) = (u16_at(header, 0), usize::from(u16_at(header, 2)));
        if len < 8 || !len.is_multiple_of(8) {
            return Err(HobError::Length(at));
        }
        let body = hob.get(at..at + len).ok_or(HobError::Truncated(at))?;
        if first {
            if kind != HOB_PHIT || len < 56 {
                return Err(HobError::NoPhit);
            }
            first = false;
        }
        match kind {
            HOB_END => return Ok(resources),
            HOB_RESOURCE => {
                if len < 48 {
                    return Err(HobError::Length(at));
                }
                let kind = match u32_at(body, 24) {
                    0 => ResourceKind::SystemMemory,
                    1 => ResourceKind::Mmio,
                    5 => ResourceKind::Reserved,
                    7 => ResourceKind::Unaccepted,
                    other => ResourceKind::Other(other),
                };
                let (start, rlen) = (u64_at(body, 32), u64_at(body, 40));
                if rlen == 0
                    || !start.is_multiple_of(4096)
                    || !rlen.is_multiple_of(4096)
                    || start.checked_add(rlen).is_none()
                {
                    return Err(HobError::Range(start));
                }
                let r = Resource { kind, start, len: rlen };
                let memory = |k: ResourceKind| matches!(k, ResourceKind::SystemMemory | ResourceKind::Unaccepted);
                if memory(kind) && resources.iter().any(|o| memory(o.kind) && o.start < r.end() && r.start < o.end()) {
                    return Err(HobError::Overlap(start));
                }
                resources.push(r);
            }
            _ => {} // other HOB types carry nothing the firmware uses
        }
        at += len;
        if at >= hob.len() {
            return Err(HobError::NoEnd);
        }
    }
}

/// Build a TD HOB list of `resources` (the VMM's side: tests and the model).
pub fn build(resources: &[Resource]) -> Vec<u8> {
    let mut h = alloc::vec![0u8; 56];
    h[0..2].copy_from_slice(&HOB_PHIT.to_le_bytes());
    h[2..4].copy_from_slice(&56u16.to_le_bytes());
    h[8..12].copy_from_slice(&9u32.to_le_bytes()); // PHIT version
    for r in resources {
        let mut d = [0u8; 48];
        d[0..2].copy_from_slice(&HOB_RESOURCE.to_le_bytes());
        d[2..4].copy_from_slice(&48u16.to_le_bytes());
        let t = match r.kind {
            ResourceKind::SystemMemory => 0,
            ResourceKind::Mmio => 1,
            ResourceKind::Reserved => 5,
            ResourceKind::Unaccepted => 7,
            ResourceKind::Other(n) => n,
        };
        d[24..28].copy_from_slice(&t.to_le_bytes());
        d[32..40].copy_from_slice(&r.start.to_le_bytes());
        d[40..48].copy_from_slice(&r.len.to_le_bytes());
        h.extend_from_slice(&d);
    }
    h.extend_from_slice(&[0xFF, 0xFF, 8, 0, 0, 0, 0, 0]);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(kind: ResourceKind, start: u64, len: u64) -> Resource {
        Resource { kind, start, len }
    }

    #[test]
    fn parse_build_round_trip() {
        let rs = [
            mem(ResourceKind::SystemMemory, 0, 0x80_0000),
            mem(ResourceKind::Unaccepted, 0x80_0000, 0x1F80_0000),
            mem(ResourceKind::Mmio, 0xFEC0_0000, 0x1000),
        ];
        assert_eq!(parse(&build(&rs)).unwrap(), rs);
        // Touching is not overlapping, in either order.
        let descending = [rs[1], rs[0]];
        assert_eq!(parse(&build(&descending)).unwrap(), descending);
        assert!(HobError::Overlap(0x1000).to_string().contains("0x1000"), "{}", HobError::Overlap(0x1000));
    }

    #[test]
    fn malformed_lists_are_refused() {
        let good = build(&[mem(ResourceKind::Unaccepted, 0x10_0000, 0x10_0000)]);
        assert_eq!(parse(&good[..good.len() - 8]), Err(HobError::NoEnd));
        assert_eq!(parse(&good[56..]), Err(HobError::NoPhit));
        let mut short = good.clone();
        short[58] = 4; // the resource HOB's length
        assert_eq!(parse(&short), Err(HobError::Length(56)));
        let mut long = good.clone();
        long[58..60].copy_from_slice(&0x2000u16.to_le_bytes());
        assert_eq!(parse(&long), Err(HobError::Truncated(56)));
        let unaligned = build(&[mem(ResourceKind::Unaccepted, 0x10_0800, 0x1000)]);
        assert_eq!(parse(&unaligned), Err(HobError::Range(0x10_0800)));
        let wraps = build(&[mem(ResourceKind::Unaccepted, 0xFFFF_FFFF_FFFF_F000, 0x2000)]);
        assert_eq!(parse(&wraps), Err(HobError::Range(0xFFFF_FFFF_FFFF_F000)));
        let overlap = build(&[
            mem(ResourceKind::SystemMemory, 0, 0x20_0000),
            mem(ResourceKind::Unaccepted, 0x10_0000, 0x20_0000),
        ]);
        assert_eq!(parse(&overlap), Err(HobError::Overlap(0x10_0000)));
    }
}
