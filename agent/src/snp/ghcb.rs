//! The GHCB protocol (AMD 56421, version 2) of an SEV-SNP guest, as safe code over a small
//! instruction seam ([`SnpCpu`]): the MSR protocol (SEV information, GHCB registration,
//! hypervisor features, page-state changes, termination) and the full-page exits (IOIO, MSR,
//! CPUID, MMIO, page-state change) built in a private copy of the GHCB page and checked when
//! the hypervisor answers. The hypervisor is not trusted: every answer is checked, and a wrong
//! one is a precise [`GhcbError`], never a guess.
//!
//! The kernel implements [`SnpCpu`] with the real instructions (write the GHCB MSR, VMGEXIT,
//! read it back; copy the private page image to the shared GHCB page and back around VMGEXIT,
//! so that nothing here ever reads memory the host can change while it is being read); host
//! tests and the test ROM implement it with a model of the hypervisor (see `model`).

use core::fmt;

/// The GHCB MSR.
pub const MSR_GHCB: u32 = 0xC001_0130;
/// The GHCB protocol version veilboot speaks (SNP needs 2).
pub const PROTOCOL_VERSION: u16 = 2;
/// GHCB page size.
pub const PAGE: usize = 4096;

/// Offsets in the GHCB page and their valid-bitmap bits (offset / 8).
pub mod offset {
    /// RAX.
    pub const RAX: usize = 0x1F8;
    /// RCX.
    pub const RCX: usize = 0x308;
    /// RDX.
    pub const RDX: usize = 0x310;
    /// RBX.
    pub const RBX: usize = 0x318;
    /// SW_EXITCODE.
    pub const SW_EXIT_CODE: usize = 0x390;
    /// SW_EXITINFO1.
    pub const SW_EXIT_INFO_1: usize = 0x398;
    /// SW_EXITINFO2.
    pub const SW_EXIT_INFO_2: usize = 0x3A0;
    /// SW_SCRATCH.
    pub const SW_SCRATCH: usize = 0x3A8;
    /// XCR0.
    pub const XCR0: usize = 0x3E8;
    /// The valid bitmap (16 bytes).
    pub const VALID_BITMAP: usize = 0x3F0;
    /// The shared buffer.
    pub const SHARED_BUFFER: usize = 0x800;
    /// Its size.
    pub const SHARED_BUFFER_SIZE: usize = 0x7F0;
    /// protocol_version (u16).
    pub const PROTOCOL_VERSION: usize = 0xFFA;
    /// ghcb_usage (u32).
    pub const USAGE: usize = 0xFFC;
}

/// NAE exit codes.
pub mod exit {
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// Port I/O.
    pub const IOIO: u64 = 0x7B;
    /// RDMSR / WRMSR.
    pub const MSR: u64 = 0x7C;
    /// MMIO read.
    pub const MMIO_READ: u64 = 0x8000_0001;
    /// MMIO write.
    pub const MMIO_WRITE: u64 = 0x8000_0002;
    /// Page state change.
    pub const PSC: u64 = 0x8000_0010;
    /// Guest request (a message to the AMD-SP).
    pub const GUEST_REQUEST: u64 = 0x8000_0011;
    /// Extended guest request (with the host's certificate table).
    pub const EXT_GUEST_REQUEST: u64 = 0x8000_0012;
    /// Hypervisor features.
    pub const HV_FEATURES: u64 = 0x8000_FFFD;
}

/// What went wrong talking to the hypervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GhcbError {
    /// An MSR-protocol answer with another response code than the request's.
    MsrResponse {
        /// The response code expected.
        expected: u16,
        /// The value the hypervisor left in the GHCB MSR.
        got: u64,
    },
    /// The hypervisor speaks no GHCB protocol version veilboot speaks (it needs 2).
    ProtocolVersion {
        /// Its minimum.
        min: u16,
        /// Its maximum.
        max: u16,
    },
    /// The C-bit the hypervisor reports differs from the one the firmware uses.
    CbitMismatch {
        /// The hypervisor's.
        hypervisor: u8,
        /// The firmware's (from the PSP-validated CPUID page).
        firmware: u8,
    },
    /// The hypervisor does not declare SNP support (HV features bit 0).
    NoSnpFeature(u64),
    /// The hypervisor did not register the GHCB at the GPA asked for.
    Registration {
        /// The GFN asked for.
        asked: u64,
        /// The GFN it answered.
        got: u64,
    },
    /// An MSR-protocol page-state change failed with this error code.
    MsrPsc(u32),
    /// The hypervisor asked to inject an exception (SW_EXITINFO1 = 1) on `exit`.
    EventInjection {
        /// The NAE exit.
        exit: u64,
        /// SW_EXITINFO2, in EVENTINJ format.
        event: u64,
    },
    /// The hypervisor reported an error (SW_EXITINFO1 = 2) on `exit`: the GHCB error code
    /// (1 not registered, 2 invalid usage, 3 invalid scratch area, 4 missing input, 5
    /// invalid input, 6 invalid event).
    Hypervisor {
        /// The NAE exit.
        exit: u64,
        /// SW_EXITINFO2.
        code: u64,
    },
    /// SW_EXITINFO1 holds neither 0, 1 nor 2.
    BadExitInfo {
        /// The NAE exit.
        exit: u64,
        /// SW_EXITINFO1.
        info: u64,
    },
    /// An output register came back without its valid bit.
    OutputNotValid {
        /// The NAE exit.
        exit: u64,
        /// The register's GHCB offset.
        offset: usize,
    },
    /// The hypervisor changed the page's protocol version or usage.
    PageHeader,
    /// A page-state change went wrong: what.
    Psc(&'static str),
    /// A page-state change the hypervisor failed with this error code (SW_EXITINFO2).
    PscFailed(u64),
    /// An I/O or MMIO access of a size other than 1, 2, 4 (or 8 for MMIO).
    AccessSize(u8),
    /// MMIO aimed at private memory, or outside what the guest may address.
    MmioAddress(u64),
}

impl fmt::Display for GhcbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GhcbError::MsrResponse { expected, got } => {
                write!(f, "GHCB MSR protocol: response {got:#x} is not of type {expected:#x}")
            }
            GhcbError::ProtocolVersion { min, max } => {
                write!(f, "the hypervisor speaks GHCB protocol {min}..={max}; veilboot needs {PROTOCOL_VERSION}")
            }
            GhcbError::CbitMismatch { hypervisor, firmware } => write!(
                f,
                "the hypervisor reports C-bit {hypervisor}, the PSP-validated CPUID page says {firmware}: refusing to trust either"
            ),
            GhcbError::NoSnpFeature(bits) => {
                write!(f, "the hypervisor's features {bits:#x} lack SEV-SNP (bit 0)")
            }
            GhcbError::Registration { asked, got } => {
                write!(f, "the hypervisor registered GHCB GFN {got:#x}, not {asked:#x}")
            }
            GhcbError::MsrPsc(code) => write!(f, "page state change (MSR protocol) failed with error {code:#x}"),
            GhcbError::EventInjection { exit, event } => {
                write!(f, "NAE exit {exit:#x}: the hypervisor asked to inject exception {event:#x}")
            }
            GhcbError::Hypervisor { exit, code } => {
                write!(f, "NAE exit {exit:#x}: the hypervisor reported GHCB error {code}")
            }
            GhcbError::BadExitInfo { exit, info } => {
                write!(f, "NAE exit {exit:#x}: SW_EXITINFO1 {info:#x} is not a GHCB result")
            }
            GhcbError::OutputNotValid { exit, offset } => {
                write!(f, "NAE exit {exit:#x}: the hypervisor did not mark output {offset:#x} valid")
            }
            GhcbError::PageHeader => write!(f, "the hypervisor changed the GHCB's protocol version or usage"),
            GhcbError::Psc(why) => write!(f, "page state change: {why}"),
            GhcbError::PscFailed(code) => write!(f, "page state change failed with hypervisor error {code:#x}"),
            GhcbError::AccessSize(n) => write!(f, "an access of {n} bytes"),
            GhcbError::MmioAddress(gpa) => write!(f, "MMIO at {gpa:#x}: not a shared device address"),
        }
    }
}

/// The instruction seam: what only SNP hardware (or a model of its hypervisor) does.
pub trait SnpCpu {
    /// Write `request` to the GHCB MSR, VMGEXIT, and return what the MSR holds afterwards.
    fn msr_protocol(&mut self, request: u64) -> u64;
    /// A full-page exit: put `page` (a private copy) into the registered shared GHCB page,
    /// with the GHCB MSR holding its GPA and SW_SCRATCH pointing at the shared buffer,
    /// VMGEXIT, and copy the shared page back into `page`.
    fn vmgexit(&mut self, page: &mut GhcbPage);
    /// PVALIDATE the 4 KiB or 2 MiB (`huge`) page at guest-physical `gpa`, which must lie in
    /// the range the kernel allows (guest RAM handed to it, never the firmware's own image or
    /// page tables: the kernel checks and stops otherwise).
    fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> Pvalidate;
    /// Read the first and last byte of the just validated 4 KiB page at `gpa` (the
    /// CVE-2025-38560 mitigation: evict stale cache lines of the page's old mapping).
    fn touch(&mut self, gpa: u64);
    /// The guest-physical address of the registered GHCB page (SW_SCRATCH points into its
    /// shared buffer).
    fn ghcb_gpa(&self) -> u64;
    /// Copy `bytes` to the shared page at `gpa` (one of the firmware's guest-request pages;
    /// the kernel refuses any other address).
    fn write_shared(&mut self, gpa: u64, bytes: &[u8]);
    /// Copy the shared page at `gpa` (as for `write_shared`) into `out`.
    fn read_shared(&mut self, gpa: u64, out: &mut [u8]);
}

/// What PVALIDATE returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pvalidate {
    /// EAX = 0; `changed` is !CF: false means the page already had that validation state.
    Done {
        /// Did the validation state change?
        changed: bool,
    },
    /// EAX = 1: bad input (alignment, address).
    FailInput,
    /// EAX = 6: the RMP entry is 4 KiB but a 2 MiB validation was asked (retry as 4 KiB).
    SizeMismatch,
    /// Any other code.
    Other(u32),
}

/// A private image of the GHCB page.
#[derive(Clone)]
pub struct GhcbPage(pub [u8; PAGE]);

impl Default for GhcbPage {
    fn default() -> Self {
        GhcbPage([0; PAGE])
    }
}

impl fmt::Debug for GhcbPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GhcbPage").field("sw_exit_code", &self.u64_at(offset::SW_EXIT_CODE)).finish_non_exhaustive()
    }
}

impl GhcbPage {
    /// The u64 at `at`.
    pub fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Set the u64 at `at` and mark it valid.
    pub fn set(&mut self, at: usize, value: u64) {
        self.0[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let bit = at / 8;
        self.0[offset::VALID_BITMAP + bit / 8] |= 1 << (bit % 8);
    }

    /// Is the field at `at` marked valid?
    pub fn is_valid(&self, at: usize) -> bool {
        let bit = at / 8;
        self.0[offset::VALID_BITMAP + bit / 8] & (1 << (bit % 8)) != 0
    }

    /// Clear the page and start a request for `exit` with its two information words.
    pub fn start(&mut self, exit: u64, info1: u64, info2: u64) {
        self.0.fill(0);
        self.set(offset::SW_EXIT_CODE, exit);
        self.set(offset::SW_EXIT_INFO_1, info1);
        self.set(offset::SW_EXIT_INFO_2, info2);
        self.0[offset::PROTOCOL_VERSION..offset::PROTOCOL_VERSION + 2].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        self.0[offset::USAGE..offset::USAGE + 4].fill(0);
    }

    /// The shared buffer.
    pub fn shared_buffer(&mut self) -> &mut [u8] {
        &mut self.0[offset::SHARED_BUFFER..offset::SHARED_BUFFER + offset::SHARED_BUFFER_SIZE]
    }

    /// The result of the exit, checked: Ok, or why not.
    pub fn result(&self, exit: u64) -> Result<(), GhcbError> {
        if self.0[offset::PROTOCOL_VERSION..offset::PROTOCOL_VERSION + 2] != PROTOCOL_VERSION.to_le_bytes()
            || self.0[offset::USAGE..offset::USAGE + 4] != [0; 4]
        {
            return Err(GhcbError::PageHeader);
        }
        let info1 = self.u64_at(offset::SW_EXIT_INFO_1);
        match info1 & 0xFFFF_FFFF {
            0 => Ok(()),
            1 => Err(GhcbError::EventInjection { exit, event: self.u64_at(offset::SW_EXIT_INFO_2) }),
            2 => Err(GhcbError::Hypervisor { exit, code: self.u64_at(offset::SW_EXIT_INFO_2) }),
            _ => Err(GhcbError::BadExitInfo { exit, info: info1 }),
        }
    }

    /// An output register, which the hypervisor must have marked valid.
    pub fn output(&self, exit: u64, at: usize) -> Result<u64, GhcbError> {
        if !self.is_valid(at) {
            return Err(GhcbError::OutputNotValid { exit, offset: at });
        }
        Ok(self.u64_at(at))
    }
}

/// MSR-protocol requests and responses (GHCBInfo in bits 11:0).
pub mod msr {
    /// SEV information request / response.
    pub const SEV_INFO_REQ: u64 = 0x002;
    /// SEV information response.
    pub const SEV_INFO_RESP: u16 = 0x001;
    /// GHCB GPA registration request.
    pub const REGISTER_REQ: u64 = 0x012;
    /// GHCB GPA registration response.
    pub const REGISTER_RESP: u16 = 0x013;
    /// Page state change request.
    pub const PSC_REQ: u64 = 0x014;
    /// Page state change response.
    pub const PSC_RESP: u16 = 0x015;
    /// Hypervisor feature request.
    pub const HV_FEATURES_REQ: u64 = 0x080;
    /// Hypervisor feature response.
    pub const HV_FEATURES_RESP: u16 = 0x081;
    /// Termination request.
    pub const TERMINATE_REQ: u64 = 0x100;
}

fn msr_response(value: u64, expected: u16) -> Result<u64, GhcbError> {
    if value & 0xFFF != u64::from(expected) {
        return Err(GhcbError::MsrResponse { expected, got: value });
    }
    Ok(value >> 12)
}

/// Ask for the SEV information and check it: protocol 2 supported, and the C-bit the
/// hypervisor reports equal to `cbit` (the firmware's, from the PSP-validated CPUID page).
pub fn check_sev_info(cpu: &mut dyn SnpCpu, cbit: u8) -> Result<(), GhcbError> {
    let data = msr_response(cpu.msr_protocol(msr::SEV_INFO_REQ), msr::SEV_INFO_RESP)?;
    // GHCBData: [63:48] max, [47:32] min protocol, [31:24] C-bit (bits of the whole value).
    let (max, min, reported) = ((data >> 36) as u16, (data >> 20) as u16, (data >> 12) as u8);
    if !(min..=max).contains(&PROTOCOL_VERSION) {
        return Err(GhcbError::ProtocolVersion { min, max });
    }
    if reported != cbit {
        return Err(GhcbError::CbitMismatch { hypervisor: reported, firmware: cbit });
    }
    Ok(())
}

/// The hypervisor's feature bitmap; it must declare SNP.
pub fn hv_features(cpu: &mut dyn SnpCpu) -> Result<u64, GhcbError> {
    let features = msr_response(cpu.msr_protocol(msr::HV_FEATURES_REQ), msr::HV_FEATURES_RESP)?;
    if features & 1 == 0 {
        return Err(GhcbError::NoSnpFeature(features));
    }
    Ok(features)
}

/// Register the GHCB at guest-physical `gpa` (4 KiB aligned); the answer must echo its GFN.
pub fn register(cpu: &mut dyn SnpCpu, gpa: u64) -> Result<(), GhcbError> {
    let gfn = gpa >> 12;
    let got = msr_response(cpu.msr_protocol(msr::REGISTER_REQ | (gfn << 12)), msr::REGISTER_RESP)?;
    if got != gfn {
        return Err(GhcbError::Registration { asked: gfn, got });
    }
    Ok(())
}

/// Page state of a page-state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Private (encrypted, validated by the guest).
    Private = 1,
    /// Shared with the host.
    Shared = 2,
}

/// One 4 KiB page-state change through the MSR protocol (before a GHCB exists).
pub fn msr_page_state(cpu: &mut dyn SnpCpu, gpa: u64, state: PageState) -> Result<(), GhcbError> {
    let request = msr::PSC_REQ | ((gpa >> 12) << 12) | ((state as u64) << 52);
    let data = msr_response(cpu.msr_protocol(request), msr::PSC_RESP)?;
    match (data >> 20) as u32 {
        0 => Ok(()),
        code => Err(GhcbError::MsrPsc(code)),
    }
}

/// The termination request value for reason `code` of veilboot's reason set.
pub fn terminate_request(code: u8) -> u64 {
    /// Reason set for veilboot (0 and 1 are the specification's and Linux's).
    const REASON_SET: u64 = 0x7;
    msr::TERMINATE_REQ | (REASON_SET << 12) | (u64::from(code) << 16)
}

/// Port I/O and MSRs through the GHCB.
pub struct Ghcb<'a> {
    cpu: &'a mut dyn SnpCpu,
    page: GhcbPage,
}

impl<'a> Ghcb<'a> {
    /// Calls through `cpu`'s registered GHCB.
    pub fn new(cpu: &'a mut dyn SnpCpu) -> Ghcb<'a> {
        Ghcb { cpu, page: GhcbPage::default() }
    }

    /// The instruction seam, for the memory operations that mix exits and PVALIDATE.
    pub fn cpu(&mut self) -> &mut dyn SnpCpu {
        self.cpu
    }

    /// SW_SCRATCH: the GPA of the registered GHCB's shared buffer, where the data goes.
    fn set_scratch(&mut self) {
        let at = self.cpu.ghcb_gpa() + offset::SHARED_BUFFER as u64;
        self.page.set(offset::SW_SCRATCH, at);
    }

    fn call(&mut self) -> Result<(), GhcbError> {
        let exit = self.page.u64_at(offset::SW_EXIT_CODE);
        self.cpu.vmgexit(&mut self.page);
        self.page.result(exit)
    }

    fn io_info(port: u16, size: u8, input: bool) -> Result<u64, GhcbError> {
        let size_bit = match size {
            1 => 1 << 4,
            2 => 1 << 5,
            4 => 1 << 6,
            other => return Err(GhcbError::AccessSize(other)),
        };
        // The port in bits 31:16; the address size (bits 9:7) the instruction's in long mode,
        // A64 (bit 9), as the CPU reports an intercepted IN or OUT there and Linux's #VC handler
        // does for its own.
        Ok((u64::from(port) << 16) | (1 << 9) | size_bit | u64::from(input))
    }

    /// OUT of `size` bytes (1, 2 or 4).
    pub fn io_write(&mut self, port: u16, size: u8, value: u32) -> Result<(), GhcbError> {
        let info = Self::io_info(port, size, false)?;
        self.page.start(exit::IOIO, info, 0);
        self.page.set(offset::RAX, u64::from(value));
        self.call()
    }

    /// IN of `size` bytes (1, 2 or 4).
    pub fn io_read(&mut self, port: u16, size: u8) -> Result<u32, GhcbError> {
        let info = Self::io_info(port, size, true)?;
        self.page.start(exit::IOIO, info, 0);
        self.call()?;
        let mask = if size == 4 { u64::from(u32::MAX) } else { (1u64 << (8 * size)) - 1 };
        Ok((self.page.output(exit::IOIO, offset::RAX)? & mask) as u32)
    }

    /// INS of `buf.len()` bytes from `port` (a string IN of byte size, REP), through the
    /// shared buffer: one exit per 2032 bytes instead of one per byte.
    pub fn io_read_bytes(&mut self, port: u16, buf: &mut [u8]) -> Result<(), GhcbError> {
        for chunk in buf.chunks_mut(offset::SHARED_BUFFER_SIZE) {
            // STR (bit 2) and REP (bit 3); SW_EXITINFO2 is the count.
            let info = Self::io_info(port, 1, true)? | (1 << 2) | (1 << 3);
            self.page.start(exit::IOIO, info, chunk.len() as u64);
            self.set_scratch();
            self.call()?;
            chunk.copy_from_slice(&self.page.shared_buffer()[..chunk.len()]);
        }
        Ok(())
    }

    /// RDMSR.
    pub fn rdmsr(&mut self, index: u32) -> Result<u64, GhcbError> {
        self.page.start(exit::MSR, 0, 0);
        self.page.set(offset::RCX, u64::from(index));
        self.call()?;
        let lo = self.page.output(exit::MSR, offset::RAX)? & 0xFFFF_FFFF;
        let hi = self.page.output(exit::MSR, offset::RDX)? & 0xFFFF_FFFF;
        Ok((hi << 32) | lo)
    }

    /// WRMSR.
    pub fn wrmsr(&mut self, index: u32, value: u64) -> Result<(), GhcbError> {
        self.page.start(exit::MSR, 1, 0);
        self.page.set(offset::RCX, u64::from(index));
        self.page.set(offset::RAX, value & 0xFFFF_FFFF);
        self.page.set(offset::RDX, value >> 32);
        self.call()
    }

    /// CPUID through the hypervisor: untrusted, for hypervisor leaves only (the PSP-validated
    /// CPUID page answers the others).
    pub fn cpuid(&mut self, leaf: u32, subleaf: u32) -> Result<[u32; 4], GhcbError> {
        self.page.start(exit::CPUID, 0, 0);
        self.page.set(offset::RAX, u64::from(leaf));
        self.page.set(offset::RCX, u64::from(subleaf));
        self.page.set(offset::XCR0, 1);
        self.call()?;
        let mut out = [0u32; 4];
        for (o, at) in out.iter_mut().zip([offset::RAX, offset::RBX, offset::RCX, offset::RDX]) {
            *o = self.page.output(exit::CPUID, at)? as u32;
        }
        Ok(out)
    }

    /// MMIO read of `size` bytes (1, 2, 4, 8) at shared `gpa` (`shared_ok` says whether the
    /// address is shared device memory; private memory is never MMIO).
    pub fn mmio_read(&mut self, gpa: u64, size: u8, shared_ok: &dyn Fn(u64) -> bool) -> Result<u64, GhcbError> {
        Self::mmio_checks(gpa, size, shared_ok)?;
        self.page.start(exit::MMIO_READ, gpa, u64::from(size));
        self.set_scratch();
        self.call()?;
        let mut v = [0u8; 8];
        v[..usize::from(size)].copy_from_slice(&self.page.shared_buffer()[..usize::from(size)]);
        Ok(u64::from_le_bytes(v))
    }

    /// MMIO write of `size` bytes (1, 2, 4, 8) at shared `gpa`.
    pub fn mmio_write(
        &mut self,
        gpa: u64,
        size: u8,
        value: u64,
        shared_ok: &dyn Fn(u64) -> bool,
    ) -> Result<(), GhcbError> {
        Self::mmio_checks(gpa, size, shared_ok)?;
        self.page.start(exit::MMIO_WRITE, gpa, u64::from(size));
        self.set_scratch();
        self.page.shared_buffer()[..usize::from(size)].copy_from_slice(&value.to_le_bytes()[..usize::from(size)]);
        self.call()
    }

    fn mmio_checks(gpa: u64, size: u8, shared_ok: &dyn Fn(u64) -> bool) -> Result<(), GhcbError> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(GhcbError::AccessSize(size));
        }
        if !gpa.is_multiple_of(u64::from(size)) || !shared_ok(gpa) {
            return Err(GhcbError::MmioAddress(gpa));
        }
        Ok(())
    }

    /// A (extended) guest-request exit: the request and response pages, and for the extended
    /// form the certificate buffer (GPA in RAX, pages in RBX). Returns SW_EXITINFO2 (low half:
    /// the AMD-SP's status, high half: the hypervisor's error); with INVALID_LEN the hypervisor
    /// puts the pages it needs in RBX.
    pub fn guest_request_exit(
        &mut self,
        code: u64,
        request: u64,
        response: u64,
        certs: Option<(u64, u64)>,
    ) -> Result<u64, GhcbError> {
        self.page.start(code, request, response);
        if let Some((gpa, pages)) = certs {
            self.page.set(offset::RAX, gpa);
            self.page.set(offset::RBX, pages);
        }
        self.call()?;
        Ok(self.page.u64_at(offset::SW_EXIT_INFO_2))
    }

    /// Change the state of `pages` (GFN, 2 MiB page?) to `state` with page-state-change
    /// exits, following the hypervisor's progress through the descriptor: it may stop early
    /// (the guest calls again), but it must never move backwards, report an error, or touch
    /// the reserved field.
    pub fn page_state_change(&mut self, pages: &[(u64, bool)], state: PageState) -> Result<(), GhcbError> {
        for batch in pages.chunks(MAX_PSC_ENTRIES) {
            self.psc_batch(batch, state)?;
        }
        Ok(())
    }

    fn psc_batch(&mut self, batch: &[(u64, bool)], state: PageState) -> Result<(), GhcbError> {
        let end = batch.len() as u16 - 1;
        let mut desc = [0u8; 8 + 8 * MAX_PSC_ENTRIES];
        desc[2..4].copy_from_slice(&end.to_le_bytes());
        for (i, (gfn, huge)) in batch.iter().enumerate() {
            let entry = (gfn << 12) | ((state as u64) << 52) | (u64::from(*huge) << 56);
            desc[8 + 8 * i..16 + 8 * i].copy_from_slice(&entry.to_le_bytes());
        }
        let mut cur = 0u16;
        // Each call must make progress (a further entry, or further pages of a 2 MiB entry): a
        // hypervisor that makes none is refused rather than retried for ever.
        loop {
            self.page.start(exit::PSC, 0, 0);
            self.set_scratch();
            let len = 8 + 8 * batch.len();
            self.page.shared_buffer()[..len].copy_from_slice(&desc[..len]);
            self.call().map_err(|e| match e {
                GhcbError::Hypervisor { code, .. } => GhcbError::PscFailed(code),
                other => other,
            })?;
            let info2 = self.page.u64_at(offset::SW_EXIT_INFO_2);
            if info2 != 0 {
                return Err(GhcbError::PscFailed(info2));
            }
            let answer = &self.page.0[offset::SHARED_BUFFER..offset::SHARED_BUFFER + 8 + 8 * batch.len()];
            let new_cur = u16::from_le_bytes([answer[0], answer[1]]);
            let new_end = u16::from_le_bytes([answer[2], answer[3]]);
            if answer[4..8] != [0; 4] {
                return Err(GhcbError::Psc("the hypervisor wrote the descriptor's reserved field"));
            }
            if new_end != end {
                return Err(GhcbError::Psc("the hypervisor changed the descriptor's last entry"));
            }
            if new_cur < cur {
                return Err(GhcbError::Psc("the hypervisor moved the descriptor's current entry backwards"));
            }
            // Entries may only carry the hypervisor's progress within their page (cur_page,
            // bits 11:0: up to 512 in a 2 MiB entry, 1 in a 4 KiB one); their GFN, operation
            // and size are the guest's.
            let mut progress = new_cur > cur;
            for (i, (_, huge)) in batch.iter().enumerate().skip(usize::from(new_cur.min(end))) {
                let at = 8 + 8 * i;
                let mine = u64::from_le_bytes(desc[at..at + 8].try_into().expect("8 bytes"));
                let theirs = u64::from_le_bytes(answer[at..at + 8].try_into().expect("8 bytes"));
                let pages = if *huge { 512 } else { 1 };
                if mine & !0xFFF != theirs & !0xFFF || (theirs & 0xFFF) < (mine & 0xFFF) || (theirs & 0xFFF) > pages {
                    return Err(GhcbError::Psc("the hypervisor changed an entry's page, operation or size"));
                }
                progress |= theirs != mine;
                desc[at..at + 8].copy_from_slice(&theirs.to_le_bytes());
            }
            if new_cur > end {
                return Ok(());
            }
            if !progress {
                return Err(GhcbError::Psc("the hypervisor made no progress through the descriptor"));
            }
            cur = new_cur;
            desc[..2].copy_from_slice(&cur.to_le_bytes());
        }
    }
}

/// Entries of one page-state-change descriptor in the shared buffer ((2032 - 8) / 8).
pub const MAX_PSC_ENTRIES: usize = 253;
