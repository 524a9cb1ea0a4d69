//! Intel TDX: the platform behind the pipeline when CPUID leaf 0x21 says "IntelTDX".
//!
//! Bring-up ([`Tdx::init`]): port I/O goes through TDG.VP.VMCALL<Instruction.IO> from the start
//! (the instructions would raise #VE), TDG.VP.INFO gives the guest-physical address width and
//! so the shared bit, and the TD HOB the VMM wrote (TDVF metadata: 0x902000) gives the memory
//! map: which RAM the TD must accept (what the VMM added is known from the firmware's own TDVF
//! sections, `ADDED`, not from the HOB). MMIO goes through
//! VMCALL<#VE.RequestMMIO> at the shared alias, never by dereferencing device memory.
//!
//! Memory: RAM becomes usable through TDG.MEM.PAGE.ACCEPT (2 MiB, 4 KiB on a size mismatch;
//! "already accepted" is a refusal: the VMM added a page twice; so is a range to accept that
//! overlaps what the VMM added at launch, or that the TD HOB does not list as unaccepted);
//! before Linux runs, every page the e820 map gives Linux as RAM is either in a TDVF section the
//! VMM added or accepted, so RAM the HOB does not list as unaccepted stops the boot. DMA
//! memory is converted to shared with MapGPA (its retry rule in agent) after the shared bit is
//! set in its mapping.

pub mod insn;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use veil_agent::fwcfg::{E820Entry, E820Kind};
use veil_agent::kbs::client::Relay;
use veil_agent::kbs::evidence::Tee;
use veil_agent::keys::MasterSecret;
use veil_agent::tdx::hob::{self, Resource, ResourceKind};
use veil_agent::tdx::tdcall::{self, Regs, TdInfo, TdcallError, TdxCpu};
use veil_agent::tdx::{getquote, wakeup};
use veil_agent::tpm::Bank;
use veil_agent::tpm::eventlog::EventLog;
use veil_agent::tpm::measure::{self, Measurement};
use zeroize::Zeroizing;

use super::rot::{RootOfTrust, Sealed, Unopened, Unsealed};
use super::seam::{self, HandoffExtras, Platform};
use crate::devices::volume::BootVolume;
use crate::error::{At, BootError, BootErrorKind};

/// The TD HOB page (TDVF metadata type TD_HOB, boot.S).
pub const TD_HOB: u64 = 0x90_2000;
/// The CCEL table's log area.
const CCEL_AREA: usize = 64 * 1024;
/// What the VMM added to the TD (TDVF metadata: TempMem and the TD HOB): accepted already.
const ADDED: [(u64, u64); 3] = [(0x80_0000, 0x90_0000), (TD_HOB, TD_HOB + 0x1000), (0xA0_0000, 0xC0_0000)];

/// The instruction seam on TDX.
struct Hw;

impl TdxCpu for Hw {
    fn tdcall(&mut self, regs: &mut Regs) {
        insn::tdcall(regs);
    }
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static SHARED_BIT: AtomicU64 = AtomicU64::new(0);

/// Is the TDX platform up?
pub fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// A VMCALL the VMM refused: there may be no console left to say so; stop.
fn vmcall_failed(_e: TdcallError) -> ! {
    crate::arch::cpu::halt_forever()
}

/// The #VE handler (installed by `platform::init`): it explains, the exception report follows
/// (nothing here resolves a #VE: I/O goes through explicit TDG.VP.VMCALLs, so a #VE is a
/// firmware bug or memory the VMM took away).
pub static VE_HANDLER: crate::arch::interrupts::Handler = crate::arch::interrupts::Handler {
    handle: |_| {
        report_ve();
        false
    },
};

/// Log why the pending #VE was raised (TDG.VP.VEINFO.GET), if this is a TD.
pub fn report_ve() {
    if !active() {
        return;
    }
    match tdcall::ve_info(&mut Hw) {
        Ok(ve) => crate::log!("tdx: {ve}"),
        Err(e) => crate::log!("tdx: #VE without information: {e}"),
    }
}

/// Port I/O and MMIO as TDG.VP.VMCALLs.
static VMCALL_ROUTE: crate::arch::cpu::port::HostRoute =
    crate::arch::cpu::port::HostRoute { port_in, port_out, port_in_bytes: None, mmio_read, mmio_write };

/// Port input through TDG.VP.VMCALL.
pub fn port_in(port: u16, size: u8) -> u32 {
    tdcall::io_read(&mut Hw, port, size).unwrap_or_else(|e| vmcall_failed(e))
}

/// Port output through TDG.VP.VMCALL.
pub fn port_out(port: u16, size: u8, value: u32) {
    tdcall::io_write(&mut Hw, port, size, value).unwrap_or_else(|e| vmcall_failed(e))
}

/// MMIO read at the shared alias of `addr` (device memory in the PCI hole).
pub fn mmio_read(addr: u64, size: u8) -> u64 {
    let shared = SHARED_BIT.load(Ordering::Relaxed);
    tdcall::mmio_read(&mut Hw, addr | shared, size, shared).unwrap_or_else(|e| vmcall_failed(e))
}

/// MMIO write at the shared alias of `addr`.
pub fn mmio_write(addr: u64, size: u8, value: u64) {
    let shared = SHARED_BIT.load(Ordering::Relaxed);
    tdcall::mmio_write(&mut Hw, addr | shared, size, value, shared).unwrap_or_else(|e| vmcall_failed(e))
}

/// The 48-byte digest TDG.MR.RTMR.EXTEND reads, 64-byte aligned as it requires.
#[repr(C, align(64))]
struct RtmrDigest([u8; 48]);

static RTMR_DIGEST: spin::Mutex<RtmrDigest> = spin::Mutex::new(RtmrDigest([0; 48]));

/// The TDX platform.
pub struct Tdx {
    /// The CC event log (SHA-384, records by CC MR index): what goes into the CCEL table.
    log: EventLog,
    /// Measurements extended.
    extends: usize,
    info: TdInfo,
    /// The TD HOB's resources.
    resources: Vec<Resource>,
    /// Accepted so far (start, end), besides what the VMM added.
    accepted: Vec<(u64, u64)>,
}

impl Tdx {
    /// Bring the platform up (see the module documentation).
    pub fn init() -> Result<Tdx, BootError> {
        crate::arch::cpu::port::route(&VMCALL_ROUTE);
        let info = tdcall::vp_info(&mut Hw).map_err(BootErrorKind::Tdcall)?;
        SHARED_BIT.store(info.shared_bit(), Ordering::SeqCst);
        // SAFETY: the TD HOB page, added and measured by the VMM at launch (private, identity
        // mapped), read once.
        let page = unsafe { core::slice::from_raw_parts(TD_HOB as *const u8, 4096) };
        let resources = hob::parse(page).map_err(BootErrorKind::TdHob)?;
        // A HOB that leaves a section the VMM added to be accepted disagrees with the launch.
        for r in resources.iter().filter(|r| r.kind == ResourceKind::Unaccepted) {
            if let Some(&added) = ADDED.iter().find(|&&(a, b)| r.start < b && a < r.end()) {
                return Err(BootErrorKind::OverLaunch("TDX: the TD HOB's unaccepted", (r.start, r.end()), added).into());
            }
        }
        ACTIVE.store(true, Ordering::SeqCst);
        let mut t = Tdx { log: EventLog::new(&[Bank::Sha384]), extends: 0, info, resources, accepted: Vec::new() };
        // The TD HOB is the VMM's configuration: into RTMR0 first, as TDVF and td-shim do.
        t.measure(&measure::config("td-hob", page))?;
        Ok(t)
    }

    /// Accept `[start, end)` but what the TD accepted already; overlap with what the VMM added
    /// is refused (veil_agent::memmap::to_accept), never skipped, and so is a piece the TD HOB
    /// does not list as unaccepted memory (the VMM never added it: RAM the launch does not
    /// describe).
    fn accept(&mut self, start: u64, end: u64) -> Result<u64, BootError> {
        let pieces = veil_agent::memmap::to_accept(start, end, &self.accepted, &ADDED)
            .map_err(|added| BootErrorKind::OverLaunch("TDX: accepting", (start, end), added))?;
        let unaccepted =
            self.resources.iter().filter(|r| r.kind == ResourceKind::Unaccepted).map(|r| (r.start, r.end()));
        if let Some(r) = pieces.iter().find_map(|&(a, b)| veil_agent::memmap::uncovered(a, b, unaccepted.clone())) {
            return Err(BootErrorKind::NotInTdHob(r).into());
        }
        let mut pages = 0;
        for (a, b) in pieces {
            pages += tdcall::accept(&mut Hw, a, b).map_err(BootErrorKind::Tdcall)?;
            self.accepted.push((a, b));
        }
        Ok(pages)
    }
}

/// The TDX module as the root of trust: RTMRs and the CC event log, TD quotes; no sealing
/// key, so the master secret always comes from the broker.
impl RootOfTrust for Tdx {
    fn name(&self) -> &'static str {
        "tdx"
    }

    fn measures(&self) -> bool {
        true
    }

    fn measure(&mut self, m: &Measurement<'_>) -> Result<(), BootError> {
        let Some(rtmr) = veil_agent::tdx::measure::rtmr_of(m) else { return Ok(()) }; // MRTD
        let digest = m.digest(Bank::Sha384);
        let mut buf = RTMR_DIGEST.lock();
        buf.0.copy_from_slice(&digest);
        let gpa = &raw const buf.0 as u64;
        tdcall::rtmr_extend(&mut Hw, rtmr, gpa).map_err(BootErrorKind::Tdcall)?;
        drop(buf);
        self.log.record(
            veil_agent::tdx::measure::mr_index(m.pcr),
            m.event_type,
            &[(Bank::Sha384, digest)],
            &m.event_data,
        );
        self.extends += 1;
        Ok(())
    }

    fn launch_host_data(&mut self) -> Result<Option<(&'static str, Vec<u8>)>, BootError> {
        let report = tdreport(&[0u8; 64])?;
        Ok(Some(("MRCONFIGID", report[576..624].to_vec())))
    }

    fn evidence_name(&self) -> &'static str {
        "tdx evidence"
    }

    fn remote_release(
        &mut self,
        relay: &mut dyn Relay,
        resource: &str,
        init_data: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>, BootError> {
        super::rot::release_with_evidence(Tee::Tdx, init_data, relay, resource, &mut |rd| self.evidence(rd))
    }

    fn unseal(&mut self, _boot: &BootVolume) -> Result<Option<Unsealed>, Unopened> {
        crate::log!("tdx: no sealing key on TDX: the master secret comes from the key broker");
        Ok(None)
    }

    fn seal(&mut self, _boot: &BootVolume, _secret: &MasterSecret) -> Result<Option<Sealed>, BootError> {
        Ok(None)
    }

    fn publish(&mut self, acpi: Option<&crate::devices::acpi::Tables>) -> Result<(), BootError> {
        let log_bytes = self.log.as_bytes();
        match acpi {
            Some(t) => t.write_ccel_log(log_bytes).at("CC event log")?,
            None => return Err(BootErrorKind::NoAcpiForLog("CC event log").into()),
        }
        crate::log!("tdx: CC event log of {} bytes handed to Linux in the ACPI CCEL table", log_bytes.len());
        #[cfg(feature = "tdx-model")]
        if let Some(m) = insn::model() {
            (m.report)(log_bytes);
        }
        Ok(())
    }
}

impl Tdx {
    /// Trustee's `tdx` evidence: a TD quote binding `report_data`, with the CC event log.
    fn evidence(&mut self, report_data: &[u8]) -> Result<veil_agent::json::Value, BootError> {
        let mut data = [0u8; 64];
        data[..report_data.len().min(64)].copy_from_slice(&report_data[..report_data.len().min(64)]);
        let report = tdreport(&data)?;
        let quote = get_quote(&report)?;
        crate::log!(
            "tdx: TD quote of {} bytes (MRTD {}..) with a CC event log of {} bytes",
            quote.len(),
            hex::encode(&report[528..536]),
            self.log.as_bytes().len()
        );
        Ok(getquote::evidence_json(&quote, self.log.as_bytes()))
    }
}

impl Platform for Tdx {
    fn name(&self) -> &'static str {
        "tdx"
    }

    fn is_confidential(&self) -> bool {
        true
    }

    fn root_of_trust(&mut self) -> Option<&mut dyn RootOfTrust> {
        Some(self)
    }

    fn verify_direct_boot(
        &mut self,
        setup: &[u8],
        kernel: &[u8],
        initrd: &[u8],
        cmdline: &[u8],
    ) -> Result<(), BootError> {
        // Measured direct boot on TDX: QEMU's -kernel (setup part and the rest), -initrd and
        // -append go into RTMR1 and RTMR2 as the boot target of a disk would.
        use sha2::Digest;
        let mut k = sha2::Sha384::new();
        k.update(setup);
        k.update(kernel);
        let kernel_hex = hex::encode(k.finalize());
        let cmdline = core::str::from_utf8(cmdline).unwrap_or("");
        for m in [
            measure::kernel(&kernel_hex),
            measure::cmdline(cmdline),
            measure::initrd(&veil_agent::bundle::sha384_hex(initrd)),
        ] {
            RootOfTrust::measure(self, &m)?;
        }
        crate::log!("tdx: measured -kernel, -append and -initrd into RTMR1 and RTMR2");
        Ok(())
    }

    fn console_write(&mut self, bytes: &[u8]) {
        crate::arch::serial::write_bytes(bytes);
    }

    fn accept_memory(&mut self, start: u64, len: u64) -> Result<(), BootError> {
        match start.checked_add(len) {
            Some(end) if end <= 0x1_0000_0000 => {}
            _ => return Err(BootErrorKind::AboveFourGib("firmware memory", start.saturating_add(len)).into()),
        }
        self.accept(start, start + len).map(|_| ())
    }

    fn extend_acpi(&mut self, tables: &mut crate::devices::acpi::Tables) -> Result<(), BootError> {
        // The CCEL table and its log area, before the memory map for Linux is made; the log
        // is written once the last measurement is in (RootOfTrust::publish).
        tables.add_ccel(CCEL_AREA)?;
        let aps = self.info.num_vcpus.saturating_sub(1);
        if aps == 0 {
            return Ok(());
        }
        // The mailbox page, then the APs' page tables: ACPI NVS, which Linux keeps; below
        // 4 GiB, since the APs load CR3 in 32-bit mode.
        let region = tables.nvs_pages(wakeup::REGION_PAGES)?;
        let (mailbox, page_tables) = (region, region + 4096);
        if region + (wakeup::REGION_PAGES as u64) * 4096 > 0x1_0000_0000 {
            return Err(BootErrorKind::AboveFourGib("the wakeup mailbox and the APs' page tables", region).into());
        }
        let tables_bytes = wakeup::ap_page_tables(page_tables);
        // SAFETY: the region nvs_pages just allocated (REGION_PAGES pages), identity mapped,
        // owned by nothing else.
        unsafe { core::ptr::copy_nonoverlapping(tables_bytes.as_ptr(), page_tables as *mut u8, tables_bytes.len()) };
        tables.add_mp_wakeup(mailbox)?;
        release_aps(mailbox, page_tables, aps)?;
        crate::log!("tdx: application processors in the ACPI wakeup mailbox at {mailbox:#x}: {aps}");
        Ok(())
    }

    fn prepare_handoff(&mut self, e820: &[E820Entry]) -> Result<HandoffExtras, BootError> {
        let mut pages = 0;
        // Every page Linux is given as RAM (the legacy hole stays out), above 4 GiB too
        // (TDG.MEM.PAGE.ACCEPT takes a GPA: nothing needs mapping; Linux learns of unaccepted
        // memory only from UEFI, which this firmware is not) but the sections the TDVF metadata
        // has the VMM add, which are accepted already. The rest is accepted here, and must be
        // what the TD HOB lists as unaccepted (accept refuses anything else: the e820 map and
        // the launch disagree). The TD HOB's own "system memory" is the host's word, not taken:
        // memory it claims was added and was not would reach Linux unaccepted.
        let mut skip: Vec<(u64, u64)> = alloc::vec![(0xA_0000, 0x10_0000)];
        skip.extend(ADDED);
        for e in e820.iter().filter(|e| e.kind == E820Kind::Ram) {
            for (x, y) in veil_agent::memmap::subtract(e.addr, e.end(), &skip) {
                pages += self.accept(x, y)?;
            }
        }
        crate::log!(
            "tdx: accepted the remaining {} MiB of guest RAM for Linux (GPAW {}, attributes {:#x})",
            pages >> 8,
            self.info.gpaw,
            self.info.attributes
        );
        Ok(HandoffExtras::default())
    }

    fn before_jump(&mut self) -> Result<(), BootError> {
        let pages = unshare_dma()?;
        if pages > 0 {
            crate::log!("tdx: the {} MiB shared for DMA made private and accepted again for Linux", pages >> 8);
        }
        Ok(())
    }
}

/// TDG.MR.REPORT over `data`: the 1024-byte TDREPORT.
fn tdreport(data: &[u8; 64]) -> Result<[u8; 1024], BootError> {
    #[repr(C, align(1024))]
    struct Report([u8; 1024]);
    #[repr(C, align(64))]
    struct Data([u8; 64]);
    let mut report = alloc::boxed::Box::new(Report([0; 1024]));
    let input = alloc::boxed::Box::new(Data(*data));
    tdcall::mr_report(&mut Hw, &raw mut report.0 as u64, &raw const input.0 as u64).map_err(BootErrorKind::Tdcall)?;
    Ok(report.0)
}

/// The GetQuote buffer: a TDREPORT in, a quote with its PCK chain (a few KiB) out.
const QUOTE_BUFFER: usize = 32 * 1024;
/// How long to poll for the quote, in PAUSE iterations (the quoting service answers in
/// milliseconds to seconds).
const QUOTE_POLLS: u64 = 1 << 32;

/// A quote of `report` from the VMM's quoting service (TDG.VP.VMCALL<GetQuote>, the status
/// polled until it leaves IN_FLIGHT).
fn get_quote(report: &[u8; 1024]) -> Result<Vec<u8>, BootError> {
    let buf =
        crate::devices::virtio::SharedBuffer::new(QUOTE_BUFFER).ok_or(BootErrorKind::OutOfMemory(QUOTE_BUFFER))?;
    let at = buf.addr();
    // SAFETY: the buffer is ours (pool memory shared with the host), `len` bytes at `at`;
    // the VMM writes it concurrently only after GetQuote, and it is read back by copy.
    let view = |f: &mut dyn FnMut(&mut [u8])| f(unsafe { core::slice::from_raw_parts_mut(at as *mut u8, buf.len()) });
    let mut r = Ok(());
    view(&mut |b| r = getquote::request(b, report));
    r.map_err(BootErrorKind::GetQuote)?;
    tdcall::get_quote(&mut Hw, at, buf.len() as u64, SHARED_BIT.load(Ordering::Relaxed))
        .map_err(BootErrorKind::Tdcall)?;
    for _ in 0..QUOTE_POLLS {
        // SAFETY: the status word of the buffer above, read volatile (the VMM writes it).
        let status = unsafe { core::ptr::read_volatile((at + 8) as *const u64) };
        if status != getquote::IN_FLIGHT {
            let mut copy = alloc::vec![0u8; buf.len()];
            view(&mut |b| copy.copy_from_slice(b));
            return match getquote::response(&copy) {
                Ok(Some(q)) => Ok(q),
                Ok(None) => continue,
                Err(e) => Err(BootErrorKind::GetQuote(e).into()),
            };
        }
        core::hint::spin_loop();
    }
    Err(BootErrorKind::GetQuote(getquote::GetQuoteError::Timeout).into())
}

/// How long the BSP waits for the APs to arrive, in PAUSE iterations (seconds on hardware;
/// they normally arrive within microseconds of being released). Shorter in the model ROM,
/// whose test of an AP that never comes should not take minutes under TCG.
const AP_ARRIVAL_SPINS: u64 = if cfg!(feature = "tdx-model") { 1 << 22 } else { 1 << 30 };

/// Release the APs parked in boot.S: the mailbox address, then the CR3 they wait for; then
/// wait until all `aps` say they have left the parking page for the mailbox, which they read
/// from then on (the parking page is RAM Linux reuses).
fn release_aps(mailbox: u64, page_tables: u64, aps: u32) -> Result<(), BootError> {
    use crate::arch::layout::AP_PARK;
    use core::sync::atomic::AtomicU32;
    // SAFETY: the parking page (TDX TempMem, added by the VMM, identity mapped); the APs and
    // the BSP share these three u32s and nothing else uses the page.
    let (cr3, mbox, arrived) = unsafe {
        (&*(AP_PARK as *const AtomicU32), &*((AP_PARK + 4) as *const AtomicU32), &*((AP_PARK + 8) as *const AtomicU32))
    };
    mbox.store(mailbox as u32, Ordering::SeqCst);
    cr3.store(page_tables as u32, Ordering::SeqCst);
    for _ in 0..AP_ARRIVAL_SPINS {
        if arrived.load(Ordering::SeqCst) >= aps {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(BootErrorKind::ApsMissing(arrived.load(Ordering::SeqCst), aps).into())
}

/// Make `[start, start + len)` (accepted heap memory, 2 MiB aligned) shared for device DMA:
/// the shared bit set in its 2 MiB mappings and the TLB flushed, then MapGPA to shared (the
/// private pages are dropped: the memory is zeroed through the shared alias afterwards).
pub fn share_dma(start: u64, len: u64) -> Result<(), BootError> {
    let shared = SHARED_BIT.load(Ordering::Relaxed);
    for at in (start..start + len).step_by(2 << 20) {
        crate::arch::paging::set_bit_2m(at, insn_shared_bit(shared), true);
    }
    crate::arch::paging::flush_tlb();
    tdcall::map_gpa(&mut Hw, start, len, true, shared).map_err(BootErrorKind::Tdcall)?;
    // SAFETY: the caller's memory, now shared and mapped at its shared alias.
    unsafe { core::ptr::write_bytes(start as *mut u8, 0, len as usize) };
    crate::log!("tdx: {} MiB at {start:#x} made shared for DMA (shared bit set, MapGPA)", len >> 20);
    Ok(())
}

/// Give the DMA ranges back to the TD before the hand-off, as Linux makes memory private: the
/// shared bit cleared in their 2 MiB mappings and the TLB flushed, MapGPA to private, then
/// TDG.MEM.PAGE.ACCEPT (a page the VMM kept accepted is refused, as everywhere). Linux then
/// gets them as RAM like the rest; nothing does DMA after this.
fn unshare_dma() -> Result<u64, BootError> {
    let shared = SHARED_BIT.load(Ordering::Relaxed);
    let ranges = seam::take_shared_for_dma();
    let mut pages = 0;
    for (start, end) in ranges {
        for at in (start..end).step_by(2 << 20) {
            crate::arch::paging::set_bit_2m(at, insn_shared_bit(shared), false);
        }
        crate::arch::paging::flush_tlb();
        tdcall::map_gpa(&mut Hw, start, end - start, false, shared).map_err(BootErrorKind::Tdcall)?;
        pages += tdcall::accept(&mut Hw, start, end).map_err(BootErrorKind::Tdcall)?;
    }
    Ok(pages)
}

/// The shared bit to put in page tables (None in the model ROM, whose TCG "hardware" has no
/// shared half of the address space).
fn insn_shared_bit(shared: u64) -> Option<u8> {
    #[cfg(feature = "tdx-model")]
    {
        let _ = shared;
        None
    }
    #[cfg(not(feature = "tdx-model"))]
    Some(shared.trailing_zeros() as u8)
}
