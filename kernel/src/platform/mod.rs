//! Platforms: which kind of machine this is, and what differs between them behind one
//! trait. Today the plain VM boots; SEV-SNP and TDX are detected and refused (snp.rs,
//! tdx.rs). The pipeline still asks [`Kind`] in two places: the TPM is looked for only on the
//! plain platform, and the development key source is accepted only there.
//!
//! Detection (before any other CPUID, console or TSC use): TDX answers CPUID leaf 0x21 with
//! "IntelTDX    "; SEV-SNP shows in SEV_STATUS (MSR 0xC0010131, read only after CPUID leaf
//! 0x8000001F reports SEV). Under SEV-ES/SNP the very first CPUID raises #VC, which the
//! exception handler turns into a termination request while `PROBING_SEV` is set.

pub mod plain;
pub mod snp;
pub mod tdx;

use core::sync::atomic::Ordering;

use crate::cpu::{cpuid, rdmsr};
use crate::error::BootError;
use crate::interrupts::PROBING_SEV;

/// What differs between a plain VM, SEV-SNP and TDX, as far as the boot uses it today.
pub trait Platform {
    /// Name for logs and the hand-off file.
    fn name(&self) -> &'static str;
    /// Write to the console.
    fn console_write(&mut self, bytes: &[u8]);
    /// Make guest memory usable (SNP: PVALIDATE, TDX: TDG.MEM.PAGE.ACCEPT; plain: nothing).
    fn accept_memory(&mut self, start: u64, len: u64) -> Result<(), BootError>;
}

/// The machine kinds veilboot knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A plain VM (optionally with a TPM).
    Plain,
    /// AMD SEV-SNP.
    SevSnp,
    /// AMD SEV or SEV-ES without SNP.
    SevLegacy,
    /// Intel TDX.
    Tdx,
}

impl Kind {
    /// The name in logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::SevSnp => "sev-snp",
            Kind::SevLegacy => "sev",
            Kind::Tdx => "tdx",
        }
    }
}

/// SEV_STATUS MSR.
const MSR_SEV_STATUS: u32 = 0xC001_0131;

/// Find out which kind of machine this is. Must run before any other CPUID.
pub fn detect() -> Kind {
    PROBING_SEV.store(true, Ordering::SeqCst);
    let max = cpuid(0, 0).eax; // #VC here under SEV-ES/SNP: see interrupts.rs
    PROBING_SEV.store(false, Ordering::SeqCst);
    if max >= 0x21 {
        let l = cpuid(0x21, 0);
        if (l.ebx, l.edx, l.ecx)
            == (u32::from_le_bytes(*b"Inte"), u32::from_le_bytes(*b"lTDX"), u32::from_le_bytes(*b"    "))
        {
            return Kind::Tdx;
        }
    }
    if cpuid(0x8000_0000, 0).eax >= 0x8000_001F && cpuid(0x8000_001F, 0).eax & (1 << 1) != 0 {
        // SAFETY: CPUID leaf 0x8000001F reports SEV support, so SEV_STATUS exists.
        let status = unsafe { rdmsr(MSR_SEV_STATUS) };
        if status & (1 << 2) != 0 {
            return Kind::SevSnp;
        }
        if status & 0b11 != 0 {
            return Kind::SevLegacy;
        }
    }
    Kind::Plain
}
