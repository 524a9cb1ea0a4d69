//! The TDCALL and TDG.VP.VMCALL numbers the model answers by: its own table of leaf numbers,
//! VMCALL sub-functions and completion statuses, written from the specifications and not from
//! the firmware's `tdcall::{leaf, vmcall, status}` or `getquote` constants (issue 37: a
//! misreading shared by both sides of a test is invisible). `tdx_abi_agrees_with_the_firmware`
//! (tdx/tests.rs) checks the two tables name by name.
//!
//! Sources:
//! * Intel TDX Module v1.5 ABI Specification (348551): the TDCALL leaf numbers (TDG.VP.VMCALL
//!   0, TDG.VP.INFO 1, TDG.MR.RTMR.EXTEND 2, TDG.VP.VEINFO.GET 3, TDG.MR.REPORT 4,
//!   TDG.MEM.PAGE.ACCEPT 6) and the completion status layout: bits 63:32 the status class
//!   (TDX_SUCCESS 0, TDX_OPERAND_INVALID 0xC0000100, TDX_OPERAND_BUSY 0x80000200,
//!   TDX_NO_VALID_VE_INFO 0xC0000704, TDX_PAGE_ALREADY_ACCEPTED 0x00000B0A,
//!   TDX_PAGE_SIZE_MISMATCH 0xC0000B0B), bits 31:0 the operand details (RCX = operand id 1);
//!   as also transcribed in Linux `arch/x86/include/asm/shared/tdx.h` and KVM's `tdx_errno.h`.
//!   TDG.MEM.PAGE.ACCEPT reports a size mismatch on its RCX operand, i.e. 0xC0000B0B_00000001,
//!   the value td-shim (`tdx-tdcall/src/tdx.rs`, TDCALL_STATUS_PAGE_SIZE_MISMATCH) and edk2's
//!   TDX reset vector (class 0xC0000B0B in the high half) act on.
//! * Intel TDX Guest-Hypervisor Communication Interface v1.5 (348552), TDG.VP.VMCALL: the
//!   sub-function numbers in R11 (the instruction ones are the VM-exit reasons: CPUID 10, IO
//!   30, RDMSR 31, WRMSR 32, #VE.RequestMMIO 48; MapGPA 0x10001, GetQuote 0x10002), the R10
//!   statuses (SUCCESS 0, RETRY 1, INVALID_OPERAND 0x8000000000000000) and GetQuote's buffer
//!   statuses (SUCCESS 0, IN_FLIGHT 0xFFFFFFFFFFFFFFFF, ERROR 0x8000000000000000,
//!   SERVICE_UNAVAILABLE 0x8000000000000001), as also transcribed in Linux
//!   `arch/x86/coco/tdx/tdx.c` and `drivers/virt/coco/tdx-guest/tdx-guest.c`.

/// TDCALL leaf numbers (RAX on input).
pub mod leaf {
    /// TDG.VP.VMCALL.
    pub const TDG_VP_VMCALL: u64 = 0;
    /// TDG.VP.INFO.
    pub const TDG_VP_INFO: u64 = 1;
    /// TDG.MR.RTMR.EXTEND.
    pub const TDG_MR_RTMR_EXTEND: u64 = 2;
    /// TDG.VP.VEINFO.GET.
    pub const TDG_VP_VEINFO_GET: u64 = 3;
    /// TDG.MR.REPORT.
    pub const TDG_MR_REPORT: u64 = 4;
    /// TDG.MEM.PAGE.ACCEPT.
    pub const TDG_MEM_PAGE_ACCEPT: u64 = 6;
}

/// TDG.VP.VMCALL sub-functions (R11 on input).
pub mod subfunction {
    /// Instruction.CPUID (VM-exit reason 10).
    pub const CPUID: u64 = 10;
    /// Instruction.IO (VM-exit reason 30).
    pub const IO: u64 = 30;
    /// Instruction.RDMSR (VM-exit reason 31).
    pub const RDMSR: u64 = 31;
    /// Instruction.WRMSR (VM-exit reason 32).
    pub const WRMSR: u64 = 32;
    /// #VE.RequestMMIO (VM-exit reason 48, EPT violation).
    pub const REQUEST_MMIO: u64 = 48;
    /// MapGPA.
    pub const MAP_GPA: u64 = 0x10001;
    /// GetQuote.
    pub const GET_QUOTE: u64 = 0x10002;
}

/// TDX module completion statuses (RAX on output): the class in bits 63:32.
pub mod status {
    /// The operand-details id of RCX (bits 31:0 of a status about an operand).
    pub const OPERAND_ID_RCX: u64 = 1;
    /// TDX_SUCCESS.
    pub const SUCCESS: u64 = 0;
    /// TDX_OPERAND_INVALID.
    pub const OPERAND_INVALID: u64 = 0xC000_0100 << 32;
    /// TDX_OPERAND_BUSY.
    pub const OPERAND_BUSY: u64 = 0x8000_0200 << 32;
    /// TDX_NO_VALID_VE_INFO.
    pub const NO_VALID_VE_INFO: u64 = 0xC000_0704 << 32;
    /// TDX_PAGE_ALREADY_ACCEPTED.
    pub const PAGE_ALREADY_ACCEPTED: u64 = 0x0000_0B0A << 32;
    /// TDX_PAGE_SIZE_MISMATCH.
    pub const PAGE_SIZE_MISMATCH: u64 = 0xC000_0B0B << 32;
}

/// TDG.VP.VMCALL statuses (R10 on output).
pub mod vmcall_status {
    /// TDG.VP.VMCALL_SUCCESS.
    pub const SUCCESS: u64 = 0;
    /// TDG.VP.VMCALL_RETRY.
    pub const RETRY: u64 = 1;
    /// TDG.VP.VMCALL_INVALID_OPERAND.
    pub const INVALID_OPERAND: u64 = 1 << 63;
}

/// GetQuote buffer statuses (the u64 at offset 8 of the shared buffer).
pub mod quote_status {
    /// GET_QUOTE_SUCCESS.
    pub const SUCCESS: u64 = 0;
    /// GET_QUOTE_IN_FLIGHT.
    pub const IN_FLIGHT: u64 = u64::MAX;
    /// GET_QUOTE_ERROR.
    pub const ERROR: u64 = 1 << 63;
    /// GET_QUOTE_SERVICE_UNAVAILABLE.
    pub const SERVICE_UNAVAILABLE: u64 = (1 << 63) | 1;
}
