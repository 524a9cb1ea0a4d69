//! The platform seam: the [`Platform`] trait (what differs between a plain VM, SEV-SNP and
//! TDX as far as the boot uses it), what a platform adds to Linux's hand-off, and the ranges
//! shared with the host for DMA that the confidential platforms make private again.
//!
//! Apart from mod.rs, which chooses one, the platforms (plain.rs, snp/, tdx/) implement this
//! trait and name only this file and rot.rs of their siblings.

use alloc::vec::Vec;

use veil_agent::fwcfg::E820Entry;

use super::rot::RootOfTrust;
use crate::error::BootError;

/// What a platform adds to Linux's hand-off.
#[derive(Default)]
pub struct HandoffExtras {
    /// Ranges (start, length) to mark reserved in the e820 map.
    pub reserve: Vec<(u64, u64)>,
    /// A setup_data node (next = 0) for boot_params, or empty.
    pub setup_data: Vec<u8>,
}

/// What differs between a plain VM, SEV-SNP and TDX, as far as the boot uses it today. Port
/// I/O and CPUID are routed by the platform at bring-up (crate::arch::cpu), since the console and
/// the exception handler need them before and outside any platform object.
pub trait Platform {
    /// Name for logs and the hand-off file.
    fn name(&self) -> &'static str;
    /// Write to the console.
    fn console_write(&mut self, bytes: &[u8]);
    /// Make guest memory usable (SNP: PVALIDATE, TDX: TDG.MEM.PAGE.ACCEPT; plain: nothing).
    fn accept_memory(&mut self, start: u64, len: u64) -> Result<(), BootError>;
    /// Check QEMU's -kernel (setup part and the rest), -initrd and -append against what the
    /// launch measured (SNP: the SEV hash table); plain: nothing to check against.
    fn verify_direct_boot(
        &mut self,
        _setup: &[u8],
        _kernel: &[u8],
        _initrd: &[u8],
        _cmdline: &[u8],
    ) -> Result<(), BootError> {
        Ok(())
    }
    /// Make the rest of guest RAM usable for Linux and say what its hand-off needs.
    fn prepare_handoff(&mut self, _e820: &[E820Entry]) -> Result<HandoffExtras, BootError> {
        Ok(HandoffExtras::default())
    }
    /// Add what this platform needs to the ACPI tables Linux gets (TDX: the multiprocessor
    /// wakeup structure, whose mailbox the application processors then wait in).
    fn extend_acpi(&mut self, _tables: &mut crate::devices::acpi::Tables) -> Result<(), BootError> {
        Ok(())
    }
    /// Last step before the jump (SNP: wipe VMPCK0; SNP and TDX: the memory shared for DMA made
    /// private again, so that Linux gets it as RAM).
    fn before_jump(&mut self) -> Result<(), BootError> {
        Ok(())
    }
    /// Does the host stay outside the guest's trust (memory encrypted: SEV-SNP, TDX)? Such
    /// a platform refuses host-supplied secrets (the development key) and keeps its own
    /// memory-type settings.
    fn is_confidential(&self) -> bool {
        false
    }
    /// Bring the root of trust up where it is a device found late (the plain platform's TPM,
    /// once PCI and the memory types are set); confidential platforms have theirs from launch.
    fn start_root_of_trust(&mut self) -> Result<(), BootError> {
        Ok(())
    }
    /// What measures, attests and seals on this platform (super::rot), if anything.
    fn root_of_trust(&mut self) -> Option<&mut dyn RootOfTrust> {
        None
    }
}

/// The ranges (start, end) made shared for DMA: left out of what SNP validates for Linux, and
/// made private again by the platform's `before_jump` ([`take_shared_for_dma`]).
static SHARED_FOR_DMA: spin::Mutex<Vec<(u64, u64)>> = spin::Mutex::new(Vec::new());

/// Note that [start, start + len) is now shared for DMA (crate::platform::share_for_dma).
pub fn record_shared_for_dma(start: u64, len: u64) {
    SHARED_FOR_DMA.lock().push((start, start + len));
}

/// The ranges shared for DMA so far.
pub fn shared_for_dma() -> Vec<(u64, u64)> {
    SHARED_FOR_DMA.lock().clone()
}

/// The ranges shared for DMA, forgotten here: the caller makes them private again.
pub fn take_shared_for_dma() -> Vec<(u64, u64)> {
    core::mem::take(&mut *SHARED_FOR_DMA.lock())
}
