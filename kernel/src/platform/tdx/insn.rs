//! TDCALL, the one instruction only a TD executes, in the one place it lives. What it carries
//! is built and checked in safe Rust in `veil_agent::tdx::tdcall`. In the TDX model test ROM
//! (feature `tdx-model`) TCG raises #UD on it and the model's #UD handler answers
//! (`model/tdx.rs`), so this same code runs there; the model installs [`ModelHooks`] for what
//! else it answers, since the platform never names the model, which sits above it.

use core::arch::asm;
#[cfg(feature = "tdx-model")]
use core::sync::atomic::{AtomicPtr, Ordering};

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

/// What the TDX model (the `tdx-model` test ROM) answers that TCG cannot: whether the machine
/// is a modelled TD (CPUID leaf 0x21 does not say so under TCG), and the test's report of the
/// CC event log beside the model's RTMRs.
#[cfg(feature = "tdx-model")]
pub struct ModelHooks {
    /// Did the modelled launch happen (the machine is a TD)?
    pub launched: fn() -> bool,
    /// Log the firmware's CC event log and the model's RTMRs for the test.
    pub report: fn(&[u8]),
}

#[cfg(feature = "tdx-model")]
static MODEL: AtomicPtr<ModelHooks> = AtomicPtr::new(core::ptr::null_mut());

/// Let the TDX model answer from now on (before the platform is detected).
#[cfg(feature = "tdx-model")]
pub fn install_model(hooks: &'static ModelHooks) {
    MODEL.store(core::ptr::from_ref(hooks).cast_mut(), Ordering::Release);
}

/// The installed model, if any.
#[cfg(feature = "tdx-model")]
pub fn model() -> Option<&'static ModelHooks> {
    // SAFETY: only `&'static ModelHooks` values are ever stored (install_model).
    unsafe { MODEL.load(Ordering::Acquire).as_ref() }
}
