//! Finish the boot page tables once CPUID may be used: mark everything except code as
//! no-execute (EFER.NXE), keeping the ROM's top 2 MiB and the firmware text executable.

use crate::arch::cpu::{cpuid, rdmsr, read_cr3, write_cr3, wrmsr};
use crate::arch::layout::{IMAGE_BASE, PD0, PT_IMAGE, PT_LOW, ROM_TOP_2M};

const NX: u64 = 1 << 63;
const EFER: u32 = 0xC000_0080;

unsafe extern "C" {
    static __text_end: u8;
}

/// Set NX on data. Returns false (and changes nothing) if the CPU has no NX.
pub fn enable_nx() -> bool {
    if cpuid(0x8000_0000, 0).eax < 0x8000_0001 || cpuid(0x8000_0001, 0).edx & (1 << 20) == 0 {
        return false;
    }
    let text_end = (&raw const __text_end) as u64;
    // SAFETY: EFER exists on every long-mode CPU.
    let efer = unsafe { rdmsr(EFER) };
    // Written only if it changes: a TD starts with NXE set and does not write EFER (Linux's
    // TDX path avoids the write the same way).
    if efer & (1 << 11) == 0 {
        // SAFETY: setting NXE only makes bit 63 of page-table entries meaningful, and none is
        // set yet.
        unsafe { wrmsr(EFER, efer | (1 << 11)) };
    }
    // SAFETY: the page tables are the ones boot.S built at these identity-mapped addresses;
    // nothing else references them while we update single entries with volatile accesses.
    unsafe {
        let pd = PD0 as *mut u64;
        for i in 0..2048usize {
            let addr = i as u64 * 0x20_0000;
            let e = pd.add(i);
            let points_to_pt = addr == 0x80_0000 || addr == IMAGE_BASE;
            if addr != ROM_TOP_2M && !points_to_pt {
                e.write_volatile(e.read_volatile() | NX);
            }
        }
        let low = PT_LOW as *mut u64;
        for i in 0..512 {
            let e = low.add(i);
            let v = e.read_volatile();
            if v & 1 != 0 {
                e.write_volatile(v | NX);
            }
        }
        let img = PT_IMAGE as *mut u64;
        for i in 0..512u64 {
            if IMAGE_BASE + i * 0x1000 >= text_end {
                let e = img.add(i as usize);
                e.write_volatile(e.read_volatile() | NX);
            }
        }
        write_cr3(read_cr3()); // flush the TLB
    }
    true
}

/// Make the whole identity map executable again: the kernel runs from memory the firmware
/// mapped as data. Called once, right before the jump to Linux.
pub fn allow_execute_everywhere() {
    // SAFETY: as in enable_nx; clearing NX only widens what may execute.
    unsafe {
        for table in [PD0 as *mut u64, PT_LOW as *mut u64, PT_IMAGE as *mut u64] {
            let n = if table == PD0 as *mut u64 { 2048 } else { 512 };
            for i in 0..n {
                let e = table.add(i);
                e.write_volatile(e.read_volatile() & !NX);
            }
        }
        write_cr3(read_cr3());
    }
}

/// Clear the C-bit (position `cbit`; None: the page tables carry none) of the 4 KiB page at
/// `gpa` in the 0x800000-0x9FFFFF table, and flush its translation: the page is shared from
/// now on. The firmware's SNP pages live there.
pub fn clear_cbit_4k(gpa: u64, cbit: Option<u8>) {
    let Some(bit) = cbit else { return };
    assert!((0x80_0000..0xA0_0000).contains(&gpa) && gpa.is_multiple_of(4096), "not a PT_LOW page: {gpa:#x}");
    // SAFETY: PT_LOW is the boot page table for 0x800000-0x9FFFFF; one entry changes, then its
    // translation is flushed. The page's contents are not in use (callers zero it afterwards).
    unsafe {
        let e = (PT_LOW as *mut u64).add(((gpa - 0x80_0000) >> 12) as usize);
        e.write_volatile(e.read_volatile() & !(1u64 << bit));
        core::arch::asm!("invlpg [{}]", in(reg) gpa, options(nostack, preserves_flags));
    }
}

/// Set (`on`) or clear bit `bit` (None: the page tables carry none, nothing to do) of the
/// 2 MiB mapping of `gpa` (2 MiB aligned, below 4 GiB, outside the firmware's 4 KiB-mapped
/// window): SEV-SNP's C-bit (set: private) or TDX's shared bit (set: the shared alias). The
/// caller flushes the TLB ([`flush_tlb`]).
pub fn set_bit_2m(gpa: u64, bit: Option<u8>, on: bool) {
    let Some(bit) = bit else { return };
    assert!(gpa.is_multiple_of(2 << 20) && gpa < 0x1_0000_0000, "not a 2 MiB page below 4 GiB: {gpa:#x}");
    assert!(!(0x80_0000..0xC0_0000).contains(&gpa), "the firmware's own window: {gpa:#x}");
    // SAFETY: PD0..PD3 map 0-4 GiB in 2 MiB pages at these identity-mapped addresses; one
    // entry changes (the caller flushes); the memory's contents are not in use.
    unsafe {
        let e = (PD0 as *mut u64).add((gpa >> 21) as usize);
        let old = e.read_volatile();
        e.write_volatile(if on { old | (1u64 << bit) } else { old & !(1u64 << bit) });
    }
}

/// Flush the TLB (reload CR3).
pub fn flush_tlb() {
    // SAFETY: reloading CR3 with its own value only drops cached translations.
    unsafe { write_cr3(read_cr3()) }
}

/// A page-table page.
#[repr(C, align(4096))]
struct Table([u64; 512]);

/// The page directory (and, from 512 GiB up, the PDPT) through which [`map_high_gib`] maps
/// one GiB above 4 GiB at a time: the boot tables map 0-4 GiB only, and PVALIDATE takes a
/// virtual address. One GiB at a time keeps the firmware's page-table memory constant whatever
/// the guest's size.
static mut HIGH_PD: Table = Table([0; 512]);
static mut HIGH_PDPT: Table = Table([0; 512]);

/// Identity-map GiB `gib` (4 to 2^18 - 1) with 2 MiB pages carrying the C-bit `cbit`
/// (private), in place of whatever GiB was mapped above 4 GiB before (None: map nothing);
/// the TLB is flushed.
pub fn map_high_gib(gib: Option<u64>, cbit: Option<u8>) {
    let c = cbit.map_or(0, |b| 1u64 << b);
    // SAFETY: PML4 (PAGE_TABLES) and its PDPT (PAGE_TABLES + 0x1000) are boot.S's tables;
    // entries 4..511 of that PDPT and 1..511 of the PML4 map nothing but this window, whose
    // two tables are statics used by nothing else (one CPU runs the firmware's Rust).
    unsafe {
        let pml4 = crate::arch::layout::PAGE_TABLES as *mut u64;
        let boot_pdpt = pml4.add(512);
        for i in 1..512 {
            pml4.add(i).write_volatile(0);
            if i >= 4 {
                boot_pdpt.add(i).write_volatile(0);
            }
        }
        if let Some(gib) = gib.filter(|g| (4..1 << 18).contains(g)) {
            let (pd, pdpt) = (&raw mut HIGH_PD, &raw mut HIGH_PDPT);
            for i in 0..512 {
                (*pd).0[i] = ((gib << 30) + ((i as u64) << 21)) | c | 0x83;
            }
            let pd_entry = pd as u64 | c | 3;
            if gib < 512 {
                boot_pdpt.add(gib as usize).write_volatile(pd_entry);
            } else {
                (*pdpt).0.fill(0);
                (*pdpt).0[(gib & 511) as usize] = pd_entry;
                pml4.add((gib >> 9) as usize).write_volatile(pdpt as u64 | c | 3);
            }
        }
    }
    flush_tlb();
}
