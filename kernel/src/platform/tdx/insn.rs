//! TDCALL, the one instruction only a TD executes, in the one place it lives. What it carries
//! is built and checked in safe Rust in `veil_agent::tdx::tdcall`. In the TDX model test ROM
//! (feature `tdx-model`) TCG raises #UD on it and the model's #UD handler answers
//! (crate::model::tdx), so this same code runs there.

use core::arch::asm;

use veil_agent::tdx::tdcall::Regs;

/// TDCALL with `r` in and out.
pub fn tdcall(r: &mut Regs) {
    // SAFETY: TDCALL reads and writes only the registers named here (the TDX module ABI and
    // GHCI define which per leaf); memory it reads or writes (an RTMR digest, a report) is
    // named by GPA in them and owned by the caller, hence no `nomem`. Outside a TD (or in the
    // model ROM) it raises #UD.
    unsafe {
        asm!(
            ".byte 0x66, 0x0f, 0x01, 0xcc",
            inout("rax") r.rax,
            inout("rcx") r.rcx,
            inout("rdx") r.rdx,
            inout("r8") r.r8,
            inout("r9") r.r9,
            inout("r10") r.r10,
            inout("r11") r.r11,
            inout("r12") r.r12,
            inout("r13") r.r13,
            inout("r14") r.r14,
            inout("r15") r.r15,
            options(nostack),
        );
    }
}
