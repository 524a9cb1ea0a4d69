//! TDCALL and TDG.VP.VMCALL (TDX module ABI; GHCI) as safe code over a one-call instruction
//! seam ([`TdxCpu`]): the register marshalling of each leaf and sub-function, and the check of
//! every answer. The TDX module is trusted for its own leaves; the VMM's answers to VMCALLs
//! are not, and a wrong one is a precise [`TdcallError`]. Facts: shared/reference/
//! snp-tdx-guest.md B1, B2.

use core::fmt;

/// The registers TDCALL reads and writes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the x86 registers, by name
pub struct Regs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// The instruction seam: TDCALL with these registers in, and out.
pub trait TdxCpu {
    /// Execute TDCALL.
    fn tdcall(&mut self, regs: &mut Regs);
}

/// TDCALL leaves.
pub mod leaf {
    /// TDG.VP.VMCALL.
    pub const VP_VMCALL: u64 = 0;
    /// TDG.VP.INFO.
    pub const VP_INFO: u64 = 1;
    /// TDG.MR.RTMR.EXTEND.
    pub const MR_RTMR_EXTEND: u64 = 2;
    /// TDG.VP.VEINFO.GET.
    pub const VP_VEINFO_GET: u64 = 3;
    /// TDG.MR.REPORT.
    pub const MR_REPORT: u64 = 4;
    /// TDG.MEM.PAGE.ACCEPT.
    pub const MEM_PAGE_ACCEPT: u64 = 6;
}

/// TDG.VP.VMCALL sub-functions (R11).
pub mod vmcall {
    /// Instruction.CPUID.
    pub const CPUID: u64 = 0x0A;
    /// Instruction.IO.
    pub const IO: u64 = 0x1E;
    /// Instruction.RDMSR.
    pub const RDMSR: u64 = 0x1F;
    /// Instruction.WRMSR.
    pub const WRMSR: u64 = 0x20;
    /// #VE.RequestMMIO.
    pub const MMIO: u64 = 0x30;
    /// MapGPA.
    pub const MAP_GPA: u64 = 0x10001;
    /// GetQuote.
    pub const GET_QUOTE: u64 = 0x10002;
}

/// TDX module completion statuses the guest acts on.
pub mod status {
    /// TDG.MEM.PAGE.ACCEPT: the page is mapped at another size (retry as 4 KiB pages).
    pub const PAGE_SIZE_MISMATCH: u64 = 0xC000_0B0B_0000_0001;
    /// TDG.MEM.PAGE.ACCEPT: the page was accepted already.
    pub const PAGE_ALREADY_ACCEPTED: u64 = 0x0000_0B0A_0000_0000;
    /// An operand is busy (retry).
    pub const OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
    /// VMCALL status (R10): retry (MapGPA: R11 holds where to resume).
    pub const VMCALL_RETRY: u64 = 1;
}

/// Why a TDCALL failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdcallError {
    /// The TDX module returned this completion status for `leaf`.
    Module {
        /// The leaf.
        leaf: u64,
        /// RAX.
        status: u64,
    },
    /// The guest-physical address width is neither 48 nor 52.
    Gpaw(u8),
    /// TDG.MEM.PAGE.ACCEPT found the page accepted already: the VMM added it twice.
    AlreadyAccepted(u64),
    /// The operand stayed busy.
    Busy(u64),
    /// The VMM answered the VMCALL `sub` with this error status (R10).
    Vmcall {
        /// The sub-function.
        sub: u64,
        /// R10.
        status: u64,
    },
    /// MapGPA's retry pointed outside the range or backwards, or made no progress.
    MapGpaRetry(u64),
    /// An access size other than 1, 2, 4 (8 for MMIO).
    AccessSize(u8),
    /// CPUID asked of the VMM for a leaf it is not trusted for.
    CpuidLeaf(u32),
    /// An address that is not in the shared half (MMIO) or not 4 KiB aligned.
    Address(u64),
}

impl fmt::Display for TdcallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TdcallError::Module { leaf, status } => {
                write!(f, "TDCALL leaf {leaf}: the TDX module returned status {status:#018x}")
            }
            TdcallError::Gpaw(w) => write!(f, "TDG.VP.INFO: a guest-physical address width of {w} (48 or 52 expected)"),
            TdcallError::AlreadyAccepted(gpa) => write!(
                f,
                "TDG.MEM.PAGE.ACCEPT of {gpa:#x}: accepted already (the VMM added the page twice, or kept it when it was made shared): refusing it"
            ),
            TdcallError::Busy(gpa) => write!(f, "TDG.MEM.PAGE.ACCEPT of {gpa:#x}: the page stayed busy"),
            TdcallError::Vmcall { sub, status } => {
                write!(f, "TDG.VP.VMCALL {sub:#x}: the VMM answered with status {status:#x}")
            }
            TdcallError::MapGpaRetry(at) => {
                write!(f, "MapGPA: the VMM asked to resume at {at:#x}, outside the range or without progress")
            }
            TdcallError::AccessSize(n) => write!(f, "an access of {n} bytes"),
            TdcallError::CpuidLeaf(l) => write!(f, "CPUID leaf {l:#x} is not a hypervisor leaf the VMM may answer"),
            TdcallError::Address(a) => write!(f, "address {a:#x} is not usable for this call"),
        }
    }
}

/// Why a #VE was raised (TDG.VP.VEINFO.GET), for the report the firmware makes before it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VeInfo {
    /// The VM-exit reason the #VE stands for.
    pub exit_reason: u32,
    /// Its exit qualification.
    pub qualification: u64,
    /// The guest-linear address (EPT violations).
    pub gla: u64,
    /// The guest-physical address (EPT violations).
    pub gpa: u64,
    /// The length of the instruction that raised it.
    pub instruction_length: u32,
}

impl fmt::Display for VeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.exit_reason {
            10 => "CPUID",
            12 => "HLT",
            30 => "port I/O",
            31 => "RDMSR",
            32 => "WRMSR",
            48 => "EPT violation (unaccepted or shared memory)",
            _ => "exit",
        };
        write!(
            f,
            "#VE for {what} (exit reason {}, qualification {:#x}, GPA {:#x}, GLA {:#x}, instruction length {})",
            self.exit_reason, self.qualification, self.gpa, self.gla, self.instruction_length
        )
    }
}

/// TDG.VP.VEINFO.GET: what the pending #VE is about (it must be read before another #VE).
pub fn ve_info(cpu: &mut dyn TdxCpu) -> Result<VeInfo, TdcallError> {
    let mut r = Regs { rax: leaf::VP_VEINFO_GET, ..Regs::default() };
    cpu.tdcall(&mut r);
    if r.rax != 0 {
        return Err(TdcallError::Module { leaf: leaf::VP_VEINFO_GET, status: r.rax });
    }
    Ok(VeInfo {
        exit_reason: r.rcx as u32,
        qualification: r.rdx,
        gla: r.r8,
        gpa: r.r9,
        instruction_length: r.r10 as u32,
    })
}

/// What TDG.VP.INFO reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdInfo {
    /// Guest-physical address width (48 or 52).
    pub gpaw: u8,
    /// TD ATTRIBUTES (bit 0 DEBUG, bit 28 SEPT_VE_DISABLE, ...).
    pub attributes: u64,
    /// vCPUs.
    pub num_vcpus: u32,
    /// This vCPU's index.
    pub vcpu_index: u32,
}

impl TdInfo {
    /// The shared bit: GPAW - 1.
    pub fn shared_bit(&self) -> u64 {
        1 << (self.gpaw - 1)
    }
}

/// TDG.VP.INFO, checked (GPAW 48 or 52).
pub fn vp_info(cpu: &mut dyn TdxCpu) -> Result<TdInfo, TdcallError> {
    let mut r = Regs { rax: leaf::VP_INFO, ..Regs::default() };
    cpu.tdcall(&mut r);
    if r.rax != 0 {
        return Err(TdcallError::Module { leaf: leaf::VP_INFO, status: r.rax });
    }
    let gpaw = (r.rcx & 0x3F) as u8;
    if gpaw != 48 && gpaw != 52 {
        return Err(TdcallError::Gpaw(gpaw));
    }
    Ok(TdInfo { gpaw, attributes: r.rdx, num_vcpus: r.r8 as u32, vcpu_index: r.r9 as u32 })
}

/// Busy retries of one accept.
const BUSY_RETRIES: u32 = 1000;

/// TDG.MEM.PAGE.ACCEPT of one page: Ok(true) accepted, Ok(false) size mismatch (accept it as
/// 4 KiB pages), Err otherwise ("already accepted" is a refusal).
fn accept_page(cpu: &mut dyn TdxCpu, gpa: u64, huge: bool) -> Result<bool, TdcallError> {
    for _ in 0..BUSY_RETRIES {
        let mut r = Regs { rax: leaf::MEM_PAGE_ACCEPT, rcx: gpa | u64::from(huge), ..Regs::default() };
        cpu.tdcall(&mut r);
        match r.rax {
            0 => return Ok(true),
            status::PAGE_SIZE_MISMATCH if huge => return Ok(false),
            status::PAGE_ALREADY_ACCEPTED => return Err(TdcallError::AlreadyAccepted(gpa)),
            s if s & 0xFFFF_FFFF_0000_0000 == status::OPERAND_BUSY => continue,
            status => return Err(TdcallError::Module { leaf: leaf::MEM_PAGE_ACCEPT, status }),
        }
    }
    Err(TdcallError::Busy(gpa))
}

/// Accept `[start, end)` (4 KiB aligned): 2 MiB pages where aligned, 4 KiB otherwise or on a
/// size mismatch. Returns the number of 4 KiB pages.
pub fn accept(cpu: &mut dyn TdxCpu, start: u64, end: u64) -> Result<u64, TdcallError> {
    if !start.is_multiple_of(4096) || !end.is_multiple_of(4096) || start > end {
        return Err(TdcallError::Address(start));
    }
    let mut at = start;
    while at < end {
        if at.is_multiple_of(2 << 20) && end - at >= 2 << 20 {
            if accept_page(cpu, at, true)? {
                at += 2 << 20;
                continue;
            }
            for page in (at..at + (2 << 20)).step_by(4096) {
                accept_page(cpu, page, false)?;
            }
            at += 2 << 20;
        } else {
            accept_page(cpu, at, false)?;
            at += 4096;
        }
    }
    Ok((end - start) / 4096)
}

/// TDG.MR.RTMR.EXTEND of RTMR `index` (0-3) with the 48-byte digest at `digest_gpa` (64-byte
/// aligned).
pub fn rtmr_extend(cpu: &mut dyn TdxCpu, index: u8, digest_gpa: u64) -> Result<(), TdcallError> {
    if index > 3 || !digest_gpa.is_multiple_of(64) {
        return Err(TdcallError::Address(digest_gpa));
    }
    let mut r = Regs { rax: leaf::MR_RTMR_EXTEND, rcx: digest_gpa, rdx: u64::from(index), ..Regs::default() };
    cpu.tdcall(&mut r);
    match r.rax {
        0 => Ok(()),
        status => Err(TdcallError::Module { leaf: leaf::MR_RTMR_EXTEND, status }),
    }
}

/// TDG.MR.REPORT: the TDREPORT binding the 64 bytes at `data_gpa` (64-byte aligned) into the
/// 1024 bytes at `report_gpa` (1024-byte aligned).
pub fn mr_report(cpu: &mut dyn TdxCpu, report_gpa: u64, data_gpa: u64) -> Result<(), TdcallError> {
    if !report_gpa.is_multiple_of(1024) {
        return Err(TdcallError::Address(report_gpa));
    }
    if !data_gpa.is_multiple_of(64) {
        return Err(TdcallError::Address(data_gpa));
    }
    let mut r = Regs { rax: leaf::MR_REPORT, rcx: report_gpa, rdx: data_gpa, r8: 0, ..Regs::default() };
    cpu.tdcall(&mut r);
    match r.rax {
        0 => Ok(()),
        status => Err(TdcallError::Module { leaf: leaf::MR_REPORT, status }),
    }
}

/// TDG.VP.VMCALL<GetQuote> on the shared buffer `[gpa, gpa + len)` (4 KiB aligned; `gpa` is
/// the private address, the shared bit is added here). The answer arrives in the buffer
/// ([`super::getquote::response`]).
pub fn get_quote(cpu: &mut dyn TdxCpu, gpa: u64, len: u64, shared_bit: u64) -> Result<(), TdcallError> {
    if !gpa.is_multiple_of(4096) || gpa & shared_bit != 0 || len == 0 {
        return Err(TdcallError::Address(gpa));
    }
    vmcall(cpu, vmcall::GET_QUOTE, [gpa | shared_bit, len, 0, 0]).map(|_| ())
}

/// A TDG.VP.VMCALL with R12-R15 = `args`; returns R11-R15 after a successful status.
fn vmcall_raw(cpu: &mut dyn TdxCpu, sub: u64, args: [u64; 4]) -> Result<(u64, Regs), TdcallError> {
    let mut r = Regs {
        rax: leaf::VP_VMCALL,
        rcx: 0xFC00, // R10-R15 visible to the VMM
        r10: 0,
        r11: sub,
        r12: args[0],
        r13: args[1],
        r14: args[2],
        r15: args[3],
        ..Regs::default()
    };
    cpu.tdcall(&mut r);
    if r.rax != 0 {
        return Err(TdcallError::Module { leaf: leaf::VP_VMCALL, status: r.rax });
    }
    Ok((r.r10, r))
}

fn vmcall(cpu: &mut dyn TdxCpu, sub: u64, args: [u64; 4]) -> Result<Regs, TdcallError> {
    match vmcall_raw(cpu, sub, args)? {
        (0, r) => Ok(r),
        (status, _) => Err(TdcallError::Vmcall { sub, status }),
    }
}

fn io_size(size: u8) -> Result<u64, TdcallError> {
    match size {
        1 | 2 | 4 => Ok(u64::from(size)),
        n => Err(TdcallError::AccessSize(n)),
    }
}

/// Port input through the VMM.
pub fn io_read(cpu: &mut dyn TdxCpu, port: u16, size: u8) -> Result<u32, TdcallError> {
    let r = vmcall(cpu, vmcall::IO, [io_size(size)?, 0, u64::from(port), 0])?;
    let mask = if size == 4 { u64::from(u32::MAX) } else { (1 << (8 * size)) - 1 };
    Ok((r.r11 & mask) as u32)
}

/// Port output through the VMM.
pub fn io_write(cpu: &mut dyn TdxCpu, port: u16, size: u8, value: u32) -> Result<(), TdcallError> {
    vmcall(cpu, vmcall::IO, [io_size(size)?, 1, u64::from(port), u64::from(value)]).map(|_| ())
}

/// MMIO read at the shared GPA `gpa` (the shared bit set: private memory is never MMIO).
pub fn mmio_read(cpu: &mut dyn TdxCpu, gpa: u64, size: u8, shared_bit: u64) -> Result<u64, TdcallError> {
    mmio_check(gpa, size, shared_bit)?;
    let r = vmcall(cpu, vmcall::MMIO, [u64::from(size), 0, gpa, 0])?;
    let mask = if size == 8 { u64::MAX } else { (1 << (8 * size)) - 1 };
    Ok(r.r11 & mask)
}

/// MMIO write at the shared GPA `gpa`.
pub fn mmio_write(cpu: &mut dyn TdxCpu, gpa: u64, size: u8, value: u64, shared_bit: u64) -> Result<(), TdcallError> {
    mmio_check(gpa, size, shared_bit)?;
    vmcall(cpu, vmcall::MMIO, [u64::from(size), 1, gpa, value]).map(|_| ())
}

fn mmio_check(gpa: u64, size: u8, shared_bit: u64) -> Result<(), TdcallError> {
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(TdcallError::AccessSize(size));
    }
    if gpa & shared_bit == 0 || !gpa.is_multiple_of(u64::from(size)) {
        return Err(TdcallError::Address(gpa));
    }
    Ok(())
}

/// RDMSR through the VMM.
pub fn rdmsr(cpu: &mut dyn TdxCpu, index: u32) -> Result<u64, TdcallError> {
    vmcall(cpu, vmcall::RDMSR, [u64::from(index), 0, 0, 0]).map(|r| r.r11)
}

/// WRMSR through the VMM.
pub fn wrmsr(cpu: &mut dyn TdxCpu, index: u32, value: u64) -> Result<(), TdcallError> {
    vmcall(cpu, vmcall::WRMSR, [u64::from(index), value, 0, 0]).map(|_| ())
}

/// CPUID of a hypervisor leaf (0x40000000-0x4FFFFFFF) through the VMM: the only leaves it is
/// trusted to answer (the TDX module answers the others).
pub fn hypervisor_cpuid(cpu: &mut dyn TdxCpu, leaf: u32, subleaf: u32) -> Result<[u32; 4], TdcallError> {
    if !(0x4000_0000..=0x4FFF_FFFF).contains(&leaf) {
        return Err(TdcallError::CpuidLeaf(leaf));
    }
    let r = vmcall(cpu, vmcall::CPUID, [u64::from(leaf), u64::from(subleaf), 0, 0])?;
    Ok([r.r12 as u32, r.r13 as u32, r.r14 as u32, r.r15 as u32])
}

/// Retries of MapGPA without progress before giving up (Linux's rule).
const MAP_GPA_RETRIES: u32 = 3;

/// MapGPA of `[start, start + len)` to shared (`shared` true: the shared bit set on the
/// address) or private, following the VMM's RETRY answers: the resume address must lie in
/// the range and must not go backwards; three retries without progress fail.
pub fn map_gpa(cpu: &mut dyn TdxCpu, start: u64, len: u64, shared: bool, shared_bit: u64) -> Result<(), TdcallError> {
    // The range must be whole pages of private addresses: [start, start + len) below the
    // shared bit, or "private" pages would name shared ones.
    let end = start.checked_add(len).filter(|end| *end <= shared_bit);
    let Some(end) = end.filter(|_| start.is_multiple_of(4096) && len.is_multiple_of(4096)) else {
        return Err(TdcallError::Address(start));
    };
    let mut at = start;
    let mut stalls = 0;
    while at < end {
        let gpa = if shared { at | shared_bit } else { at };
        match vmcall_raw(cpu, vmcall::MAP_GPA, [gpa, end - at, 0, 0])? {
            (0, _) => return Ok(()),
            (status::VMCALL_RETRY, r) => {
                let next = r.r11 & !shared_bit;
                if next < at || next >= end {
                    return Err(TdcallError::MapGpaRetry(r.r11));
                }
                if next == at {
                    stalls += 1;
                    if stalls >= MAP_GPA_RETRIES {
                        return Err(TdcallError::MapGpaRetry(r.r11));
                    }
                } else {
                    stalls = 0;
                }
                at = next;
            }
            (status, _) => return Err(TdcallError::Vmcall { sub: vmcall::MAP_GPA, status }),
        }
    }
    Ok(())
}
