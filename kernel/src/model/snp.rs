//! The SEV-SNP model ROM's other end (feature `snp-model`, the test ROM
//! `veilboot-snp-model.fd` only; never in a release ROM, which `cargo xtask test` checks).
//!
//! Under TCG nothing answers an SNP guest: SEV_STATUS reads 0, the GHCB MSR drops writes,
//! VMGEXIT and PVALIDATE raise #UD. This module stands in for the AMD-SP and the hypervisor so
//! that the firmware's real SNP path runs:
//!
//! * [`launch`] does what the AMD-SP does before the first instruction: it fills the CPUID page
//!   (TCG's CPUID answers plus leaf 0x8000001F stating SNP and C-bit 51), the secrets page
//!   (fixed test VMPCKs) and the SEV hash table page (the bytes a test put in fw_cfg
//!   `opt/veil/test-snp-hashes`, built by sev-snp-measure), and marks the launch's pages
//!   validated in the model's RMP, and takes the RAM QEMU backs from its etc/e820 (a
//!   page-state change elsewhere fails, as KVM's does outside its memory slots);
//! * [`sev_status`], [`read_ghcb_msr`] and [`write_ghcb_msr`] stand in for the two MSRs;
//! * [`handle_ud`] answers VMGEXIT (MSR protocol or a full GHCB exit) and PVALIDATE from
//!   `veil_agent::snp::model`, the same model the host tests use, with TCG's own devices behind
//!   it for port I/O, MMIO and CPUID.
//!
//! TCG encrypts nothing and strips no address bit, so the page tables carry no C-bit in this
//! ROM (boot.S found no SNP); that is the one part of the SNP path only hardware runs.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;
use veil_agent::snp::ghcb::{self, GhcbPage, Pvalidate, SnpCpu};
use veil_agent::snp::model::{Hypervisor, Machine, RmpEntry, layout};

use crate::model::tcg::Tcg;

use crate::arch::interrupts::Frame;
use crate::platform::snp::{CPUID_PAGE, HASHES_PAGE, SECRETS_PAGE};

/// A marker the release-ROM check looks for (it must be absent there).
pub const MARKER: &str = "veilboot SNP model ROM";
/// fw_cfg name of the SEV hash table a test installs.
const TEST_HASHES: &str = "opt/veil/test-snp-hashes";
/// fw_cfg name of the way a test wants the hypervisor to misbehave: `cbit` (it reports C-bit
/// 47), `inject` (it answers every exit with an exception to inject), `register` (it
/// registers the GHCB elsewhere), `double-validation` (it claims page-state changes it does
/// not make, on RAM it had already validated: a replayed page).
const TEST_HOSTILE: &str = "opt/veil/test-snp-hostile";
/// fw_cfg names of the model AMD-SP's configuration, which the test creates: the VCEK's
/// private scalar (48 bytes), the host's certificate table, the launch measurement (48 bytes,
/// sev-snp-measure's), HOST_DATA (32 bytes) and the guest policy (8 bytes, little-endian).
const TEST_VCEK: &str = "opt/veil/test-snp-vcek";
const TEST_CERTS: &str = "opt/veil/test-snp-certs";
const TEST_MEASUREMENT: &str = "opt/veil/test-snp-measurement";
const TEST_HOST_DATA: &str = "opt/veil/test-snp-host-data";
const TEST_POLICY: &str = "opt/veil/test-snp-policy";
/// fw_cfg name of the model AMD-SP's TCB_VERSION (8 bytes, little-endian; current, reported,
/// committed and launch alike): a test raises it between boots (a firmware update) or lowers
/// it (the hostile rollback: an AMD-SP rolled back below the TCB a token was sealed at, whose
/// MSG_KEY_REQ then refuses that TCB).
const TEST_TCB: &str = "opt/veil/test-snp-tcb";
/// SEV_STATUS of the modelled guest: SEV, SEV-ES, SNP.
const SEV_STATUS: u64 = 0b111;
/// The C-bit the modelled CPU states.
const CBIT: u32 = 51;

static LAUNCHED: AtomicBool = AtomicBool::new(false);
static GHCB_MSR: AtomicU64 = AtomicU64::new(0);
static MODEL: Mutex<Option<Hypervisor>> = Mutex::new(None);

fn page(gpa: u64) -> &'static mut [u8; 4096] {
    // SAFETY: one of the firmware's SNP pages (0x900000-0x903FFF), identity mapped RAM that
    // nothing else uses before the firmware reads it.
    unsafe { &mut *(gpa as *mut [u8; 4096]) }
}

/// The CPUID page the AMD-SP would provide: TCG's answers, with SNP stated in 0x8000001F.
fn fill_cpuid_page() {
    let p = page(CPUID_PAGE);
    p.fill(0);
    let mut n = 0usize;
    let mut add = |leaf: u32, subleaf: u32, regs: [u32; 4]| {
        let at = 16 + 48 * n;
        p[at..at + 4].copy_from_slice(&leaf.to_le_bytes());
        p[at + 4..at + 8].copy_from_slice(&subleaf.to_le_bytes());
        p[at + 8..at + 16].copy_from_slice(&1u64.to_le_bytes()); // XCR0 in
        for (i, r) in regs.iter().enumerate() {
            p[at + 24 + 4 * i..at + 28 + 4 * i].copy_from_slice(&r.to_le_bytes());
        }
        n += 1;
    };
    let native = |leaf, subleaf| {
        let r = crate::arch::cpu::native_cpuid(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    let max = native(0, 0)[0].min(0xD);
    for leaf in 0..=max {
        let subleaves: &[u32] = match leaf {
            4 => &[0, 1, 2, 3],
            7 => &[0, 1],
            0xB => &[0, 1],
            0xD => &[0, 1],
            _ => &[0],
        };
        for &s in subleaves {
            add(leaf, s, native(leaf, s));
        }
    }
    let mut ext = native(0x8000_0000, 0);
    let ext_max = ext[0].min(0x8000_0008);
    ext[0] = 0x8000_001F;
    add(0x8000_0000, 0, ext);
    for leaf in 0x8000_0001..=ext_max {
        add(leaf, 0, native(leaf, 0));
    }
    // SME, SEV, SEV-ES, SNP; C-bit 51, one physical address bit reduced.
    add(0x8000_001F, 0, [0b1_1011, CBIT | (1 << 6), 0, 0]);
    p[0..4].copy_from_slice(&(n as u32).to_le_bytes());
}

/// The model's test VMPCK `n`: SHA-256 of "veilboot SNP model VMPCK" and n (fixed, and unlike
/// any byte run a kernel image contains, so a memory scan finds only real copies).
pub fn test_vmpck(n: u8) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"veilboot SNP model VMPCK");
    h.update([n]);
    h.finalize().into()
}

/// The secrets page: version 3 and four fixed test VMPCKs.
fn fill_secrets_page() {
    let p = page(SECRETS_PAGE);
    p.fill(0);
    p[0..4].copy_from_slice(&3u32.to_le_bytes());
    for n in 0..4u8 {
        let at = 0x20 + 32 * usize::from(n);
        p[at..at + 32].copy_from_slice(&test_vmpck(n));
    }
}

/// What the AMD-SP and the hypervisor do before the guest's first instruction.
pub fn launch() {
    crate::platform::snp::insn::install_model(&HOOKS);
    crate::arch::interrupts::set_handler(crate::arch::interrupts::Resumable::InvalidOpcode, &UD_HANDLER);
    fill_cpuid_page();
    fill_secrets_page();
    let hashes = page(HASHES_PAGE);
    hashes.fill(0);
    let mut hostile = None;
    let mut psp = veil_agent::snp::psp::Psp::new(core::array::from_fn(|n| test_vmpck(n as u8)));
    let mut certs = None;
    let mut backed = alloc::vec::Vec::new();
    if let Ok(cfg) = crate::devices::fwcfg::FwCfg::probe() {
        if let Ok(Some(table)) = cfg.read_file(TEST_HASHES, 4096) {
            hashes[..table.len()].copy_from_slice(&table);
        }
        hostile = cfg.read_file(TEST_HOSTILE, 64).ok().flatten();
        let file = |name: &str| cfg.read_file(name, 16384).ok().flatten();
        psp.vcek = file(TEST_VCEK).and_then(|v| v.try_into().ok());
        if let Some(m) = file(TEST_MEASUREMENT).and_then(|v| v.try_into().ok()) {
            psp.measurement = m;
        }
        if let Some(h) = file(TEST_HOST_DATA).and_then(|v| v.try_into().ok()) {
            psp.host_data = h;
        }
        if let Some(p) = file(TEST_POLICY).and_then(|v| <[u8; 8]>::try_from(v).ok()) {
            psp.policy = u64::from_le_bytes(p);
        }
        if let Some(t) = file(TEST_TCB).and_then(|v| <[u8; 8]>::try_from(v).ok()) {
            psp.tcb = u64::from_le_bytes(t);
        }
        certs = file(TEST_CERTS);
        // The RAM QEMU has (its own etc/e820, not a test's substitute): what the host backs.
        if let Ok(map) = veil_agent::fwcfg::parse_e820(&file("etc/e820").unwrap_or_default()) {
            let ram = map.iter().filter(|e| e.kind == veil_agent::fwcfg::E820Kind::Ram);
            backed = ram.map(|e| (e.addr, e.end())).collect();
        }
        // And the ROM, private memory of the launch (a memory slot, not RAM in etc/e820).
        backed.push(crate::arch::layout::rom_range());
    }
    let mut hv = Hypervisor::new();
    hv.psp = Some(psp);
    hv.certs = certs;
    hv.backed = backed;
    hv.cbit = CBIT as u8;
    hv.machine = Some(Box::new(Tcg));
    let validated = RmpEntry { private: true, validated: true, huge: false };
    match hostile.as_deref().map(<[u8]>::trim_ascii) {
        Some(b"cbit") => hv.hostile.cbit = Some(47),
        Some(b"inject") => hv.hostile.inject = true,
        Some(b"register") => hv.hostile.register_gfn = Some(0x1234),
        Some(b"double-validation") => {
            hv.hostile.psc_fake = true;
            // Wherever the heap goes (above the kernel in a direct boot), its first granule is
            // validated already: every 2 MiB from 16 MiB to 3 GiB.
            for gpa in (0x100_0000u64..0xC000_0000).step_by(2 << 20) {
                hv.rmp.set_2m(gpa >> 12, validated);
            }
        }
        _ => {}
    }
    for gpa in (0x80_0000..0x90_2000).chain(HASHES_PAGE..HASHES_PAGE + 0x1000).step_by(4096) {
        hv.rmp.set(gpa >> 12, validated);
    }
    hv.rmp.set_2m(0xA0_0000 >> 12, validated);
    // The ROM, measured and validated page by page (LAUNCH_UPDATE).
    let (rom, top) = crate::arch::layout::rom_range();
    for gpa in (rom..top).step_by(4096) {
        hv.rmp.set(gpa >> 12, validated);
    }
    *MODEL.lock() = Some(hv);
    LAUNCHED.store(true, Ordering::SeqCst);
}

/// What the platform's SNP instructions ask the model (crate::platform::snp::insn).
static HOOKS: crate::platform::snp::insn::ModelHooks =
    crate::platform::snp::insn::ModelHooks { sev_status, read_ghcb_msr, write_ghcb_msr, withhold_cc_blob };

/// SEV_STATUS as the modelled CPU reports it.
pub fn sev_status() -> Option<u64> {
    LAUNCHED.load(Ordering::SeqCst).then_some(SEV_STATUS)
}

/// The modelled GHCB MSR.
pub fn read_ghcb_msr() -> Option<u64> {
    LAUNCHED.load(Ordering::SeqCst).then(|| GHCB_MSR.load(Ordering::SeqCst))
}

/// Write the modelled GHCB MSR; false before the launch.
pub fn write_ghcb_msr(value: u64) -> bool {
    GHCB_MSR.store(value, Ordering::SeqCst);
    LAUNCHED.load(Ordering::SeqCst)
}

/// The Linux that follows the firmware under TCG is no SNP guest (its SEV_STATUS reads 0), and
/// Linux stops when a CC blob announces SNP that SEV_STATUS denies: the model ROM logs the blob
/// (the test checks it) but does not hand it over.
pub fn withhold_cc_blob() -> bool {
    crate::log!("{MARKER}: the CC blob is withheld: Linux under TCG is no SNP guest and would stop on it");
    true
}

/// The guest asked to terminate: say so on the serial port (natively) and stop QEMU.
fn terminated(request: u64) -> ! {
    let mut tcg = Tcg;
    let line = alloc::format!(
        "\r\n{MARKER}: the guest asked the hypervisor to terminate it: reason set {}, code {}\r\n",
        (request >> 12) & 0xF,
        (request >> 16) & 0xFF
    );
    for b in line.bytes() {
        tcg.io_out(0x3F8, 1, u32::from(b));
    }
    tcg.io_out(0xF4, 1, 0x11);
    crate::arch::cpu::halt_forever()
}

/// The #UD handler, installed at launch.
static UD_HANDLER: crate::arch::interrupts::Handler = crate::arch::interrupts::Handler { handle: handle_ud };

/// #UD: VMGEXIT or PVALIDATE, answered by the model; false for any other instruction.
pub fn handle_ud(frame: &mut Frame) -> bool {
    if !LAUNCHED.load(Ordering::SeqCst) {
        return false;
    }
    // SAFETY: RIP points into the firmware's mapped text; four bytes are read.
    let insn = unsafe { core::ptr::read_volatile(frame.rip as *const [u8; 4]) };
    let mut guard = MODEL.lock();
    let Some(hv) = guard.as_mut() else { return false };
    match insn {
        [0xF3, 0x0F, 0x01, 0xD9] => {
            let msr = GHCB_MSR.load(Ordering::SeqCst);
            if msr & 0xFFF == ghcb::msr::TERMINATE_REQ {
                terminated(msr);
            }
            if msr & 0xFFF != 0 {
                GHCB_MSR.store(hv.msr_protocol(msr), Ordering::SeqCst);
            } else {
                let mut image = GhcbPage::default();
                // SAFETY: the guest's GHCB MSR names its GHCB page, identity mapped RAM; it is
                // copied in and out, as a hypervisor reads and writes it.
                unsafe { core::ptr::copy_nonoverlapping(msr as *const u8, image.0.as_mut_ptr(), ghcb::PAGE) };
                if hv.registered != Some(msr >> 12) {
                    layout::write(&mut image, layout::SW_EXITINFO1, 2);
                    layout::write(&mut image, layout::SW_EXITINFO2, layout::error::NOT_REGISTERED);
                } else {
                    hv.vmgexit(&mut image);
                }
                // SAFETY: as above.
                unsafe { core::ptr::copy_nonoverlapping(image.0.as_ptr(), msr as *mut u8, ghcb::PAGE) };
            }
        }
        [0xF2, 0x0F, 0x01, 0xFF] => {
            let (code, unchanged) = match hv.pvalidate(frame.rax, frame.rcx & 1 == 1, frame.rdx & 1 == 1) {
                Pvalidate::Done { changed } => (0, !changed),
                Pvalidate::FailInput => (1, false),
                Pvalidate::SizeMismatch => (6, false),
                Pvalidate::Other(code) => (code, false),
            };
            frame.rax = u64::from(code);
            frame.rflags = (frame.rflags & !1) | u64::from(unchanged);
        }
        _ => return false,
    }
    frame.rip += 4;
    true
}

/// For the test: every page Linux is given as RAM is private and validated in the model's RMP
/// (crate::model::handoff_audit). Nothing to check when the machine is not modelled as SNP.
pub fn audit_handoff(boot_params: u64) {
    let ranges = crate::model::handoff_audit::ram_ranges(boot_params);
    let Some(bad) = MODEL.lock().as_ref().map(|m| ranges.iter().find_map(|&(a, b)| m.first_unusable(a, b))) else {
        return;
    };
    crate::model::handoff_audit::report(MARKER, "private and validated", &ranges, bad);
    // Copied out first: logging is port I/O, which the model answers.
    let v = MODEL.lock().as_ref().map_or([0; 2], |m| m.validations);
    crate::log!(
        "{MARKER}: PVALIDATE calls that validated: {} of 2 MiB and {} of 4 KiB, {} MiB (PVALIDATE clears nothing)",
        v[1],
        v[0],
        v[1] * 2 + v[0] / 256
    );
}
