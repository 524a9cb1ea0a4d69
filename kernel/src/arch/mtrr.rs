//! Memory types: program the MTRRs the way a PC firmware does, so that the OS finds RAM
//! write-back and the 32-bit MMIO hole uncached (Linux enables PAT only when the firmware has
//! set MTRRs up). Default type write-back; one variable range marks the PCI hole below 4 GiB
//! uncachable.

use veil_agent::fwcfg::E820Entry;

use crate::arch::cpu::{cpuid, rdmsr, wrmsr};

const MTRR_CAP: u32 = 0xFE;
const MTRR_DEF_TYPE: u32 = 0x2FF;
const MTRR_PHYS_BASE0: u32 = 0x200;
const MTRR_PHYS_MASK0: u32 = 0x201;
const WRITE_BACK: u64 = 6;
const UNCACHABLE: u64 = 0;

/// Program the MTRRs from the memory map. Returns the uncached hole, or None if the CPU has
/// no MTRRs (then nothing is changed).
pub fn init(map: &[E820Entry]) -> Option<(u64, u64)> {
    if cpuid(1, 0).edx & (1 << 12) == 0 {
        return None;
    }
    // SAFETY: CPUID says MTRRs exist, so MTRRcap is readable.
    let cap = unsafe { rdmsr(MTRR_CAP) };
    if cap & 0xFF == 0 {
        return None;
    }
    let phys_bits = if cpuid(0x8000_0000, 0).eax >= 0x8000_0008 { cpuid(0x8000_0008, 0).eax & 0xFF } else { 36 };
    // None when RAM reaches into 3-4 GiB: then the MTRRs are left to the OS.
    let hole = veil_agent::memmap::mtrr_hole(map)?;
    let mask = ((1u64 << phys_bits) - 1) & !(hole.1 - 1);
    // SAFETY: variable range 0 exists (cap reported at least one); the values describe a
    // size-aligned power-of-two range; default type WB with MTRRs enabled is what a PC
    // firmware leaves behind, and no memory is cached yet that this would make incoherent
    // (the MMIO hole becomes UC, RAM stays WB).
    unsafe {
        wrmsr(MTRR_DEF_TYPE, 0);
        wrmsr(MTRR_PHYS_BASE0, hole.0 | UNCACHABLE);
        wrmsr(MTRR_PHYS_MASK0, mask | (1 << 11));
        wrmsr(MTRR_DEF_TYPE, (1 << 11) | WRITE_BACK);
    }
    Some(hole)
}
