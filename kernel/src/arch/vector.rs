//! Turn on the SSE/AVX/AVX-512 register state the CPU offers (CR0, CR4.OSFXSR/OSXMMEXCPT/
//! OSXSAVE, XCR0), before any vector code runs. The firmware's Rust code itself is built
//! soft-float and never touches these registers; the assembly XTS paths do.

use crate::arch::cpu::{cpuid, read_cr0, read_cr4, write_cr0, write_cr4, xsetbv0};

/// What vector features are usable after `enable`.
#[derive(Clone, Copy, Debug, Default)]
pub struct VectorState {
    /// XCR0 as set (0 without XSAVE).
    pub xcr0: u64,
    /// AES-NI.
    pub aesni: bool,
    /// PCLMULQDQ.
    pub pclmulqdq: bool,
    /// AVX2 usable (YMM state enabled).
    pub avx2: bool,
    /// VAES usable.
    pub vaes: bool,
    /// VPCLMULQDQ usable.
    pub vpclmulqdq: bool,
    /// AVX-512F usable (ZMM state enabled).
    pub avx512f: bool,
}

/// An XSAVE area in the initial state XRSTOR and FXRSTOR load for [`scrub`]: FCW and MXCSR
/// at their reset values, every register zero, no component present in the header's
/// XSTATE_BV; 64-byte aligned, as XRSTOR needs. In .bss (the ROM carries none of it).
#[repr(C, align(64))]
struct InitArea([u8; 576]);
static mut INIT_AREA: InitArea = InitArea([0; 576]);

/// Zero the vector registers the XTS routines use (their round keys and data of `veil-boot`
/// stay there otherwise; issue 35): XRSTOR of the initial state for every component XCR0
/// enables (x87, xmm0-15, the upper halves of ymm0-15, opmask, zmm0-15's upper halves and
/// zmm16-31, which VZEROUPPER never touches and VAES-512 keeps round keys in), or FXRSTOR of
/// zeros into x87 and xmm0-15 without XSAVE. Call last before the hand-off: the firmware's
/// Rust code is soft-float and never touches them.
#[inline(always)]
pub fn scrub() {
    let area = &raw mut INIT_AREA;
    // SAFETY: the area is this module's, 64-byte aligned and in the standard format (header
    // zero: XSTATE_BV and XCOMP_BV 0), with valid FCW and MXCSR; XRSTOR runs only with
    // CR4.OSXSAVE set and restores only what XCR0 enables; no
    // Rust code keeps a value in a vector register.
    unsafe {
        area.cast::<u16>().write(0x037F);
        area.cast::<u8>().add(24).cast::<u32>().write(0x1F80);
        if read_cr4() & (1 << 18) == 0 {
            core::arch::asm!("fxrstor64 [{}]", in(reg) area, options(nostack, preserves_flags, readonly));
        } else {
            // EDX:EAX all ones: every component XCR0 enables.
            core::arch::asm!(
                "xrstor64 [{}]",
                in(reg) area,
                in("eax") u32::MAX,
                in("edx") u32::MAX,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
}

/// Enable SSE always, and AVX/AVX-512 state where CPUID offers it.
pub fn enable() -> VectorState {
    let l1 = cpuid(1, 0);
    let max = cpuid(0, 0).eax;
    let l7 = if max >= 7 { cpuid(7, 0) } else { Default::default() };
    // SAFETY: clearing CR0.EM/TS and setting MP, then CR4.OSFXSR/OSXMMEXCPT, is the
    // architected way to enable SSE; both registers stay otherwise unchanged.
    unsafe {
        write_cr0((read_cr0() & !((1 << 2) | (1 << 3))) | (1 << 1));
        write_cr4(read_cr4() | (1 << 9) | (1 << 10));
    }
    let mut state =
        VectorState { aesni: l1.ecx & (1 << 25) != 0, pclmulqdq: l1.ecx & (1 << 1) != 0, ..Default::default() };
    let xsave = l1.ecx & (1 << 26) != 0;
    if !xsave || max < 0xD {
        return state;
    }
    // SAFETY: CPUID says XSAVE exists, so CR4.OSXSAVE may be set.
    unsafe { write_cr4(read_cr4() | (1 << 18)) };
    let d = cpuid(0xD, 0);
    let supported = u64::from(d.eax) | (u64::from(d.edx) << 32);
    let avx = l1.ecx & (1 << 28) != 0;
    let avx512f = l7.ebx & (1 << 16) != 0;
    let mut want = 0b11; // x87, SSE
    if avx {
        want |= 1 << 2; // YMM
    }
    if avx && avx512f {
        want |= 0b111 << 5; // opmask, ZMM_Hi256, Hi16_ZMM
    }
    let xcr0 = want & supported;
    // SAFETY: xcr0 is a subset of what CPUID leaf 0xD reports and includes x87 and SSE; the
    // AVX-512 bits are only set together.
    unsafe { xsetbv0(xcr0) };
    // XSETBV faults on a value it does not take, so reading it back adds nothing (and
    // XGETBV is missing from some nested hypervisors' instruction emulators).
    state.xcr0 = xcr0;
    let ymm = state.xcr0 & 0b110 == 0b110;
    let zmm = ymm && state.xcr0 & (0b111 << 5) == 0b111 << 5;
    state.avx2 = ymm && l7.ebx & (1 << 5) != 0;
    state.vaes = ymm && l7.ecx & (1 << 9) != 0;
    state.vpclmulqdq = ymm && l7.ecx & (1 << 10) != 0;
    state.avx512f = zmm;
    state
}
