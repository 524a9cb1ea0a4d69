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
/// `need` bytes (the initrd and the firmware's own allocations). So the boot needs no more RAM
/// than the kernel, the initrd and a few MiB, as with SeaBIOS. None when that does not fit
/// (the caller then falls back to [`choose_heap`], and the kernel is placed above the heap if
/// it can be).
pub fn choose_heap_above_kernel(
    map: &[E820Entry],
    kernel: (u64, u64),
    need: u64,
    max: u64,
    align: u64,
) -> Option<(u64, u64)> {
    let range = map.iter().find(|e| e.kind == E820Kind::Ram && e.addr <= kernel.0 && e.end() >= kernel.1)?;
    let end = range.end().min(0x1_0000_0000) & !(align - 1);
    let start = kernel.1.next_multiple_of(align).max(end.saturating_sub(max));
    (end > start && end - start >= need).then_some((start, end - start))
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
    let mut pieces: Vec<(u64, u64)> =
        [(start.next_multiple_of(4096), end / 4096 * 4096)].into_iter().filter(|(a, b)| a < b).collect();
    for &(t0, t1) in taken {
        pieces =
            pieces.into_iter().flat_map(|(a, b)| [(a, b.min(t0)), (a.max(t1), b)]).filter(|(a, b)| a < b).collect();
    }
    pieces
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_direct_boot_heap_sits_above_the_kernel() {
        use super::choose_heap_above_kernel as above;
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
}
