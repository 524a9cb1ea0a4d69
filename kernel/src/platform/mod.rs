//! Platforms: one trait, one implementation per kind of machine. The boot pipeline talks to
//! `dyn Platform` and never asks which one it has.
//!
//! Detection (before any other CPUID, console or TSC use): TDX answers CPUID leaf 0x21 with
//! "IntelTDX    "; SEV-SNP shows in SEV_STATUS (MSR 0xC0010131, read only after CPUID leaf
//! 0x8000001F reports SEV). Under SEV-ES/SNP the very first CPUID raises #VC, which the
//! exception handler turns into a termination request while `PROBING_SEV` is set.

pub mod plain;
pub mod snp;
pub mod tdx;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use crate::cpu::{cpuid, rdmsr};
use crate::interrupts::PROBING_SEV;

/// Why a platform service failed.
#[allow(dead_code)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformError {
    /// The platform has no such service (yet); the text says which and why.
    Unavailable(&'static str),
    /// The service failed.
    Failed(String),
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformError::Unavailable(what) => write!(f, "{what}"),
            PlatformError::Failed(why) => write!(f, "{why}"),
        }
    }
}

/// What differs between a plain VM, SEV-SNP and TDX. Measurement, evidence and unsealing are
/// called by the attestation stages of later issues.
#[allow(dead_code)]
pub trait Platform {
    /// Name for logs.
    fn name(&self) -> &'static str;
    /// Write to the console.
    fn console_write(&mut self, bytes: &[u8]);
    /// Byte port output (SNP and TDX route it through the hypervisor protocol).
    fn outb(&mut self, port: u16, value: u8);
    /// Byte port input.
    fn inb(&mut self, port: u16) -> u8;
    /// Make guest memory usable (SNP: PVALIDATE, TDX: TDG.MEM.PAGE.ACCEPT; plain: nothing).
    fn accept_memory(&mut self, start: u64, len: u64) -> Result<(), PlatformError>;
    /// Extend a measurement register (PCR, RTMR) with a digest of `data`.
    fn extend_measurement(&mut self, register: u32, data: &[u8]) -> Result<(), PlatformError>;
    /// Attestation evidence binding `report_data`.
    fn attestation_evidence(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, PlatformError>;
    /// Unseal a secret sealed to this platform's measurements.
    fn unseal(&mut self, sealed: &[u8]) -> Result<Vec<u8>, PlatformError>;
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
