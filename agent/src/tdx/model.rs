//! A model of the other end of a TD: the TDX module's side of the TDCALL leaves the firmware
//! uses (VP.INFO, MEM.PAGE.ACCEPT, MR.RTMR.EXTEND) and the VMM's side of TDG.VP.VMCALL (port
//! I/O, MMIO, MSRs, hypervisor CPUID, MapGPA), written from the TDX module ABI and the GHCI,
//! with switches for the ways a hostile VMM (or a VMM-driven module state) can misbehave.
//! Tests and the `model` feature only, never a release ROM.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use sha2::Digest;

use super::tdcall::{Regs, TdxCpu};

pub mod abi;

use abi::{leaf, quote_status, status, subfunction, vmcall_status};

/// Ways the model misbehaves.
#[derive(Debug, Default, Clone)]
pub struct Hostile {
    /// Report this GPAW.
    pub gpaw: Option<u8>,
    /// Pages are mapped 4 KiB only (2 MiB accepts fail with a size mismatch).
    pub accept_4k_only: bool,
    /// Answer this many accepts with OPERAND_BUSY first.
    pub busy: u32,
    /// Answer every accept (after the busy ones) with this status.
    pub accept_status: Option<u64>,
    /// Answer every VMCALL with this status in R10.
    pub vmcall_status: Option<u64>,
    /// MapGPA: ask to resume outside the range.
    pub map_gpa_outside: bool,
    /// MapGPA: ask to resume where it started this many times (`u32::MAX`: for ever), then
    /// do the work.
    pub map_gpa_stalls: u32,
    /// MapGPA: once, on a call after the first, ask to resume a page before where it was asked
    /// to start (inside the range, but backwards).
    pub map_gpa_backwards: bool,
    /// MapGPA: convert this many pages per call, then ask to resume.
    pub map_gpa_per_call: Option<u64>,
    /// MapGPA to shared: keep the private pages (still accepted, with their old contents)
    /// instead of removing them.
    pub map_gpa_keeps_private: bool,
    /// GetQuote: answer with this status instead of a quote.
    pub quote_status: Option<u64>,
    /// GetQuote: claim a quote longer than the buffer.
    pub quote_overlong: bool,
}

/// The TDX module and VMM model.
pub struct TdxModel {
    /// The machine behind the VMM inside a guest (the test ROM: TCG's devices and memory);
    /// None in host tests, which use the maps below.
    pub machine: Option<Box<dyn crate::snp::model::Machine + Send>>,
    /// Guest-physical address width.
    pub gpaw: u8,
    /// TD attributes.
    pub attributes: u64,
    /// vCPUs (TDG.VP.INFO's NUM_VCPUS and MAX_VCPUS).
    pub vcpus: u32,
    /// Accepted private ranges (start -> length).
    pub accepted: BTreeMap<u64, u64>,
    /// Pages (4 KiB GPAs) currently shared.
    pub shared: BTreeSet<u64>,
    /// The RTMRs.
    pub rtmr: [[u8; 48]; 4],
    /// Guest memory the model reads (RTMR digests), by GPA, without a machine.
    pub memory: BTreeMap<u64, Vec<u8>>,
    /// Port values returned by IN, and written by OUT.
    pub ports: BTreeMap<u16, u32>,
    /// MMIO: the last value written per address.
    pub mmio: BTreeMap<u64, u64>,
    /// MSR values.
    pub msrs: BTreeMap<u32, u64>,
    /// TDCALLs seen: (leaf, sub-function for VMCALLs).
    pub calls: Vec<(u64, u64)>,
    /// MRTD (what the module measured at launch).
    pub mrtd: [u8; 48],
    /// MRCONFIGID (the VMM's, at launch).
    pub mr_config_id: [u8; 48],
    /// TEE_TCB_SVN of the module.
    pub tee_tcb_svn: [u8; 16],
    /// The quoting service behind the VMM (None: GetQuote answers "unavailable").
    pub quoting: Option<super::getquote::model::QuotingKeys>,
    /// The pending #VE (exit reason, qualification, GLA, GPA, instruction length), if any.
    pub ve: Option<(u32, u64, u64, u64, u32)>,
    /// How to misbehave.
    pub hostile: Hostile,
    /// The high half of the fw_cfg DMA descriptor address last written.
    fw_cfg_dma_high: u32,
    /// fw_cfg DMA transfers the VMM could not perform (private memory named).
    pub dma_refused: u32,
    /// TDG.MEM.PAGE.ACCEPT calls that accepted, by page size: [4 KiB, 2 MiB] (issue 32's
    /// counts; the TDX module clears every page it accepts).
    pub accepts: [u64; 2],
}

impl core::fmt::Debug for TdxModel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TdxModel").field("gpaw", &self.gpaw).field("rtmr", &self.rtmr).finish_non_exhaustive()
    }
}

impl Default for TdxModel {
    fn default() -> Self {
        TdxModel::new()
    }
}

impl TdxModel {
    /// An honest model with GPAW 52.
    pub fn new() -> TdxModel {
        TdxModel {
            machine: None,
            gpaw: 52,
            attributes: 1 << 28, // SEPT_VE_DISABLE
            vcpus: 1,
            accepted: BTreeMap::new(),
            shared: BTreeSet::new(),
            rtmr: [[0; 48]; 4],
            memory: BTreeMap::new(),
            ports: BTreeMap::new(),
            mmio: BTreeMap::new(),
            msrs: BTreeMap::new(),
            calls: Vec::new(),
            mrtd: [0; 48],
            mr_config_id: [0; 48],
            tee_tcb_svn: [0; 16],
            quoting: None,
            ve: None,
            hostile: Hostile::default(),
            fw_cfg_dma_high: 0,
            dma_refused: 0,
            accepts: [0; 2],
        }
    }

    /// Mark `[start, start+len)` accepted already (as if the VMM added it to the TD).
    pub fn pre_accept(&mut self, start: u64, len: u64) {
        self.accepted.insert(start, len);
    }

    /// The first page of `[start, end)` an OS could not use as RAM: one that is shared or not
    /// accepted. Linux, booted without UEFI, accepts nothing it is given as RAM and would take
    /// a #VE on such a page.
    pub fn first_unusable(&self, start: u64, end: u64) -> Option<u64> {
        let (start, end) = (start & !0xFFF, end.next_multiple_of(4096));
        if let Some(page) = self.shared.range(start..end).next() {
            return Some(*page);
        }
        // Sweep the accepted ranges in order of their starts (they may overlap).
        let mut at = start;
        for (s, l) in self.accepted.range(..end) {
            if at >= end {
                break;
            }
            if *s > at {
                return Some(at);
            }
            at = at.max(s + l);
        }
        (at < end).then_some(at)
    }

    fn is_accepted(&self, start: u64, len: u64) -> bool {
        self.accepted.range(..start + len).any(|(s, l)| *s < start + len && start < s + l)
    }

    fn accept(&mut self, r: &mut Regs) {
        let huge = r.rcx & 7 == 1;
        let gpa = r.rcx & !0xFFF;
        let len = if huge { 2 << 20 } else { 4096 };
        if self.hostile.busy > 0 {
            self.hostile.busy -= 1;
            r.rax = status::OPERAND_BUSY | status::OPERAND_ID_RCX;
            return;
        }
        if let Some(s) = self.hostile.accept_status {
            r.rax = s;
            return;
        }
        if huge && self.hostile.accept_4k_only {
            r.rax = status::PAGE_SIZE_MISMATCH | status::OPERAND_ID_RCX;
            return;
        }
        if !gpa.is_multiple_of(len) || r.rcx & 7 > 1 {
            r.rax = status::OPERAND_INVALID | status::OPERAND_ID_RCX;
            return;
        }
        if self.is_accepted(gpa, len) {
            r.rax = status::PAGE_ALREADY_ACCEPTED;
            return;
        }
        self.accepted.insert(gpa, len);
        self.accepts[usize::from(huge)] += 1;
        r.rax = status::SUCCESS;
    }

    fn write_mem(&mut self, gpa: u64, bytes: &[u8]) {
        if let Some(m) = self.machine.as_mut() {
            m.write_guest(gpa, bytes);
            return;
        }
        for (i, chunk) in bytes.chunks(4096).enumerate() {
            let at = gpa + (i as u64) * 4096;
            let page = at & !0xFFF;
            let off = (at - page) as usize;
            let v = self.memory.entry(page).or_default();
            v.resize(4096, 0);
            let n = chunk.len().min(4096 - off);
            v[off..off + n].copy_from_slice(&chunk[..n]);
            if n < chunk.len() {
                self.write_mem(page + 4096, &chunk[n..]);
            }
        }
    }

    /// The TDREPORT TDG.MR.REPORT writes: REPORTMACSTRUCT (type TDX, REPORTDATA), TEE_TCB_INFO
    /// (TEE_TCB_SVN), TDINFO (attributes, MRTD, MRCONFIGID, RTMRs). No MAC: nothing checks it
    /// outside a CPU.
    pub fn tdreport(&self, report_data: &[u8; 64]) -> [u8; 1024] {
        let mut r = [0u8; 1024];
        r[0] = 0x81;
        r[128..192].copy_from_slice(report_data);
        r[256 + 8..256 + 24].copy_from_slice(&self.tee_tcb_svn);
        let td = 512;
        r[td..td + 8].copy_from_slice(&self.attributes.to_le_bytes());
        r[td + 16..td + 64].copy_from_slice(&self.mrtd);
        r[td + 64..td + 112].copy_from_slice(&self.mr_config_id);
        for (i, v) in self.rtmr.iter().enumerate() {
            r[td + 208 + 48 * i..td + 256 + 48 * i].copy_from_slice(v);
        }
        r
    }

    fn get_quote(&mut self, r: &mut Regs) {
        let shared_bit = 1u64 << (self.gpaw - 1);
        let (gpa, len) = (r.r12 & !shared_bit, r.r13 as usize);
        if r.r12 & shared_bit == 0 || !(super::getquote::HEADER + 1024..=1 << 20).contains(&len) {
            r.r10 = vmcall_status::INVALID_OPERAND;
            return;
        }
        let mut buf = self.read_mem(gpa, len);
        let status = match (&self.quoting, self.hostile.quote_status) {
            (_, Some(s)) => s,
            (None, None) => quote_status::SERVICE_UNAVAILABLE,
            (Some(keys), None) => {
                let quote = super::getquote::model::quote(&buf[24..24 + 1024], keys);
                let n = quote.len().min(len - 24);
                buf[24..24 + n].copy_from_slice(&quote[..n]);
                let out = if self.hostile.quote_overlong { len as u32 } else { quote.len() as u32 };
                buf[20..24].copy_from_slice(&out.to_le_bytes());
                if quote.len() > len - 24 { quote_status::ERROR } else { quote_status::SUCCESS }
            }
        };
        buf[8..16].copy_from_slice(&status.to_le_bytes());
        self.write_mem(gpa, &buf);
    }

    fn read_mem(&mut self, gpa: u64, n: usize) -> Vec<u8> {
        if let Some(m) = self.machine.as_mut() {
            let mut v = alloc::vec![0u8; n];
            m.read_guest(gpa, &mut v);
            return v;
        }
        let mut out = Vec::with_capacity(n);
        let mut at = gpa;
        while out.len() < n {
            let page = at & !0xFFF;
            let mut v = self.memory.get(&page).cloned().unwrap_or_default();
            v.resize(4096, 0);
            let off = (at - page) as usize;
            let take = (4096 - off).min(n - out.len());
            out.extend_from_slice(&v[off..off + take]);
            at += take as u64;
        }
        out
    }

    /// The VMM reaches only memory the TD made shared (MapGPA): a fw_cfg DMA whose descriptor
    /// or data lies in private memory cannot be performed (on hardware the private pages are
    /// not in the VMM's reach), so the model drops that OUT (counted in `dma_refused`) and the
    /// TD sees a transfer that never completes. Other ports: true.
    fn vmm_reaches_fw_cfg_dma(&mut self, port: u16, value: u32) -> bool {
        use crate::fwcfg::{DMA_PORT_HIGH, DMA_PORT_LOW, dma_data_range};
        if port == DMA_PORT_HIGH {
            self.fw_cfg_dma_high = u32::from_be(value);
        }
        if port != DMA_PORT_LOW {
            return true;
        }
        let shared_bit = 1u64 << (self.gpaw - 1);
        let gpa = (u64::from(self.fw_cfg_dma_high) << 32 | u64::from(u32::from_be(value))) & !shared_bit;
        let shared = |set: &BTreeSet<u64>, start: u64, end: u64| {
            (start / 4096..end.div_ceil(4096)).all(|gfn| set.contains(&(gfn * 4096)))
        };
        let mut descriptor = [0u8; 16];
        let reachable = shared(&self.shared, gpa, gpa + 16) && {
            if let Some(m) = self.machine.as_mut() {
                m.read_guest(gpa, &mut descriptor);
            }
            dma_data_range(&descriptor).is_none_or(|(a, b)| shared(&self.shared, a & !shared_bit, b & !shared_bit))
        };
        if !reachable {
            self.dma_refused += 1;
        }
        reachable
    }

    fn vmcall(&mut self, r: &mut Regs) {
        let sub = r.r11;
        self.calls.push((leaf::TDG_VP_VMCALL, sub));
        if let Some(s) = self.hostile.vmcall_status {
            r.r10 = s;
            return;
        }
        // R10 = 0 is a standard (GHCI) TDG.VP.VMCALL; anything else is a vendor's, which this
        // VMM has none of.
        if r.r10 != 0 {
            r.r10 = vmcall_status::INVALID_OPERAND;
            return;
        }
        r.r10 = vmcall_status::SUCCESS;
        match sub {
            subfunction::IO if self.machine.is_some() => {
                let (port, size) = (r.r14 as u16, r.r12 as u8);
                let reachable = r.r13 != 1 || self.vmm_reaches_fw_cfg_dma(port, r.r15 as u32);
                let m = self.machine.as_mut().expect("checked");
                if r.r13 == 1 {
                    if reachable {
                        m.io_out(port, size, r.r15 as u32);
                    }
                } else {
                    r.r11 = u64::from(m.io_in(port, size));
                }
            }
            subfunction::REQUEST_MMIO if self.machine.is_some() => {
                let m = self.machine.as_mut().expect("checked");
                let shared_bit = 1u64 << (self.gpaw - 1);
                let (gpa, size) = (r.r14 & !shared_bit, r.r12 as u8);
                if r.r13 == 1 {
                    m.mmio_write(gpa, size, r.r15);
                } else {
                    r.r11 = m.mmio_read(gpa, size);
                }
            }
            subfunction::IO => {
                let port = r.r14 as u16;
                if r.r13 == 1 {
                    self.ports.insert(port, r.r15 as u32);
                } else {
                    r.r11 = u64::from(*self.ports.get(&port).unwrap_or(&0xFFFF_FFFF));
                }
            }
            subfunction::REQUEST_MMIO => {
                if r.r13 == 1 {
                    self.mmio.insert(r.r14, r.r15);
                } else {
                    r.r11 = *self.mmio.get(&r.r14).unwrap_or(&0);
                }
            }
            subfunction::RDMSR => r.r11 = *self.msrs.get(&(r.r12 as u32)).unwrap_or(&0),
            subfunction::WRMSR => {
                self.msrs.insert(r.r12 as u32, r.r13);
            }
            subfunction::CPUID => (r.r12, r.r13, r.r14, r.r15) = (0x4000_0001, 0x4B4D564B, 0x564B4D56, 0x4D),
            subfunction::MAP_GPA => self.map_gpa(r),
            subfunction::GET_QUOTE => self.get_quote(r),
            _ => r.r10 = vmcall_status::INVALID_OPERAND,
        }
    }

    fn map_gpa(&mut self, r: &mut Regs) {
        let shared_bit = 1u64 << (self.gpaw - 1);
        let (start, len) = (r.r12 & !shared_bit, r.r13);
        let to_shared = r.r12 & shared_bit != 0;
        if self.hostile.map_gpa_outside {
            r.r10 = vmcall_status::RETRY;
            r.r11 = start + len + 0x1000;
            return;
        }
        if self.hostile.map_gpa_stalls > 0 {
            self.hostile.map_gpa_stalls =
                self.hostile.map_gpa_stalls.saturating_sub(u32::from(self.hostile.map_gpa_stalls != u32::MAX));
            r.r10 = vmcall_status::RETRY;
            r.r11 = r.r12;
            return;
        }
        let map_gpa_calls = || self.calls.iter().filter(|c| *c == &(leaf::TDG_VP_VMCALL, subfunction::MAP_GPA)).count();
        // The flag first: the model ROM's honest VMM need not scan its call list on every MapGPA.
        if self.hostile.map_gpa_backwards && map_gpa_calls() > 1 {
            self.hostile.map_gpa_backwards = false;
            r.r10 = vmcall_status::RETRY;
            r.r11 = r.r12 - 0x1000;
            return;
        }
        let pages = len / 4096;
        let budget = self.hostile.map_gpa_per_call.unwrap_or(pages).min(pages);
        for i in 0..budget {
            let page = start + i * 4096;
            if to_shared {
                self.shared.insert(page);
                // Converting to shared drops the private page (it must be accepted again).
                if !self.hostile.map_gpa_keeps_private {
                    self.accepted.retain(|s, l| !(*s <= page && page < s + *l));
                }
            } else {
                self.shared.remove(&page);
            }
        }
        if budget < pages {
            r.r10 = vmcall_status::RETRY;
            r.r11 = (start + budget * 4096) | if to_shared { shared_bit } else { 0 };
        }
    }
}

/// The registers a TDG.VP.VMCALL can expose that the model's `Regs` carry, with their bit in
/// the RCX bitmap (bit n = register n: RDX 2, R8-R15 8-15), as (bit, guest's, VMM's view).
fn exposable<'a>(guest: &'a mut Regs, vmm: &'a mut Regs) -> [(u32, &'a mut u64, &'a mut u64); 9] {
    [
        (2, &mut guest.rdx, &mut vmm.rdx),
        (8, &mut guest.r8, &mut vmm.r8),
        (9, &mut guest.r9, &mut vmm.r9),
        (10, &mut guest.r10, &mut vmm.r10),
        (11, &mut guest.r11, &mut vmm.r11),
        (12, &mut guest.r12, &mut vmm.r12),
        (13, &mut guest.r13, &mut vmm.r13),
        (14, &mut guest.r14, &mut vmm.r14),
        (15, &mut guest.r15, &mut vmm.r15),
    ]
}

impl TdxCpu for TdxModel {
    fn tdcall(&mut self, r: &mut Regs) {
        match r.rax {
            leaf::TDG_VP_VMCALL => {
                // RCX[15:0] is the bitmap of the GPRs the VMM sees (bit n = register n),
                // RCX[31:16] that of XMM0-15 (none of which the model's VMM uses); RAX, RCX
                // and RSP (bits 0, 1, 4) and bits 63:32 must be 0 (TDX module ABI,
                // TDG.VP.VMCALL; the module's `tdvmcall_control_t`).
                if r.rcx & (0b1_0011 | 0xFFFF_FFFF_0000_0000) != 0 {
                    r.rax = status::OPERAND_INVALID | status::OPERAND_ID_RCX;
                    return;
                }
                // The VMM reads and writes only the exposed registers; the others keep the
                // guest's values (and the VMM sees 0 in them).
                let bitmap = r.rcx;
                let mut vmm = Regs { rax: r.rax, rcx: bitmap, ..Regs::default() };
                for (bit, guest, host) in exposable(r, &mut vmm) {
                    if bitmap >> bit & 1 == 1 {
                        *host = *guest;
                    }
                }
                self.vmcall(&mut vmm);
                for (bit, guest, host) in exposable(r, &mut vmm) {
                    if bitmap >> bit & 1 == 1 {
                        *guest = *host;
                    }
                }
                r.rax = status::SUCCESS;
            }
            leaf::TDG_VP_INFO => {
                self.calls.push((leaf::TDG_VP_INFO, 0));
                r.rcx = u64::from(self.hostile.gpaw.unwrap_or(self.gpaw));
                r.rdx = self.attributes;
                let n = u64::from(self.vcpus);
                (r.r8, r.r9, r.rax) = (n | (n << 32), 0, status::SUCCESS);
            }
            leaf::TDG_MR_REPORT => {
                self.calls.push((leaf::TDG_MR_REPORT, 0));
                let (report_gpa, data_gpa) = (r.rcx, r.rdx);
                if !report_gpa.is_multiple_of(1024) || !data_gpa.is_multiple_of(64) || r.r8 != 0 {
                    r.rax = status::OPERAND_INVALID;
                    return;
                }
                let data: [u8; 64] = self.read_mem(data_gpa, 64).try_into().expect("64 bytes");
                let report = self.tdreport(&data);
                self.write_mem(report_gpa, &report);
                r.rax = status::SUCCESS;
            }
            leaf::TDG_VP_VEINFO_GET => {
                self.calls.push((leaf::TDG_VP_VEINFO_GET, 0));
                match self.ve.take() {
                    Some((reason, qual, gla, gpa, len)) => {
                        (r.rcx, r.rdx, r.r8, r.r9, r.r10) = (u64::from(reason), qual, gla, gpa, u64::from(len));
                        r.rax = status::SUCCESS;
                    }
                    None => r.rax = status::NO_VALID_VE_INFO,
                }
            }
            leaf::TDG_MEM_PAGE_ACCEPT => {
                self.calls.push((leaf::TDG_MEM_PAGE_ACCEPT, 0));
                self.accept(r);
            }
            leaf::TDG_MR_RTMR_EXTEND => {
                self.calls.push((leaf::TDG_MR_RTMR_EXTEND, 0));
                let (gpa, index) = (r.rcx, r.rdx as usize);
                if index > 3 || !gpa.is_multiple_of(64) {
                    r.rax = status::OPERAND_INVALID;
                    return;
                }
                let digest = self.read_mem(gpa, 48);
                let mut h = sha2::Sha384::new();
                h.update(self.rtmr[index]);
                h.update(&digest);
                self.rtmr[index] = h.finalize().into();
                r.rax = status::SUCCESS;
            }
            _ => r.rax = status::OPERAND_INVALID,
        }
    }
}
