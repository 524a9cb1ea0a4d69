//! Intel TDX: the structures a TD and the tools around it build and check, in safe Rust (the
//! TDCALL instruction lives in the kernel). Facts and sources: shared/reference/snp-tdx-guest.md,
//! part B.
//!
//! * [`report`]: TDREPORT_STRUCT, the output of TDG.MR.REPORT (what a quote signs);
//!   [`quote`]: TD quotes (v4, v5) and the signatures binding them to a PCK key; `pck`
//!   (host, `std`): the PCK certificate chain up to Intel's root and its SGX extensions;
//!   `collateral` (host): the TCB status from Intel's collateral (the DCAP verdict);
//!   `verify` (host): what a broker accepts (status, debug, reference values, CCEL replay).
//! * [`tdcall`]: TDCALL leaves and TDG.VP.VMCALL sub-functions over the instruction seam
//!   [`tdcall::TdxCpu`], every answer checked; `model` (tests and the `model` feature only):
//!   the TDX module and VMM on the other side, honest or hostile.
//! * [`getquote`]: TDG.VP.VMCALL<GetQuote>'s buffer, Trustee's `tdx` evidence; its `model`:
//!   the quoting side a test stands up.
//! * [`hob`]: the TD HOB, the memory map the VMM hands a TD.
//! * [`measure`]: the measurement plan mapped to RTMRs (UEFI CC mapping).
//! * [`tdvf`]: the ROM's TDVF metadata and MRTD.
//! * [`wakeup`]: the MADT multiprocessor wakeup structure and the APs' page tables.

#[cfg(feature = "std")]
pub mod collateral;
pub mod getquote;
pub mod hob;
pub mod measure;
#[cfg(any(test, feature = "model"))]
pub mod model;
#[cfg(feature = "std")]
pub mod pck;
pub mod quote;
pub mod report;
pub mod tdcall;
pub mod tdvf;
#[cfg(test)]
mod tests;
#[cfg(feature = "std")]
pub mod verify;
pub mod wakeup;

use core::fmt;

/// Why a TDX structure was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdxError {
    /// A TDREPORT of another length than 1024 bytes.
    ReportSize(usize),
    /// A report type other than TDX (0x81).
    ReportType(u8),
}

impl fmt::Display for TdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TdxError::ReportSize(n) => write!(f, "a TDREPORT of {n} bytes (1024 expected)"),
            TdxError::ReportType(t) => write!(f, "report type {t:#04x} is not TDX's (0x81)"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TdxError {}
