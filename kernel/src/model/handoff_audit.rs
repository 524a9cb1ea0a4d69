//! The model ROMs' check of the hand-off (features `snp-model` and `tdx-model`, test ROMs
//! only): Linux, booted directly, validates (SEV-SNP) or accepts (TDX) nothing it is given as
//! RAM, so every such page must be private and validated or accepted when it starts. On real
//! hardware a page that is not, such as a DMA buffer left shared, faults in Linux at its
//! first use, long after the firmware is gone; under TCG nothing would notice.
//!
//! The RAM ranges are read from the boot_params Linux gets, by the boot protocol's layout
//! (Documentation/arch/x86/zero-page.rst: `e820_entries` at 0x1E8, `e820_table` at 0x2D0,
//! 20-byte entries), not with the code that wrote them.

use alloc::vec::Vec;

/// `e820_entries`: how many entries the table holds.
const E820_ENTRIES: usize = 0x1E8;
/// `e820_table`: 128 entries of (addr u64, size u64, type u32).
const E820_TABLE: usize = 0x2D0;
/// The types Linux never takes as memory (reserved, ACPI, NVS, unusable): every other type
/// counts as RAM here (1; 128, E820_TYPE_RESERVED_KERN, which Linux adds to its usable memory;
/// pmem 7 and 12, which userspace can online), so the audit misses none.
const NOT_RAM: core::ops::RangeInclusive<u32> = 2..=5;

/// The RAM ranges `[start, end)` (every type Linux may use as memory) of the e820 table in the boot_params at `boot_params`.
pub fn ram_ranges(boot_params: u64) -> Vec<(u64, u64)> {
    // SAFETY: the zero page the firmware wrote for Linux (4 KiB, identity mapped), read only.
    let page = unsafe { core::slice::from_raw_parts(boot_params as *const u8, 4096) };
    let count = usize::from(page[E820_ENTRIES]).min(128);
    (0..count)
        .map(|i| &page[E820_TABLE + 20 * i..E820_TABLE + 20 * (i + 1)])
        .filter(|e| !NOT_RAM.contains(&u32::from_le_bytes(e[16..20].try_into().expect("4 bytes"))))
        .map(|e| {
            let addr = u64::from_le_bytes(e[0..8].try_into().expect("8 bytes"));
            (addr, addr + u64::from_le_bytes(e[8..16].try_into().expect("8 bytes")))
        })
        .collect()
}

/// Stop the boot (the test then fails) if the model found a page of Linux's RAM (`ranges`)
/// unusable (`first_unusable`), else say that it checked; `what` names the state required.
/// Called without the model's lock held: logging is port I/O, which the model answers.
pub fn report(marker: &str, what: &str, ranges: &[(u64, u64)], first_unusable: Option<u64>) {
    if let Some(gpa) = first_unusable {
        crate::arch::exit::fail(format_args!("{marker}: Linux is given {gpa:#x} as RAM, but the page is not {what}"));
    }
    let mib = ranges.iter().map(|(a, b)| b - a).sum::<u64>() >> 20;
    crate::log!("{marker}: the {mib} MiB Linux is given as RAM are all {what}");
}
