//! A model of the other end of an SNP guest: the hypervisor's side of the GHCB protocol
//! (AMD 56421) and the RMP's side of PVALIDATE (AMD 56860, APM vol. 3), written from those
//! specifications, with switches that make it misbehave the ways a hostile host can. It
//! implements [`SnpCpu`], so host tests run the guest's protocol code against it; it is only
//! compiled for tests and the `model` feature (the test ROM), never into a release ROM.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::ghcb::{GhcbPage, PageState, Pvalidate, SnpCpu, msr};

pub mod layout;

use layout::exit_code as exit;

/// One RMP entry as the model keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RmpEntry {
    /// Assigned to the guest (private) rather than shared.
    pub private: bool,
    /// Validated by the guest.
    pub validated: bool,
    /// Part of a 2 MiB RMP entry (the RMP's Page_Size), as the hypervisor assigned it; 4 KiB
    /// otherwise. PVALIDATE's page size must match it (see `Hypervisor`'s pvalidate).
    pub huge: bool,
}

/// The RMP, kept per 2 MiB granule: one entry for a granule whose 512 pages are alike, 512
/// once they differ (so a model of a whole guest's RAM stays small inside the test ROM).
#[derive(Debug, Default)]
pub struct Rmp(BTreeMap<u64, Granule>);

#[derive(Debug, Clone)]
enum Granule {
    Uniform(RmpEntry),
    Split(Box<[Option<RmpEntry>; 512]>),
}

impl Rmp {
    /// The entry of page `gfn` (None: never assigned, i.e. shared and not validated).
    pub fn get(&self, gfn: u64) -> Option<RmpEntry> {
        match self.0.get(&(gfn >> 9))? {
            Granule::Uniform(e) => Some(*e),
            Granule::Split(pages) => pages[(gfn & 511) as usize],
        }
    }

    /// Set the entry of page `gfn`.
    pub fn set(&mut self, gfn: u64, entry: RmpEntry) {
        let granule = self.0.entry(gfn >> 9).or_insert_with(|| Granule::Split(Box::new([None; 512])));
        if let Granule::Uniform(e) = granule {
            if *e == entry {
                return;
            }
            *granule = Granule::Split(Box::new([Some(*e); 512]));
        }
        if let Granule::Split(pages) = granule {
            pages[(gfn & 511) as usize] = Some(entry);
            if pages.iter().all(|p| *p == Some(entry)) {
                *granule = Granule::Uniform(entry);
            }
        }
    }

    /// PSMASH: the 2 MiB RMP entry holding page `gfn`, if it is one, becomes 512 4 KiB entries
    /// with the same state (AMD APM vol. 3, PSMASH); a 4 KiB change inside it needs that first.
    pub fn smash(&mut self, gfn: u64) {
        match self.0.get_mut(&(gfn >> 9)) {
            Some(Granule::Uniform(e)) => e.huge = false,
            Some(Granule::Split(pages)) => pages.iter_mut().flatten().for_each(|e| e.huge = false),
            None => {}
        }
    }

    /// Set the entries of the 2 MiB page starting at `gfn` (512-aligned).
    pub fn set_2m(&mut self, gfn: u64, entry: RmpEntry) {
        self.0.insert(gfn >> 9, Granule::Uniform(entry));
    }
}

/// The machine behind a model used inside a guest (the test ROM): the port I/O, MMIO and
/// CPUID the hypervisor performs on the guest's behalf. Host tests use none, and the model
/// answers from its own maps.
pub trait Machine {
    /// IN of `size` bytes.
    fn io_in(&mut self, port: u16, size: u8) -> u32;
    /// OUT of `size` bytes.
    fn io_out(&mut self, port: u16, size: u8, value: u32);
    /// REP INSB into `buf`.
    fn io_in_bytes(&mut self, port: u16, buf: &mut [u8]);
    /// MMIO read of `size` bytes.
    fn mmio_read(&mut self, gpa: u64, size: u8) -> u64;
    /// MMIO write of `size` bytes.
    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64);
    /// CPUID as the hypervisor reports it.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Read guest memory (a shared page the guest named in an exit).
    fn read_guest(&mut self, gpa: u64, out: &mut [u8]);
    /// Write guest memory (as for `read_guest`).
    fn write_guest(&mut self, gpa: u64, bytes: &[u8]);
}

/// Ways the model can misbehave.
#[derive(Debug, Clone, Default)]
pub struct Hostile {
    /// Report this C-bit in the SEV information instead of the true one.
    pub cbit: Option<u8>,
    /// Report these protocol versions (min, max).
    pub protocol: Option<(u16, u16)>,
    /// Report these feature bits.
    pub features: Option<u64>,
    /// Answer registrations with this GFN.
    pub register_gfn: Option<u64>,
    /// Answer MSR requests with this response code.
    pub msr_response: Option<u64>,
    /// Process at most this many page-state-change entries per exit.
    pub psc_per_call: Option<usize>,
    /// Fail page-state changes with this SW_EXITINFO2.
    pub psc_error: Option<u64>,
    /// Move the descriptor's current entry backwards after the first exit.
    pub psc_backwards: bool,
    /// Write the descriptor's reserved field.
    pub psc_reserved: bool,
    /// Rewrite an entry's GFN.
    pub psc_rewrite_entry: bool,
    /// Make no progress at all.
    pub psc_stall: bool,
    /// Before doing the work, answer one exit per value with only that progress (cur_page,
    /// bits 11:0) in the current entry, as a hypervisor does part of a 2 MiB entry per exit.
    pub psc_cur_pages: alloc::vec::Vec<u16>,
    /// Report every entry done without changing the RMP.
    pub psc_fake: bool,
    /// Answer exits with an event injection (SW_EXITINFO1 = 1, #GP).
    pub inject: bool,
    /// Answer output registers without setting their valid bits.
    pub drop_valid_bits: bool,
    /// Change the page's protocol version.
    pub clobber_version: bool,
    /// The RMP has 4 KiB entries only (2 MiB PVALIDATE fails with SIZEMISMATCH).
    pub rmp_4k_only: bool,
    /// Answer this many guest requests BUSY first.
    pub busy: u32,
    /// Flip a byte of the AMD-SP's encrypted answer (it no longer authenticates).
    pub tamper_response: bool,
}

/// The hypervisor and RMP model.
#[derive(Default)]
pub struct Hypervisor {
    /// The true C-bit.
    pub cbit: u8,
    /// The registered GHCB's GFN.
    pub registered: Option<u64>,
    /// RMP entries by GFN (absent: shared, not validated).
    pub rmp: Rmp,
    /// Bytes written to the serial port (0x3F8).
    pub console: Vec<u8>,
    /// Port values returned by IN.
    pub ports: BTreeMap<u16, u32>,
    /// MSR values.
    pub msrs: BTreeMap<u32, u64>,
    /// MMIO: the last value written per address, returned by reads.
    pub mmio: BTreeMap<u64, u64>,
    /// Pages the guest touched after validating them (recorded without a machine only).
    pub touched: BTreeSet<u64>,
    /// Touches counted.
    pub touches: u64,
    /// PVALIDATE calls that validated, by page size: [4 KiB, 2 MiB] (issue 32's counts).
    pub validations: [u64; 2],
    /// The guest-physical ranges `[start, end)` the host backs with memory (empty: all). A
    /// page-state change outside them fails as KVM fails one outside its memory slots
    /// (VMGEXIT_PSC_ERROR_GENERIC): the e820 map can list RAM the host never backs.
    pub backed: Vec<(u64, u64)>,
    /// The machine that performs I/O (inside a guest); None in host tests.
    pub machine: Option<Box<dyn Machine + Send>>,
    /// Guest pages the model reads and writes without a machine (host tests), by GPA.
    pub memory: BTreeMap<u64, Vec<u8>>,
    /// The AMD-SP behind guest requests.
    pub psp: Option<super::psp::Psp>,
    /// The host's certificate table for extended requests.
    pub certs: Option<Vec<u8>>,
    /// Exits seen, by code.
    pub exits: Vec<u64>,
    /// How to misbehave.
    pub hostile: Hostile,
    psc_calls: usize,
    /// The high half of the fw_cfg DMA descriptor address last written.
    fw_cfg_dma_high: u32,
    /// fw_cfg DMA transfers the host could not perform (private memory named).
    pub dma_refused: u32,
}

impl core::fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hypervisor").field("registered", &self.registered).finish_non_exhaustive()
    }
}

impl Hypervisor {
    /// An honest hypervisor with C-bit 51.
    pub fn new() -> Hypervisor {
        Hypervisor { cbit: 51, ..Hypervisor::default() }
    }

    /// The first page of `[start, end)` an OS could not use as RAM: one that is not assigned
    /// to the guest and validated. Linux, booted directly, validates nothing it is given as RAM
    /// and would fault on such a page.
    pub fn first_unusable(&self, start: u64, end: u64) -> Option<u64> {
        let usable = |e: Option<RmpEntry>| e.is_some_and(|e| e.private && e.validated);
        (start / 4096..end.div_ceil(4096)).find(|gfn| !usable(self.rmp.get(*gfn))).map(|gfn| gfn * 4096)
    }

    /// The host reaches only shared guest memory: a fw_cfg DMA whose descriptor or data lies
    /// in a page assigned to the guest (private) reads as ciphertext on hardware, so QEMU
    /// would leave the transfer undone (or worse). The model drops that OUT (counted in
    /// `dma_refused`) and the guest sees a transfer that never completes. Other ports: true.
    fn host_reaches_fw_cfg_dma(&mut self, port: u16, value: u32) -> bool {
        use crate::fwcfg::{DMA_PORT_HIGH, DMA_PORT_LOW, dma_data_range};
        if port == DMA_PORT_HIGH {
            self.fw_cfg_dma_high = u32::from_be(value);
        }
        if port != DMA_PORT_LOW {
            return true;
        }
        let gpa = u64::from(self.fw_cfg_dma_high) << 32 | u64::from(u32::from_be(value));
        let private = |rmp: &Rmp, start: u64, end: u64| {
            (start / 4096..end.div_ceil(4096)).any(|gfn| rmp.get(gfn).is_some_and(|e| e.private))
        };
        let mut descriptor = [0u8; 16];
        let reachable = !private(&self.rmp, gpa, gpa + 16) && {
            if let Some(m) = self.machine.as_mut() {
                m.read_guest(gpa, &mut descriptor);
            }
            dma_data_range(&descriptor).is_none_or(|(a, b)| !private(&self.rmp, a, b))
        };
        if !reachable {
            self.dma_refused += 1;
        }
        reachable
    }

    fn msr_answer(&self, code: u64, data: u64) -> u64 {
        match self.hostile.msr_response {
            Some(bad) => bad,
            None => code | (data << 12),
        }
    }

    /// A 4 KiB page-state change (MSR protocol, or a 4 KiB PSC entry): the hypervisor smashes
    /// a 2 MiB RMP entry around the page first, then assigns the page as 4 KiB.
    fn set_state(&mut self, gfn: u64, state: u64) -> bool {
        if !matches!(state, 1 | 2) {
            return false;
        }
        self.rmp.smash(gfn);
        self.rmp.set(gfn, RmpEntry { private: state == 1, validated: false, huge: false });
        true
    }

    fn read_mem(&mut self, gpa: u64, out: &mut [u8]) {
        match self.machine.as_mut() {
            Some(m) => m.read_guest(gpa, out),
            None => {
                for (i, chunk) in out.chunks_mut(4096).enumerate() {
                    let page = self.memory.get(&(gpa + 4096 * i as u64)).cloned().unwrap_or_default();
                    let n = page.len().min(chunk.len());
                    chunk[..n].copy_from_slice(&page[..n]);
                    chunk[n..].fill(0);
                }
            }
        }
    }

    fn write_mem(&mut self, gpa: u64, bytes: &[u8]) {
        match self.machine.as_mut() {
            Some(m) => m.write_guest(gpa, bytes),
            None => {
                for (i, chunk) in bytes.chunks(4096).enumerate() {
                    self.memory.insert(gpa + 4096 * i as u64, chunk.to_vec());
                }
            }
        }
    }

    /// A (extended) guest request: SW_EXITINFO2 as the hypervisor sets it.
    fn guest_request(&mut self, page: &mut GhcbPage, extended: bool) -> u64 {
        let (request, response) = (layout::read(page, layout::SW_EXITINFO1), layout::read(page, layout::SW_EXITINFO2));
        if extended && let Some(table) = self.certs.clone() {
            let (gpa, pages) = (layout::read(page, layout::RAX), layout::read(page, layout::RBX));
            let needed = table.len().div_ceil(4096) as u64;
            if pages < needed {
                self.output(page, layout::RBX, needed);
                return 1 << 32; // INVALID_LEN
            }
            let mut padded = table;
            padded.resize((pages as usize) * 4096, 0);
            self.write_mem(gpa, &padded);
        }
        if self.hostile.busy > 0 {
            self.hostile.busy -= 1;
            return 2 << 32; // BUSY
        }
        let mut req = alloc::vec![0u8; 4096];
        self.read_mem(request, &mut req);
        let Some(psp) = self.psp.as_mut() else { return 0x16 };
        match psp.answer(&req) {
            Ok(mut rsp) => {
                if self.hostile.tamper_response {
                    rsp[0x70] ^= 1;
                }
                self.write_mem(response, &rsp);
                0
            }
            Err(status) => u64::from(status),
        }
    }

    /// Is SW_SCRATCH the registered GHCB's shared buffer, holding `len` bytes?
    fn scratch_ok(&self, page: &GhcbPage, len: u64) -> bool {
        let buffer = self.registered.unwrap_or(0) * 4096 + layout::SHARED_BUFFER as u64;
        layout::valid(page, layout::SW_SCRATCH)
            && layout::read(page, layout::SW_SCRATCH) == buffer
            && len <= layout::SHARED_BUFFER_LEN as u64
    }

    fn psc(&mut self, page: &mut GhcbPage) {
        if let Some(code) = self.hostile.psc_error {
            layout::write(page, layout::SW_EXITINFO2, code);
            return;
        }
        self.psc_calls += 1;
        let buf = layout::shared_buffer(page);
        let cur = u16::from_le_bytes([buf[0], buf[1]]) as usize;
        let end = u16::from_le_bytes([buf[2], buf[3]]) as usize;
        if end >= super::ghcb::MAX_PSC_ENTRIES || cur > end + 1 {
            layout::write(page, layout::SW_EXITINFO2, (1 << 32) | 1); // invalid header
            return;
        }
        if !self.hostile.psc_cur_pages.is_empty() && cur <= end {
            let cur_page = self.hostile.psc_cur_pages.remove(0);
            let at = 8 + 8 * cur;
            let entry = u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
            buf[at..at + 8].copy_from_slice(&((entry & !0xFFF) | u64::from(cur_page)).to_le_bytes());
            layout::write(page, layout::SW_EXITINFO2, 0);
            return;
        }
        let budget = self.hostile.psc_per_call.unwrap_or(usize::MAX);
        let mut done = cur;
        if !self.hostile.psc_stall {
            for i in cur..=end {
                if done - cur >= budget {
                    break;
                }
                let at = 8 + 8 * i;
                let entry = u64::from_le_bytes(layout::shared_buffer(page)[at..at + 8].try_into().expect("8 bytes"));
                let gfn = (entry >> 12) & ((1 << 40) - 1);
                let op = (entry >> 52) & 0xF;
                let huge = entry & (1 << 56) != 0;
                if !matches!(op, 1 | 2) || (huge && gfn % 512 != 0) {
                    layout::write(page, layout::SW_EXITINFO2, (1 << 32) | 2); // invalid entry
                    return;
                }
                let (a, b) = (gfn << 12, (gfn << 12) + if huge { 2 << 20 } else { 4096 });
                if !self.backed.is_empty() && !self.backed.iter().any(|&(s, e)| s <= a && b <= e) {
                    layout::write(page, layout::SW_EXITINFO2, 0x100 << 32); // generic error
                    return;
                }
                if !self.hostile.psc_fake {
                    // A 2 MiB entry is assigned as a 2 MiB RMP page unless the host backs the
                    // guest with 4 KiB pages only.
                    if huge {
                        let e = RmpEntry { private: op == 1, validated: false, huge: !self.hostile.rmp_4k_only };
                        self.rmp.set_2m(gfn, e);
                    } else {
                        self.set_state(gfn, op);
                    }
                }
                // As KVM (`__snp_complete_one_psc`): a done entry's cur_page is its pages.
                let done_entry = (entry & !0xFFF) | if huge { 512 } else { 1 };
                layout::shared_buffer(page)[at..at + 8].copy_from_slice(&done_entry.to_le_bytes());
                done = i + 1;
            }
        }
        let buf = layout::shared_buffer(page);
        let mut new_cur = done as u16;
        if self.hostile.psc_backwards && self.psc_calls > 1 {
            new_cur = 0;
        }
        buf[0..2].copy_from_slice(&new_cur.to_le_bytes());
        if self.hostile.psc_reserved {
            buf[4] = 1;
        }
        if self.hostile.psc_rewrite_entry {
            buf[8 + 8 * end + 2] ^= 0x10;
        }
        layout::write(page, layout::SW_EXITINFO2, 0);
    }

    fn output(&self, page: &mut GhcbPage, field: layout::Field, value: u64) {
        if self.hostile.drop_valid_bits {
            layout::write_unmarked(page, field, value);
        } else {
            layout::write(page, field, value);
        }
    }
}

impl SnpCpu for Hypervisor {
    fn msr_protocol(&mut self, request: u64) -> u64 {
        match request & 0xFFF {
            msr::SEV_INFO_REQ => {
                let (min, max) = self.hostile.protocol.unwrap_or((1, 2));
                let cbit = u64::from(self.hostile.cbit.unwrap_or(self.cbit));
                self.msr_answer(0x001, (u64::from(max) << 36) | (u64::from(min) << 20) | (cbit << 12))
            }
            msr::HV_FEATURES_REQ => self.msr_answer(0x081, self.hostile.features.unwrap_or(0b11)),
            msr::REGISTER_REQ => {
                let gfn = request >> 12;
                self.registered = Some(gfn);
                self.msr_answer(0x013, self.hostile.register_gfn.unwrap_or(gfn))
            }
            msr::PSC_REQ => {
                let gfn = (request >> 12) & ((1 << 40) - 1);
                let op = (request >> 52) & 0xF;
                let error = if self.set_state(gfn, op) { 0 } else { 1 };
                self.msr_answer(0x015, error << 20)
            }
            _ => 0,
        }
    }

    fn vmgexit(&mut self, page: &mut GhcbPage) {
        let code = layout::read(page, layout::SW_EXITCODE);
        self.exits.push(code);
        if self.registered.is_none() {
            layout::write(page, layout::SW_EXITINFO1, 2);
            layout::write(page, layout::SW_EXITINFO2, layout::error::NOT_REGISTERED);
            return;
        }
        if self.hostile.inject {
            layout::write(page, layout::SW_EXITINFO1, 1);
            layout::write(page, layout::SW_EXITINFO2, (1 << 31) | (3 << 8) | 13); // valid, exception, #GP
            return;
        }
        let info1 = layout::read(page, layout::SW_EXITINFO1);
        // The inputs must be marked valid (by the model's own reading of the bitmap, so that a
        // guest marking the wrong bit is refused here rather than agreed with).
        if layout::missing_input(page, code, info1).is_some() {
            layout::write(page, layout::SW_EXITINFO1, 2);
            layout::write(page, layout::SW_EXITINFO2, layout::error::MISSING_INPUT);
            return;
        }
        // A port-I/O exit is decoded from its own bits, and a malformed one refused.
        let io = match code {
            exit::IOIO => match layout::decode_ioio(info1) {
                // One INS without REP moves one item; the count is for REP.
                Ok(io) if io.string && !io.rep && layout::read(page, layout::SW_EXITINFO2) != 1 => None,
                Ok(io) => Some(io),
                Err(_) => None,
            },
            _ => None,
        };
        // MSR: SW_EXITINFO1 is 0 for RDMSR, 1 for WRMSR (AMD 56421), nothing else.
        if (code == exit::IOIO && io.is_none()) || (code == exit::MSR && info1 > 1) {
            layout::write(page, layout::SW_EXITINFO1, 2);
            layout::write(page, layout::SW_EXITINFO2, layout::error::INVALID_INPUT);
            return;
        }
        // After the inputs are read, the valid bitmap says which outputs the hypervisor
        // wrote (the GHCB specification's rule, as KVM does it).
        let mut result = 0;
        let scratch_needed = match code {
            exit::IOIO if info1 & (1 << 2) != 0 => Some(layout::read(page, layout::SW_EXITINFO2)),
            exit::MMIO_READ | exit::MMIO_WRITE => Some(layout::read(page, layout::SW_EXITINFO2)),
            exit::PSC => Some(8),
            _ => None,
        };
        if let Some(len) = scratch_needed
            && !self.scratch_ok(page, len)
        {
            layout::write(page, layout::SW_EXITINFO1, 2);
            layout::write(page, layout::SW_EXITINFO2, layout::error::INVALID_SCRATCH_AREA);
            return;
        }
        layout::clear_valid(page);
        match code {
            exit::IOIO => {
                let layout::Ioio { port, size, input, string, .. } = io.expect("decoded above");
                if string {
                    // String IN, byte-sized only (what the firmware uses).
                    let count = layout::read(page, layout::SW_EXITINFO2) as usize;
                    if !input || size != 1 {
                        result = 2;
                    } else if let Some(m) = self.machine.as_mut() {
                        m.io_in_bytes(port, &mut layout::shared_buffer(page)[..count]);
                    } else {
                        let v = *self.ports.get(&port).unwrap_or(&0xFF) as u8;
                        layout::shared_buffer(page)[..count].fill(v);
                    }
                } else if self.machine.is_some() {
                    let reachable = input || self.host_reaches_fw_cfg_dma(port, layout::read(page, layout::RAX) as u32);
                    let m = self.machine.as_mut().expect("checked");
                    if !input {
                        if reachable {
                            m.io_out(port, size, layout::read(page, layout::RAX) as u32);
                        }
                    } else {
                        let v = u64::from(m.io_in(port, size));
                        self.output(page, layout::RAX, v);
                    }
                } else if !input {
                    if port == 0x3F8 {
                        self.console.push(layout::read(page, layout::RAX) as u8);
                    }
                    self.ports.insert(port, layout::read(page, layout::RAX) as u32);
                } else {
                    let v = u64::from(*self.ports.get(&port).unwrap_or(&0xFF));
                    self.output(page, layout::RAX, v);
                }
            }
            exit::MSR => {
                let index = layout::read(page, layout::RCX) as u32;
                if info1 == 0 {
                    let v = *self.msrs.get(&index).unwrap_or(&0);
                    self.output(page, layout::RAX, v & 0xFFFF_FFFF);
                    self.output(page, layout::RDX, v >> 32);
                } else {
                    let v = (layout::read(page, layout::RDX) << 32) | (layout::read(page, layout::RAX) & 0xFFFF_FFFF);
                    self.msrs.insert(index, v);
                }
            }
            exit::CPUID => {
                let leaf = layout::read(page, layout::RAX);
                let answer = match self.machine.as_mut() {
                    Some(m) => m.cpuid(leaf as u32, layout::read(page, layout::RCX) as u32).map(u64::from),
                    None => [0, 1, 2, 3].map(|i| leaf.wrapping_add(i)),
                };
                for (v, at) in answer.into_iter().zip([layout::RAX, layout::RBX, layout::RCX, layout::RDX]) {
                    self.output(page, at, v);
                }
            }
            exit::MMIO_READ | exit::MMIO_WRITE
                if !matches!(layout::read(page, layout::SW_EXITINFO2), 1 | 2 | 4 | 8) =>
            {
                result = 2;
            }
            exit::MMIO_READ => {
                let n = layout::read(page, layout::SW_EXITINFO2) as usize;
                let v = match self.machine.as_mut() {
                    Some(m) => m.mmio_read(info1, n as u8),
                    None => *self.mmio.get(&info1).unwrap_or(&0),
                };
                layout::shared_buffer(page)[..n].copy_from_slice(&v.to_le_bytes()[..n]);
            }
            exit::MMIO_WRITE => {
                let n = layout::read(page, layout::SW_EXITINFO2) as usize;
                let mut v = [0u8; 8];
                v[..n].copy_from_slice(&layout::shared_buffer(page)[..n]);
                let v = u64::from_le_bytes(v);
                match self.machine.as_mut() {
                    Some(m) => m.mmio_write(info1, n as u8, v),
                    None => {
                        self.mmio.insert(info1, v);
                    }
                }
            }
            exit::PSC => self.psc(page),
            exit::GUEST_REQUEST | exit::EXT_GUEST_REQUEST => {
                let status = self.guest_request(page, code == exit::EXT_GUEST_REQUEST);
                layout::write(page, layout::SW_EXITINFO2, status);
            }
            _ => result = 2,
        }
        layout::write(page, layout::SW_EXITINFO1, result);
        if result == 2 {
            layout::write(page, layout::SW_EXITINFO2, layout::error::INVALID_USAGE);
        }
        if self.hostile.clobber_version {
            page.0[layout::PROTOCOL_VERSION] = 1;
        }
    }

    /// PVALIDATE (AMD APM vol. 3, "PVALIDATE"; AMD 56860 ABI, "Page Validation"): the page
    /// size operand must equal the RMP entry's page size, else FAIL_SIZEMISMATCH (6): a 2 MiB
    /// operand on 4 KiB entries, and a 4 KiB operand on a page inside a 2 MiB entry (which
    /// must be rescinded whole, or smashed by the host first). The entry keeps its size.
    fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> Pvalidate {
        let pages = if huge { 512 } else { 1 };
        if !gpa.is_multiple_of(if huge { 2 << 20 } else { 4096 }) {
            return Pvalidate::FailInput;
        }
        if huge && self.hostile.rmp_4k_only {
            return Pvalidate::SizeMismatch;
        }
        let gfn = gpa >> 12;
        if (gfn..gfn + pages).any(|g| !self.rmp.get(g).is_some_and(|e| e.private)) {
            return Pvalidate::FailInput; // PVALIDATE of a shared page faults on hardware
        }
        if (gfn..gfn + pages).any(|g| self.rmp.get(g).is_some_and(|e| e.huge != huge)) {
            return Pvalidate::SizeMismatch;
        }
        if validate {
            self.validations[usize::from(huge)] += 1;
        }
        let changed = (gfn..gfn + pages).any(|g| self.rmp.get(g).is_some_and(|e| e.validated != validate));
        let entry = RmpEntry { private: true, validated: validate, huge };
        if huge {
            self.rmp.set_2m(gfn, entry);
        } else {
            self.rmp.set(gfn, entry);
        }
        Pvalidate::Done { changed }
    }

    fn touch(&mut self, gpa: u64) {
        self.touches += 1;
        if self.machine.is_none() {
            self.touched.insert(gpa);
        }
    }

    fn ghcb_gpa(&self) -> u64 {
        self.registered.unwrap_or(0) * 4096
    }

    fn write_shared(&mut self, gpa: u64, bytes: &[u8]) {
        self.write_mem(gpa, bytes);
    }

    fn read_shared(&mut self, gpa: u64, out: &mut [u8]) {
        self.read_mem(gpa, out);
    }
}

/// A page state as the model's RMP holds it (for assertions).
pub fn state_of(hv: &Hypervisor, gpa: u64) -> Option<(PageState, bool)> {
    hv.rmp.get(gpa >> 12).map(|e| (if e.private { PageState::Private } else { PageState::Shared }, e.validated))
}
