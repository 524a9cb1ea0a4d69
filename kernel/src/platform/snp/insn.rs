//! The instructions only an SEV-SNP guest executes, in the one place they live: the GHCB MSR,
//! VMGEXIT and PVALIDATE, and SEV_STATUS as boot.S read it. What they carry is built and
//! checked in safe Rust in `veil_agent::snp`.
//!
//! The model test ROM (feature `snp-model`) runs this same code under TCG. VMGEXIT and
//! PVALIDATE are the same instructions in every ROM: TCG raises #UD on both and the model's #UD
//! handler answers (the model, `model/snp.rs`, installs [`ModelHooks`]). TCG drops writes to the GHCB MSR and reads SEV_STATUS as
//! 0, so in that ROM those two MSRs are the model's. The code that runs on hardware alone is
//! therefore the two MSR accesses in [`read_ghcb_msr`]/[`write_ghcb_msr`] and the boot.S read.

use core::arch::asm;
#[cfg(feature = "snp-model")]
use core::sync::atomic::AtomicPtr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// SEV_STATUS as boot.S read it, before any CPUID (0 where the MSR does not exist: boot.S
/// resumes its #GP with 0).
#[unsafe(no_mangle)]
pub static VEIL_BOOT_SEV_STATUS: AtomicU64 = AtomicU64::new(0);
/// The C-bit position boot.S found in the CPUID page and set in the page tables (0: none).
#[unsafe(no_mangle)]
pub static VEIL_BOOT_CBIT: AtomicU32 = AtomicU32::new(0);

/// What the SNP model (the `snp-model` test ROM) answers in place of what TCG lacks: the
/// model installs it ([`install_model`]) before the platform is detected, and the functions
/// below ask it first. The platform never names the model, which sits above it.
#[cfg(feature = "snp-model")]
pub struct ModelHooks {
    /// SEV_STATUS as the modelled CPU reports it (None: no modelled launch).
    pub sev_status: fn() -> Option<u64>,
    /// The modelled GHCB MSR (None: no modelled launch).
    pub read_ghcb_msr: fn() -> Option<u64>,
    /// Write the modelled GHCB MSR; false before the modelled launch.
    pub write_ghcb_msr: fn(u64) -> bool,
    /// Keep the CC blob from Linux (which under TCG is no SNP guest and would stop on it)?
    pub withhold_cc_blob: fn() -> bool,
}

#[cfg(feature = "snp-model")]
static MODEL: AtomicPtr<ModelHooks> = AtomicPtr::new(core::ptr::null_mut());

/// Route the instructions TCG lacks to the SNP model from now on.
#[cfg(feature = "snp-model")]
pub fn install_model(hooks: &'static ModelHooks) {
    MODEL.store(core::ptr::from_ref(hooks).cast_mut(), Ordering::Release);
}

/// The installed model, if any.
#[cfg(feature = "snp-model")]
pub fn model() -> Option<&'static ModelHooks> {
    // SAFETY: only `&'static ModelHooks` values are ever stored (install_model).
    unsafe { MODEL.load(Ordering::Acquire).as_ref() }
}

/// The GHCB MSR.
const MSR_GHCB: u32 = veil_agent::snp::ghcb::MSR_GHCB;

/// SEV_STATUS (bit 2: SNP active).
pub fn sev_status() -> u64 {
    #[cfg(feature = "snp-model")]
    if let Some(status) = model().and_then(|m| (m.sev_status)()) {
        return status;
    }
    VEIL_BOOT_SEV_STATUS.load(Ordering::Relaxed)
}

/// The C-bit position in the page tables boot.S built (None: the page tables carry no C-bit,
/// as in the model ROM, whose TCG "hardware" encrypts nothing and strips no address bit).
pub fn page_table_cbit() -> Option<u8> {
    match VEIL_BOOT_CBIT.load(Ordering::Relaxed) {
        0 => None,
        bit => Some(bit as u8),
    }
}

/// Write the GHCB MSR.
pub fn write_ghcb_msr(value: u64) {
    #[cfg(feature = "snp-model")]
    if model().is_some_and(|m| (m.write_ghcb_msr)(value)) {
        return;
    }
    // SAFETY: the GHCB MSR exists on an SNP guest (callers run only once SEV_STATUS says SNP);
    // writing it only tells the hypervisor where to look on the next VMGEXIT.
    unsafe { crate::arch::cpu::wrmsr(MSR_GHCB, value) }
}

/// Read the GHCB MSR.
pub fn read_ghcb_msr() -> u64 {
    #[cfg(feature = "snp-model")]
    if let Some(v) = model().and_then(|m| (m.read_ghcb_msr)()) {
        return v;
    }
    // SAFETY: as for write_ghcb_msr; reading has no effect.
    unsafe { crate::arch::cpu::rdmsr(MSR_GHCB) }
}

/// VMGEXIT (`rep vmmcall`): hand control to the hypervisor, which reads the GHCB MSR and, for
/// a full exit, the shared GHCB page, and may write both.
pub fn vmgexit() {
    // SAFETY: VMGEXIT itself changes no guest register; the hypervisor may write only the
    // GHCB MSR and the shared GHCB page, which callers read back afterwards (hence no
    // `nomem`). Without SNP (or in the model ROM under TCG) it raises #UD, which the model ROM's
    // handler answers and any other ROM reports as a fatal exception.
    unsafe { asm!(".byte 0xf3, 0x0f, 0x01, 0xd9", options(nostack)) }
}

/// PVALIDATE the 4 KiB or 2 MiB (`huge`) page at virtual address `va`, setting its validated
/// state to `validate`. Returns EAX (0 success, 1 FAIL_INPUT, 6 FAIL_SIZEMISMATCH) and CF
/// (set: the state was already as asked).
///
/// # Safety
/// `va` must be a page of guest RAM mapped by the firmware's page tables that no live Rust
/// object uses in a way a validation change would break: rescinding makes every later private
/// access fault, and validating a page whose contents matter is wrong since the RMP does not
/// keep them (callers validate fresh RAM and rescind only pages they are about to share).
pub unsafe fn pvalidate(va: u64, huge: bool, validate: bool) -> (u32, bool) {
    let rax: u64;
    let cf: u8;
    // SAFETY: the caller guarantees the page may change validation state (see # Safety);
    // PVALIDATE writes only RAX and RFLAGS.
    unsafe {
        asm!(
            ".byte 0xf2, 0x0f, 0x01, 0xff",
            "setc {cf}",
            cf = out(reg_byte) cf,
            inout("rax") va => rax,
            in("ecx") u32::from(huge),
            in("edx") u32::from(validate),
            options(nostack),
        );
    }
    (rax as u32, cf != 0)
}
