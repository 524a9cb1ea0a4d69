//! A model of the other end of an SNP guest: the hypervisor's side of the GHCB protocol
//! (AMD 56421) and the RMP's side of PVALIDATE (AMD 56860, APM vol. 3), written from those
//! specifications, with switches that make it misbehave the ways a hostile host can. It
//! implements [`SnpCpu`], so host tests run the guest's protocol code against it; it is only
//! compiled for tests and the `model` feature (the test ROM), never into a release ROM.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::ghcb::{GhcbPage, PageState, Pvalidate, SnpCpu, exit, msr, offset};

/// One RMP entry as the model keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RmpEntry {
    /// Assigned to the guest (private) rather than shared.
    pub private: bool,
    /// Validated by the guest.
    pub validated: bool,
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
}

/// The hypervisor and RMP model.
#[derive(Debug, Default)]
pub struct Hypervisor {
    /// The true C-bit.
    pub cbit: u8,
    /// The registered GHCB's GFN.
    pub registered: Option<u64>,
    /// RMP entries by GFN (absent: shared, not validated).
    pub rmp: BTreeMap<u64, RmpEntry>,
    /// Bytes written to the serial port (0x3F8).
    pub console: Vec<u8>,
    /// Port values returned by IN.
    pub ports: BTreeMap<u16, u32>,
    /// MSR values.
    pub msrs: BTreeMap<u32, u64>,
    /// MMIO: the last value written per address, returned by reads.
    pub mmio: BTreeMap<u64, u64>,
    /// Pages the guest touched after validating them.
    pub touched: BTreeSet<u64>,
    /// Exits seen, by code.
    pub exits: Vec<u64>,
    /// How to misbehave.
    pub hostile: Hostile,
    psc_calls: usize,
}

impl Hypervisor {
    /// An honest hypervisor with C-bit 51.
    pub fn new() -> Hypervisor {
        Hypervisor { cbit: 51, ..Hypervisor::default() }
    }

    fn msr_answer(&self, code: u64, data: u64) -> u64 {
        match self.hostile.msr_response {
            Some(bad) => bad,
            None => code | (data << 12),
        }
    }

    fn set_state(&mut self, gfn: u64, state: u64) -> bool {
        match state {
            1 => {
                let e = self.rmp.entry(gfn).or_default();
                e.private = true;
                e.validated = false;
                true
            }
            2 => {
                self.rmp.insert(gfn, RmpEntry { private: false, validated: false });
                true
            }
            _ => false,
        }
    }

    fn psc(&mut self, page: &mut GhcbPage) {
        if let Some(code) = self.hostile.psc_error {
            page.set(offset::SW_EXIT_INFO_2, code);
            return;
        }
        self.psc_calls += 1;
        let buf = page.shared_buffer();
        let cur = u16::from_le_bytes([buf[0], buf[1]]) as usize;
        let end = u16::from_le_bytes([buf[2], buf[3]]) as usize;
        if end >= super::ghcb::MAX_PSC_ENTRIES || cur > end + 1 {
            page.set(offset::SW_EXIT_INFO_2, (1 << 32) | 1); // invalid header
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
                let entry = u64::from_le_bytes(page.shared_buffer()[at..at + 8].try_into().expect("8 bytes"));
                let gfn = (entry >> 12) & ((1 << 40) - 1);
                let op = (entry >> 52) & 0xF;
                let pages = if entry & (1 << 56) != 0 { 512 } else { 1 };
                for g in gfn..gfn + pages {
                    if self.hostile.psc_fake {
                        continue;
                    }
                    if !self.set_state(g, op) {
                        page.set(offset::SW_EXIT_INFO_2, (1 << 32) | 2); // invalid entry
                        return;
                    }
                }
                done = i + 1;
            }
        }
        let buf = page.shared_buffer();
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
        page.set(offset::SW_EXIT_INFO_2, 0);
    }

    fn output(&self, page: &mut GhcbPage, at: usize, value: u64) {
        if self.hostile.drop_valid_bits {
            page.0[at..at + 8].copy_from_slice(&value.to_le_bytes());
        } else {
            page.set(at, value);
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
        let code = page.u64_at(offset::SW_EXIT_CODE);
        self.exits.push(code);
        if self.registered.is_none() {
            page.set(offset::SW_EXIT_INFO_1, 2);
            page.set(offset::SW_EXIT_INFO_2, 1); // NOT_REGISTERED
            return;
        }
        if self.hostile.inject {
            page.set(offset::SW_EXIT_INFO_1, 1);
            page.set(offset::SW_EXIT_INFO_2, (1 << 31) | (3 << 8) | 13); // valid, exception, #GP
            return;
        }
        let info1 = page.u64_at(offset::SW_EXIT_INFO_1);
        // The inputs are read; from here on the valid bitmap says which outputs the
        // hypervisor wrote (the GHCB specification's rule, as KVM does it).
        page.0[offset::VALID_BITMAP..offset::VALID_BITMAP + 16].fill(0);
        let mut result = 0;
        match code {
            exit::IOIO => {
                let port = (info1 >> 16) as u16;
                if info1 & 1 == 0 {
                    if port == 0x3F8 {
                        self.console.push(page.u64_at(offset::RAX) as u8);
                    }
                    self.ports.insert(port, page.u64_at(offset::RAX) as u32);
                } else {
                    let v = u64::from(*self.ports.get(&port).unwrap_or(&0xFF));
                    self.output(page, offset::RAX, v);
                }
            }
            exit::MSR => {
                let index = page.u64_at(offset::RCX) as u32;
                if info1 == 0 {
                    let v = *self.msrs.get(&index).unwrap_or(&0);
                    self.output(page, offset::RAX, v & 0xFFFF_FFFF);
                    self.output(page, offset::RDX, v >> 32);
                } else {
                    let v = (page.u64_at(offset::RDX) << 32) | (page.u64_at(offset::RAX) & 0xFFFF_FFFF);
                    self.msrs.insert(index, v);
                }
            }
            exit::CPUID => {
                let leaf = page.u64_at(offset::RAX);
                for (i, at) in [offset::RAX, offset::RBX, offset::RCX, offset::RDX].into_iter().enumerate() {
                    self.output(page, at, leaf.wrapping_add(i as u64));
                }
            }
            exit::MMIO_READ => {
                let v = *self.mmio.get(&info1).unwrap_or(&0);
                let n = page.u64_at(offset::SW_EXIT_INFO_2) as usize;
                page.shared_buffer()[..n].copy_from_slice(&v.to_le_bytes()[..n]);
            }
            exit::MMIO_WRITE => {
                let n = page.u64_at(offset::SW_EXIT_INFO_2) as usize;
                let mut v = [0u8; 8];
                v[..n].copy_from_slice(&page.shared_buffer()[..n]);
                self.mmio.insert(info1, u64::from_le_bytes(v));
            }
            exit::PSC => self.psc(page),
            _ => result = 2,
        }
        page.set(offset::SW_EXIT_INFO_1, result);
        if result == 2 {
            page.set(offset::SW_EXIT_INFO_2, 2); // INVALID_USAGE
        }
        if self.hostile.clobber_version {
            page.0[offset::PROTOCOL_VERSION] = 1;
        }
    }

    fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> Pvalidate {
        let pages = if huge { 512 } else { 1 };
        if !gpa.is_multiple_of(if huge { 2 << 20 } else { 4096 }) {
            return Pvalidate::FailInput;
        }
        if huge && self.hostile.rmp_4k_only {
            return Pvalidate::SizeMismatch;
        }
        let gfn = gpa >> 12;
        if (gfn..gfn + pages).any(|g| !self.rmp.get(&g).is_some_and(|e| e.private)) {
            return Pvalidate::FailInput; // PVALIDATE of a shared page faults on hardware
        }
        let changed = (gfn..gfn + pages).any(|g| self.rmp[&g].validated != validate);
        for g in gfn..gfn + pages {
            self.rmp.get_mut(&g).expect("checked").validated = validate;
        }
        Pvalidate::Done { changed }
    }

    fn touch(&mut self, gpa: u64) {
        self.touched.insert(gpa);
    }
}

/// A page state as the model's RMP holds it (for assertions).
pub fn state_of(hv: &Hypervisor, gpa: u64) -> Option<(PageState, bool)> {
    hv.rmp.get(&(gpa >> 12)).map(|e| (if e.private { PageState::Private } else { PageState::Shared }, e.validated))
}
