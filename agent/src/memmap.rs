//! Decisions the firmware takes from the guest's memory map (fw_cfg `etc/e820`): where its
//! main heap goes and which part of the 32-bit address space the MTRRs make uncachable.
//! Pure functions of the map, so they are tested here rather than only under QEMU.

use alloc::vec::Vec;

use crate::fwcfg::{E820Entry, E820Kind};

/// Where the heap may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapLimits {
    /// Nothing below this (the firmware's image, stack and page tables).
    pub floor: u64,
    /// Start here when the range above it has at least `preferred_room` bytes (the window
    /// below is left to the kernel).
    pub preferred: u64,
    /// Room that makes `preferred` usable.
    pub preferred_room: u64,
    /// Largest heap.
    pub max: u64,
    /// Smallest heap worth having.
    pub min: u64,
}

/// The main heap: in the largest RAM range below 4 GiB (what the firmware maps), from
/// `preferred` when there is room there, else from the floor; 4 KiB aligned, at most
/// `max`. Returns (start, size), or None without `min` bytes.
pub fn choose_heap(map: &[E820Entry], limits: &HeapLimits) -> Option<(u64, u64)> {
    let (start, end) = map
        .iter()
        .filter(|e| e.kind == E820Kind::Ram)
        .map(|e| {
            let end = e.end().min(0x1_0000_0000);
            let preferred = e.addr.max(limits.preferred);
            let start = if end > preferred && end - preferred >= limits.preferred_room {
                preferred
            } else {
                e.addr.max(limits.floor)
            };
            (start, end)
        })
        .filter(|(s, e)| e > s)
        .max_by_key(|(s, e)| e - s)?;
    let start = start.checked_add(0xFFF)? & !0xFFF;
    let size = end.saturating_sub(start).min(limits.max) & !0xFFF;
    (size >= limits.min).then_some((start, size))
}

/// The heap of a direct boot (QEMU's -kernel/-initrd): the kernel gets what it needs at its
/// load address, `[kernel.0, kernel.1)` (its init_size), and the heap the RAM above it, at most
/// `max` from the top of that RAM range (below 4 GiB), `align`ed (a power of two), at least
/// `need` bytes (the initrd and the firmware's own allocations), never below `floor` (the
/// firmware's own memory). So the boot needs no more RAM than the kernel, the initrd and a
/// few MiB, as with SeaBIOS. None when that does not fit, or the kernel's range is empty or
/// reversed (the caller then falls back to [`choose_heap`], and the kernel is placed above the
/// heap if it can be). The kernel's range comes from a host-chosen header: every step is
/// checked, nothing wraps.
pub fn choose_heap_above_kernel(
    map: &[E820Entry],
    kernel: (u64, u64),
    need: u64,
    max: u64,
    align: u64,
    floor: u64,
) -> Option<(u64, u64)> {
    if kernel.0 >= kernel.1 || !align.is_power_of_two() {
        return None;
    }
    let range = map.iter().find(|e| e.kind == E820Kind::Ram && e.addr <= kernel.0 && e.end() >= kernel.1)?;
    let end = range.end().min(0x1_0000_0000) & !(align - 1);
    let start = kernel.1.checked_next_multiple_of(align)?.max(end.saturating_sub(max)).max(floor);
    let start = start.checked_next_multiple_of(align)?;
    (end > start && end - start >= need).then_some((start, end - start))
}

/// Why a heap range was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeapRefusal {
    /// It starts below the floor.
    BelowFloor {
        /// Its start.
        start: u64,
        /// The floor.
        floor: u64,
    },
    /// Empty, or its end is past the address space.
    Wraps {
        /// Its start.
        start: u64,
        /// Its size.
        size: u64,
    },
    /// It overlaps one of the firmware's own ranges.
    Overlaps {
        /// The heap's range.
        heap: (u64, u64),
        /// The firmware's range it overlaps.
        range: (u64, u64),
        /// What lives there.
        what: &'static str,
    },
}

impl core::fmt::Display for HeapRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HeapRefusal::BelowFloor { start, floor } => {
                write!(f, "the heap would start at {start:#x}, below the floor {floor:#x} (the firmware's own memory)")
            }
            HeapRefusal::Wraps { start, size } => {
                write!(f, "the heap at {start:#x} of {size:#x} bytes is empty or leaves the address space")
            }
            HeapRefusal::Overlaps { heap, range, what } => write!(
                f,
                "the heap {:#x}-{:#x} would overlap the firmware's {what} at {:#x}-{:#x}",
                heap.0,
                heap.1 - 1,
                range.0,
                range.1 - 1
            ),
        }
    }
}

/// The heap invariant, checked where the heap is initialised: `[start, start + size)` is not
/// empty, does not wrap, starts at or above `floor`, and overlaps none of `firmware`'s ranges
/// (`[a, b)`, what lives there).
pub fn check_heap(start: u64, size: u64, floor: u64, firmware: &[(u64, u64, &'static str)]) -> Result<(), HeapRefusal> {
    let end = match start.checked_add(size) {
        Some(end) if size > 0 => end,
        _ => return Err(HeapRefusal::Wraps { start, size }),
    };
    if start < floor {
        return Err(HeapRefusal::BelowFloor { start, floor });
    }
    match firmware.iter().find(|(a, b, _)| start < *b && *a < end) {
        Some(&(a, b, what)) => Err(HeapRefusal::Overlaps { heap: (start, end), range: (a, b), what }),
        None => Ok(()),
    }
}

/// The PCI hole below 4 GiB the MTRRs should make uncachable, as a size-aligned power of two
/// (base, size): 2-4 GiB when RAM below 4 GiB ends at or below 2 GiB, else 3-4 GiB. None
/// when RAM reaches into 3-4 GiB (then the firmware leaves the MTRRs to the OS).
pub fn mtrr_hole(map: &[E820Entry]) -> Option<(u64, u64)> {
    let ram_top = map
        .iter()
        .filter(|e| e.kind == E820Kind::Ram && e.addr < 0x1_0000_0000)
        .map(|e| e.end().min(0x1_0000_0000))
        .max()
        .unwrap_or(0);
    let hole = if ram_top <= 0x8000_0000 { (0x8000_0000, 0x8000_0000) } else { (0xC000_0000, 0x4000_0000) };
    (ram_top <= hole.0).then_some(hole)
}

/// `[start, end)` (rounded inwards to 4 KiB pages) minus every range `[a, b)` in `taken`: the
/// pieces left, in order. What an SNP guest still has to validate of a RAM entry.
pub fn subtract(start: u64, end: u64, taken: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let first = start.checked_next_multiple_of(4096).unwrap_or(u64::MAX); // the last page: none
    let mut pieces: Vec<(u64, u64)> = [(first, end / 4096 * 4096)].into_iter().filter(|(a, b)| a < b).collect();
    for &(t0, t1) in taken {
        pieces =
            pieces.into_iter().flat_map(|(a, b)| [(a, b.min(t0)), (a.max(t1), b)]).filter(|(a, b)| a < b).collect();
    }
    pieces
}

/// `[start, end)` cut at every GiB boundary above 4 GiB, each piece with the GiB it lies in
/// (None: below 4 GiB). An SNP guest validates RAM above 4 GiB one mapped GiB at a time
/// (PVALIDATE takes a virtual address, and the boot page tables map 0-4 GiB only).
pub fn by_high_gib(start: u64, end: u64) -> Vec<(u64, u64, Option<u64>)> {
    const GIB: u64 = 1 << 30;
    let mut pieces = Vec::new();
    let mut at = start;
    while at < end {
        if at < 4 * GIB {
            let to = end.min(4 * GIB);
            pieces.push((at, to, None));
            at = to;
        } else {
            let to = end.min((at / GIB + 1).saturating_mul(GIB)); // the last GiB ends at 2^64
            pieces.push((at, to, Some(at / GIB)));
            at = to;
        }
    }
    pieces
}

/// What a confidential guest still has to accept of `[start, end)` (rounded inwards to 4 KiB
/// pages): the range minus what it accepted itself (`own`). Overlap with a range the launch
/// added and accepted before the guest ran (`added`: TDX's TempMem, TD HOB and image sections,
/// from the firmware's own TDVF metadata, never the host's word) is refused with that range, not
/// skipped: memory the firmware uses itself, or whose contents the host chose, never becomes
/// the heap or is counted as Linux's.
pub fn to_accept(
    start: u64,
    end: u64,
    own: &[(u64, u64)],
    added: &[(u64, u64)],
) -> Result<Vec<(u64, u64)>, (u64, u64)> {
    let pieces = subtract(start, end, own);
    for &(a, b) in added {
        if pieces.iter().any(|&(x, y)| x < b && a < y) {
            return Err((a, b));
        }
    }
    Ok(pieces)
}

/// The first piece of `[start, end)` (4 KiB pages) that no range of `within` covers, if any:
/// RAM the e820 map lists that the launch does not describe (TDX: RAM to accept that the TD
/// HOB does not list as unaccepted memory, so the VMM never added it).
pub fn uncovered(start: u64, end: u64, within: impl Iterator<Item = (u64, u64)> + Clone) -> Option<(u64, u64)> {
    let (mut at, end) = (start.checked_next_multiple_of(4096).unwrap_or(u64::MAX), end / 4096 * 4096);
    while at < end {
        match within.clone().find(|&(a, b)| a <= at && at < b) {
            Some((_, b)) => at = b,
            None => {
                let next = within.clone().filter(|&(a, _)| a > at).map(|(a, _)| a).min();
                return Some((at, next.unwrap_or(end).min(end)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_direct_boot_heap_sits_above_the_kernel() {
        let above = |map: &[E820Entry], kernel, need, max, align| {
            super::choose_heap_above_kernel(map, kernel, need, max, align, 0xC0_0000)
        };
        let ram = |addr: u64, len: u64| crate::fwcfg::E820Entry { addr, len, kind: crate::fwcfg::E820Kind::Ram };
        // 80 MiB: the Debian kernel's 53968896-byte init_size from 16 MiB, then the heap.
        let small = [ram(0, 0x9_FC00), ram(0x10_0000, (80 << 20) - 0x10_0000)];
        let kernel = (16 << 20, (16 << 20) + 53_968_896);
        let m2 = 2 << 20;
        assert_eq!(above(&small, kernel, 5 << 20, 256 << 20, m2), Some((68 << 20, 12 << 20)));
        assert_eq!(above(&small, kernel, 13 << 20, 256 << 20, m2), None, "the initrd does not fit");
        // Page-aligned (a plain VM), the heap starts right above the kernel.
        assert_eq!(above(&small, kernel, 5 << 20, 256 << 20, 4096), Some((70_746_112, (80 << 20) - 70_746_112)));
        // 2 GiB: at most `max`, from the top.
        let big = [ram(0x10_0000, (2 << 30) - 0x10_0000)];
        assert_eq!(above(&big, kernel, 5 << 20, 256 << 20, m2), Some(((2 << 30) - (256 << 20), 256 << 20)));
        // A kernel outside RAM: no heap from this rule.
        assert_eq!(above(&small, (90 << 20, 100 << 20), 1 << 20, 256 << 20, m2), None);
    }

    /// Issue 34: the kernel ranges a wrapping setup header produced on the old code, with an
    /// e820 whose first RAM entry is [0, 256 MiB): the heap landed on the page tables
    /// (0x400000..) or the firmware image (0xA00000..). Now: never below the floor, and a
    /// reversed range gives no heap at all.
    #[test]
    fn a_wrapped_kernel_range_never_puts_the_heap_below_the_floor() {
        let low = [ram(0, 0x1000_0000)];
        let m2 = 2 << 20;
        // at = 0xFFFF_FFFF_FFE0_0000, at + 6 MiB wrapped to 0x400000: reversed, refused.
        let wrapped = (0xFFFF_FFFF_FFE0_0000, 0x40_0000);
        assert_eq!(choose_heap_above_kernel(&low, wrapped, 1 << 20, 256 << 20, m2, 0xC0_0000), None);
        // at wrapped to 0 (pref_address = u64::MAX): [0, 6 MiB) is a range, but the heap
        // starts at the floor, not at 6 MiB.
        let (start, _) = choose_heap_above_kernel(&low, (0, 0x60_0000), 1 << 20, 256 << 20, m2, 0xC0_0000).unwrap();
        assert_eq!(start, 0xC0_0000);
        // An end near 2^64 does not wrap when aligned.
        let far = [ram(0, u64::MAX - 1)];
        assert_eq!(choose_heap_above_kernel(&far, (0x100_0000, u64::MAX - 2), 1, 1 << 28, m2, 0), None);
    }

    #[test]
    fn the_heap_invariant_names_what_it_would_overlap() {
        let fw = [(0x80_0000, 0x80_8000, "page tables"), (0xFFF0_0000, 0x1_0000_0000, "ROM")];
        assert_eq!(check_heap(0xC0_0000, 1 << 20, 0xC0_0000, &fw), Ok(()));
        assert_eq!(
            check_heap(0x40_0000, 0x1000_0000, 0xC0_0000, &fw),
            Err(HeapRefusal::BelowFloor { start: 0x40_0000, floor: 0xC0_0000 })
        );
        let e = check_heap(0xF000_0000, 0x1000_0000, 0xC0_0000, &fw).unwrap_err();
        assert_eq!(
            e,
            HeapRefusal::Overlaps { heap: (0xF000_0000, 0x1_0000_0000), range: (fw[1].0, fw[1].1), what: "ROM" }
        );
        assert!(e.to_string().contains("overlap the firmware's ROM at 0xfff00000-0xffffffff"), "{e}");
        assert_eq!(check_heap(u64::MAX, 2, 0, &fw), Err(HeapRefusal::Wraps { start: u64::MAX, size: 2 }));
        assert_eq!(check_heap(0xC0_0000, 0, 0, &fw), Err(HeapRefusal::Wraps { start: 0xC0_0000, size: 0 }));
    }

    use super::*;

    fn ram(addr: u64, len: u64) -> E820Entry {
        E820Entry { addr, len, kind: E820Kind::Ram }
    }

    const LIMITS: HeapLimits =
        HeapLimits { floor: 0xC0_0000, preferred: 0x800_0000, preferred_room: 64 << 20, max: 256 << 20, min: 1 << 20 };

    #[test]
    fn heap_prefers_the_window_above_the_kernel_when_there_is_room() {
        // QEMU -m 512M: 0-640K and 1M-512M.
        let map = [ram(0, 0xA_0000), ram(0x10_0000, 0x1FF0_0000)];
        assert_eq!(choose_heap(&map, &LIMITS), Some((0x800_0000, 256 << 20)));
        // About 100 MiB: less than 64 MiB above 128 MiB (none at all): from the floor.
        let map = [ram(0, 0xA_0000), ram(0x10_0000, 0x63F_0000)];
        assert_eq!(choose_heap(&map, &LIMITS), Some((0xC0_0000, 0x64F_0000 - 0xC0_0000)));
    }

    #[test]
    fn heap_stays_below_4_gib_aligned_and_refuses_tiny_maps() {
        let map = [ram(0x10_0000, 0x1_0000_0000), ram(0x1_0000_0000, 1 << 34)];
        let (start, size) = choose_heap(&map, &LIMITS).unwrap();
        assert!(start + size <= 0x1_0000_0000);
        let map = [ram(0xC0_0123, 0x200_0000)];
        let (start, _) = choose_heap(&map, &LIMITS).unwrap();
        assert_eq!(start % 4096, 0);
        assert_eq!(choose_heap(&[ram(0, 0xC8_0000)], &LIMITS), None);
        assert_eq!(
            choose_heap(&[E820Entry { addr: 0x100_0000, len: 1 << 30, kind: E820Kind::Reserved }], &LIMITS),
            None
        );
    }

    #[test]
    fn mtrr_hole_follows_the_top_of_low_ram() {
        assert_eq!(mtrr_hole(&[ram(0, 0x2000_0000)]), Some((0x8000_0000, 0x8000_0000)));
        assert_eq!(mtrr_hole(&[ram(0, 0xB000_0000)]), Some((0xC000_0000, 0x4000_0000)));
        // q35 with more than 2.75 GiB: low RAM ends at 0x8000_0000 and the rest is above 4 GiB.
        assert_eq!(mtrr_hole(&[ram(0, 0x8000_0000), ram(0x1_0000_0000, 1 << 30)]), Some((0x8000_0000, 0x8000_0000)));
        assert_eq!(mtrr_hole(&[ram(0, 0xD000_0000)]), None);
    }

    /// Issue 34: a heap over the pages the VMM added (TDX TempMem at 0x800000: the page tables)
    /// was accepted around them and then used; now it is refused, naming the added range.
    #[test]
    fn accepting_over_added_pages_is_refused_not_skipped() {
        let added = [(0x80_0000, 0x90_0000), (0x90_2000, 0x90_3000), (0xA0_0000, 0xC0_0000)];
        assert_eq!(to_accept(0x40_0000, 0x1000_0000, &[], &added), Err((0x80_0000, 0x90_0000)));
        assert_eq!(to_accept(0x90_2800, 0x90_2C00, &[], &added), Ok(vec![]), "less than a page: nothing");
        assert_eq!(to_accept(0xC0_0000, 0x1000_0000, &[], &added), Ok(vec![(0xC0_0000, 0x1000_0000)]));
        // What the guest accepted itself is skipped (the heap, at the hand-off).
        let own = [(0x500_0000, 0x600_0000)];
        assert_eq!(
            to_accept(0xC0_0000, 0x1000_0000, &own, &added),
            Ok(vec![(0xC0_0000, 0x500_0000), (0x600_0000, 0x1000_0000)])
        );
    }

    #[test]
    fn ram_above_4_gib_is_cut_at_every_gib() {
        const G: u64 = 1 << 30;
        assert_eq!(super::by_high_gib(0, 2 * G), vec![(0, 2 * G, None)]);
        assert_eq!(
            super::by_high_gib(3 * G, 6 * G + 0x1000),
            vec![
                (3 * G, 4 * G, None),
                (4 * G, 5 * G, Some(4)),
                (5 * G, 6 * G, Some(5)),
                (6 * G, 6 * G + 0x1000, Some(6))
            ]
        );
        assert_eq!(
            super::by_high_gib(4 * G + 0x20_0000, 4 * G + 0x40_0000),
            vec![(4 * G + 0x20_0000, 4 * G + 0x40_0000, Some(4))]
        );
        assert!(super::by_high_gib(5 * G, 5 * G).is_empty());
        // 16 GiB on q35: 2 GiB low, 14 GiB from 4 GiB; every piece within one GiB.
        let high = super::by_high_gib(4 * G, 18 * G);
        assert_eq!(high.len(), 14);
        assert!(high.iter().all(|&(a, b, g)| g == Some(a / G) && (b - 1) / G == a / G));
    }

    /// Issue 32 item 5: a TD HOB that lists 256 MiB as unaccepted (around the VMM's added
    /// TempMem) and an e820 map that claims 512 MiB: the RAM beyond 256 MiB is the first piece
    /// not described; a heap inside the HOB's memory, or RAM the HOB covers in two adjacent
    /// resources, is.
    #[test]
    fn uncovered_names_the_first_piece_the_launch_does_not_describe() {
        let hob = [(0, 0x80_0000), (0xC0_0000, 0x800_0000), (0x800_0000, 0x1000_0000)];
        let uncovered = |start, end| super::uncovered(start, end, hob.iter().copied());
        assert_eq!(uncovered(0xC0_0000, 0x1000_0000), None);
        assert_eq!(uncovered(0xC0_0000, 0x2000_0000), Some((0x1000_0000, 0x2000_0000)));
        assert_eq!(uncovered(0x40_0000, 0x2000_0000), Some((0x80_0000, 0xC0_0000)));
        assert_eq!(uncovered(0x1000_0800, 0x1000_0C00), None, "less than a page");
    }

    #[test]
    fn subtract_leaves_the_pieces_outside_every_taken_range() {
        let taken = [(0x80_0000, 0x90_2000), (0x90_3000, 0x90_4000), (0x800_0000, 0x1000_0000)];
        assert_eq!(
            subtract(0x100, 0x2000_0800, &taken),
            vec![(0x1000, 0x80_0000), (0x90_2000, 0x90_3000), (0x90_4000, 0x800_0000), (0x1000_0000, 0x2000_0000)]
        );
        assert_eq!(subtract(0x80_0000, 0x90_2000, &taken), vec![]);
        assert_eq!(subtract(0x1000, 0x1800, &[]), vec![]); // less than a page
    }

    /// Issue 32: ranges at the top of the address space (a hostile e820) give pieces, not a
    /// wrapped address or an endless loop.
    #[test]
    fn the_last_page_and_the_last_gib_of_the_address_space() {
        const GIB: u64 = 1 << 30;
        assert_eq!(super::subtract(u64::MAX - 0x800, u64::MAX, &[]), vec![], "inside the last page");
        assert_eq!(
            super::subtract(0u64.wrapping_sub(0x2000), u64::MAX, &[]),
            vec![(0u64.wrapping_sub(0x2000), u64::MAX - 0xFFF)]
        );
        assert_eq!(super::uncovered(u64::MAX - 0x800, u64::MAX, core::iter::empty()), None);
        let last = 0u64.wrapping_sub(GIB);
        assert_eq!(super::by_high_gib(last, u64::MAX - 0xFFF), vec![(last, u64::MAX - 0xFFF, Some((1 << 34) - 1))]);
        assert_eq!(
            super::by_high_gib(last - GIB, last + 0x1000),
            vec![(last - GIB, last, Some((1 << 34) - 2)), (last, last + 0x1000, Some((1 << 34) - 1))]
        );
    }
}
