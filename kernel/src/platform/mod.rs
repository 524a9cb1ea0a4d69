//! Layer 3, the platforms: which kind of machine this is, and what differs between them behind
//! two traits: [`Platform`] (seam.rs: memory, console, hand-off) and [`rot::RootOfTrust`]
//! (rot.rs: measure, attest, seal). [`init`] is the one place that matches on [`Kind`]; the
//! boot stages ask properties (`is_confidential`, `root_of_trust`), never which platform they
//! run on. `plain.rs`, `snp/` and `tdx/` are the platforms, each with its only-unsafe
//! `insn.rs`; `tpm.rs` is the plain platform's root of trust.
//!
//! May call: `arch`, `error`, `devices`. What a platform changes below it, it installs there
//! (`arch::cpu::port::route`, `arch::cpu::set_cpuid_source`, `arch::interrupts::set_handler`,
//! `arch::exit::set_failure_hooks`, `devices::virtio::set_dma_sharer`). Inside the folder only
//! this file names the platforms; they name `seam.rs` and `rot.rs`, never this file. The model
//! ROMs' models (crate::model, a layer above) reach the instructions through the `ModelHooks`
//! they install into `snp/insn.rs` and `tdx/insn.rs`.
//!
//! Detection (before any other CPUID, console or TSC use): SEV-SNP shows in SEV_STATUS, which
//! boot.S read before paging (the MSR read raises no #VC; where it does not exist, boot.S's
//! #GP gate resumes with 0), so an SNP guest executes no CPUID before its CPUID page is in
//! use. Otherwise TDX answers CPUID leaf 0x21 with "IntelTDX    ", and SEV or SEV-ES without
//! SNP shows in SEV_STATUS too. Under SEV-ES without SNP the first CPUID raises #VC, which
//! the exception handler turns into a termination request while `PROBING_SEV` is set.

pub mod plain;
pub mod rot;
pub mod seam;
pub mod snp;
pub mod tdx;
pub mod tpm;

use core::sync::atomic::Ordering;

use crate::arch::cpu::native_cpuid as cpuid;
use crate::error::BootError;
pub use seam::{HandoffExtras, Platform};

/// Make heap memory shared with the host for device DMA on the confidential platform that is
/// up (SNP: rescind, PSC, C-bit; TDX: shared bit, MapGPA); nothing on the plain platform.
pub fn share_for_dma(start: u64, len: u64) -> Result<(), BootError> {
    if snp::active() {
        snp::share_dma(start, len)?;
    } else if tdx::active() {
        tdx::share_dma(start, len)?;
    } else {
        return Ok(());
    }
    seam::record_shared_for_dma(start, len);
    Ok(())
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

/// Detect the machine and bring its platform up; stops the boot (with a message where there
/// is a console) on a machine veilboot does not support.
pub fn init() -> alloc::boxed::Box<dyn Platform> {
    use crate::arch::interrupts::{Resumable, set_handler};
    use alloc::boxed::Box;
    // Before detection: its first CPUID raises #VC under SEV-ES, which the SNP handler turns
    // into a termination request while probing. Neither exception occurs on other platforms.
    set_handler(Resumable::VmmCommunication, &snp::VC_HANDLER);
    set_handler(Resumable::VirtualizationException, &tdx::VE_HANDLER);
    crate::devices::virtio::set_dma_sharer(share_for_dma);
    match detect() {
        Kind::Plain => Box::new(plain::Plain::default()),
        Kind::Tdx => match tdx::Tdx::init() {
            Ok(t) => Box::new(t),
            Err(e) => {
                crate::arch::serial::init();
                crate::arch::exit::fail(format_args!("{e}"))
            }
        },
        Kind::SevSnp => Box::new(snp::Snp::init()),
        Kind::SevLegacy if snp::insn::sev_status() & 0b10 != 0 => {
            // SEV-ES: port I/O would raise #VC, and there is no GHCB: no console.
            snp::terminate(snp::Termination::SevEsWithoutSnp)
        }
        Kind::SevLegacy => {
            crate::arch::serial::init();
            crate::arch::exit::fail(format_args!(
                "AMD SEV without SNP detected (SEV_STATUS); veilboot supports SEV-SNP only"
            ))
        }
    }
}

/// Find out which kind of machine this is. Must run before any other CPUID.
pub fn detect() -> Kind {
    #[cfg(feature = "tdx-model")]
    if tdx::insn::model().is_some_and(|m| (m.launched)()) {
        return Kind::Tdx;
    }
    let status = snp::insn::sev_status();
    if status & (1 << 2) != 0 {
        return Kind::SevSnp;
    }
    if status & 0b11 != 0 {
        return Kind::SevLegacy;
    }
    snp::PROBING_SEV.store(true, Ordering::SeqCst);
    let max = cpuid(0, 0).eax; // #VC here under SEV-ES/SNP: see interrupts.rs
    snp::PROBING_SEV.store(false, Ordering::SeqCst);
    if max >= 0x21 {
        let l = cpuid(0x21, 0);
        if (l.ebx, l.edx, l.ecx)
            == (u32::from_le_bytes(*b"Inte"), u32::from_le_bytes(*b"lTDX"), u32::from_le_bytes(*b"    "))
        {
            return Kind::Tdx;
        }
    }
    Kind::Plain
}
