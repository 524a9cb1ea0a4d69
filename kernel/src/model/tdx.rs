//! The TDX model ROM's other end (feature `tdx-model`, the test ROM `veilboot-tdx-model.fd`
//! only; never in a release ROM, which `cargo xtask test` checks).
//!
//! Under TCG nothing answers a TD: TDCALL raises #UD, and the machine starts as a plain one.
//! This module stands in for the VMM and the TDX module so that the firmware's real TDX path
//! runs: [`launch`] does what the VMM does before the first instruction (the TD HOB a test
//! wrote, fw_cfg `opt/veil/test-td-hob`, copied to its TDVF metadata page; the pages the VMM
//! adds marked accepted), and [`handle_ud`] answers TDCALL from `veil_agent::tdx::model`, the
//! model the host tests use, with TCG's devices behind it. TCG has no shared half of the
//! address space, so this ROM's page tables carry no shared bit.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use veil_agent::tdx::getquote::model::QuotingKeys;
use veil_agent::tdx::model::TdxModel;
use veil_agent::tdx::tdcall::{Regs, TdxCpu};

use crate::arch::interrupts::Frame;
use crate::platform::tdx::TD_HOB;

/// A marker the release-ROM check looks for (it must be absent there).
pub const MARKER: &str = "veilboot TDX model ROM";
/// fw_cfg name of the TD HOB a test writes.
const TEST_TD_HOB: &str = "opt/veil/test-td-hob";
/// fw_cfg name of the way a test wants the VMM to misbehave: `added-twice` (it added the page
/// at 1 MiB to the TD although the TD HOB lists it as unaccepted: a replayed page), `gpaw`
/// (TDG.VP.INFO reports a 40-bit address width), `aps-missing` (it reports the vCPUs QEMU has
/// but never runs the APs), `mrtd` (the TD was launched from other contents), `rtmr` (RTMR1
/// holds an extend the event log does not show), `debug` (a debug TD), `keeps-private` (MapGPA
/// to shared keeps the private pages, accepted, behind the shared ones).
/// The quoting side: `opt/veil/test-tdx-qe` (agent::tdx::getquote::model::QuotingKeys's text
/// form), and the VMM's MRCONFIGID, `opt/veil/test-tdx-mrconfigid` (48 bytes).
const TEST_HOSTILE: &str = "opt/veil/test-tdx-hostile";
/// fw_cfg name of the quoting keys and PCK chain.
const TEST_QE: &str = "opt/veil/test-tdx-qe";
/// fw_cfg name of the MRCONFIGID the VMM set.
const TEST_MRCONFIGID: &str = "opt/veil/test-tdx-mrconfigid";

static LAUNCHED: AtomicBool = AtomicBool::new(false);
static DUMP_CONFIG: AtomicBool = AtomicBool::new(false);
static MODEL: Mutex<Option<TdxModel>> = Mutex::new(None);

/// What the platform asks the model (crate::platform::tdx::insn).
static HOOKS: crate::platform::tdx::insn::ModelHooks = crate::platform::tdx::insn::ModelHooks { launched, report };

/// Did the modelled launch happen (the machine is a TD)?
pub fn launched() -> bool {
    LAUNCHED.load(Ordering::SeqCst)
}

/// What the VMM and the TDX module do before the TD's first instruction.
pub fn launch() {
    crate::platform::tdx::insn::install_model(&HOOKS);
    crate::arch::interrupts::set_handler(crate::arch::interrupts::Resumable::InvalidOpcode, &UD_HANDLER);
    let Ok(cfg) = crate::devices::fwcfg::FwCfg::probe() else { return };
    let Ok(Some(hob)) = cfg.read_file(TEST_TD_HOB, 4096) else {
        crate::log!("{MARKER}: no {TEST_TD_HOB}: this machine is not modelled as a TD");
        return;
    };
    // SAFETY: the TD HOB page of the TDVF metadata, identity mapped RAM nothing else uses yet.
    let page = unsafe { &mut *(TD_HOB as *mut [u8; 4096]) };
    page.fill(0);
    page[..hob.len()].copy_from_slice(&hob);
    let mut m = TdxModel::new();
    m.machine = Some(Box::new(crate::model::tcg::Tcg));
    // The sections the VMM adds (TDH.MEM.PAGE.ADD): TempMem and the TD HOB.
    for (start, end) in [(0x80_0000u64, 0x90_0000u64), (TD_HOB, TD_HOB + 0x1000), (0xA0_0000, 0xC0_0000)] {
        m.pre_accept(start, end - start);
    }
    // And the ROM (the BFV section, added and measured).
    let (rom, top) = crate::arch::layout::rom_range();
    m.pre_accept(rom, top - rom);
    // What the TDX module measured when the VMM added the ROM (the BFV section).
    if let Ok(mrtd) =
        veil_agent::tdx::tdvf::mrtd(crate::arch::layout::rom(), veil_agent::tdx::tdvf::PageOrder::Interleaved)
    {
        m.mrtd = mrtd;
    }
    if let Ok(Some(id)) = cfg.read_file(TEST_MRCONFIGID, 48)
        && let Ok(id) = <[u8; 48]>::try_from(id.as_slice())
    {
        m.mr_config_id = id;
    }
    if let Ok(Some(text)) = cfg.read_file(TEST_QE, 64 * 1024) {
        m.quoting = core::str::from_utf8(&text).ok().and_then(QuotingKeys::from_text);
        if m.quoting.is_none() {
            crate::log!("{MARKER}: {TEST_QE} is not a quoting-keys text");
        }
    }
    DUMP_CONFIG.store(cfg.find("opt/veil/test-tdx-dump-config").is_some(), Ordering::SeqCst);
    let hostile = cfg.read_file(TEST_HOSTILE, 64).ok().flatten().unwrap_or_default();
    match hostile.trim_ascii() {
        b"added-twice" => m.pre_accept(0x10_0000, 0x1000),
        b"gpaw" => m.hostile.gpaw = Some(40),
        b"keeps-private" => m.hostile.map_gpa_keeps_private = true,
        b"mrtd" => m.mrtd[0] ^= 0xFF,
        b"rtmr" => m.rtmr[1] = [0x66; 48],
        b"debug" => m.attributes |= 1,
        _ => {}
    }
    let mut cpus = [0u8; 2];
    m.vcpus = match cfg.read_selector(FW_CFG_NB_CPUS, &mut cpus) {
        Ok(()) => u32::from(u16::from_le_bytes(cpus)).max(1),
        Err(_) => 1,
    };
    let vcpus = m.vcpus;
    *MODEL.lock() = Some(m);
    LAUNCHED.store(true, Ordering::SeqCst);
    if vcpus > 1 && hostile.trim_ascii() != b"aps-missing" {
        start_aps();
    }
}

/// fw_cfg selector of the number of boot CPUs (u16).
const FW_CFG_NB_CPUS: u16 = 0x05;
/// Where the APs' real-mode start stub goes (a SIPI vector page below 1 MiB).
const SIPI_PAGE: u64 = 0x9_F000;

// A TD's APs start at the reset vector in 32-bit protected mode with ESI = their vCPU index;
// TCG's wait in wait-for-SIPI. This stub, started by INIT-SIPI-SIPI at SIPI_PAGE, puts them in
// that state (flat protected mode, ESI = the APIC ID, which is the vCPU index in QEMU's
// default topology) and jumps to the reset vector.
core::arch::global_asm!(
    r#"
    .pushsection .rodata.veil_sipi_stub, "a"
    .globl veil_sipi_stub_start
    .globl veil_sipi_stub_end
    .code16
veil_sipi_stub_start:
    cli
    lgdtl %cs:(veil_sipi_gdt_desc - veil_sipi_stub_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $(0x9F000 + veil_sipi_32 - veil_sipi_stub_start)
    .code32
veil_sipi_32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl 0xFEE00020, %esi
    shrl $24, %esi
    movl $0xFFFFFFF0, %eax
    jmp *%eax
    .p2align 3
veil_sipi_gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF
    .quad 0x00CF93000000FFFF
veil_sipi_gdt_desc:
    .word 23
    .long 0x9F000 + veil_sipi_gdt - veil_sipi_stub_start
veil_sipi_stub_end:
    .code64
    .popsection
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static veil_sipi_stub_start: u8;
    static veil_sipi_stub_end: u8;
}

/// Start every other CPU at the reset vector in a TD's start state (the stub above).
fn start_aps() {
    const ICR_LOW: u64 = 0xFEE0_0300;
    let start = &raw const veil_sipi_stub_start;
    let len = (&raw const veil_sipi_stub_end) as usize - start as usize;
    // SAFETY: the stub's bytes (in .rodata) go to SIPI_PAGE, RAM below 1 MiB that nothing uses
    // yet; the local APIC's ICR is at its architectural address, identity mapped. All
    // excluding self: INIT, then SIPI twice (the second is ignored by a started CPU).
    unsafe {
        core::ptr::copy_nonoverlapping(start, SIPI_PAGE as *mut u8, len);
        let icr = ICR_LOW as *mut u32;
        for command in [0x000C_4500u32, 0x000C_4600 | (SIPI_PAGE >> 12) as u32, 0x000C_4600 | (SIPI_PAGE >> 12) as u32]
        {
            icr.write_volatile(command);
            while icr.read_volatile() & (1 << 12) != 0 {
                core::hint::spin_loop();
            }
        }
    }
}

/// The #UD handler, installed at launch.
static UD_HANDLER: crate::arch::interrupts::Handler = crate::arch::interrupts::Handler { handle: handle_ud };

/// #UD on TDCALL (66 0F 01 CC), answered by the model; false for anything else.
pub fn handle_ud(frame: &mut Frame) -> bool {
    if !launched() {
        return false;
    }
    // SAFETY: RIP points into the firmware's mapped text; four bytes are read.
    let insn = unsafe { core::ptr::read_volatile(frame.rip as *const [u8; 4]) };
    if insn != [0x66, 0x0F, 0x01, 0xCC] {
        return false;
    }
    let mut guard = MODEL.lock();
    let Some(m) = guard.as_mut() else { return false };
    let mut r = Regs {
        rax: frame.rax,
        rcx: frame.rcx,
        rdx: frame.rdx,
        r8: frame.r8,
        r9: frame.r9,
        r10: frame.r10,
        r11: frame.r11,
        r12: frame.r12,
        r13: frame.r13,
        r14: frame.r14,
        r15: frame.r15,
    };
    m.tdcall(&mut r);
    (frame.rax, frame.rcx, frame.rdx, frame.r8, frame.r9) = (r.rax, r.rcx, r.rdx, r.r8, r.r9);
    (frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15) = (r.r10, r.r11, r.r12, r.r13, r.r14, r.r15);
    frame.rip += 4;
    true
}

/// For the test: the firmware's CC event log in hex and the RTMRs the model holds, so that
/// replaying the log on the host can be compared with them.
pub fn report(log: &[u8]) {
    crate::log!("{MARKER}: CCEL {}", hex::encode(log));
    // Copied out first: logging is port I/O, which the model answers under its own lock.
    let rtmr = MODEL.lock().as_ref().map(|m| m.rtmr);
    for (i, r) in rtmr.iter().flatten().enumerate() {
        crate::log!("{MARKER}: RTMR{i} {}", hex::encode(r));
    }
}

/// For the test: the configuration inputs measured into RTMR0 (fw_cfg name and contents in
/// hex), so that `veil measure --platform tdx --vmm-config` can be given the same files. Only
/// when fw_cfg `opt/veil/test-tdx-dump-config` asks (a byte at a time through the model's
/// port I/O, it takes seconds under TCG).
pub fn report_config(config: &[(&str, &[u8])]) {
    if !DUMP_CONFIG.load(Ordering::SeqCst) {
        return;
    }
    for (name, bytes) in config {
        crate::log!("{MARKER}: CONFIG {name} {}", hex::encode(bytes));
    }
}

/// For the test: every page Linux is given as RAM is accepted and private in the model
/// (crate::model::handoff_audit). Nothing to check when the machine is not modelled as a TD.
pub fn audit_handoff(boot_params: u64) {
    let ranges = crate::model::handoff_audit::ram_ranges(boot_params);
    let Some(bad) = MODEL.lock().as_ref().map(|m| ranges.iter().find_map(|&(a, b)| m.first_unusable(a, b))) else {
        return;
    };
    crate::model::handoff_audit::report(MARKER, "accepted and private", &ranges, bad);
    // Copied out first: logging is port I/O, which the model answers.
    let a = MODEL.lock().as_ref().map_or([0; 2], |m| m.accepts);
    crate::log!(
        "{MARKER}: TDG.MEM.PAGE.ACCEPT calls that accepted: {} of 2 MiB and {} of 4 KiB, {} MiB (each page cleared by the TDX module)",
        a[1],
        a[0],
        a[1] * 2 + a[0] / 256
    );
}
