//! The TDCALL and TDVMCALL exchanges against the TDX module and VMM model: honest, then each
//! hostile behaviour, which must end in a precise refusal.

use super::model::TdxModel;
use super::tdcall::{self, Regs, TdcallError, vmcall};

#[test]
fn vp_info_and_the_shared_bit() {
    let mut m = TdxModel::new();
    let info = tdcall::vp_info(&mut m).unwrap();
    assert_eq!((info.gpaw, info.shared_bit()), (52, 1 << 51));
    m.gpaw = 48;
    assert_eq!(tdcall::vp_info(&mut m).unwrap().shared_bit(), 1 << 47);
    m.hostile.gpaw = Some(40);
    assert_eq!(tdcall::vp_info(&mut m), Err(TdcallError::Gpaw(40)));
}

#[test]
fn accept_uses_2m_pages_and_falls_back_to_4k() {
    let mut m = TdxModel::new();
    assert_eq!(tdcall::accept(&mut m, 0x20_0000, 0x60_2000), Ok((0x60_2000 - 0x20_0000) / 4096));
    assert_eq!(m.accepted.get(&0x20_0000), Some(&(2 << 20)));
    assert_eq!(m.accepted.get(&0x60_1000), Some(&4096));
    let mut small = TdxModel::new();
    small.hostile.accept_4k_only = true;
    small.hostile.busy = 3;
    assert!(tdcall::accept(&mut small, 0x20_0000, 0x60_0000).is_ok());
    // Two 2 MiB pages, each refused at that size and accepted as 512 4 KiB pages.
    assert_eq!(small.accepted.len(), 1024);
    assert_eq!(small.first_unusable(0x20_0000, 0x60_0000), None);
    let mut from_zero = TdxModel::new();
    from_zero.hostile.accept_4k_only = true;
    assert_eq!(tdcall::accept(&mut from_zero, 0, 0x40_0000), Ok(1024));
    assert_eq!(from_zero.first_unusable(0, 0x40_0000), None);
}

/// accept's range checks; a size mismatch answered to a 4 KiB accept, and a status the firmware
/// does not know, are refusals naming the status (never a page left unaccepted, never retried as
/// busy); the errors and #VE reports say what happened.
#[test]
fn accept_refuses_bad_ranges_and_statuses_it_does_not_know() {
    use super::tdcall::{leaf, status};
    let mut m = TdxModel::new();
    for (start, end) in [(0x1001, 0x2000), (0x1000, 0x2001), (0x3000, 0x2000)] {
        assert_eq!(tdcall::accept(&mut m, start, end), Err(TdcallError::Address(start)), "{start:#x}-{end:#x}");
    }
    assert_eq!(tdcall::accept(&mut m, 0x2000, 0x2000), Ok(0), "an empty range");
    assert!(m.accepted.is_empty());
    for s in [status::PAGE_SIZE_MISMATCH, 0xC000_0100_0000_0000] {
        let mut m = TdxModel::new();
        m.hostile.accept_status = Some(s);
        let e = tdcall::accept(&mut m, 0x1000, 0x2000).unwrap_err();
        assert_eq!(e, TdcallError::Module { leaf: leaf::MEM_PAGE_ACCEPT, status: s });
        assert_eq!(e.to_string(), format!("TDCALL leaf 6: the TDX module returned status {s:#018x}"));
    }
    let ve = |exit_reason| tdcall::VeInfo { exit_reason, qualification: 1, gla: 2, gpa: 3, instruction_length: 4 };
    for (reason, what) in [(10, "CPUID"), (12, "HLT"), (30, "port I/O"), (31, "RDMSR"), (32, "WRMSR"), (7, "exit")] {
        assert_eq!(
            ve(reason).to_string(),
            format!("#VE for {what} (exit reason {reason}, qualification 0x1, GPA 0x3, GLA 0x2, instruction length 4)")
        );
    }
}

#[test]
fn an_already_accepted_page_is_refused() {
    let mut m = TdxModel::new();
    m.pre_accept(0x30_0000, 0x1000);
    assert_eq!(tdcall::accept(&mut m, 0x30_0000, 0x30_2000), Err(TdcallError::AlreadyAccepted(0x30_0000)));
    let mut stuck = TdxModel::new();
    stuck.hostile.busy = u32::MAX;
    assert_eq!(tdcall::accept(&mut stuck, 0x1000, 0x2000), Err(TdcallError::Busy(0x1000)));
}

#[test]
fn vmcalls_round_trip_and_errors_are_precise() {
    let mut m = TdxModel::new();
    m.ports.insert(0x3FD, 0x60);
    tdcall::io_write(&mut m, 0x3F8, 1, u32::from(b'x')).unwrap();
    assert_eq!(m.ports[&0x3F8], u32::from(b'x'));
    assert_eq!(tdcall::io_read(&mut m, 0x3FD, 1), Ok(0x60));
    assert_eq!(tdcall::io_read(&mut m, 0x3FD, 3), Err(TdcallError::AccessSize(3)));
    let shared = 1 << 51;
    tdcall::mmio_write(&mut m, shared | 0xFEC0_0000, 4, 7, shared).unwrap();
    assert_eq!(tdcall::mmio_read(&mut m, shared | 0xFEC0_0000, 4, shared), Ok(7));
    // Private memory is never MMIO.
    assert_eq!(tdcall::mmio_read(&mut m, 0xFEC0_0000, 4, shared), Err(TdcallError::Address(0xFEC0_0000)));
    tdcall::wrmsr(&mut m, 0x2FF, 0xC06).unwrap();
    assert_eq!(tdcall::rdmsr(&mut m, 0x2FF), Ok(0xC06));
    assert!(tdcall::hypervisor_cpuid(&mut m, 0x4000_0000, 0).is_ok());
    assert_eq!(tdcall::hypervisor_cpuid(&mut m, 1, 0), Err(TdcallError::CpuidLeaf(1)));
    m.hostile.vmcall_status = Some(0x8000_0000_0000_0000);
    assert_eq!(
        tdcall::io_read(&mut m, 0x3FD, 1),
        Err(TdcallError::Vmcall { sub: vmcall::IO, status: 0x8000_0000_0000_0000 })
    );
}

/// The TDX model, noting the registers of each TDCALL as the guest made it.
struct Recorder(TdxModel, alloc::vec::Vec<Regs>);

impl tdcall::TdxCpu for Recorder {
    fn tdcall(&mut self, r: &mut Regs) {
        self.1.push(*r);
        self.0.tdcall(r)
    }
}

#[test]
fn vmcalls_are_encoded_as_the_ghci_lays_them_out() {
    // Written out from the GHCI (348552) and the TDX module ABI: RAX 0 (TDG.VP.VMCALL), RCX
    // 0xFC00 (R10-R15 exposed), R10 0 (a standard TDG.VP.VMCALL), R11 the sub-function (the
    // VM-exit reason: IO 30, RDMSR 31, WRMSR 32, #VE.RequestMMIO 48), R12-R15 its arguments.
    let vmcall = |r11: u64, r12: u64, r13: u64, r14: u64, r15: u64| Regs {
        rax: 0,
        rcx: 0xFC00,
        r10: 0,
        r11,
        r12,
        r13,
        r14,
        r15,
        ..Regs::default()
    };
    let mut cpu = Recorder(TdxModel::new(), alloc::vec::Vec::new());
    tdcall::io_write(&mut cpu, 0x3F8, 1, 0x41).unwrap();
    tdcall::io_read(&mut cpu, 0xCFC, 4).unwrap();
    tdcall::rdmsr(&mut cpu, 0x1B).unwrap();
    tdcall::wrmsr(&mut cpu, 0x2FF, 0xC06).unwrap();
    tdcall::mmio_read(&mut cpu, (1 << 51) | 0xFEC0_0000, 4, 1 << 51).unwrap();
    assert_eq!(
        cpu.1,
        [
            vmcall(30, 1, 1, 0x3F8, 0x41),
            vmcall(30, 4, 0, 0xCFC, 0),
            vmcall(31, 0x1B, 0, 0, 0),
            vmcall(32, 0x2FF, 0xC06, 0, 0),
            vmcall(48, 4, 0, (1 << 51) | 0xFEC0_0000, 0),
        ]
    );
    // TDG.MR.REPORT: RCX the report's GPA, RDX REPORTDATA's, R8 the subtype 0.
    let mut cpu = Recorder(TdxModel::new(), alloc::vec::Vec::new());
    cpu.0.memory.insert(0x8_0000, alloc::vec![0; 4096]);
    tdcall::mr_report(&mut cpu, 0x8_0000, 0x8_0400).unwrap();
    assert_eq!(cpu.1, [Regs { rax: 4, rcx: 0x8_0000, rdx: 0x8_0400, r8: 0, ..Regs::default() }]);
}

#[test]
fn the_model_shows_the_vmm_only_the_registers_rcx_exposes() {
    // A VMCALL that exposes RAX, RCX or RSP, or sets a bit above 31, is refused by the module.
    let mut m = TdxModel::new();
    m.ports.insert(0x3FD, 0x60);
    for rcx in [0xFC01, 0xFC02, 0xFC10, 0x1_0000_FC00, 0x8000_0000_0000_FC00] {
        let mut r = Regs { rcx, r11: vmcall::IO, r12: 1, r14: 0x3FD, ..Regs::default() };
        tdcall::TdxCpu::tdcall(&mut m, &mut r);
        assert_eq!(r.rax, 0xC000_0100_0000_0001, "{rcx:#x}");
    }
    // Bits 31:16 select XMM0-15: allowed (this VMM reads none of them).
    for rcx in [0xFC00, 0xFFFF_FC00] {
        let mut r = Regs { rcx, r11: vmcall::IO, r12: 1, r14: 0x3FD, ..Regs::default() };
        tdcall::TdxCpu::tdcall(&mut m, &mut r);
        assert_eq!((r.rax, r.r10, r.r11), (0, 0, 0x60), "{rcx:#x}");
    }
    // R10 other than 0 is a vendor-specific VMCALL, which this VMM has none of.
    let mut r = Regs { rcx: 0xFC00, r10: 0x4B564D, r11: vmcall::IO, r12: 1, r14: 0x3FD, ..Regs::default() };
    tdcall::TdxCpu::tdcall(&mut m, &mut r);
    assert_eq!((r.rax, r.r10, r.r11), (0, 0x8000_0000_0000_0000, vmcall::IO));
    // R11 hidden: the VMM sees sub-function 0, which it does not know, and the guest keeps
    // its own R11.
    let mut r = Regs { rcx: 0xF400, r11: vmcall::IO, r12: 1, r14: 0x3FD, ..Regs::default() };
    tdcall::TdxCpu::tdcall(&mut m, &mut r);
    assert_eq!((r.rax, r.r10, r.r11), (0, 0x8000_0000_0000_0000, vmcall::IO));
    // R14 hidden: the VMM reads port 0, not 0x3FD.
    let mut r = Regs { rcx: 0xBC00, r11: vmcall::IO, r12: 1, r14: 0x3FD, ..Regs::default() };
    tdcall::TdxCpu::tdcall(&mut m, &mut r);
    assert_eq!((r.rax, r.r10, r.r11), (0, 0, 0xFFFF_FFFF));
}

#[test]
fn port_input_is_cut_to_its_width() {
    // A VMM that answers a byte or word IN with all of R11 set.
    let mut m = TdxModel::new();
    m.ports.insert(0x3FD, 0xFFFF_FFFF);
    assert_eq!(tdcall::io_read(&mut m, 0x3FD, 1), Ok(0xFF));
    assert_eq!(tdcall::io_read(&mut m, 0x3FD, 2), Ok(0xFFFF));
    assert_eq!(tdcall::io_read(&mut m, 0x3FD, 4), Ok(0xFFFF_FFFF));
}

#[test]
fn map_gpa_follows_retries_and_refuses_bad_ones() {
    let shared = 1 << 51;
    let mut m = TdxModel::new();
    m.hostile.map_gpa_per_call = Some(3);
    tdcall::map_gpa(&mut m, 0x80_0000, 0x10_000, true, shared).unwrap();
    assert_eq!(m.shared.len(), 16);
    assert!(m.calls.iter().filter(|(_, s)| *s == vmcall::MAP_GPA).count() >= 6);
    tdcall::map_gpa(&mut m, 0x80_0000, 0x10_000, false, shared).unwrap();
    assert!(m.shared.is_empty());
    let mut outside = TdxModel::new();
    outside.hostile.map_gpa_outside = true;
    assert!(matches!(tdcall::map_gpa(&mut outside, 0x80_0000, 0x2000, true, shared), Err(TdcallError::MapGpaRetry(_))));
    let mut stall = TdxModel::new();
    stall.hostile.map_gpa_stalls = u32::MAX;
    assert_eq!(
        tdcall::map_gpa(&mut stall, 0x80_0000, 0x2000, true, shared),
        Err(TdcallError::MapGpaRetry(shared | 0x80_0000))
    );
    assert_eq!(stall.calls.len(), 3, "three answers without progress, then a refusal");
    // Two answers without progress are followed (Linux's rule allows three).
    let mut slow = TdxModel::new();
    slow.hostile.map_gpa_stalls = 2;
    assert_eq!(tdcall::map_gpa(&mut slow, 0x80_0000, 0x2000, true, shared), Ok(()));
    assert_eq!((slow.calls.len(), slow.shared.len()), (3, 2));
    // A resume address inside the range but before the last one: refused.
    let mut back = TdxModel::new();
    back.hostile.map_gpa_per_call = Some(1);
    back.hostile.map_gpa_backwards = true;
    assert_eq!(
        tdcall::map_gpa(&mut back, 0x80_0000, 0x3000, true, shared),
        Err(TdcallError::MapGpaRetry(shared | 0x80_0000))
    );
    // Ranges that are not whole pages, or start in (or reach) the shared alias: refused
    // before any call; an empty range needs none.
    let mut m = TdxModel::new();
    for (start, len) in
        [(0x80_0800, 0x1000), (0x80_0000, 0x800), (shared | 0x80_0000, 0x1000), (shared - 0x1000, 0x2000)]
    {
        assert_eq!(
            tdcall::map_gpa(&mut m, start, len, true, shared),
            Err(TdcallError::Address(start)),
            "{start:#x}+{len:#x}"
        );
    }
    assert_eq!(tdcall::map_gpa(&mut m, 0x80_0000, 0, true, shared), Ok(()));
    assert!(m.calls.is_empty());
    // The last private page is still one.
    assert_eq!(tdcall::map_gpa(&mut m, shared - 0x1000, 0x1000, true, shared), Ok(()));
}

#[test]
fn mmio_input_is_cut_to_its_width() {
    let shared = 1 << 51;
    let mut m = TdxModel::new();
    m.mmio.insert(shared | 0xFEC0_0000, u64::MAX);
    for (size, want) in [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFF_FFFF), (8, u64::MAX)] {
        assert_eq!(tdcall::mmio_read(&mut m, shared | 0xFEC0_0000, size, shared), Ok(want), "{size}");
    }
}

#[test]
fn dma_memory_is_ram_for_linux_again_only_once_accepted_again() {
    let shared = 1 << 51;
    let mut m = TdxModel::new();
    m.pre_accept(0x10_0000, 0x10_0000);
    tdcall::accept(&mut m, 0x20_0000, 0x60_0000).unwrap();
    assert_eq!(m.first_unusable(0x10_0000, 0x60_0000), None);
    assert_eq!(m.first_unusable(0x8_0000, 0x60_0000), Some(0x8_0000));
    assert_eq!(m.first_unusable(0x10_0000, 0x60_1000), Some(0x60_0000));
    tdcall::map_gpa(&mut m, 0x40_0000, 0x20_0000, true, shared).unwrap();
    assert_eq!(m.first_unusable(0x10_0000, 0x60_0000), Some(0x40_0000));
    // Private again but not accepted: still not RAM Linux can use.
    tdcall::map_gpa(&mut m, 0x40_0000, 0x20_0000, false, shared).unwrap();
    assert_eq!(m.first_unusable(0x10_0000, 0x60_0000), Some(0x40_0000));
    assert_eq!(tdcall::accept(&mut m, 0x40_0000, 0x60_0000), Ok(512));
    assert_eq!(m.first_unusable(0x10_0000, 0x60_0000), None);
    // A VMM that kept the private pages behind the shared ones: accepting them again finds
    // them accepted, with contents from before, and the firmware refuses them.
    m.hostile.map_gpa_keeps_private = true;
    tdcall::map_gpa(&mut m, 0x40_0000, 0x20_0000, true, shared).unwrap();
    tdcall::map_gpa(&mut m, 0x40_0000, 0x20_0000, false, shared).unwrap();
    assert_eq!(tdcall::accept(&mut m, 0x40_0000, 0x60_0000), Err(TdcallError::AlreadyAccepted(0x40_0000)));
}

#[test]
fn rtmr_extend_is_sha384_of_old_and_new() {
    use sha2::Digest;
    let mut m = TdxModel::new();
    let digest = [0x42u8; 48];
    m.memory.insert(0x9_0000, [digest.to_vec(), alloc::vec![0; 4096 - 48]].concat());
    tdcall::rtmr_extend(&mut m, 2, 0x9_0000).unwrap();
    let mut h = sha2::Sha384::new();
    h.update([0u8; 48]);
    h.update(digest);
    assert_eq!(m.rtmr[2][..], h.finalize()[..]);
    // RTMR 3 is the last; 4 is none.
    tdcall::rtmr_extend(&mut m, 3, 0x9_0000).unwrap();
    assert_eq!(m.rtmr[3], m.rtmr[2]);
    assert_eq!(tdcall::rtmr_extend(&mut m, 4, 0x9_0000), Err(TdcallError::Address(0x9_0000)));
    assert_eq!(tdcall::rtmr_extend(&mut m, 0, 0x9_0010), Err(TdcallError::Address(0x9_0010)));
}

#[test]
fn ve_info_reports_the_cause_or_its_absence() {
    let mut m = TdxModel::new();
    assert!(matches!(tdcall::ve_info(&mut m), Err(TdcallError::Module { leaf: 3, .. })));
    m.ve = Some((48, 0x181, 0x7000_0000, 0x7000_0000, 0));
    let ve = tdcall::ve_info(&mut m).unwrap();
    assert_eq!((ve.exit_reason, ve.gpa), (48, 0x7000_0000));
    assert!(ve.to_string().starts_with("#VE for EPT violation"));
    // Read once: the next #VE would be a double fault on hardware; the model has none pending.
    assert!(tdcall::ve_info(&mut m).is_err());
}

/// TDG.MR.REPORT then GetQuote, as the firmware runs them, against the model: the quote binds
/// the report data and the model's registers; each GetQuote failure is a precise refusal.
#[test]
fn report_then_quote_and_each_getquote_failure() {
    use super::getquote::{self, GetQuoteError};
    let keys = super::getquote::model::QuotingKeys {
        attestation: [3u8; 32],
        pck: [5u8; 32],
        chain_pem: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
        qe_mrsigner: [1u8; 32],
        qe_isvsvn: 4,
    };
    let shared = 1u64 << 51;
    let run = |m: &mut TdxModel| -> Result<Vec<u8>, GetQuoteError> {
        m.memory.insert(0x1000, [0x42u8; 64].to_vec());
        tdcall::mr_report(m, 0x2000, 0x1000).unwrap();
        let report = m.memory[&0x2000][..1024].to_vec();
        let mut buf = vec![0u8; 16384];
        getquote::request(&mut buf, &report).unwrap();
        for (i, c) in buf.chunks(4096).enumerate() {
            m.memory.insert(0x10_0000 + i as u64 * 4096, c.to_vec());
        }
        tdcall::get_quote(m, 0x10_0000, 16384, shared).unwrap();
        let back: Vec<u8> = (0..4).flat_map(|i| m.memory[&(0x10_0000 + i * 4096)].clone()).collect();
        getquote::response(&back).map(|q| q.expect("answered"))
    };
    let mut m = TdxModel::new();
    m.mrtd = [0x11; 48];
    m.quoting = Some(keys.clone());
    let q = super::quote::parse(&run(&mut m).unwrap()).unwrap();
    assert_eq!((q.body.report_data, q.body.mr_td), ([0x42; 64], [0x11; 48]));
    let mut none = TdxModel::new();
    assert_eq!(run(&mut none), Err(GetQuoteError::Unavailable));
    let mut failing = TdxModel::new();
    failing.quoting = Some(keys.clone());
    failing.hostile.quote_status = Some(getquote::ERROR);
    assert_eq!(run(&mut failing), Err(GetQuoteError::ServiceError));
    let mut overlong = TdxModel::new();
    overlong.quoting = Some(keys);
    overlong.hostile.quote_overlong = true;
    assert!(matches!(run(&mut overlong), Err(GetQuoteError::Length { .. })));
    // Misaligned buffers are refused before the TDCALL.
    assert_eq!(tdcall::mr_report(&mut m, 0x2100, 0x1000), Err(TdcallError::Address(0x2100)));
    assert_eq!(
        tdcall::get_quote(&mut m, 0x10_0000 | shared, 4096, shared),
        Err(TdcallError::Address(0x10_0000 | shared))
    );
}

/// Issue 37: the model answers TDCALLs from its own table of the TDX module ABI and the GHCI
/// (model::abi), not from the firmware's constants. Both tables must name the same numbers:
/// the leaves and sub-functions the firmware sends, and the statuses it acts on (the size
/// mismatch as the module reports it, on the RCX operand; busy by its class alone, whatever
/// operand details follow).
#[test]
fn tdx_abi_agrees_with_the_firmware() {
    use super::getquote;
    use super::model::abi;
    use super::tdcall::{leaf, status};
    for (firmware, spec, name) in [
        (leaf::VP_VMCALL, abi::leaf::TDG_VP_VMCALL, "TDG.VP.VMCALL"),
        (leaf::VP_INFO, abi::leaf::TDG_VP_INFO, "TDG.VP.INFO"),
        (leaf::MR_RTMR_EXTEND, abi::leaf::TDG_MR_RTMR_EXTEND, "TDG.MR.RTMR.EXTEND"),
        (leaf::VP_VEINFO_GET, abi::leaf::TDG_VP_VEINFO_GET, "TDG.VP.VEINFO.GET"),
        (leaf::MR_REPORT, abi::leaf::TDG_MR_REPORT, "TDG.MR.REPORT"),
        (leaf::MEM_PAGE_ACCEPT, abi::leaf::TDG_MEM_PAGE_ACCEPT, "TDG.MEM.PAGE.ACCEPT"),
        (vmcall::CPUID, abi::subfunction::CPUID, "Instruction.CPUID"),
        (vmcall::IO, abi::subfunction::IO, "Instruction.IO"),
        (vmcall::RDMSR, abi::subfunction::RDMSR, "Instruction.RDMSR"),
        (vmcall::WRMSR, abi::subfunction::WRMSR, "Instruction.WRMSR"),
        (vmcall::MMIO, abi::subfunction::REQUEST_MMIO, "#VE.RequestMMIO"),
        (vmcall::MAP_GPA, abi::subfunction::MAP_GPA, "MapGPA"),
        (vmcall::GET_QUOTE, abi::subfunction::GET_QUOTE, "GetQuote"),
        (
            status::PAGE_SIZE_MISMATCH,
            abi::status::PAGE_SIZE_MISMATCH | abi::status::OPERAND_ID_RCX,
            "TDX_PAGE_SIZE_MISMATCH(RCX)",
        ),
        (status::PAGE_ALREADY_ACCEPTED, abi::status::PAGE_ALREADY_ACCEPTED, "TDX_PAGE_ALREADY_ACCEPTED"),
        (status::OPERAND_BUSY, abi::status::OPERAND_BUSY, "TDX_OPERAND_BUSY"),
        (status::VMCALL_RETRY, abi::vmcall_status::RETRY, "TDG.VP.VMCALL_RETRY"),
        (getquote::SUCCESS, abi::quote_status::SUCCESS, "GET_QUOTE_SUCCESS"),
        (getquote::IN_FLIGHT, abi::quote_status::IN_FLIGHT, "GET_QUOTE_IN_FLIGHT"),
        (getquote::ERROR, abi::quote_status::ERROR, "GET_QUOTE_ERROR"),
        (getquote::UNAVAILABLE, abi::quote_status::SERVICE_UNAVAILABLE, "GET_QUOTE_SERVICE_UNAVAILABLE"),
    ] {
        assert_eq!(firmware, spec, "{name}: the firmware says {firmware:#x}, the specification {spec:#x}");
    }
    // Each firmware call reaches the model under the leaf (and sub-function) the model's table
    // names: the model answers unknown numbers with OPERAND_INVALID / INVALID_OPERAND, which the
    // round trips of the tests above would turn into errors.
    let mut m = TdxModel::new();
    tdcall::vp_info(&mut m).unwrap();
    assert_eq!(tdcall::accept(&mut m, 0x20_0000, 0x40_0000), Ok(512));
    assert_eq!(tdcall::map_gpa(&mut m, 0x1000, 0x1000, true, 1 << 51), Ok(()));
    assert_eq!(
        m.calls,
        [
            (abi::leaf::TDG_VP_INFO, 0),
            (abi::leaf::TDG_MEM_PAGE_ACCEPT, 0),
            (abi::leaf::TDG_VP_VMCALL, abi::subfunction::MAP_GPA)
        ]
    );
}
