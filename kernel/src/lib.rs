//! veilboot firmware: QEMU loads it with `-bios`; it starts at the reset vector
//! (src/arch/boot.S), reaches 64-bit Rust here, finds out what machine it runs on and sets it
//! up: exceptions, vector state, NX, fw_cfg, the e820 memory map and heap, PCI, ACPI; then
//! loads the Linux kernel QEMU offers and jumps to it, after wiping its secrets. Each stage
//! begins with a timeline mark naming it (`veil: t=<us> stage=<name>`).
//!
//! This is the firmware's library; `src/main.rs` only links it into the `veilboot` binary, so
//! that the crate's public items are checked for documentation (`missing_docs`) as agent's are.
//!
//! Its folders are its layers, lowest first: `arch` < `error` < `devices` < `platform` <
//! `boot` < `model` < `testhooks` < this file. A file names only files of its own layer or of
//! lower ones, and no files name each other in a circle; `cargo xtask lint` checks both
//! (tools/xtask/src/layers.rs, where the table is). Each folder's mod.rs says what it is for.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod arch;
pub mod boot;
pub mod devices;
pub mod error;
#[cfg(any(feature = "snp-model", feature = "tdx-model"))]
pub mod model;
pub mod platform;
pub mod testhooks;

use core::arch::global_asm;

use alloc::vec::Vec;

use arch::exit::{self, fail};
use arch::{cpu, interrupts, layout, mtrr, paging, serial, tsc, vector};
use boot::{diskboot, heap, keysource, linux, secrets, statedisk};
use devices::{acpi, fwcfg, pci, relay, virtio, volume};
#[cfg(feature = "snp-model")]
use model::snp as snpmodel;
#[cfg(feature = "tdx-model")]
use model::tdx as tdxmodel;
use platform::Platform;
use veil_agent::fwcfg::E820Entry;
use veil_agent::tpm::measure;
use zeroize::Zeroizing;

global_asm!(include_str!("arch/boot.S"), options(att_syntax));

/// Largest e820 map accepted (bytes).
const E820_LIMIT: usize = 128 * 20;

/// `Ok(value)`, or stop the boot with the error (prefixed with `what` when not empty).
fn or_fail<T, E: core::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| if what.is_empty() { fail(format_args!("{e}")) } else { fail(format_args!("{what}: {e}")) })
}

/// Rust entry, called by boot.S in long mode on the boot stack: the boot stages in order,
/// the same on every platform. Each stage function starts with its timeline mark.
#[unsafe(no_mangle)]
pub extern "C" fn veil_main() -> ! {
    heap::init_early();
    interrupts::init();
    #[cfg(feature = "snp-model")]
    snpmodel::launch();
    #[cfg(feature = "tdx-model")]
    tdxmodel::launch();
    let entry_tsc = cpu::rdtsc();
    let mut plat = platform::init(); // detects the machine: before any other CPUID
    start_console(&mut *plat, entry_tsc); // rust-init
    enable_cpu_features(); // cpu
    tsc::mark("fw_cfg");
    let mut cfg = or_fail(fwcfg::FwCfg::probe(), "");
    log!("fw_cfg: {} files, {} interface", cfg.files().len(), if cfg.dma() { "DMA" } else { "port I/O" });
    let hooks = testhooks::TestHooks::read(&cfg);
    let memory = memory(&mut *plat, &mut cfg, &hooks); // memory
    hooks.run_early(&cfg);
    let pci = scan_pci(&hooks); // pci
    tsc::mark("rot-start");
    or_fail(plat.start_root_of_trust(), "TPM");
    let mut acpi = install_acpi(&cfg, &mut *plat); // acpi
    measure_firmware(&mut *plat, &memory, &hooks, acpi.as_ref()); // measure-firmware
    let mut disks = find_disks(&cfg, &mut *plat, &pci, &hooks); // xts, disk
    let separated = measure_target(&mut *plat, disks.boot.as_ref()); // measure-target
    tsc::mark("unseal");
    let secret = or_fail(keysource::master_secret(&cfg, &mut *plat, disks.boot.as_ref(), disks.relay.as_mut()), "");
    let (mut from_disk, root_files) = match (secret, &disks.boot) {
        (Some(secret), Some(_)) => read_disks(&mut *plat, &mut disks, secret), // disk-read, seal
        (None, Some(_)) => {
            let e = error::BootError::from(error::BootErrorKind::NoKeySource(rot_name(&mut *plat)));
            fail(format_args!("{e}"))
        }
        _ => (None, Vec::new()),
    };
    reset_devices(&pci, disks);
    tsc::mark("linux");
    let kernel = prepare_linux(&cfg, &mut *plat, &memory, acpi.as_mut(), from_disk.as_mut(), root_files);
    let Some(kernel) = kernel else {
        log!("no kernel to boot (QEMU -kernel); boot stages done");
        tsc::mark("done");
        exit::exit(exit::Status::Success)
    };
    hand_off(&mut *plat, acpi.as_ref(), separated, &kernel) // handoff
}

/// The console, and the timeline's start.
fn start_console(plat: &mut dyn Platform, entry_tsc: u64) {
    serial::init();
    plat.console_write(b"\n");
    let (hz, source) = tsc::calibrate();
    let since_reset = tsc::set_base(entry_tsc);
    tsc::mark_at(entry_tsc, "rust-init");
    log!("veilboot {} on the {} platform", env!("CARGO_PKG_VERSION"), plat.name());
    log!(
        "tsc: {} kHz ({:?}); timeline counts from {}",
        hz / 1000,
        source,
        if since_reset { "VM reset" } else { "firmware entry (the VMM did not reset the TSC)" }
    );
}

/// Vector state (SSE/AVX for the XTS paths) and NX.
fn enable_cpu_features() {
    tsc::mark("cpu");
    let vs = vector::enable();
    veil_agent::xts::aesni::set_xcr0(vs.xcr0);
    let nx = paging::enable_nx();
    log!(
        "cpu: xcr0={:#x} aesni={} pclmulqdq={} avx2={} vaes={} vpclmulqdq={} avx512f={} nx={}",
        vs.xcr0,
        vs.aesni,
        vs.pclmulqdq,
        vs.avx2,
        vs.vaes,
        vs.vpclmulqdq,
        vs.avx512f,
        nx
    );
}

/// Guest RAM as the memory stage found it.
struct Memory {
    /// The e820 file's bytes (measured with the firmware's configuration).
    e820_bytes: Vec<u8>,
    /// The map.
    e820: Vec<E820Entry>,
    /// The main heap (start, size).
    heap: (u64, u64),
}

/// The memory map, the main heap (accepted on confidential platforms), fw_cfg's DMA buffer
/// and the memory types.
fn memory(plat: &mut dyn Platform, cfg: &mut fwcfg::FwCfg, hooks: &testhooks::TestHooks) -> Memory {
    tsc::mark("memory");
    let e820_file = hooks.e820_file();
    let e820_bytes = match cfg.read_file(e820_file, E820_LIMIT) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => fail(format_args!("fw_cfg has no {e820_file}: cannot find guest RAM")),
        Err(e) => fail(format_args!("{e}")),
    };
    let e820 = or_fail(veil_agent::fwcfg::parse_e820(&e820_bytes), "");
    for e in &e820 {
        log!("e820: {:#014x}-{:#014x} {}", e.addr, e.end() - 1, e.kind.name());
    }
    // The kernel's header is the host's: its range is checked before it steers the heap.
    let direct = or_fail(linux::direct_boot_need(cfg), "");
    let Some((start, size)) = heap::choose_main(&e820, direct, plat.is_confidential()) else {
        fail(format_args!("e820 has no RAM above {:#x} for the heap", layout::HEAP_FLOOR))
    };
    // Checked before the platform accepts (validates) anything for it, and again where the
    // allocator gets it.
    or_fail(layout::check_heap(start, size), "");
    or_fail(plat.accept_memory(start, size), "accepting the heap's memory");
    or_fail(heap::init_main(start, size), "");
    log!("heap: {} MiB at {:#x}", size >> 20, start);
    if cpu::port::routed() {
        // fw_cfg DMA on a confidential platform: through 2 MiB of memory shared with the host
        // (port I/O would take one host exit per byte or per 2 KiB).
        let layout = core::alloc::Layout::from_size_align(2 << 20, 2 << 20).expect("layout");
        // SAFETY: non-zero size; leaked on purpose: fw_cfg uses it for the firmware's lifetime.
        let bounce = unsafe { alloc::alloc::alloc_zeroed(layout) } as u64;
        if bounce == 0 {
            fail(format_args!("no memory for the fw_cfg DMA bounce buffer"));
        }
        or_fail(platform::share_for_dma(bounce, 2 << 20), "fw_cfg DMA buffer");
        cfg.use_shared_bounce(bounce, 2 << 20);
        log!("fw_cfg: DMA through 2 MiB of shared memory at {bounce:#x}");
    }
    if plat.is_confidential() {
        // MTRR writes would be intercepted MSR exits, and the hypervisor decides memory types.
        log!("mtrr: left as they are on {}", plat.name());
    } else {
        match mtrr::init(&e820) {
            Some((base, len)) => log!("mtrr: default write-back, {:#x}-{:#x} uncached", base, base + len - 1),
            None => log!("mtrr: not programmed (no MTRRs, or RAM in the 32-bit hole)"),
        }
    }
    Memory { e820_bytes, e820, heap: (start, size) }
}

/// The PCI devices on bus 0.
fn scan_pci(hooks: &testhooks::TestHooks) -> pci::Config {
    tsc::mark("pci");
    let pci = pci::Config::init();
    match pci {
        pci::Config::Ecam(base) => log!("pci: ECAM at {base:#x}"),
        pci::Config::Legacy => log!("pci: no q35 host bridge; using ports 0xCF8/0xCFC"),
    }
    for d in pci.scan_bus0() {
        log!(
            "pci: {:02x}:{:02x}.{} {:04x}:{:04x} class {:02x}{:02x} {}",
            d.bus,
            d.dev,
            d.func,
            d.vendor,
            d.device,
            d.class.0,
            d.class.1,
            pci::class_name(d.class)
        );
    }
    hooks.run_after_pci(&pci);
    pci
}

/// Does the root of trust keep run-time measurements?
fn measures(plat: &mut dyn Platform) -> bool {
    plat.root_of_trust().is_some_and(|r| r.measures())
}

/// Measure `m` with the root of trust, or stop.
fn measure(plat: &mut dyn Platform, m: &measure::Measurement<'_>) {
    if let Some(rot) = plat.root_of_trust() {
        let name = rot.name();
        or_fail(rot.measure(m), name);
    }
}

/// QEMU's ACPI tables; their fw_cfg inputs are kept when a root of trust measures them.
fn install_acpi(cfg: &fwcfg::FwCfg, plat: &mut dyn Platform) -> Option<acpi::Tables> {
    tsc::mark("acpi");
    let acpi = or_fail(acpi::install(cfg, measures(plat)), "ACPI tables");
    match &acpi {
        Some(t) => log!("acpi: {} tables blobs, RSDP at {:#x}", t.blobs, t.rsdp),
        None => log!("acpi: QEMU offers no etc/table-loader; booting without ACPI tables"),
    }
    acpi
}

/// The ROM (PCR 0; on TDX the MRTD holds it already), then the configuration it used (the
/// fw_cfg inputs: e820, test hooks, ACPI; PCR 1 / RTMR0).
fn measure_firmware(
    plat: &mut dyn Platform,
    memory: &Memory,
    hooks: &testhooks::TestHooks,
    acpi: Option<&acpi::Tables>,
) {
    let Some(name) = plat.root_of_trust().filter(|r| r.measures()).map(|r| r.name()) else {
        log!("tpm: none (no TIS at 0xfed40000); boot is not measured");
        return;
    };
    tsc::mark("measure-firmware");
    let mut config: Vec<(&str, &[u8])> = alloc::vec![(hooks.e820_file(), &memory.e820_bytes)];
    config.extend(hooks.measured_input());
    let acpi_inputs = acpi.map(|t| t.inputs.as_slice()).unwrap_or(&[]);
    config.extend(acpi_inputs.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())));
    let rom = layout::rom();
    measure(plat, &measure::rom(rom));
    for (file, bytes) in &config {
        measure(plat, &measure::config(file, bytes));
    }
    log!(
        "{name}: measured the ROM ({} KiB; PCR 0, or the MRTD on TDX) and {} configuration inputs (PCR 1 / RTMR0)",
        rom.len() >> 10,
        config.len()
    );
    #[cfg(feature = "tdx-model")]
    tdxmodel::report_config(&config);
}

/// The virtio disks, the boot volume on the first, and the relay to a key broker.
struct Disks {
    disks: Vec<virtio::Disk>,
    boot: Option<volume::BootVolume>,
    relay: Option<relay::Console>,
}

/// Every virtio device the firmware drove, reset (status 0; virtio 1.2, 2.4) once the disks are
/// read and the broker has answered: a live device keeps its queues in memory that becomes
/// Linux's, and the host would go on reading them (QEMU polls a console's receive queue) and
/// writing there what the relay sends, into whatever Linux put at those addresses. On SEV-SNP
/// and TDX the pool the queues are in is taken back from the host only after this.
fn reset_devices(pci: &pci::Config, disks: Disks) {
    if let pci::Config::Ecam(base) = pci {
        let relay = disks.relay.as_ref().map(|r| r.location);
        for df in disks.disks.iter().map(|d| d.location).chain(relay) {
            virtio::reset(*base, df);
        }
    }
    // Not dropped: their drop code would cost ROM bytes for nothing once the devices are reset.
    core::mem::forget(disks);
}

/// The kernel comes from the encrypted disk when there is a key source and a disk, else from
/// QEMU's -kernel. The boot volume's header is readable without a key: its veil-bundle token
/// names the boot target, which is measured before any unsealing.
fn find_disks(cfg: &fwcfg::FwCfg, plat: &mut dyn Platform, pci: &pci::Config, hooks: &testhooks::TestHooks) -> Disks {
    let mut found = Disks { disks: Vec::new(), boot: None, relay: None };
    let dev_key = keysource::dev_secret_offered(cfg);
    let attests = plat.root_of_trust().is_some();
    let pci::Config::Ecam(base) = *pci else { return found };
    tsc::mark("disk");
    found.disks = or_fail(virtio::find_disks(base), "virtio bounce pool");
    for d in &found.disks {
        log!("virtio-blk: {} {} MiB", d.location, d.size >> 20);
    }
    // A virtio-console is the relay to a key broker (remote release needs evidence).
    if attests {
        found.relay = or_fail(relay::find_console(base), "virtio bounce pool");
        if let Some(r) = &found.relay {
            log!("virtio-console: {} (relay to a key broker)", r.location);
        }
    }
    match found.disks.first_mut() {
        Some(disk) => match volume::open(disk) {
            Ok(b) => {
                // Only a disk boot decrypts anything: the XTS self-test and choice run here,
                // not on every boot.
                tsc::mark("xts");
                select_xts_backend(hooks.xts_backend());
                found.boot = Some(b);
            }
            Err(e) if dev_key || matches!(e.kind(), error::BootErrorKind::BootVolumeUnreadable(_)) => {
                fail(format_args!("{e}"))
            }
            Err(e) => log!("disk {}: not a veilboot boot disk ({e}); booting QEMU's -kernel", disk.location),
        },
        None if dev_key => fail(format_args!("a master secret was given but there is no virtio-blk disk to boot from")),
        None => log!("disk: no virtio-blk disk; booting QEMU's -kernel"),
    }
    found
}

/// The boot target named by the boot volume's veil-bundle token, then the separators that
/// close the pre-boot measurements before any attestation, so a quote holds what `veil
/// measure` predicts. Returns whether the separators are in (a direct boot measures its
/// target later, in linux::prepare, and its separators after it).
fn measure_target(plat: &mut dyn Platform, boot: Option<&volume::BootVolume>) -> bool {
    let Some(name) = plat.root_of_trust().filter(|r| r.measures()).map(|r| r.name()) else { return false };
    tsc::mark("measure-target");
    let Some(t) = boot.and_then(|b| b.token.as_ref()) else {
        log!("{name}: no boot volume with a veil-bundle token: the boot target is not measured here");
        return false;
    };
    for part in measure::boot_target(&t.manifest).into_iter().chain(measure::separators()) {
        measure(plat, &part);
    }
    log!(
        "{name}: measured the boot target: kernel sha384:{}.. (PCR 4 / RTMR1), command line (PCR 8 / RTMR2), initrd sha384:{}.. (PCR 9 / RTMR2), and the separators",
        &t.manifest.kernel.sha384[..16],
        &t.manifest.initrd.sha384[..16]
    );
    true
}

/// The files handed to Linux in the initrd (keys and UUIDs), zeroized when dropped.
type RootFiles = Vec<(&'static str, Zeroizing<Vec<u8>>)>;

/// The root of trust's name, if there is one.
fn rot_name(plat: &mut dyn Platform) -> Option<&'static str> {
    plat.root_of_trust().map(|r| r.name())
}

/// With the master secret: the boot volume opened and its manifest verified (the proof that
/// the secret is this disk's), then a new secret sealed, the clusterID measured, the bundle
/// read and verified, the root volume's key and the state disk's prepared for Linux.
fn read_disks(
    plat: &mut dyn Platform,
    disks: &mut Disks,
    obtained: keysource::Obtained,
) -> (Option<diskboot::Verified>, RootFiles) {
    let boot = disks.boot.as_mut().expect("read_disks is called with a boot volume");
    let secret = &obtained.secret;
    let mut root_files: RootFiles = Vec::new();
    tsc::mark("disk-read");
    let disk = &mut disks.disks[0];
    let start_tsc = cpu::rdtsc();
    let volume_key = plat.root_of_trust().and_then(|r| r.volume_key(disk, boot));
    // A secret through the relay may be forged (the JWE does not authenticate its sender):
    // the refusal says so, and nothing was written.
    let opened = diskboot::unlock(disk, boot, secret, volume_key).unwrap_or_else(|e| match obtained.source {
        keysource::Source::Broker => {
            let e = error::BootError::from(error::BootErrorKind::SecretDoesNotOpen(obtained.source.describe(), e));
            fail(format_args!("{e}"))
        }
        _ => fail(format_args!("{e}")),
    });
    or_fail(obtained.seal_if_new(plat, disk, boot), "");
    if let (true, Some(t)) = (measures(plat), &boot.token) {
        let id = secret.cluster_id(&t.measurement_salt);
        measure(plat, &measure::cluster_id(&id.0));
        log!("{}: extended the clusterID {} into PCR 15 / RTMR2", rot_name(plat).unwrap_or(""), hex::encode(id.0));
    }
    let verified = or_fail(diskboot::read_bundle(disk, boot, opened), "");
    volume::repair_other_copy(disk, (boot.start, boot.len), &boot.volume, "veil-boot");
    let us = tsc::micros(cpu::rdtsc()) - tsc::micros(start_tsc);
    log!(
        "bundle: {} bytes read, decrypted and verified in {} us ({} MB/s)",
        verified.bytes,
        us,
        verified.bytes / us.max(1)
    );
    let root_key = or_fail(secret.disk_key(&verified.manifest.root_uuid), "root volume");
    root_files.push((veil_agent::handover::ROOT_KEY, Zeroizing::new(root_key.to_vec())));
    root_files.push((veil_agent::handover::ROOT_UUID, Zeroizing::new(verified.manifest.root_uuid.as_bytes().to_vec())));
    log!("root: handing over the key of LUKS2 volume {} in the initrd", verified.manifest.root_uuid);
    // A second disk is the state disk: formatted if blank, never touched otherwise.
    if let Some(state) = disks.disks.get_mut(1) {
        let location = state.location;
        let state_uuid = &verified.manifest.bound.as_ref().expect("diskboot::unlock checked it").state_uuid;
        if let Some(uuid) = statedisk::prepare(state, secret, state_uuid)
            .unwrap_or_else(|e| fail(format_args!("state disk {location}: {e}")))
        {
            let key = or_fail(secret.disk_key(&uuid), "state disk");
            root_files.push((veil_agent::handover::STATE_KEY, Zeroizing::new(key.to_vec())));
            root_files.push((veil_agent::handover::STATE_UUID, Zeroizing::new(uuid.into_bytes())));
        }
    }
    (Some(verified), root_files)
}

/// The hand-off archive, the platform's additions and the kernel placed: from the verified
/// bundle, else QEMU's -kernel (checked against the launch where it measured one). None when
/// there is nothing to boot.
fn prepare_linux(
    cfg: &fwcfg::FwCfg,
    plat: &mut dyn Platform,
    memory: &Memory,
    mut acpi: Option<&mut acpi::Tables>,
    from_disk: Option<&mut diskboot::Verified>,
    root_files: RootFiles,
) -> Option<linux::Prepared> {
    let files: Vec<(&str, &[u8])> = root_files.iter().map(|(p, d)| (*p, d.as_slice())).collect();
    let firmware = concat!("veilboot ", env!("CARGO_PKG_VERSION"));
    let handoff = veil_agent::cpio::handoff_archive(firmware, plat.name(), &tsc::MARKS.lock(), &files);
    drop(files);
    drop(root_files); // zeroized: the key now lives only in the hand-off archive
    if let Some(t) = acpi.as_deref_mut() {
        or_fail(plat.extend_acpi(t), "");
    }
    let extras = or_fail(plat.prepare_handoff(&memory.e820), "");
    let target =
        linux::Target { e820: &memory.e820, heap: memory.heap, acpi: acpi.as_deref(), extra_cpio: &handoff, extras };
    let prepared = match from_disk {
        Some(v) => linux::prepare(&mut diskboot::BundleSource(v), &target, None),
        None => linux::prepare(&mut linux::FwCfgSource(cfg), &target, Some(plat)),
    };
    let prepared = or_fail(prepared, "");
    drop(target);
    drop(handoff); // zeroized: the copy in the initrd is the one Linux gets
    prepared
}

/// The last measurements and the event log handed over, every secret wiped, the platform's
/// last step, then the jump.
fn hand_off(plat: &mut dyn Platform, acpi: Option<&acpi::Tables>, separated: bool, kernel: &linux::Prepared) -> ! {
    log!(
        "linux: boot protocol {}.{:02}, kernel at {:#x} ({} MiB reserved), initrd {} bytes at {:#x}, entry {:#x}",
        kernel.version >> 8,
        kernel.version & 0xff,
        kernel.kernel.0,
        kernel.kernel.1 >> 20,
        kernel.initrd.1,
        kernel.initrd.0,
        kernel.entry
    );
    if let Some(rot) = plat.root_of_trust() {
        if rot.measures() && !separated {
            for sep in measure::separators() {
                or_fail(rot.measure(&sep), "");
            }
        }
        or_fail(rot.publish(acpi), "");
    }
    match secrets::wipe_all() {
        Ok((n, bytes)) => log!("handoff: wiped {n} secret regions ({bytes} bytes), verified zero"),
        Err(n) => fail(format_args!("secret region {n} did not read back as zero after the wipe")),
    }
    or_fail(plat.before_jump(), "before the jump to Linux");
    #[cfg(feature = "snp-model")]
    snpmodel::audit_handoff(kernel.boot_params);
    #[cfg(feature = "tdx-model")]
    tdxmodel::audit_handoff(kernel.boot_params);
    tsc::mark("handoff");
    linux::jump(kernel)
}

/// Run the known-answer self-test of every XTS backend (failures are disabled for good),
/// then prefer the one a test forces or else the fastest of those that passed, measured:
/// under emulation the CPUID order lies.
fn select_xts_backend(forced: Option<&str>) {
    let verdicts = veil_agent::xts::selftest::run();
    for v in &verdicts {
        match v.result {
            Ok(()) => log!("xts: {} backend passed its known-answer self-test", v.backend),
            Err(e) => log!("xts: {} backend FAILED its known-answer self-test ({e}); it will not be used", v.backend),
        }
    }
    if let Some(name) = forced {
        match veil_agent::xts::set_preferred(name) {
            Ok(()) => {
                log!("xts: {name} backend (forced by the test)");
                return;
            }
            Err(e) => log!("xts: the test asked for the {name} backend, refused: {e}"),
        }
    }
    match veil_agent::xts::select_fastest(&cpu::rdtsc, 16 * 1024) {
        Some(name) => log!("xts: {name} backend (fastest of those that passed, measured)"),
        None => log!("xts: no backend could be measured"),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    log!("PANIC: {info}");
    exit::exit(exit::Status::Failure)
}
