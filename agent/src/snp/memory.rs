//! Making guest memory usable as an SNP guest, and sharing a range with the host, in the
//! orders the specifications and Linux use:
//!
//! * private (validate): page-state change to private, then PVALIDATE (2 MiB where aligned,
//!   4 KiB when the RMP entry is 4 KiB), then touch every 4 KiB page (CVE-2025-38560). A
//!   PVALIDATE that changes nothing (CF = 1) means the page was already validated: the host
//!   mapped a page twice or replayed one, and the boot stops. CF = 1 cannot catch a page the
//!   launch validated (the firmware's own, the ROM, the SNP pages): the page-state change to
//!   private asked for first lets the host RMPUPDATE it, which clears its validated bit, so the
//!   second PVALIDATE "changes" it. Such ranges are refused before any exit
//!   ([`check_not_launched`]). A page-state change the host refuses (RAM it does not back) stops
//!   the boot too.
//! * shared: PVALIDATE rescind at the RMP entry's page size (2 MiB where aligned, 4 KiB on
//!   FAIL_SIZEMISMATCH), then page-state change to shared; the kernel clears the C-bit in the
//!   page tables and flushes the TLB afterwards.

use alloc::vec::Vec;
use core::fmt;

use super::ghcb::{Ghcb, GhcbError, PageState, Pvalidate};

const MIB2: u64 = 2 << 20;

/// Why memory could not be validated or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// The range is not 4 KiB aligned or empty.
    Range {
        /// Start.
        start: u64,
        /// End.
        end: u64,
    },
    /// A page-state change failed.
    Ghcb(GhcbError),
    /// PVALIDATE found the page already in the state asked for: a double validation (or a
    /// rescind of a page that was not validated).
    Unchanged {
        /// The page.
        gpa: u64,
        /// Validating (true) or rescinding.
        validate: bool,
    },
    /// PVALIDATE failed.
    Pvalidate {
        /// The page.
        gpa: u64,
        /// Its result.
        result: Pvalidate,
    },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::Range { start, end } => {
                write!(f, "memory range {start:#x}..{end:#x} is not whole 4 KiB pages")
            }
            MemoryError::Ghcb(e) => write!(f, "{e}"),
            MemoryError::Unchanged { gpa, validate: true } => write!(
                f,
                "PVALIDATE of {gpa:#x} changed nothing: the page was already validated (the host mapped it twice or replayed it)"
            ),
            MemoryError::Unchanged { gpa, validate: false } => {
                write!(f, "rescinding {gpa:#x} changed nothing: the page was not validated")
            }
            MemoryError::Pvalidate { gpa, result } => write!(f, "PVALIDATE of {gpa:#x} failed: {result:?}"),
        }
    }
}

impl From<GhcbError> for MemoryError {
    fn from(e: GhcbError) -> Self {
        MemoryError::Ghcb(e)
    }
}

fn check_range(start: u64, end: u64) -> Result<(), MemoryError> {
    if start >= end || !start.is_multiple_of(4096) || !end.is_multiple_of(4096) {
        return Err(MemoryError::Range { start, end });
    }
    Ok(())
}

/// The range as page-state-change entries: (GFN, 2 MiB?), 2 MiB pages where aligned.
fn psc_entries(start: u64, end: u64) -> Vec<(u64, bool)> {
    let mut v = Vec::new();
    let mut at = start;
    while at < end {
        let huge = at.is_multiple_of(MIB2) && end - at >= MIB2;
        v.push((at >> 12, huge));
        at += if huge { MIB2 } else { 4096 };
    }
    v
}

fn pvalidate_4k(ghcb: &mut Ghcb<'_>, gpa: u64, validate: bool) -> Result<(), MemoryError> {
    match ghcb.cpu().pvalidate(gpa, false, validate) {
        Pvalidate::Done { changed: true } => Ok(()),
        Pvalidate::Done { changed: false } => Err(MemoryError::Unchanged { gpa, validate }),
        result => Err(MemoryError::Pvalidate { gpa, result }),
    }
}

/// `[start, end)` may be validated only if it overlaps none of the ranges the launch validated
/// (`launch`): else the first such range (see the module documentation).
pub fn check_not_launched(start: u64, end: u64, launch: &[(u64, u64)]) -> Result<(), (u64, u64)> {
    match launch.iter().find(|&&(a, b)| start < b && a < end) {
        Some(&launch) => Err(launch),
        None => Ok(()),
    }
}

/// Make `[start, end)` private and validated; returns the number of 4 KiB pages.
pub fn validate(ghcb: &mut Ghcb<'_>, start: u64, end: u64) -> Result<u64, MemoryError> {
    check_range(start, end)?;
    let entries = psc_entries(start, end);
    ghcb.page_state_change(&entries, PageState::Private)?;
    for (gfn, huge) in entries {
        let gpa = gfn << 12;
        if huge {
            match ghcb.cpu().pvalidate(gpa, true, true) {
                Pvalidate::Done { changed: true } => {}
                Pvalidate::Done { changed: false } => return Err(MemoryError::Unchanged { gpa, validate: true }),
                Pvalidate::SizeMismatch => {
                    for page in (gpa..gpa + MIB2).step_by(4096) {
                        pvalidate_4k(ghcb, page, true)?;
                    }
                }
                result => return Err(MemoryError::Pvalidate { gpa, result }),
            }
        } else {
            pvalidate_4k(ghcb, gpa, true)?;
        }
        for page in (gpa..gpa + if huge { MIB2 } else { 4096 }).step_by(4096) {
            ghcb.cpu().touch(page);
        }
    }
    Ok((end - start) / 4096)
}

/// Rescind the validation of `[start, end)` and make it shared (the kernel then clears the
/// C-bit of its mapping and flushes the TLB). The rescind uses the RMP's page size, as
/// validation did: 2 MiB where the range allows, 4 KiB on FAIL_SIZEMISMATCH (the host
/// assigned 4 KiB pages); a 4 KiB PVALIDATE inside a 2 MiB RMP entry fails with
/// FAIL_SIZEMISMATCH (AMD APM vol. 3, PVALIDATE), so rescinding validated heap 4 KiB at a
/// time would stop the boot on hardware.
pub fn share(ghcb: &mut Ghcb<'_>, start: u64, end: u64) -> Result<(), MemoryError> {
    check_range(start, end)?;
    let entries = psc_entries(start, end);
    for &(gfn, huge) in &entries {
        let gpa = gfn << 12;
        if !huge {
            pvalidate_4k(ghcb, gpa, false)?;
            continue;
        }
        match ghcb.cpu().pvalidate(gpa, true, false) {
            Pvalidate::Done { changed: true } => {}
            Pvalidate::Done { changed: false } => return Err(MemoryError::Unchanged { gpa, validate: false }),
            Pvalidate::SizeMismatch => {
                for page in (gpa..gpa + MIB2).step_by(4096) {
                    pvalidate_4k(ghcb, page, false)?;
                }
            }
            result => return Err(MemoryError::Pvalidate { gpa, result }),
        }
    }
    ghcb.page_state_change(&entries, PageState::Shared)?;
    Ok(())
}
