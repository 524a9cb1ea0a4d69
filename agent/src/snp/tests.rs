//! The GHCB protocol and the memory operations against the hypervisor model: honest, then
//! each hostile behaviour, which must end in a precise refusal.

use super::ghcb::{self, Ghcb, GhcbError, PageState};
use super::memory::{self, MemoryError};
use super::model::{Hypervisor, state_of};

fn registered() -> Hypervisor {
    let mut hv = Hypervisor::new();
    ghcb::register(&mut hv, 0x80_0000).unwrap();
    hv
}

#[test]
fn msr_protocol_checks_every_answer() {
    let mut hv = Hypervisor::new();
    assert_eq!(ghcb::check_sev_info(&mut hv, 51), Ok(()));
    assert!(ghcb::hv_features(&mut hv).unwrap() & 1 == 1);
    assert_eq!(ghcb::register(&mut hv, 0x80_0000), Ok(()));
    assert_eq!(hv.registered, Some(0x800));

    let mut liar = Hypervisor::new();
    liar.hostile.cbit = Some(47);
    assert_eq!(ghcb::check_sev_info(&mut liar, 51), Err(GhcbError::CbitMismatch { hypervisor: 47, firmware: 51 }));
    assert_eq!(
        GhcbError::CbitMismatch { hypervisor: 47, firmware: 51 }.to_string(),
        "the hypervisor reports C-bit 47, the PSP-validated CPUID page says 51: refusing to trust either"
    );
    // A page's Debug form names its exit code, never its shared contents.
    assert_eq!(format!("{:?}", ghcb::GhcbPage::default()), "GhcbPage { sw_exit_code: 0, .. }");
    let mut old = Hypervisor::new();
    old.hostile.protocol = Some((1, 1));
    assert_eq!(ghcb::check_sev_info(&mut old, 51), Err(GhcbError::ProtocolVersion { min: 1, max: 1 }));
    let mut odd = Hypervisor::new();
    odd.hostile.msr_response = Some(0x7);
    assert_eq!(ghcb::check_sev_info(&mut odd, 51), Err(GhcbError::MsrResponse { expected: 1, got: 7 }));
    let mut no_snp = Hypervisor::new();
    no_snp.hostile.features = Some(0b10);
    assert_eq!(ghcb::hv_features(&mut no_snp), Err(GhcbError::NoSnpFeature(0b10)));
    let mut elsewhere = Hypervisor::new();
    elsewhere.hostile.register_gfn = Some(0x123);
    assert_eq!(ghcb::register(&mut elsewhere, 0x80_0000), Err(GhcbError::Registration { asked: 0x800, got: 0x123 }));
}

#[test]
fn msr_page_state_change() {
    let mut hv = Hypervisor::new();
    assert_eq!(ghcb::msr_page_state(&mut hv, 0x5000, PageState::Private), Ok(()));
    assert_eq!(state_of(&hv, 0x5000), Some((PageState::Private, false)));
    hv.hostile.msr_response = Some(0x015 | (7 << 32));
    assert_eq!(ghcb::msr_page_state(&mut hv, 0x5000, PageState::Shared), Err(GhcbError::MsrPsc(7)));
    assert_eq!(ghcb::terminate_request(1), 0x100 | (7 << 12) | (1 << 16));
}

#[test]
fn io_msr_cpuid_and_mmio_round_trip() {
    let mut hv = registered();
    hv.ports.insert(0x3FD, 0x60);
    {
        let mut g = Ghcb::new(&mut hv);
        for b in b"hi" {
            g.io_write(0x3F8, 1, u32::from(*b)).unwrap();
        }
        assert_eq!(g.io_read(0x3FD, 1), Ok(0x60));
        g.wrmsr(0x2FF, 0x0000_0001_0000_0C06).unwrap();
        assert_eq!(g.rdmsr(0x2FF), Ok(0x0000_0001_0000_0C06));
        assert_eq!(g.cpuid(0x4000_0000, 0), Ok([0x4000_0000, 0x4000_0001, 0x4000_0002, 0x4000_0003]));
        let shared = |gpa: u64| gpa >= 0xFE00_0000;
        g.mmio_write(0xFE00_1000, 4, 0xDEAD_BEEF, &shared).unwrap();
        assert_eq!(g.mmio_read(0xFE00_1000, 4, &shared), Ok(0xDEAD_BEEF));
        // MMIO at private memory, misaligned, or of an odd size is refused before any exit.
        assert_eq!(g.mmio_read(0x10_0000, 4, &shared), Err(GhcbError::MmioAddress(0x10_0000)));
        assert_eq!(g.mmio_read(0xFE00_1001, 4, &shared), Err(GhcbError::MmioAddress(0xFE00_1001)));
        assert_eq!(g.mmio_read(0xFE00_1000, 3, &shared), Err(GhcbError::AccessSize(3)));
        assert_eq!(g.io_write(0x3F8, 8, 0), Err(GhcbError::AccessSize(8)));
    }
    assert_eq!(hv.console, b"hi");
}

#[test]
fn hostile_exit_answers_are_refused() {
    // No GHCB registered: the hypervisor answers with GHCB error 1.
    let mut hv = Hypervisor::new();
    assert_eq!(Ghcb::new(&mut hv).io_write(0x3F8, 1, 0), Err(GhcbError::Hypervisor { exit: 0x7B, code: 1 }));
    let mut hv = registered();
    hv.hostile.inject = true;
    assert!(matches!(Ghcb::new(&mut hv).rdmsr(0x10), Err(GhcbError::EventInjection { exit: 0x7C, .. })));
    let mut hv = registered();
    hv.hostile.drop_valid_bits = true;
    assert_eq!(Ghcb::new(&mut hv).io_read(0x3FD, 1), Err(GhcbError::OutputNotValid { exit: 0x7B, offset: 0x1F8 }));
    assert_eq!(Ghcb::new(&mut hv).cpuid(0x4000_0000, 0), Err(GhcbError::OutputNotValid { exit: 0x72, offset: 0x1F8 }));
    let mut hv = registered();
    hv.hostile.clobber_version = true;
    assert_eq!(Ghcb::new(&mut hv).io_write(0x3F8, 1, 0), Err(GhcbError::PageHeader));
}

#[test]
fn validate_uses_2m_pages_falls_back_to_4k_and_touches_every_page() {
    let (start, end) = (0x20_0000, 0x60_0000 + 0x2000); // two 2 MiB pages and two 4 KiB pages
    let mut hv = registered();
    assert_eq!(memory::validate(&mut Ghcb::new(&mut hv), start, end), Ok((end - start) / 4096));
    for gpa in (start..end).step_by(4096) {
        assert_eq!(state_of(&hv, gpa), Some((PageState::Private, true)), "{gpa:#x}");
        assert!(hv.touched.contains(&gpa), "{gpa:#x} not touched after validation");
    }
    let mut small = registered();
    small.hostile.rmp_4k_only = true;
    assert!(memory::validate(&mut Ghcb::new(&mut small), start, end).is_ok());
    assert!((start..end).step_by(4096).all(|gpa| state_of(&small, gpa) == Some((PageState::Private, true))));
    // Partial progress: one entry per exit still gets there.
    let mut slow = registered();
    slow.hostile.psc_per_call = Some(1);
    assert!(memory::validate(&mut Ghcb::new(&mut slow), start, end).is_ok());
    assert!(slow.exits.iter().filter(|e| **e == ghcb::exit::PSC).count() >= 4);
    assert_eq!(
        memory::validate(&mut Ghcb::new(&mut slow), 0x1000, 0x1800),
        Err(MemoryError::Range { start: 0x1000, end: 0x1800 })
    );
}

/// Issue 34: memory validated as 2 MiB RMP pages (the heap) was shared by rescinding it 4 KiB
/// at a time, which the RMP refuses with FAIL_SIZEMISMATCH (a 4 KiB PVALIDATE inside a 2 MiB
/// entry). Sharing now rescinds at the size it validated: 2 MiB where the range allows,
/// 4 KiB where the host assigned 4 KiB pages.
#[test]
fn sharing_rescinds_at_the_rmp_page_size() {
    use super::ghcb::{Pvalidate, SnpCpu};
    let (start, end) = (0x20_0000, 0x60_0000 + 0x2000);
    let mut hv = registered();
    memory::validate(&mut Ghcb::new(&mut hv), start, end).unwrap();
    assert!(hv.rmp.get(0x200).unwrap().huge && !hv.rmp.get(0x600).unwrap().huge);
    // The model refuses a 4 KiB rescind inside a 2 MiB entry, as the RMP does ...
    assert_eq!(hv.pvalidate(0x20_1000, false, false), Pvalidate::SizeMismatch);
    memory::share(&mut Ghcb::new(&mut hv), start, end).unwrap();
    assert!((start..end).step_by(4096).all(|gpa| state_of(&hv, gpa) == Some((PageState::Shared, false))));
    // With 4 KiB pages only, the 2 MiB rescind falls back to 4 KiB.
    let mut small = registered();
    small.hostile.rmp_4k_only = true;
    memory::validate(&mut Ghcb::new(&mut small), start, end).unwrap();
    memory::share(&mut Ghcb::new(&mut small), start, end).unwrap();
    assert!((start..end).step_by(4096).all(|gpa| state_of(&small, gpa) == Some((PageState::Shared, false))));
}

#[test]
fn dma_memory_is_ram_for_linux_again_only_once_validated_again() {
    let (start, end) = (0x20_0000, 0x60_0000);
    let mut hv = registered();
    memory::validate(&mut Ghcb::new(&mut hv), start, end).unwrap();
    assert_eq!(hv.first_unusable(start, end), None);
    memory::share(&mut Ghcb::new(&mut hv), 0x40_0000, end).unwrap();
    assert_eq!(hv.first_unusable(start, end), Some(0x40_0000));
    assert_eq!(hv.first_unusable(start, 0x40_0000), None);
    // Back to private, as the firmware does before the hand-off.
    assert_eq!(memory::validate(&mut Ghcb::new(&mut hv), 0x40_0000, end), Ok(512));
    assert_eq!(hv.first_unusable(start, end), None);
    // A host that claims the conversion back but leaves the pages shared: PVALIDATE faults.
    memory::share(&mut Ghcb::new(&mut hv), 0x40_0000, end).unwrap();
    hv.hostile.psc_fake = true;
    assert!(matches!(
        memory::validate(&mut Ghcb::new(&mut hv), 0x40_0000, end),
        Err(MemoryError::Pvalidate { gpa: 0x40_0000, .. })
    ));
    assert_eq!(hv.first_unusable(start, end), Some(0x40_0000));
}

#[test]
fn double_validation_stops_the_boot() {
    let mut hv = registered();
    memory::validate(&mut Ghcb::new(&mut hv), 0x10_0000, 0x10_2000).unwrap();
    // The host claims the page-state change to private (which would reset validation in the
    // RMP) but skips it, so the guest's PVALIDATE finds the pages validated already: the
    // signature of a replayed or doubly mapped page. The boot must stop there.
    hv.hostile.psc_fake = true;
    assert_eq!(
        memory::validate(&mut Ghcb::new(&mut hv), 0x10_0000, 0x10_2000),
        Err(MemoryError::Unchanged { gpa: 0x10_0000, validate: true })
    );
}

/// Issue 32 item 5: e820 RAM over a page the launch validated. The guest's own page-state
/// change to private lets the host reassign the page (RMPUPDATE clears its validated bit), so a
/// second PVALIDATE reports a change and CF = 1 cannot catch it: the range is refused before
/// any exit. RAM the host does not back: it refuses the page-state change.
#[test]
fn launch_validated_and_unbacked_ram_is_refused() {
    let mut hv = registered();
    memory::validate(&mut Ghcb::new(&mut hv), 0x80_0000, 0x80_2000).unwrap(); // "the launch"
    assert_eq!(memory::validate(&mut Ghcb::new(&mut hv), 0x80_0000, 0x80_2000), Ok(2), "CF = 1 does not see it");
    let launch = [(0x80_0000, 0x90_2000), (0xFFF9_0000, 0x1_0000_0000)];
    assert_eq!(memory::check_not_launched(0x10_0000, 0x80_0000, &launch), Ok(()));
    assert_eq!(memory::check_not_launched(0xC00_0000, 0xFFFA_0000, &launch), Err((0xFFF9_0000, 0x1_0000_0000)));
    assert_eq!(memory::check_not_launched(0x90_1000, 0x90_2000, &launch), Err((0x80_0000, 0x90_2000)));
    let mut hv = registered();
    hv.backed = alloc::vec![(0, 0x1000_0000)];
    assert_eq!(memory::validate(&mut Ghcb::new(&mut hv), 0xFE0_0000, 0x1000_0000), Ok(0x200));
    assert_eq!(
        memory::validate(&mut Ghcb::new(&mut hv), 0xFE0_0000, 0x1020_0000),
        Err(MemoryError::Ghcb(GhcbError::PscFailed(0x100 << 32)))
    );
}

#[test]
fn hostile_page_state_changes_are_refused() {
    let cases: [(fn(&mut Hypervisor), MemoryError); 5] = [
        (|h| h.hostile.psc_error = Some((1 << 32) | 2), MemoryError::Ghcb(GhcbError::PscFailed((1 << 32) | 2))),
        (
            |h| {
                h.hostile.psc_per_call = Some(1);
                h.hostile.psc_backwards = true;
            },
            MemoryError::Ghcb(GhcbError::Psc("the hypervisor moved the descriptor's current entry backwards")),
        ),
        (
            |h| h.hostile.psc_reserved = true,
            MemoryError::Ghcb(GhcbError::Psc("the hypervisor wrote the descriptor's reserved field")),
        ),
        (
            |h| {
                h.hostile.psc_per_call = Some(1);
                h.hostile.psc_rewrite_entry = true;
            },
            MemoryError::Ghcb(GhcbError::Psc("the hypervisor changed an entry's page, operation or size")),
        ),
        (
            |h| h.hostile.psc_stall = true,
            MemoryError::Ghcb(GhcbError::Psc("the hypervisor made no progress through the descriptor")),
        ),
    ];
    for (make_hostile, want) in cases {
        let mut hv = registered();
        make_hostile(&mut hv);
        assert_eq!(memory::validate(&mut Ghcb::new(&mut hv), 0x20_0000, 0x20_4000), Err(want));
    }
}

#[test]
fn a_change_of_many_pages_reaches_every_page() {
    // 303 4 KiB pages: a full descriptor of 253 entries, then 50; each entry must reach the
    // hypervisor whole.
    let (start, end) = (0x20_1000, 0x33_0000);
    let mut hv = registered();
    memory::validate(&mut Ghcb::new(&mut hv), start, end).unwrap();
    for gpa in (start..end).step_by(4096) {
        assert_eq!(state_of(&hv, gpa), Some((PageState::Private, true)), "{gpa:#x}");
    }
    assert_eq!(hv.exits.iter().filter(|e| **e == ghcb::exit::PSC).count(), 2);
}

#[test]
fn progress_within_a_page_state_entry_must_go_forwards_and_stay_in_it() {
    // A hypervisor that does a 2 MiB entry over several exits reports its progress in the
    // entry's cur_page (0-512): forwards to 512 is followed; backwards, or beyond 512, refused.
    let validate = |cur_pages: &[u16]| {
        let mut hv = registered();
        hv.hostile.psc_cur_pages = cur_pages.to_vec();
        let result = memory::validate(&mut Ghcb::new(&mut hv), 0x20_0000, 0x40_0000);
        (result, hv.exits.iter().filter(|e| **e == ghcb::exit::PSC).count())
    };
    assert_eq!(validate(&[5, 300, 512]), (Ok(512), 4));
    let changed = Err(MemoryError::Ghcb(GhcbError::Psc("the hypervisor changed an entry's page, operation or size")));
    assert_eq!(validate(&[5, 3]), (changed, 2));
    assert_eq!(validate(&[513]), (changed, 1));
    // A 4 KiB entry has one page: progress of 1 in it is followed, of 2 a lie.
    let validate_4k = |cur_pages: &[u16]| {
        let mut hv = registered();
        hv.hostile.psc_cur_pages = cur_pages.to_vec();
        memory::validate(&mut Ghcb::new(&mut hv), 0x20_1000, 0x20_3000)
    };
    assert_eq!(validate_4k(&[1]), Ok(2));
    assert_eq!(validate_4k(&[2]), changed);
    assert_eq!(
        validate(&[5, 5]),
        (Err(MemoryError::Ghcb(GhcbError::Psc("the hypervisor made no progress through the descriptor"))), 2)
    );
}

#[test]
fn share_rescinds_then_changes_state() {
    let mut hv = registered();
    memory::validate(&mut Ghcb::new(&mut hv), 0x30_0000, 0x30_4000).unwrap();
    assert_eq!(memory::share(&mut Ghcb::new(&mut hv), 0x30_0000, 0x30_2000), Ok(()));
    assert_eq!(state_of(&hv, 0x30_0000), Some((PageState::Shared, false)));
    assert_eq!(state_of(&hv, 0x30_2000), Some((PageState::Private, true)));
    // Rescinding a page that was never validated: refused.
    let mut fresh = registered();
    ghcb::msr_page_state(&mut fresh, 0x40_0000, PageState::Private).unwrap();
    assert_eq!(
        memory::share(&mut Ghcb::new(&mut fresh), 0x40_0000, 0x40_1000),
        Err(MemoryError::Unchanged { gpa: 0x40_0000, validate: false })
    );
}

#[test]
fn string_input_goes_through_the_shared_buffer() {
    let mut hv = registered();
    hv.ports.insert(0x511, 0x5A);
    let mut buf = [0u8; 5000]; // three exits: 2032 + 2032 + 936
    Ghcb::new(&mut hv).io_read_bytes(0x511, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0x5A));
    assert_eq!(hv.exits.iter().filter(|e| **e == ghcb::exit::IOIO).count(), 3);
}

#[test]
fn a_scratch_area_outside_the_registered_ghcb_is_refused() {
    // A guest whose idea of the GHCB differs from the registered one: the hypervisor refuses
    // the exit (INVALID_SCRATCH_AREA), and the guest reports it.
    let mut cpu = Recorder { hv: registered(), exits: Vec::new(), ghcb_gpa: Some(0x1234_5000) };
    assert_eq!(
        Ghcb::new(&mut cpu).mmio_read(0xFE00_0000, 4, &|_| true),
        Err(GhcbError::Hypervisor { exit: ghcb::exit::MMIO_READ, code: 3 })
    );
}

/// The hypervisor model behind a guest that notes each exit's SW_EXITCODE, SW_EXITINFO1 and
/// SW_EXITINFO2 as the model's own GHCB table reads them, and may believe its GHCB is at
/// another GPA than the one it registered (`ghcb_gpa`).
struct Recorder {
    hv: Hypervisor,
    exits: Vec<(u64, u64, u64)>,
    ghcb_gpa: Option<u64>,
}

impl ghcb::SnpCpu for Recorder {
    fn msr_protocol(&mut self, request: u64) -> u64 {
        self.hv.msr_protocol(request)
    }
    fn vmgexit(&mut self, page: &mut ghcb::GhcbPage) {
        use super::model::layout;
        let read = |f| layout::read(page, f);
        self.exits.push((read(layout::SW_EXITCODE), read(layout::SW_EXITINFO1), read(layout::SW_EXITINFO2)));
        self.hv.vmgexit(page)
    }
    fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> ghcb::Pvalidate {
        self.hv.pvalidate(gpa, huge, validate)
    }
    fn touch(&mut self, gpa: u64) {
        self.hv.touch(gpa)
    }
    fn ghcb_gpa(&self) -> u64 {
        self.ghcb_gpa.unwrap_or_else(|| self.hv.ghcb_gpa())
    }
    fn write_shared(&mut self, gpa: u64, bytes: &[u8]) {
        self.hv.write_shared(gpa, bytes)
    }
    fn read_shared(&mut self, gpa: u64, out: &mut [u8]) {
        self.hv.read_shared(gpa, out)
    }
}

#[test]
fn port_io_and_msr_exits_are_encoded_as_the_apm_lays_them_out() {
    // The expected SW_EXITINFO1 values are written out from AMD64 APM vol. 2, "EXITINFO1 for
    // IOIO Intercept": PORT in 31:16, A64 = 0x200, SZ32/SZ16/SZ8 = 0x40/0x20/0x10, REP = 0x8,
    // STR = 0x4, TYPE (IN) = 0x1, SEG 12:10 = 0 (ES, INS's segment). RDMSR is 0, WRMSR 1
    // (AMD 56421). The address size is the instruction's, A64 in long mode, as the CPU reports
    // it and Linux's #VC handler (vc_ioio_exitinfo) does; SW_EXITINFO2 = 0 where the exit has
    // no use for it is the firmware's choice.
    let mut cpu = Recorder { hv: registered(), exits: Vec::new(), ghcb_gpa: None };
    {
        let mut g = Ghcb::new(&mut cpu);
        g.io_write(0x3F8, 1, u32::from(b'h')).unwrap();
        g.io_write(0x510, 2, 1).unwrap();
        g.io_write(0xCF8, 4, 0x8000_0000).unwrap();
        g.io_read(0x3FD, 1).unwrap();
        g.io_read(0x511, 2).unwrap();
        g.io_read(0xCFC, 4).unwrap();
        g.io_read_bytes(0x511, &mut [0u8; 3]).unwrap();
        g.rdmsr(0x10).unwrap();
        g.wrmsr(0x10, 5).unwrap();
    }
    let (io, msr) = (ghcb::exit::IOIO, ghcb::exit::MSR);
    assert_eq!(
        cpu.exits,
        [
            (io, 0x03F8_0210, 0),
            (io, 0x0510_0220, 0),
            (io, 0x0CF8_0240, 0),
            (io, 0x03FD_0211, 0),
            (io, 0x0511_0221, 0),
            (io, 0x0CFC_0241, 0),
            (io, 0x0511_021D, 3),
            (msr, 0, 0),
            (msr, 1, 0),
        ]
    );
    assert_eq!(cpu.hv.console, b"h");
}

#[test]
fn port_input_is_cut_to_its_width() {
    // A hypervisor that answers a byte or word IN with all of RAX set: the bits above the
    // operand are not the port's.
    let mut hv = registered();
    hv.ports.insert(0x3FD, 0xFFFF_FFFF);
    let mut g = Ghcb::new(&mut hv);
    assert_eq!(g.io_read(0x3FD, 1), Ok(0xFF));
    assert_eq!(g.io_read(0x3FD, 2), Ok(0xFFFF));
    assert_eq!(g.io_read(0x3FD, 4), Ok(0xFFFF_FFFF));
}

#[test]
fn the_model_refuses_malformed_port_io_and_msr_exits() {
    use super::model::layout::{self, Ioio};
    assert_eq!(
        layout::decode_ioio(0x0511_009D),
        Ok(Ioio { port: 0x511, size: 1, input: true, string: true, rep: true })
    );
    assert_eq!(
        layout::decode_ioio(0x0CF8_0140),
        Ok(Ioio { port: 0xCF8, size: 4, input: false, string: false, rep: false })
    );
    for (info1, why) in [
        (0x03F8_0080, "not exactly one operand size"),
        (0x03F8_00B0, "not exactly one operand size"),
        (0x03F8_0010, "not exactly one address size"),
        (0x03F8_0190, "not exactly one address size"),
        (0x03F8_0092, "reserved bits set"),
        (0x03F8_2090, "reserved bits set"),
        (0x1_03F8_0090, "reserved bits set"),
        (0x03F8_1890, "no such segment"),
    ] {
        assert_eq!(layout::decode_ioio(info1), Err(why), "{info1:#x}");
    }
    // Through the model: each is refused with INVALID_INPUT, and so is a string IN of three
    // bytes without REP and an MSR exit that is neither a read nor a write.
    let refused = |code: u64, info1: u64, info2: u64| {
        let mut hv = registered();
        let mut page = ghcb::GhcbPage::default();
        layout::write(&mut page, layout::SW_EXITCODE, code);
        layout::write(&mut page, layout::SW_EXITINFO1, info1);
        layout::write(&mut page, layout::SW_EXITINFO2, info2);
        layout::write(&mut page, layout::SW_SCRATCH, 0x80_0000 + layout::SHARED_BUFFER as u64);
        layout::write(&mut page, layout::RAX, 0);
        layout::write(&mut page, layout::RCX, 0x10);
        layout::write(&mut page, layout::RDX, 0);
        ghcb::SnpCpu::vmgexit(&mut hv, &mut page);
        (layout::read(&page, layout::SW_EXITINFO1), layout::read(&page, layout::SW_EXITINFO2))
    };
    let invalid = (2, layout::error::INVALID_INPUT);
    assert_eq!(refused(ghcb::exit::IOIO, 0x03F8_0080, 0), invalid);
    assert_eq!(refused(ghcb::exit::IOIO, 0x0511_0095, 3), invalid);
    assert_eq!(refused(ghcb::exit::IOIO, 0x0511_0095, 1).0, 0);
    assert_eq!(refused(ghcb::exit::MSR, 2, 0), invalid);
    assert_eq!(refused(ghcb::exit::MSR, 1, 0).0, 0);
}

#[test]
fn the_rmp_model_keeps_uniform_granules_small() {
    let mut rmp = super::model::Rmp::default();
    let v = super::model::RmpEntry { private: true, validated: true, huge: false };
    rmp.set_2m(0x200, v);
    assert_eq!(rmp.get(0x3FF), Some(v));
    let shared = super::model::RmpEntry { private: false, validated: false, huge: false };
    rmp.set(0x201, shared);
    assert_eq!(rmp.get(0x201), Some(shared));
    assert_eq!(rmp.get(0x202), Some(v));
    rmp.set(0x201, v);
    assert_eq!(rmp.get(0x201), Some(v));
    assert_eq!(rmp.get(0x400), None);
}

mod guest_requests {
    use super::*;
    use crate::snp::attest::{self, AttestError, RequestPages};
    use crate::snp::evidence::CertType;
    use crate::snp::guest_msg::{Channel, GuestMsgError, MsgType};
    use crate::snp::psp::Psp;
    use crate::snp::requests;

    const VMPCK0: [u8; 32] = [0x11; 32];
    const VCEK: [u8; 48] = [0x42; 48];
    const PAGES: RequestPages = RequestPages { request: 0x90_5000, response: 0x90_6000, certs: None };

    fn with_psp() -> Hypervisor {
        let mut hv = registered();
        let mut psp = Psp::new([VMPCK0, [0x22; 32], [0x33; 32], [0x44; 32]]);
        psp.vcek = Some(VCEK);
        psp.measurement = [0xAB; 48];
        hv.psp = Some(psp);
        hv
    }

    fn report(hv: &mut Hypervisor, channel: &mut Channel, pages: RequestPages) -> Result<attest::Answer, AttestError> {
        let payload = requests::report_request(&[7; 64], 0, requests::SigningKey::Vcek);
        attest::guest_request(&mut Ghcb::new(hv), channel, MsgType::ReportRequest, 1, &payload, pages)
    }

    #[test]
    fn a_report_comes_back_signed_by_the_vcek() {
        let mut hv = with_psp();
        let mut channel = Channel::new(&VMPCK0, 0, 0);
        let answer = report(&mut hv, &mut channel, PAGES).unwrap();
        let r = requests::report_response(&answer.payload).unwrap();
        assert_eq!((&r[0x50..0x90], &r[0x90..0xC0]), (&[7u8; 64][..], &[0xAB; 48][..]));
        // The signature, checked with p384 directly (r and s are little-endian in the report).
        use p384::ecdsa::signature::Verifier;
        let be = |at: usize| -> [u8; 48] { core::array::from_fn(|i| r[at + 47 - i]) };
        let sig = p384::ecdsa::Signature::from_scalars(be(0x2A0), be(0x2E8)).unwrap();
        let key = p384::ecdsa::SigningKey::from_slice(&VCEK).unwrap();
        assert!(key.verifying_key().verify(&r[..0x2A0], &sig).is_ok());
        // The next request uses the next sequence numbers and is answered too.
        assert_eq!(channel.count(), 2);
        assert!(report(&mut hv, &mut channel, PAGES).is_ok());
    }

    #[test]
    fn busy_resends_the_same_ciphertext() {
        let mut hv = with_psp();
        hv.hostile.busy = 3;
        let mut channel = Channel::new(&VMPCK0, 0, 0);
        assert!(report(&mut hv, &mut channel, PAGES).is_ok());
        assert_eq!(hv.exits.iter().filter(|e| **e == ghcb::exit::GUEST_REQUEST).count(), 4);
    }

    #[test]
    fn an_answer_that_does_not_authenticate_wipes_the_vmpck() {
        let mut hv = with_psp();
        hv.hostile.tamper_response = true;
        let mut channel = Channel::new(&VMPCK0, 0, 0);
        assert_eq!(
            report(&mut hv, &mut channel, PAGES).err(),
            Some(AttestError::Message(GuestMsgError::Authentication))
        );
        assert_eq!(report(&mut hv, &mut channel, PAGES).err(), Some(AttestError::Message(GuestMsgError::Disabled)));
    }

    #[test]
    fn a_refused_request_disables_the_channel() {
        let mut hv = with_psp();
        let mut channel = Channel::new(&VMPCK0, 0, 4); // the AMD-SP expects 1, the guest sends 5
        assert_eq!(
            report(&mut hv, &mut channel, PAGES).err(),
            Some(AttestError::Refused { firmware: 0x16, hypervisor: 0 })
        );
        assert_eq!(report(&mut hv, &mut channel, PAGES).err(), Some(AttestError::Message(GuestMsgError::Disabled)));
    }

    #[test]
    fn the_extended_request_returns_the_hosts_certificates() {
        let certs = alloc::vec![(CertType::Vcek, alloc::vec![1u8; 3000]), (CertType::Ask, alloc::vec![2u8; 2000])];
        let mut hv = with_psp();
        hv.certs = Some(attest::build_cert_table(&certs));
        let mut channel = Channel::new(&VMPCK0, 0, 0);
        let roomy = RequestPages { certs: Some((0x90_7000, 4)), ..PAGES };
        let answer = report(&mut hv, &mut channel, roomy).unwrap();
        assert_eq!(attest::parse_cert_table(&answer.certs.unwrap()).unwrap(), certs);
        // Too small a buffer: resent as a plain request (same sequence number), no certificates.
        let small = RequestPages { certs: Some((0x90_7000, 1)), ..PAGES };
        let answer = report(&mut hv, &mut channel, small).unwrap();
        assert!(answer.certs.is_none());
        assert_eq!(channel.count(), 4);
    }

    #[test]
    fn derived_keys_follow_the_selected_measurement() {
        let key = |measurement: u8| {
            let mut hv = with_psp();
            hv.psp.as_mut().unwrap().measurement = [measurement; 48];
            let mut channel = Channel::new(&VMPCK0, 0, 0);
            let req = requests::key_request(requests::FIELD_MEASUREMENT | requests::FIELD_GUEST_POLICY, 0, 0, 0);
            let a = attest::guest_request(&mut Ghcb::new(&mut hv), &mut channel, MsgType::KeyRequest, 1, &req, PAGES)
                .unwrap();
            *requests::key_response(&a.payload).unwrap()
        };
        assert_eq!(key(1), key(1));
        assert_ne!(key(1), key(2));
    }

    /// Issue 31, item 4, against the model AMD-SP (agent::snp::psp, which implements the ABI's
    /// TCB_VERSION rule independently of [`tcb_at_most`]): sealed at TCB t, the token opens
    /// after an update (and is stale: sealed again at the new TCB); after a rollback below t
    /// it is refused, and the AMD-SP refuses to derive that key even when asked; a version-2
    /// token opens once and is stale.
    #[test]
    fn sealing_follows_the_committed_tcb() {
        use crate::keys::MasterSecret;
        use crate::snp::seal::*;
        let mut hv = with_psp();
        let mut channel = Channel::new(&VMPCK0, 0, 0);
        let (old, new) = (0xDB18_0000_0000_0003, 0xDB19_0000_0000_0003);
        let secret = MasterSecret::new(&[7u8; 32], &[9u8; 32]).unwrap();
        let b = crate::tpm::token::binding("0b5c1a3e-0000-4000-8000-000000000001", &[3; 48]);
        // Each request through the guest-message channel, as the firmware makes it: a refusal
        // comes back in the response's status and leaves the channel usable.
        let mut ask = |hv: &mut Hypervisor, fields: u64, tcb: u64| {
            let req = requests::key_request(fields, KEY_VMPL, 0, tcb);
            let a = attest::guest_request(&mut Ghcb::new(hv), &mut channel, MsgType::KeyRequest, 1, &req, PAGES)
                .expect("the request goes through");
            requests::key_response(&a.payload)
        };
        let header_with = |token: crate::json::Value| crate::json!({"tokens": {"4": token}});

        // Sealed at the committed TCB `old`; it opens at `old`.
        hv.psp.as_mut().unwrap().tcb = old;
        let committed = hv.psp.as_ref().unwrap().committed_tcb();
        let key_old = ask(&mut hv, KEY_FIELDS, committed).unwrap();
        let header = header_with(token_json(&key_old, [1; 12], &secret, &b, old));
        let t = find(&header).remove(0).unwrap();
        assert_eq!(t.key_tcb(old), Ok(old));
        assert_eq!(t.open(&ask(&mut hv, KEY_FIELDS, old).unwrap(), &b).unwrap().key(), secret.key());
        assert!(!t.stale(old));

        // The key differs per TCB.
        hv.psp.as_mut().unwrap().tcb = new;
        let key_new = ask(&mut hv, KEY_FIELDS, new).unwrap();
        assert_ne!(*key_new, *key_old);

        // Update: committed `new` > `old`. The key at `old` is still derived, the token opens
        // and is stale; sealed again at `new`.
        assert_eq!(t.key_tcb(new), Ok(old));
        assert_eq!(t.open(&ask(&mut hv, KEY_FIELDS, old).unwrap(), &b).unwrap().key(), secret.key());
        assert!(t.stale(new));
        let resealed = find(&header_with(token_json(&key_new, [2; 12], &secret, &b, new))).remove(0).unwrap();
        assert!(!resealed.stale(new));

        // Rollback: committed back to `old`. The token sealed at `new` is refused by name, and
        // the AMD-SP refuses to derive its key (INVALID_PARAM in the response, not a key).
        hv.psp.as_mut().unwrap().tcb = old;
        let why = resealed.key_tcb(old).unwrap_err();
        assert!(
            why.contains("sealed at TCB 0xdb19000000000003, above the AMD-SP's committed TCB 0xdb18000000000003"),
            "{why}"
        );
        assert_eq!(
            ask(&mut hv, KEY_FIELDS, new).map(|_| ()),
            Err(crate::snp::SnpError::RequestRefused("invalid parameters (0x16)"))
        );
        // Without bit 5 the TCB field is not mixed in and not checked: another key.
        assert_ne!(*ask(&mut hv, LEGACY_FIELDS, new).unwrap(), *key_new);

        // A version-2 token (no TCB) opens with the key without TCB, once: it is stale.
        let legacy_key = ask(&mut hv, LEGACY_FIELDS, 0).unwrap();
        let legacy = find(&header_with(legacy_token_json(&legacy_key, [3; 12], &secret, &b))).remove(0).unwrap();
        assert_eq!((legacy.fields, legacy.tcb, legacy.key_tcb(old)), (LEGACY_FIELDS, None, Ok(0)));
        assert_eq!(legacy.open(&legacy_key, &b).unwrap().key(), secret.key());
        assert!(legacy.stale(old));
        // Its key is not the TCB-bound key: a version-3 token cannot be opened as version 2.
        assert_ne!(*legacy_key, *ask(&mut hv, KEY_FIELDS, old).unwrap());
    }
}

/// Issue 37: the model hypervisor reads and writes the GHCB from its own table of the GHCB
/// specification (model::layout), not from the firmware's offsets and bitmap code. The two
/// encodings must agree field by field: the same offsets, the firmware's `set` marking exactly
/// the bit the specification assigns (and the page byte for byte as the model writes it), and
/// the firmware accepting as output only what the model marked.
#[test]
fn ghcb_spec_agrees_with_the_firmware() {
    use super::ghcb::{GhcbPage, exit, offset};
    use super::model::layout;
    let fields = [
        (offset::RAX, layout::RAX),
        (offset::RCX, layout::RCX),
        (offset::RDX, layout::RDX),
        (offset::RBX, layout::RBX),
        (offset::SW_EXIT_CODE, layout::SW_EXITCODE),
        (offset::SW_EXIT_INFO_1, layout::SW_EXITINFO1),
        (offset::SW_EXIT_INFO_2, layout::SW_EXITINFO2),
        (offset::SW_SCRATCH, layout::SW_SCRATCH),
        (offset::XCR0, layout::XCR0),
    ];
    assert_eq!(fields.map(|(_, f)| f), layout::FIELDS, "every field of the model's table is compared");
    let value = 0x8877_6655_4433_2211;
    for (firmware, spec) in fields {
        assert_eq!(firmware, spec.offset, "{}: offset", spec.name);
        let mut marked_by_firmware = GhcbPage::default();
        marked_by_firmware.set(firmware, value);
        for other in layout::FIELDS {
            assert_eq!(
                layout::valid(&marked_by_firmware, other),
                other == spec,
                "{} set, {} valid?",
                spec.name,
                other.name
            );
        }
        assert_eq!(layout::read(&marked_by_firmware, spec), value, "{}", spec.name);
        let mut marked_by_model = GhcbPage::default();
        layout::write(&mut marked_by_model, spec, value);
        assert!(marked_by_firmware.0 == marked_by_model.0, "{}: the two encodings write different bytes", spec.name);
        assert!(marked_by_model.is_valid(firmware), "{}", spec.name);
        assert_eq!(marked_by_model.output(exit::CPUID, firmware), Ok(value), "{}", spec.name);
        let mut unmarked = GhcbPage::default();
        layout::write_unmarked(&mut unmarked, spec, value);
        assert_eq!(
            unmarked.output(exit::CPUID, firmware),
            Err(GhcbError::OutputNotValid { exit: exit::CPUID, offset: firmware }),
            "{}",
            spec.name
        );
    }
    assert_eq!(offset::VALID_BITMAP, layout::VALID_BITMAP);
    assert_eq!(offset::SHARED_BUFFER, layout::SHARED_BUFFER);
    assert_eq!(offset::SHARED_BUFFER_SIZE, layout::SHARED_BUFFER_LEN);
    assert_eq!(offset::PROTOCOL_VERSION, layout::PROTOCOL_VERSION);
    assert_eq!(offset::USAGE, layout::USAGE);
    for (firmware, spec) in [
        (exit::CPUID, layout::exit_code::CPUID),
        (exit::IOIO, layout::exit_code::IOIO),
        (exit::MSR, layout::exit_code::MSR),
        (exit::MMIO_READ, layout::exit_code::MMIO_READ),
        (exit::MMIO_WRITE, layout::exit_code::MMIO_WRITE),
        (exit::PSC, layout::exit_code::PSC),
        (exit::GUEST_REQUEST, layout::exit_code::GUEST_REQUEST),
        (exit::EXT_GUEST_REQUEST, layout::exit_code::EXT_GUEST_REQUEST),
        (exit::HV_FEATURES, layout::exit_code::HV_FEATURES),
    ] {
        assert_eq!(firmware, spec, "NAE exit {spec:#x}");
    }
    // The request header the firmware starts every exit with, read through the model's table.
    let mut page = GhcbPage::default();
    page.start(exit::MSR, 1, 7);
    assert_eq!(page.0[layout::PROTOCOL_VERSION..layout::PROTOCOL_VERSION + 2], [2, 0]);
    assert_eq!(page.0[layout::USAGE..layout::USAGE + 4], [0; 4]);
    for (f, v) in [(layout::SW_EXITCODE, exit::MSR), (layout::SW_EXITINFO1, 1), (layout::SW_EXITINFO2, 7)] {
        assert!(layout::valid(&page, f) && layout::read(&page, f) == v, "{}", f.name);
    }
}

/// The model checks the guest's inputs with its own bitmap reading: an exit whose input the
/// firmware did not mark valid is answered with GHCB error 4 (MISSING_INPUT), which the firmware
/// reports. Every exit the firmware makes (the other tests here) passes that check.
#[test]
fn an_input_left_unmarked_is_refused_by_the_model() {
    use super::ghcb::{GhcbPage, SnpCpu, exit, offset};
    use super::model::layout;
    let mut hv = registered();
    let mut wrmsr = GhcbPage::default();
    wrmsr.start(exit::MSR, 1, 0);
    wrmsr.set(offset::RCX, 0x2FF);
    wrmsr.set(offset::RAX, 6);
    layout::write_unmarked(&mut wrmsr, layout::RDX, 0);
    hv.vmgexit(&mut wrmsr);
    assert_eq!(wrmsr.result(exit::MSR), Err(GhcbError::Hypervisor { exit: exit::MSR, code: 4 }));
    assert!(hv.msrs.is_empty(), "the model acted on an exit it refused");
    let mut cpuid = GhcbPage::default();
    cpuid.start(exit::CPUID, 0, 0);
    cpuid.set(offset::RAX, 0xD);
    cpuid.set(offset::RCX, 1);
    hv.vmgexit(&mut cpuid);
    assert_eq!(
        cpuid.result(exit::CPUID),
        Err(GhcbError::Hypervisor { exit: exit::CPUID, code: 4 }),
        "leaf 0xD without XCR0"
    );
    cpuid.set(offset::XCR0, 1);
    hv.vmgexit(&mut cpuid);
    assert_eq!(cpuid.result(exit::CPUID), Ok(()));
}
