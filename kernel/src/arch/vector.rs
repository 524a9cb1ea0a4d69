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

/// XCR0 as `enable` set it (0 without XSAVE).
static XCR0: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Zero the vector registers the XTS routines use (their round keys and data of `veil-boot`
/// stay there otherwise; issue 35): zmm16-31 where AVX-512 state is on (VAES-512 keeps round
/// keys in zmm16-30), then VZEROALL where AVX state is on, else PXOR of xmm0-15. Call last
/// before the hand-off: the firmware's Rust code is soft-float and never touches them.
pub fn scrub() {
    let xcr0 = XCR0.load(core::sync::atomic::Ordering::Relaxed);
    // SAFETY: each instruction runs only where its register state is enabled (XCR0 as set by
    // `enable`; SSE always is); no Rust code keeps a value in a vector register.
    unsafe {
        if xcr0 & (0b111 << 5) == 0b111 << 5 {
            core::arch::asm!(
                "vpxord zmm16, zmm16, zmm16",
                "vmovdqa64 zmm17, zmm16",
                "vmovdqa64 zmm18, zmm16",
                "vmovdqa64 zmm19, zmm16",
                "vmovdqa64 zmm20, zmm16",
                "vmovdqa64 zmm21, zmm16",
                "vmovdqa64 zmm22, zmm16",
                "vmovdqa64 zmm23, zmm16",
                "vmovdqa64 zmm24, zmm16",
                "vmovdqa64 zmm25, zmm16",
                "vmovdqa64 zmm26, zmm16",
                "vmovdqa64 zmm27, zmm16",
                "vmovdqa64 zmm28, zmm16",
                "vmovdqa64 zmm29, zmm16",
                "vmovdqa64 zmm30, zmm16",
                "vmovdqa64 zmm31, zmm16",
                options(nomem, nostack, preserves_flags)
            );
        }
        if xcr0 & 0b110 == 0b110 {
            core::arch::asm!("vzeroall", options(nomem, nostack, preserves_flags));
        } else {
            core::arch::asm!(
                "pxor xmm0, xmm0",
                "pxor xmm1, xmm1",
                "pxor xmm2, xmm2",
                "pxor xmm3, xmm3",
                "pxor xmm4, xmm4",
                "pxor xmm5, xmm5",
                "pxor xmm6, xmm6",
                "pxor xmm7, xmm7",
                "pxor xmm8, xmm8",
                "pxor xmm9, xmm9",
                "pxor xmm10, xmm10",
                "pxor xmm11, xmm11",
                "pxor xmm12, xmm12",
                "pxor xmm13, xmm13",
                "pxor xmm14, xmm14",
                "pxor xmm15, xmm15",
                options(nomem, nostack, preserves_flags)
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
    XCR0.store(xcr0, core::sync::atomic::Ordering::Relaxed);
    let ymm = state.xcr0 & 0b110 == 0b110;
    let zmm = ymm && state.xcr0 & (0b111 << 5) == 0b111 << 5;
    state.avx2 = ymm && l7.ebx & (1 << 5) != 0;
    state.vaes = ymm && l7.ecx & (1 << 9) != 0;
    state.vpclmulqdq = ymm && l7.ecx & (1 << 10) != 0;
    state.avx512f = zmm;
    state
}
