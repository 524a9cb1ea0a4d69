//! AMD SEV-SNP guest: the platform behind the pipeline when SEV_STATUS reports SNP.
//!
//! Bring-up ([`Snp::init`], before any console exists): the C-bit position comes from the
//! PSP-validated CPUID page (boot.S put it in the page tables from the same page; the two must
//! agree), the hypervisor's SEV information must report GHCB protocol 2 and the same C-bit, and
//! its features must include SNP; any disagreement terminates the guest through the GHCB MSR
//! protocol with a veilboot reason code (no console is reachable yet). Then the GHCB page is
//! made shared (page-state change, C-bit cleared, TLB flushed), zeroed and registered, and from
//! then on port I/O is an IOIO exit through it (crate::arch::cpu::port routes there) and CPUID
//! answers come from the CPUID page (crate::arch::cpu::cpuid). A #VC the firmware did not expect
//! is answered only for CPUID (RustCrypto's feature detection executes the instruction); any
//! other cause terminates the guest.
//!
//! Memory: RAM becomes usable through [`accept_memory`](Platform::accept_memory) (page-state
//! change to private, PVALIDATE, touch: `veil_agent::snp::memory`); before Linux runs, every
//! other RAM page is validated too (above 4 GiB through a window mapping one GiB at a time,
//! `crate::arch::paging::map_high_gib`), the firmware's SNP pages are reserved in the e820 map, the
//! CC blob (secrets and CPUID pages) goes into setup_data, and VMPCK0 is wiped from the secrets
//! page. The -kernel, -initrd and -append blobs are checked against the SEV hash table
//! (`kernel-hashes=on`) before use.

pub mod insn;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use spin::Mutex;
use veil_agent::fwcfg::{E820Entry, E820Kind};
use veil_agent::kbs::client::Relay;
use veil_agent::kbs::evidence::Tee;
use veil_agent::keys::MasterSecret;
use veil_agent::snp::attest::{self, RequestPages};
use veil_agent::snp::evidence::CertType;
use veil_agent::snp::ghcb::{self, Ghcb, GhcbPage, PageState, Pvalidate, SnpCpu};
use veil_agent::snp::guest_msg::{Channel, MsgType};
use veil_agent::snp::hashes::KernelHashes;
use veil_agent::snp::memory;
use veil_agent::snp::pages::{self, CpuidPage};
use veil_agent::snp::requests;
use veil_agent::tpm::measure::Measurement;
use zeroize::Zeroizing;

use super::rot::{RootOfTrust, Sealed, Unopened, Unsealed};
use super::seam::{self, HandoffExtras, Platform};
use crate::arch::interrupts::Frame;
use crate::devices::volume::BootVolume;
use crate::error::{BootError, BootErrorKind};

/// The secrets page (SEV metadata type SNP_SECRETS, boot.S).
pub const SECRETS_PAGE: u64 = 0x90_0000;
/// The CPUID page (type CPUID).
pub const CPUID_PAGE: u64 = 0x90_1000;
/// The SEV hash table page (type SNP_KERNEL_HASHES; the footer table's hash-table GPA).
pub const HASHES_PAGE: u64 = 0x90_3000;
/// The GHCB page: not in the launch, made shared at bring-up.
pub const GHCB_PAGE: u64 = 0x90_4000;
/// The guest-request pages (shared at bring-up): request, response, and four pages for the
/// host's certificate table.
const REQUEST_PAGES: RequestPages =
    RequestPages { request: 0x90_5000, response: 0x90_6000, certs: Some((0x90_7000, 4)) };
/// End of the shared guest-request pages.
const REQUEST_PAGES_END: u64 = 0x90_B000;
/// Pages reserved for the firmware's SNP structures in the map Linux gets: secrets, CPUID,
/// (the TD HOB's page), hash table, GHCB, guest-request pages.
const SNP_PAGES: (u64, u64) = (SECRETS_PAGE, REQUEST_PAGES_END - SECRETS_PAGE);
/// What the launch validated (SEV metadata SNP_SEC_MEM, secrets, CPUID, hash table) besides the
/// ROM: never validated again (e820 RAM over it is left out, or refused over the ROM).
const LAUNCH_VALIDATED: [(u64, u64); 3] = [(0x80_0000, 0x90_2000), (HASHES_PAGE, 0x90_4000), (0xA0_0000, 0xC0_0000)];

/// Why the guest terminates before it has a console (reason codes of veilboot's reason set 7,
/// which the host sees in its logs).
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
pub enum Termination {
    /// SEV or SEV-ES without SNP: not supported.
    SevEsWithoutSnp = 1,
    /// The CPUID page is malformed or states no usable C-bit.
    CpuidPage = 2,
    /// The C-bit in the page tables, the CPUID page and the hypervisor's answer disagree.
    Cbit = 3,
    /// The hypervisor's GHCB protocol, features or registration answer is unusable.
    Hypervisor = 4,
    /// The GHCB page could not be made shared.
    GhcbPage = 5,
    /// A #VC the firmware does not handle (only CPUID is answered).
    UnexpectedVc = 6,
    /// The boot failed after the console was up (the reason is on the console).
    BootFailed = 7,
}

/// Ask the hypervisor to terminate the guest, with `reason`.
pub fn terminate(reason: Termination) -> ! {
    loop {
        insn::write_ghcb_msr(ghcb::terminate_request(reason as u8));
        insn::vmgexit();
    }
}

/// The instruction seam on SNP: the real GHCB MSR, VMGEXIT and PVALIDATE.
struct Hw;

impl SnpCpu for Hw {
    fn msr_protocol(&mut self, request: u64) -> u64 {
        insn::write_ghcb_msr(request);
        insn::vmgexit();
        insn::read_ghcb_msr()
    }

    fn vmgexit(&mut self, page: &mut GhcbPage) {
        let shared = GHCB_PAGE as *mut u8;
        // SAFETY: GHCB_PAGE is the firmware's shared GHCB page, mapped (4 KiB, C-bit clear) for
        // the firmware's lifetime; only this seam uses it, under GHCB_LOCK. The hypervisor may
        // write it during VMGEXIT, so it is copied to and from the private image and never
        // referenced as a Rust object.
        unsafe { core::ptr::copy_nonoverlapping(page.0.as_ptr(), shared, ghcb::PAGE) };
        insn::write_ghcb_msr(GHCB_PAGE);
        insn::vmgexit();
        // SAFETY: as above.
        unsafe { core::ptr::copy_nonoverlapping(shared, page.0.as_mut_ptr(), ghcb::PAGE) };
    }

    fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> Pvalidate {
        let len = if huge { 2 << 20 } else { 4096 };
        let window = HIGH_GIB.load(Ordering::SeqCst);
        let mapped = gpa + len <= 0x1_0000_0000
            || (window != 0 && gpa >> 30 == window - 1 && (gpa + len - 1) >> 30 == window - 1);
        if !mapped || LAUNCH_VALIDATED.iter().any(|&(a, b)| gpa < b && a < gpa + len) {
            // The firmware's own memory (image, stacks, page tables, SNP pages) was validated by
            // the launch, and RAM above 4 GiB is mapped only in the GiB the high window maps: a
            // caller asking for either is a firmware bug.
            crate::arch::exit::fail(format_args!(
                "PVALIDATE asked for {gpa:#x}+{len:#x}, outside the RAM the firmware hands over"
            ));
        }
        // SAFETY: identity mapped guest RAM outside the firmware's image, stacks and page
        // tables; callers validate fresh RAM or rescind pages they are about to share.
        match unsafe { insn::pvalidate(gpa, huge, validate) } {
            (0, unchanged) => Pvalidate::Done { changed: !unchanged },
            (1, _) => Pvalidate::FailInput,
            (6, _) => Pvalidate::SizeMismatch,
            (code, _) => Pvalidate::Other(code),
        }
    }

    fn touch(&mut self, gpa: u64) {
        // SAFETY: the page was just validated and is identity mapped RAM; reading its first
        // and last byte evicts stale cache lines (CVE-2025-38560).
        unsafe {
            core::ptr::read_volatile(gpa as *const u8);
            core::ptr::read_volatile((gpa + 4095) as *const u8);
        }
    }

    fn ghcb_gpa(&self) -> u64 {
        GHCB_PAGE
    }

    fn write_shared(&mut self, gpa: u64, bytes: &[u8]) {
        let at = shared_request_page(gpa, bytes.len());
        // SAFETY: one of the firmware's shared guest-request pages (checked), mapped without
        // the C-bit for the firmware's lifetime; only ciphertext is written there.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len()) };
    }

    fn read_shared(&mut self, gpa: u64, out: &mut [u8]) {
        let at = shared_request_page(gpa, out.len());
        // SAFETY: as for write_shared; the host may change the page, so it is copied out and
        // parsed from the private copy.
        unsafe { core::ptr::copy_nonoverlapping(at, out.as_mut_ptr(), out.len()) };
    }
}

/// `[gpa, gpa + len)` inside the shared guest-request pages, as a pointer; anything else is a
/// firmware bug.
fn shared_request_page(gpa: u64, len: usize) -> *mut u8 {
    if gpa < REQUEST_PAGES.request || gpa.saturating_add(len as u64) > REQUEST_PAGES_END {
        crate::arch::exit::fail(format_args!("guest request: {gpa:#x}+{len:#x} is not a shared guest-request page"));
    }
    gpa as *mut u8
}

/// Set once the GHCB works and the CPUID page is parsed.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The parsed CPUID page (leaked at bring-up).
static CPUID: AtomicPtr<CpuidPage> = AtomicPtr::new(core::ptr::null_mut());
/// The GiB above 4 GiB the high window maps, plus one (0: none); Hw::pvalidate and touch reach
/// no other RAM above 4 GiB.
static HIGH_GIB: AtomicU64 = AtomicU64::new(0);
/// One GHCB call at a time.
static GHCB_LOCK: Mutex<()> = Mutex::new(());

/// The boot is failing: let the fatal message through even if it fails inside a GHCB
/// operation (between exits, never during one: the failing code runs in the guest, not in
/// VMGEXIT, and there is one CPU).
pub fn release_ghcb_for_fatal() {
    if GHCB_LOCK.is_locked() {
        // SAFETY: single CPU, and the holder is the failing code path itself, which never
        // returns (crate::arch::exit::fail exits); no exit is in flight (see above).
        unsafe { GHCB_LOCK.force_unlock() };
    }
}

/// Run `f` with the GHCB. Re-entered from the exception handler while a call is in flight,
/// there is no GHCB to use: None.
fn with_ghcb<T>(f: impl FnOnce(&mut Ghcb<'_>) -> T) -> Option<T> {
    let _guard = GHCB_LOCK.try_lock()?;
    let mut hw = Hw;
    Some(f(&mut Ghcb::new(&mut hw)))
}

/// The CPUID page's answer, once SNP is up (None: not SNP, use the instruction).
pub fn cpuid(leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
    let page = CPUID.load(Ordering::Acquire);
    if page.is_null() {
        return None;
    }
    // SAFETY: set once from a leaked Box and never freed or changed.
    let page = unsafe { &*page };
    // Leaves the AMD-SP did not put in the page read as zeros (Linux does the same).
    Some(page.lookup(leaf, subleaf).unwrap_or([0; 4]))
}

/// CPUID answered from the CPUID page once SNP is up.
static CPUID_FROM_PAGE: crate::arch::cpu::CpuidSource = crate::arch::cpu::CpuidSource { lookup: cpuid };

/// Port I/O and MMIO as GHCB exits.
static GHCB_ROUTE: crate::arch::cpu::port::HostRoute =
    crate::arch::cpu::port::HostRoute { port_in, port_out, port_in_bytes: Some(port_in_bytes), mmio_read, mmio_write };

/// A failing boot: the GHCB is released for the fatal message, and the host learns of the
/// failure from a termination request (SNP has no debug-exit device).
static FAILURE_HOOKS: crate::arch::exit::FailureHooks =
    crate::arch::exit::FailureHooks { before_message: release_ghcb_for_fatal, after_exit_port: failed_boot };

fn failed_boot() {
    if active() {
        terminate(Termination::BootFailed);
    }
}

/// Port input through the GHCB (IOIO exit). A hypervisor that refuses is fatal.
pub fn port_in(port: u16, size: u8) -> u32 {
    match with_ghcb(|g| g.io_read(port, size)) {
        Some(Ok(v)) => v,
        Some(Err(_)) => ghcb_failed(),
        None => 0xFFFF_FFFF, // re-entered: reads as a missing device
    }
}

/// Port output through the GHCB (IOIO exit).
pub fn port_out(port: u16, size: u8, value: u32) {
    if let Some(Err(_)) = with_ghcb(|g| g.io_write(port, size, value)) {
        ghcb_failed();
    }
}

/// String port input through the GHCB's shared buffer.
pub fn port_in_bytes(port: u16, buf: &mut [u8]) {
    if let Some(Err(_)) = with_ghcb(|g| g.io_read_bytes(port, buf)) {
        ghcb_failed();
    }
}

/// MMIO read through the GHCB (the hypervisor performs it; the firmware never maps device
/// memory). `addr` must be device memory: never RAM.
pub fn mmio_read(addr: u64, size: u8) -> u64 {
    match with_ghcb(|g| g.mmio_read(addr, size, &is_device_memory)) {
        Some(Ok(v)) => v,
        Some(Err(_)) => ghcb_failed(),
        None => u64::MAX,
    }
}

/// MMIO write through the GHCB.
pub fn mmio_write(addr: u64, size: u8, value: u64) {
    if let Some(Err(_)) = with_ghcb(|g| g.mmio_write(addr, size, value, &is_device_memory)) {
        ghcb_failed();
    }
}

/// The 32-bit PCI hole (ECAM, BARs, IOAPIC, LAPIC): the only MMIO the firmware does. RAM is
/// never MMIO (an MMIO exit aimed at private memory would let the host read or write it).
fn is_device_memory(addr: u64) -> bool {
    (0xB000_0000..0xFF00_0000).contains(&addr)
}

/// A GHCB exit the hypervisor refused: the console itself may be what failed, so the
/// hypervisor learns only the reason code.
fn ghcb_failed() -> ! {
    ACTIVE.store(false, Ordering::SeqCst);
    crate::arch::cpu::port::unroute();
    terminate(Termination::Hypervisor)
}

/// Set while the platform detection probes for SEV-ES/SNP (#VC on CPUID).
pub static PROBING_SEV: AtomicBool = AtomicBool::new(false);

/// The #VC handler (installed by `platform::init` before detection).
pub static VC_HANDLER: crate::arch::interrupts::Handler = crate::arch::interrupts::Handler { handle: handle_vc };

/// #VC: while detection probes, SEV-ES without SNP (SNP is known from SEV_STATUS before any
/// CPUID): no console is reachable without a GHCB, so the hypervisor is asked to terminate
/// the guest. Otherwise answer CPUID (exit code 0x72, opcode 0F A2) from the CPUID page and
/// resume; anything else terminates the guest.
pub fn handle_vc(frame: &mut Frame) -> bool {
    if PROBING_SEV.load(Ordering::SeqCst) {
        terminate(Termination::SevEsWithoutSnp);
    }
    const CPUID_EXIT: u64 = 0x72;
    // SAFETY: RIP points at the faulting instruction in the firmware's mapped text (the
    // firmware runs no other code); two bytes are read.
    let opcode = unsafe { core::ptr::read_volatile(frame.rip as *const [u8; 2]) };
    if frame.error_code == CPUID_EXIT
        && opcode == [0x0F, 0xA2]
        && let Some(r) = cpuid(frame.rax as u32, frame.rcx as u32)
    {
        (frame.rax, frame.rbx, frame.rcx, frame.rdx) = (r[0].into(), r[1].into(), r[2].into(), r[3].into());
        frame.rip += 2;
        return true;
    }
    terminate(Termination::UnexpectedVc)
}

/// The SEV-SNP platform.
pub struct Snp {
    /// RAM validated so far (start, end), besides what the launch validated.
    validated: Vec<(u64, u64)>,
    /// Guest messages on VMPCK0, once used.
    channel: Option<Channel>,
    /// The COMMITTED_TCB of this launch's first attestation report, once asked for.
    committed_tcb: Option<u64>,
}

fn page<const N: usize>(gpa: u64) -> &'static mut [u8; N] {
    // SAFETY: callers pass one of the firmware's SNP pages (0x900000-0x904FFF): private,
    // identity mapped, used by nothing else.
    unsafe { &mut *(gpa as *mut [u8; N]) }
}

impl Snp {
    /// Bring the platform up (see the module documentation); terminates the guest on failure.
    pub fn init() -> Snp {
        let Ok(cpuid_page) = CpuidPage::parse(page::<4096>(CPUID_PAGE)) else { terminate(Termination::CpuidPage) };
        let Ok(cbit) = cpuid_page.cbit() else { terminate(Termination::CpuidPage) };
        if insn::page_table_cbit().is_some_and(|b| b != cbit) {
            terminate(Termination::Cbit);
        }
        match ghcb::check_sev_info(&mut Hw, cbit) {
            Ok(()) => {}
            Err(ghcb::GhcbError::CbitMismatch { .. }) => terminate(Termination::Cbit),
            Err(_) => terminate(Termination::Hypervisor),
        }
        if ghcb::hv_features(&mut Hw).is_err() {
            terminate(Termination::Hypervisor);
        }
        // The GHCB page was not part of the launch (never validated): it only has to become
        // shared in the RMP and in the page tables, then be zeroed and registered.
        if ghcb::msr_page_state(&mut Hw, GHCB_PAGE, PageState::Shared).is_err() {
            terminate(Termination::GhcbPage);
        }
        crate::arch::paging::clear_cbit_4k(GHCB_PAGE, insn::page_table_cbit());
        page::<4096>(GHCB_PAGE).fill(0);
        if ghcb::register(&mut Hw, GHCB_PAGE).is_err() {
            terminate(Termination::Hypervisor);
        }
        // The guest-request pages: like the GHCB page, never validated, shared from the start.
        for gpa in (REQUEST_PAGES.request..REQUEST_PAGES_END).step_by(4096) {
            if ghcb::msr_page_state(&mut Hw, gpa, PageState::Shared).is_err() {
                terminate(Termination::GhcbPage);
            }
            crate::arch::paging::clear_cbit_4k(gpa, insn::page_table_cbit());
            page::<4096>(gpa).fill(0);
        }
        CPUID.store(Box::into_raw(Box::new(cpuid_page)), Ordering::Release);
        crate::arch::cpu::set_cpuid_source(&CPUID_FROM_PAGE);
        crate::arch::cpu::port::route(&GHCB_ROUTE);
        crate::arch::exit::set_failure_hooks(&FAILURE_HOOKS);
        ACTIVE.store(true, Ordering::SeqCst);
        Snp { validated: Vec::new(), channel: None, committed_tcb: None }
    }

    /// The guest-message channel on VMPCK0 (opened on first use; the firmware is the first
    /// user of VMPCK0 in this launch, so its sequence numbers start at 0).
    fn channel(&mut self) -> Result<&mut Channel, BootError> {
        if self.channel.is_none() {
            // Borrowed from the secrets page and copied once, into the channel's box.
            self.channel = Some(Channel::new(pages::vmpck_ref(page::<4096>(SECRETS_PAGE), 0)?, 0, 0));
        }
        Ok(self.channel.as_mut().expect("just opened"))
    }

    fn request(&mut self, msg_type: MsgType, payload: &[u8]) -> Result<attest::Answer, BootError> {
        let channel = self.channel()?;
        with_ghcb(|g| attest::guest_request(g, channel, msg_type, 1, payload, REQUEST_PAGES))
            .ok_or(BootErrorKind::Snp(veil_agent::snp::SnpError::RequestRefused("the GHCB is busy")))?
            .map_err(|e| BootErrorKind::SnpAttest(e).into())
    }

    /// An attestation report carrying `report_data` (VMPL 0, signed by the VCEK or whatever
    /// key the host set up), and the host's certificates if it offers them.
    pub fn report(&mut self, report_data: &[u8; 64]) -> Result<(Vec<u8>, Vec<(CertType, Vec<u8>)>), BootError> {
        let payload = requests::report_request(report_data, 0, requests::SigningKey::Default);
        let answer = self.request(MsgType::ReportRequest, &payload)?;
        let report = requests::report_response(&answer.payload)?.to_vec();
        let certs = match answer.certs {
            Some(table) => attest::parse_cert_table(&table).map_err(BootErrorKind::SnpAttest)?,
            None => Vec::new(),
        };
        Ok((report, certs))
    }

    /// The sealing key of this launch for the guest fields `fields` at the TCB_VERSION `tcb`
    /// (agent::snp::seal explains the choice of fields and TCB).
    pub fn sealing_key(&mut self, fields: u64, tcb: u64) -> Result<Zeroizing<[u8; 32]>, BootError> {
        let payload = requests::key_request(fields, veil_agent::snp::seal::KEY_VMPL, 0, tcb);
        let answer = self.request(MsgType::KeyRequest, &payload)?;
        Ok(requests::key_response(&answer.payload)?)
    }

    /// The AMD-SP's committed TCB, from the report of [`RootOfTrust::launch_host_data`], which
    /// the key path reads before any unseal or seal (boot::keysource::launch_binding).
    fn committed_tcb(&self) -> Result<u64, BootError> {
        self.committed_tcb.ok_or(
            BootErrorKind::Snp(veil_agent::snp::SnpError::Report("no report read: COMMITTED_TCB unknown")).into(),
        )
    }

    /// Validate `[start, end)`, never a page the launch validated (its own pages and the
    /// ROM: the page-state change asked for first would let the host replace them, and CF = 1
    /// would not show it; `veil_agent::snp::memory::check_not_launched`).
    fn validate(&mut self, start: u64, end: u64) -> Result<u64, BootError> {
        let [a, b, c] = LAUNCH_VALIDATED;
        memory::check_not_launched(start, end, &[a, b, c, crate::arch::layout::rom_range()])
            .map_err(|l| BootErrorKind::OverLaunch("SEV-SNP: validating", (start, end), l))?;
        let pages = with_ghcb(|g| memory::validate(g, start, end))
            .ok_or(BootErrorKind::Snp(veil_agent::snp::SnpError::RequestRefused("the GHCB is busy")))??;
        self.validated.push((start, end));
        Ok(pages)
    }
}

/// Make `[start, start + len)` (validated heap memory, 2 MiB aligned) shared for device DMA,
/// in the specified order: PVALIDATE rescind and page-state change to shared
/// (`veil_agent::snp::memory::share`), then the C-bit cleared in its 2 MiB mappings and the
/// TLB flushed, then zeroed through the shared mapping.
pub fn share_dma(start: u64, len: u64) -> Result<(), BootError> {
    let end = start + len;
    if !start.is_multiple_of(2 << 20) || !len.is_multiple_of(2 << 20) {
        return Err(BootErrorKind::SnpMemory(memory::MemoryError::Range { start, end }).into());
    }
    with_ghcb(|g| memory::share(g, start, end))
        .ok_or(BootErrorKind::Snp(veil_agent::snp::SnpError::RequestRefused("the GHCB is busy")))??;
    for at in (start..end).step_by(2 << 20) {
        crate::arch::paging::set_bit_2m(at, insn::page_table_cbit(), false);
    }
    crate::arch::paging::flush_tlb();
    // SAFETY: the range is the caller's (leaked heap memory), now shared and mapped without
    // the C-bit; zeroing it removes whatever the host could read of its old plaintext view.
    unsafe { core::ptr::write_bytes(start as *mut u8, 0, len as usize) };
    crate::log!(
        "snp: {} MiB at {start:#x} made shared for virtio DMA (rescinded, converted, C-bit cleared, zeroed)",
        len >> 20
    );
    Ok(())
}

/// Give the DMA ranges back to the guest before the hand-off, in the specified order (as Linux
/// makes memory private): the C-bit set in their 2 MiB mappings and the TLB flushed, then the
/// page-state change to private and PVALIDATE (`veil_agent::snp::memory::validate`). Linux then
/// gets them as RAM like the rest; nothing does DMA after this.
fn unshare_dma(snp: &mut Snp) -> Result<u64, BootError> {
    let ranges = seam::take_shared_for_dma();
    let mut pages = 0;
    for (start, end) in ranges {
        for at in (start..end).step_by(2 << 20) {
            crate::arch::paging::set_bit_2m(at, insn::page_table_cbit(), true);
        }
        crate::arch::paging::flush_tlb();
        pages += snp.validate(start, end)?;
    }
    Ok(pages)
}

impl Snp {
    /// Trustee's `snp` evidence: a report binding `report_data` and the host's certificates.
    fn evidence(&mut self, report_data: &[u8]) -> Result<veil_agent::json::Value, BootError> {
        let mut data = [0u8; 64];
        data[..report_data.len().min(64)].copy_from_slice(&report_data[..report_data.len().min(64)]);
        let (report, certs) = self.report(&data)?;
        crate::log!(
            "snp: attestation report of {} bytes (measurement {}..), {} certificates from the host",
            report.len(),
            hex::encode(&report[0x90..0x98]),
            certs.len()
        );
        let chain = if certs.is_empty() { None } else { Some(certs.as_slice()) };
        Ok(veil_agent::snp::evidence::evidence_json(&report, chain)?)
    }
}

/// The AMD-SP as the root of trust: the launch digest covers the firmware and HOST_DATA the
/// boot target, so nothing is measured at run time; reports are the evidence; the key it
/// derives for this launch seals the `veil-snp` token.
impl RootOfTrust for Snp {
    fn name(&self) -> &'static str {
        "snp"
    }

    fn measures(&self) -> bool {
        false
    }

    fn measure(&mut self, _m: &Measurement<'_>) -> Result<(), BootError> {
        Ok(())
    }

    fn launch_host_data(&mut self) -> Result<Option<(&'static str, Vec<u8>)>, BootError> {
        let (report, _) = self.report(&[0u8; 64])?;
        self.committed_tcb = veil_agent::snp::seal::committed_tcb(&report);
        Ok(Some(("HOST_DATA", report[0xC0..0xE0].to_vec())))
    }

    fn evidence_name(&self) -> &'static str {
        "snp evidence"
    }

    fn remote_release(
        &mut self,
        relay: &mut dyn Relay,
        resource: &str,
        init_data: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>, BootError> {
        super::rot::release_with_evidence(Tee::Snp, init_data, relay, resource, &mut |rd| self.evidence(rd))
    }

    /// Each `veil-snp` token with the key of the TCB it was sealed at, if that TCB is not above
    /// the AMD-SP's committed TCB (else refused by name: a rolled-back AMD-SP); a token of an
    /// older TCB, or of the format without the TCB, opens and is to be sealed again.
    fn unseal(&mut self, boot: &BootVolume) -> Result<Option<Unsealed>, Unopened> {
        use veil_agent::snp::seal;
        let tokens = seal::find(boot.volume.json());
        if tokens.is_empty() {
            crate::log!("snp: veil-boot has no veil-snp token (first boot)");
            return Ok(None);
        }
        let bound = boot.binding().and_then(|binding| Ok((binding, self.committed_tcb()?)));
        let (binding, committed) = bound.map_err(|e| alloc::vec![(String::from("veil-boot"), e)])?;
        let mut why = Vec::new();
        for t in tokens {
            let opened = t.and_then(|t| {
                let key = t
                    .key_tcb(committed)
                    .and_then(|tcb| self.sealing_key(t.fields, tcb).map_err(|e| alloc::format!("{e}")));
                match key.and_then(|key| t.open(&key, &binding)) {
                    Ok(secret) => Ok((t, secret)),
                    Err(e) => Err(alloc::format!("token {}: {e}", t.number)),
                }
            });
            match opened {
                Ok((t, secret)) => {
                    // A stale token is sealed again (keysource), which logs the committed TCB.
                    crate::log!(
                        "snp: master secret unsealed from veil-boot token {} with this launch's derived key (VCEK root, measurement, policy and the TCB it was sealed at; bound to this volume and bundle)",
                        t.number
                    );
                    return Ok(Some(Unsealed { secret, stale: t.stale(committed) }));
                }
                Err(e) => {
                    crate::log!("snp: veil-boot {e}");
                    why.push((String::from("veil-snp"), BootErrorKind::Token(e).into()));
                }
            }
        }
        Err(why)
    }

    /// A `veil-snp` token with the key of the committed TCB (the highest the AMD-SP derives).
    fn seal(&mut self, boot: &BootVolume, secret: &MasterSecret) -> Result<Option<Sealed>, BootError> {
        use veil_agent::snp::seal;
        let tcb = self.committed_tcb()?;
        let key = self.sealing_key(seal::KEY_FIELDS, tcb)?;
        let mut nonce = [0u8; 12];
        crate::arch::random::fill(&mut nonce);
        Ok(Some(Sealed {
            token: seal::token_json(&key, nonce, secret, &boot.binding()?, tcb),
            replaces: seal::find(boot.volume.json()).into_iter().flatten().map(|t| t.number).collect(),
            how: alloc::format!("with this launch's derived key at the committed TCB {tcb:#018x}"),
        }))
    }

    fn publish(&mut self, _acpi: Option<&crate::devices::acpi::Tables>) -> Result<(), BootError> {
        Ok(()) // no event log; VMPCK0 is wiped in before_jump
    }
}

/// Is the SNP platform up (GHCB registered)?
pub fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

impl Platform for Snp {
    fn name(&self) -> &'static str {
        "sev-snp"
    }

    fn console_write(&mut self, bytes: &[u8]) {
        crate::arch::serial::write_bytes(bytes);
    }

    fn accept_memory(&mut self, start: u64, len: u64) -> Result<(), BootError> {
        let end = start.saturating_add(len);
        if end > 0x1_0000_0000 {
            return Err(BootErrorKind::UnsupportedRam(end).into());
        }
        self.validate(start, end).map(|_| ())
    }

    fn verify_direct_boot(
        &mut self,
        setup: &[u8],
        kernel: &[u8],
        initrd: &[u8],
        cmdline: &[u8],
    ) -> Result<(), BootError> {
        let table = KernelHashes::parse(page::<4096>(HASHES_PAGE))?;
        table.verify_split(setup, kernel, initrd, cmdline)?;
        crate::log!("snp: kernel, initrd and command line match the SEV hash table (measured direct boot)");
        Ok(())
    }

    fn prepare_handoff(&mut self, e820: &[E820Entry]) -> Result<HandoffExtras, BootError> {
        let mut taken: Vec<(u64, u64)> = LAUNCH_VALIDATED.to_vec();
        taken.push((SNP_PAGES.0, SNP_PAGES.0 + SNP_PAGES.1));
        // The legacy VGA and BIOS hole: reserved for Linux (crate::boot::linux), and possibly MMIO.
        taken.push((0xA_0000, 0x10_0000));
        taken.extend(seam::shared_for_dma());
        taken.extend(self.validated.iter().copied());
        let mut pages = 0;
        // RAM above 4 GiB is validated through a window that maps one GiB at a time.
        for e in e820.iter().filter(|e| e.kind == E820Kind::Ram) {
            // The window maps a GiB at its own address: above 128 TiB that is no canonical
            // address (4-level paging). Beyond any SEV-SNP guest's RAM.
            if e.end() > 1 << 47 {
                return Err(BootErrorKind::UnsupportedRam(e.end()).into());
            }
            for (a, b) in veil_agent::memmap::subtract(e.addr, e.end(), &taken) {
                for (x, y, gib) in veil_agent::memmap::by_high_gib(a, b) {
                    if gib.is_some() {
                        crate::arch::paging::map_high_gib(gib, insn::page_table_cbit());
                    }
                    HIGH_GIB.store(gib.map_or(0, |g| g + 1), Ordering::SeqCst);
                    pages += self.validate(x, y)?;
                }
            }
        }
        HIGH_GIB.store(0, Ordering::SeqCst);
        crate::arch::paging::map_high_gib(None, None);
        crate::log!("snp: validated the remaining {} MiB of guest RAM for Linux", pages >> 8);
        let cc_blob = pages::cc_blob_setup_data(SECRETS_PAGE, CPUID_PAGE);
        crate::log!("snp: CC blob for Linux (setup_data type 7): {}", hex::encode(cc_blob));
        // The DMA ranges are still shared (left out above): they become private and validated
        // again in before_jump, once nothing does DMA, and Linux gets them as RAM.
        let reserve = alloc::vec![SNP_PAGES];
        #[cfg(feature = "snp-model")]
        if insn::model().is_some_and(|m| (m.withhold_cc_blob)()) {
            return Ok(HandoffExtras { reserve, setup_data: Vec::new() });
        }
        Ok(HandoffExtras { reserve, setup_data: cc_blob.to_vec() })
    }

    fn is_confidential(&self) -> bool {
        true
    }

    fn root_of_trust(&mut self) -> Option<&mut dyn RootOfTrust> {
        Some(self)
    }

    fn before_jump(&mut self) -> Result<(), BootError> {
        // The OS area's sequence number for VMPCK0 records how far the firmware used it (the
        // key itself is wiped below, so no one can use it again).
        if let Some(c) = self.channel.take() {
            let count = c.count();
            let p = page::<4096>(SECRETS_PAGE);
            p[0xA0..0xA4].copy_from_slice(&(count as u32).to_le_bytes());
            p[0xB8..0xBC].copy_from_slice(&((count >> 32) as u32).to_le_bytes());
        }
        pages::wipe_vmpck(page::<4096>(SECRETS_PAGE), 0);
        crate::log!("snp: VMPCK0 wiped from the secrets page; Linux attests with VMPCK1 (sev-guest.vmpck_id=1)");
        let pages = unshare_dma(self)?;
        if pages > 0 {
            crate::log!("snp: the {} MiB shared for DMA made private and validated again for Linux", pages >> 8);
        }
        Ok(())
    }
}
