//! Test ROMs only (features `snp-model`, `tdx-model`; the release ROM is checked free of
//! them): the in-guest models of the AMD-SP and hypervisor (`snp`) and of the TDX module and
//! VMM (`tdx`) that answer the SNP/TDX instructions under TCG from the #UD handler, the TCG
//! glue they share, and the audit of Linux's hand-off against the model's memory state.
//!
//! May call: `arch`, `error`, `devices`, `platform`, `boot`. Only lib.rs calls it (`launch`
//! first, the hand-off audit last). A model stands in for the hardware and the host below the
//! platform, so it reaches them the other way round: it installs its #UD handler into `arch`
//! (`interrupts::set_handler`) and its `ModelHooks` into `platform::{snp,tdx}::insn`, which
//! ask them in place of what TCG lacks.

#[cfg(any(feature = "snp-model", feature = "tdx-model"))]
pub mod handoff_audit;
#[cfg(feature = "snp-model")]
pub mod snp;
#[cfg(any(feature = "snp-model", feature = "tdx-model"))]
pub mod tcg;
#[cfg(feature = "tdx-model")]
pub mod tdx;
