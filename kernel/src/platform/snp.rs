//! AMD SEV-SNP: not supported by this build yet. Without a GHCB there is no console, so the
//! firmware asks the hypervisor to terminate the guest through the GHCB MSR protocol
//! (SEV-ES GHCB specification, "Termination Request", GHCBData 0x100) with a veilboot
//! reason, which the host sees in its logs (QEMU/KVM report the reason set and code).

use core::arch::asm;

const MSR_GHCB: u32 = 0xC001_0130;
/// Reason set for veilboot (0 and 1 are the specification's and Linux's).
const REASON_SET_VEILBOOT: u64 = 0x7;
/// Reason code: platform not supported by this build.
const REASON_UNSUPPORTED: u64 = 0x1;

/// Terminate the guest: "veilboot: SEV-SNP is not supported by this build".
pub fn terminate_unsupported() -> ! {
    let request = 0x100 | (REASON_SET_VEILBOOT << 12) | (REASON_UNSUPPORTED << 16);
    loop {
        // SAFETY: writing the GHCB MSR and VMGEXIT is the GHCB MSR protocol's termination
        // request; the guest does not continue, so no state is left inconsistent.
        unsafe {
            crate::cpu::wrmsr(MSR_GHCB, request);
            asm!("rep vmmcall", options(nomem, nostack));
        }
    }
}
