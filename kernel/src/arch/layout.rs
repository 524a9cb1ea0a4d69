//! Where things live in guest-physical memory (identity mapped). Must agree with
//! src/arch/boot.S and linker/veilboot.ld.
//!
//! The invariants every host-chosen address and length is held to (issue 34), stated here
//! once and checked where each is used:
//! - The main heap starts at or above [`HEAP_FLOOR`] and overlaps none of
//!   [`firmware_ranges`] (page tables, stacks, the TDX AP parking page, the SNP pages and TD
//!   HOB, the firmware image, the ROM): [`check_heap`], called before the platform accepts the
//!   heap's memory and again where the allocator gets it (crate::boot::heap::init_main).
//! - A direct boot's kernel range, `[load address, + max(init_size, kernel size))`, is computed
//!   with checked arithmetic from the host's setup header and lies below 4 GiB
//!   (veil_agent::linux::SetupHeader::kernel_range), refused with its values otherwise, before
//!   the heap is chosen (crate::boot::linux::direct_boot_need).
//! - The heap above such a kernel is chosen with checked arithmetic and the same floor
//!   (veil_agent::memmap::choose_heap_above_kernel).
//! - TDX: accepting memory that overlaps a page the VMM added at launch (TempMem, the TD HOB,
//!   the image, the TD HOB's system memory) is refused, not skipped (veil_agent::memmap::to_accept).

/// Base of the eight page-table pages the boot code builds.
pub const PAGE_TABLES: u64 = 0x80_0000;
/// The page directories for 0-4 GiB (four, consecutive).
pub const PD0: u64 = PAGE_TABLES + 0x2000;
/// 4 KiB page table for 0x800000-0x9FFFFF.
pub const PT_LOW: u64 = PAGE_TABLES + 0x6000;
/// 4 KiB page table for the RAM image 0xA00000-0xBFFFFF.
pub const PT_IMAGE: u64 = PAGE_TABLES + 0x7000;
/// Not mapped: a stack overflow faults here instead of overwriting the page tables.
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))] // only the guard-page test writes it
pub const GUARD_PAGE: u64 = 0x81_0000;
/// The boot stack: [GUARD_PAGE + 4 KiB, STACK_TOP).
pub const STACK_BOTTOM: u64 = 0x81_1000;
/// Top of the boot stack.
pub const STACK_TOP: u64 = 0x82_1000;
/// Interrupt stacks (IST1: double fault; IST2: page fault, NMI, machine check), 16 KiB each.
pub const IST1_TOP: u64 = 0x82_5000;
/// Second interrupt stack top.
pub const IST2_TOP: u64 = 0x82_9000;
/// TDX: where the parked application processors learn, from the BSP, their long-mode page
/// tables (+0, CR3), the ACPI wakeup mailbox (+4) and say they arrived (+8) (boot.S).
pub const AP_PARK: u64 = 0x82_F000;
// 0x900000 and 0x901000 are the SEV-SNP secrets and CPUID pages, 0x902000 the TD HOB,
// 0x903000 the SEV hash table of measured direct boot (declared in boot.S's SEV and TDX
// metadata and footer table, so a VMM fills and measures them there).
/// The firmware's own RAM image (text, rodata, data, bss): 2 MiB from here.
pub const IMAGE_BASE: u64 = 0xA0_0000;
/// End of the firmware's RAM window.
pub const IMAGE_END: u64 = 0xC0_0000;
/// Where Linux goes: its preferred address, with 64 MiB above it for its init_size (Debian's
/// 6.1 cloud kernel needs 51.5 MiB; a larger one goes above the heap).
pub const KERNEL_WINDOW: (u64, u64) = (0x100_0000, 0x500_0000);
/// A disk boot's heap starts above the kernel window when RAM allows (a direct boot's sits
/// right above the kernel: heap::choose_main) ...
pub const HEAP_PREFERRED: u64 = 0x500_0000;
/// ... and never below this (small VMs: the kernel then goes above the heap).
pub const HEAP_FLOOR: u64 = 0xC0_0000;
/// Everything the firmware itself occupies: page tables, stacks, SNP pages, the image.
pub const FIRMWARE_RANGE: (u64, u64) = (PAGE_TABLES, IMAGE_END);
unsafe extern "C" {
    /// The ROM's size (linker/veilboot.ld: its contents rounded up to 64 KiB), an absolute
    /// symbol: its address is the value.
    static ROM_SIZE: u8;
}

/// The ROM image QEMU maps so that it ends at 4 GiB: `[4 GiB - ROM_SIZE, 4 GiB)`, with
/// ROM_SIZE the linker script's (the one constant boot.S's TDVF metadata and the ROM file's
/// size also follow).
pub fn rom_range() -> (u64, u64) {
    let size = (&raw const ROM_SIZE) as u64;
    (0x1_0000_0000 - size, 0x1_0000_0000)
}

/// The ROM's bytes, as QEMU mapped them (read-only, for the firmware's lifetime).
pub fn rom() -> &'static [u8] {
    let (base, end) = rom_range();
    // SAFETY: boot.S identity-maps 0-4 GiB and the ROM lies at [base, end) below 4 GiB; nothing
    // writes it (it is ROM, and the top 2 MiB are mapped read-only).
    unsafe { core::slice::from_raw_parts(base as *const u8, (end - base) as usize) }
}

/// The ROM's top 2 MiB, executable until long mode jumps to RAM.
pub const ROM_TOP_2M: u64 = 0xFFE0_0000;

/// The SEV-SNP pages and the TD HOB: secrets, CPUID, TD HOB, SEV hash table, GHCB, guest
/// request, response and certificate pages (boot.S's SEV and TDX metadata,
/// crate::platform::snp).
pub const CC_PAGES: (u64, u64) = (0x90_0000, 0x90_B000);

/// The firmware's own ranges `[start, end)` with what lives there: the heap overlaps none.
pub fn firmware_ranges() -> [(u64, u64, &'static str); 6] {
    let (rom_base, rom_end) = rom_range();
    [
        (PAGE_TABLES, PAGE_TABLES + 0x8000, "page tables"),
        (GUARD_PAGE, IST2_TOP, "boot stack and interrupt stacks"),
        (AP_PARK, AP_PARK + 0x1000, "AP parking page"),
        (CC_PAGES.0, CC_PAGES.1, "SEV-SNP pages and TD HOB"),
        (IMAGE_BASE, IMAGE_END, "image (text, data, bss)"),
        (rom_base, rom_end, "ROM"),
    ]
}

/// The heap invariant (see the module documentation).
pub fn check_heap(start: u64, size: u64) -> Result<(), veil_agent::memmap::HeapRefusal> {
    veil_agent::memmap::check_heap(start, size, HEAP_FLOOR, &firmware_ranges())
}

/// Is `[addr, addr + len)` inside memory the firmware itself mapped and owns (stacks, page
/// tables, image), so that the exception handler may read it?
pub fn firmware_owned(addr: u64, len: u64) -> bool {
    let end = addr.saturating_add(len);
    (addr >= STACK_BOTTOM && end <= STACK_TOP)
        || (addr >= STACK_TOP && end <= IST2_TOP)
        || (addr >= IMAGE_BASE && end <= IMAGE_END)
}
