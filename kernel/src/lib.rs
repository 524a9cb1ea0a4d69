//! veilboot firmware: QEMU loads it with `-bios`; it starts at the reset vector
//! (src/arch/boot.S), reaches 64-bit Rust here, finds out what machine it runs on and sets it
//! up: exceptions, vector state, NX, fw_cfg, the e820 memory map and heap, PCI, ACPI; then
//! loads the Linux kernel QEMU offers and jumps to it, after wiping its secrets. Each stage
//! begins with a timeline mark naming it (`veil: t=<us> stage=<name>`).
//!
//! This is the firmware's library; `src/main.rs` only links it into the `veilboot` binary, so
//! that the crate's public items are checked for documentation (`missing_docs`) as agent's are.
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod acpi;
pub mod cpu;
pub mod diskboot;
pub mod error;
pub mod exit;
pub mod fwcfg;
#[cfg(any(feature = "snp-model", feature = "tdx-model"))]
pub mod handoff_audit;
pub mod heap;
pub mod interrupts;
pub mod kbs;
pub mod keysource;
pub mod layout;
pub mod linux;
pub mod mmio;
pub mod mtrr;
pub mod paging;
pub mod pci;
pub mod platform;
pub mod random;
pub mod secrets;
pub mod serial;
#[cfg(feature = "snp-model")]
pub mod snpmodel;
pub mod statedisk;
#[cfg(any(feature = "snp-model", feature = "tdx-model"))]
pub mod tcg;
#[cfg(feature = "tdx-model")]
pub mod tdxmodel;
pub mod testhooks;
pub mod tpm;
pub mod tsc;
pub mod vector;
pub mod virtio;

use core::arch::global_asm;

use platform::{Kind, Platform};
use veil_agent::tpm::measure;

global_asm!(include_str!("arch/boot.S"), options(att_syntax));

/// The CCEL table's log area (TDX).
const CCEL_AREA: usize = 64 * 1024;

/// Largest e820 map accepted (bytes).
const E820_LIMIT: usize = 128 * 20;

/// Print a precise error and stop with a failure status: the one way a boot fails.
pub fn fail(what: core::fmt::Arguments<'_>) -> ! {
    platform::snp::release_ghcb_for_fatal();
    log!("FATAL: {what}");
    tsc::mark("halt");
    exit::exit(exit::Status::Failure)
}

/// Rust entry, called by boot.S in long mode on the boot stack.
#[unsafe(no_mangle)]
pub extern "C" fn veil_main() -> ! {
    heap::init_early();
    interrupts::init();
    #[cfg(feature = "snp-model")]
    snpmodel::launch();
    #[cfg(feature = "tdx-model")]
    tdxmodel::launch();
    let kind = platform::detect();
    let entry_tsc = cpu::rdtsc();
    let mut plat: alloc::boxed::Box<dyn Platform> = match kind {
        Kind::Plain => alloc::boxed::Box::new(platform::plain::Plain),
        Kind::Tdx => match platform::tdx::Tdx::init() {
            Ok(t) => alloc::boxed::Box::new(t),
            Err(e) => {
                serial::init();
                fail(format_args!("{e}"))
            }
        },
        Kind::SevSnp => alloc::boxed::Box::new(platform::snp::Snp::init()),
        Kind::SevLegacy if platform::snp::insn::sev_status() & 0b10 != 0 => {
            // SEV-ES: port I/O would raise #VC, and there is no GHCB: no console.
            platform::snp::terminate(platform::snp::Termination::SevEsWithoutSnp)
        }
        Kind::SevLegacy => {
            serial::init();
            fail(format_args!("AMD SEV without SNP detected (SEV_STATUS); veilboot supports SEV-SNP only"))
        }
    };
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

    tsc::mark("fw_cfg");
    let mut cfg = fwcfg::FwCfg::probe().unwrap_or_else(|e| fail(format_args!("{e}")));
    log!("fw_cfg: {} files, {} interface", cfg.files().len(), if cfg.dma() { "DMA" } else { "port I/O" });
    let hooks = testhooks::TestHooks::read(&cfg);

    tsc::mark("memory");
    let e820_file = hooks.e820_file();
    // Kept: measured into PCR 1 once the TPM is up.
    let e820_bytes = match cfg.read_file(e820_file, E820_LIMIT) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => fail(format_args!("fw_cfg has no {e820_file}: cannot find guest RAM")),
        Err(e) => fail(format_args!("{e}")),
    };
    let e820 = veil_agent::fwcfg::parse_e820(&e820_bytes).unwrap_or_else(|e| fail(format_args!("{e}")));
    for e in &e820 {
        log!("e820: {:#014x}-{:#014x} {}", e.addr, e.end() - 1, e.kind.name());
    }
    let direct = linux::direct_boot_need(&cfg);
    let Some((start, size)) = heap::choose_main(&e820, direct, kind != Kind::Plain) else {
        fail(format_args!("e820 has no RAM above {:#x} for the heap", layout::HEAP_FLOOR))
    };
    if let Err(e) = plat.accept_memory(start, size) {
        fail(format_args!("accepting the heap's memory: {e}"));
    }
    heap::init_main(start, size);
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
        platform::share_for_dma(bounce, 2 << 20).unwrap_or_else(|e| fail(format_args!("fw_cfg DMA buffer: {e}")));
        cfg.use_shared_bounce(bounce, 2 << 20);
        log!("fw_cfg: DMA through 2 MiB of shared memory at {bounce:#x}");
    }
    match kind {
        Kind::Plain => match mtrr::init(&e820) {
            Some((base, len)) => log!("mtrr: default write-back, {:#x}-{:#x} uncached", base, base + len - 1),
            None => log!("mtrr: not programmed (no MTRRs, or RAM in the 32-bit hole)"),
        },
        // MTRR writes would be intercepted MSR exits, and the hypervisor decides memory types.
        _ => log!("mtrr: left as they are on {}", plat.name()),
    }

    hooks.run_early(&cfg);

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

    // Measured boot (plain platform with a TPM). Started before the ACPI stage so that the
    // ACPI inputs are kept for PCR 1 only when there is a TPM to measure them into.
    tsc::mark("rot-start");
    let mut measured = match kind {
        Kind::Plain => tpm::MeasuredBoot::start().unwrap_or_else(|e| fail(format_args!("TPM: {e}"))),
        _ => None,
    };

    tsc::mark("acpi");
    // A platform with measurement registers of its own (TDX: RTMRs) measures what a TPM would.
    let platform_measures = plat.event_log().is_some();
    let mut acpi = acpi::install(&cfg, measured.is_some() || platform_measures)
        .unwrap_or_else(|e| fail(format_args!("ACPI tables: {e}")));
    match &acpi {
        Some(t) => log!("acpi: {} tables blobs, RSDP at {:#x}", t.blobs, t.rsdp),
        None => log!("acpi: QEMU offers no etc/table-loader; booting without ACPI tables"),
    }

    // The ROM, then the configuration it used (the fw_cfg inputs: e820, test hooks, ACPI).
    let mut config: alloc::vec::Vec<(&str, &[u8])> = alloc::vec![(e820_file, &e820_bytes)];
    config.extend(hooks.measured_input());
    let acpi_inputs = acpi.as_ref().map(|t| t.inputs.as_slice()).unwrap_or(&[]);
    config.extend(acpi_inputs.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())));
    match &mut measured {
        Some(m) => {
            tsc::mark("measure-firmware");
            // SAFETY: the ROM is mapped read-only at ROM_BASE..4 GiB for the firmware's lifetime.
            let rom = unsafe { core::slice::from_raw_parts(layout::ROM_BASE as *const u8, layout::ROM_SIZE) };
            let r = m
                .measure(&measure::rom(rom))
                .and_then(|()| config.iter().try_for_each(|(name, bytes)| m.measure(&measure::config(name, bytes))));
            r.unwrap_or_else(|e| fail(format_args!("TPM: measuring the firmware: {e}")));
            log!(
                "tpm: measured the ROM ({} KiB) into PCR 0 and {} configuration inputs into PCR 1",
                layout::ROM_SIZE >> 10,
                config.len()
            );
        }
        None if platform_measures => {
            tsc::mark("measure-firmware");
            for (name, bytes) in &config {
                plat.measure(&measure::config(name, bytes)).unwrap_or_else(|e| fail(format_args!("{e}")));
            }
            log!("{}: measured {} configuration inputs (and the TD HOB) into RTMR0", plat.name(), config.len());
            #[cfg(feature = "tdx-model")]
            tdxmodel::report_config(&config);
        }
        None => log!("tpm: none (no TIS at 0xfed40000); boot is not measured"),
    }
    drop(config);

    // The kernel comes from the encrypted disk when there is a key source and a disk, else
    // from QEMU's -kernel. The boot volume's header is readable without a key: its
    // veil-bundle token names the boot target, which is measured before any unsealing.
    let mut disks = alloc::vec::Vec::new();
    let mut boot_volume = None;
    let mut relay = None;
    let dev_key = keysource::dev_secret_offered(&cfg);
    let attests = measured.is_some() || plat.tee().is_some();
    if let (true, pci::Config::Ecam(base)) = (attests || dev_key, &pci) {
        // Only a disk boot decrypts anything: the XTS self-test and choice run here, not on
        // every boot.
        tsc::mark("xts");
        select_xts_backend(hooks.xts_backend());
        tsc::mark("disk");
        disks = virtio::find_disks(*base).unwrap_or_else(|e| fail(format_args!("virtio bounce pool: {e}")));
        for d in &disks {
            log!("virtio-blk: {} {} MiB", d.location, d.size >> 20);
        }
        // A virtio-console is the relay to a key broker (remote release needs the TPM or the
        // platform's own evidence).
        if attests {
            relay = virtio::find_console(*base).unwrap_or_else(|e| fail(format_args!("virtio bounce pool: {e}")));
            if let Some(r) = &relay {
                log!("virtio-console: {} (relay to a key broker)", r.location);
            }
        }
        match disks.first_mut() {
            Some(disk) => match diskboot::open(disk) {
                Ok(b) => boot_volume = Some(b),
                Err(e) if dev_key => fail(format_args!("{e}")),
                Err(e) => log!("disk {}: not a veilboot boot disk ({e}); booting QEMU's -kernel", disk.location),
            },
            None if dev_key => {
                fail(format_args!("a master secret was given but there is no virtio-blk disk to boot from"))
            }
            None => log!("disk: no virtio-blk disk; booting QEMU's -kernel"),
        }
    }
    if let Some(m) = &mut measured {
        tsc::mark("measure-target");
        match boot_volume.as_ref().and_then(|b| b.token.as_ref()) {
            Some(t) => {
                for part in measure::boot_target(&t.manifest) {
                    m.measure(&part).unwrap_or_else(|e| fail(format_args!("TPM: {e}")));
                }
                log!(
                    "tpm: measured the boot target: kernel sha384:{}.. into PCR 4, command line into PCR 8, initrd sha384:{}.. into PCR 9",
                    &t.manifest.kernel.sha384[..16],
                    &t.manifest.initrd.sha384[..16]
                );
            }
            None => log!("tpm: no boot volume with a veil-bundle token: the boot target is not measured"),
        }
        for sep in measure::separators() {
            m.measure(&sep).unwrap_or_else(|e| fail(format_args!("TPM: {e}")));
        }
    }
    // Separators close the pre-boot measurements before any attestation, as on the TPM, so a
    // quote holds what `veil measure` predicts (the clusterID follows into RTMR2). A direct
    // boot measures its target later (linux::prepare), and its separators after it.
    let mut separated = false;
    if let (true, Some(t)) = (platform_measures, boot_volume.as_ref().and_then(|b| b.token.as_ref())) {
        tsc::mark("measure-target");
        for part in measure::boot_target(&t.manifest).into_iter().chain(measure::separators()) {
            plat.measure(&part).unwrap_or_else(|e| fail(format_args!("{e}")));
        }
        separated = true;
        log!("{}: measured the boot target into RTMR1 and RTMR2, and the separators", plat.name());
    }
    tsc::mark("unseal");
    let boot_disk = match (disks.first_mut(), boot_volume.as_mut()) {
        (Some(d), Some(b)) => Some((d, b)),
        _ => None,
    };
    let secret = keysource::master_secret(&cfg, &mut *plat, kind, measured.as_mut(), boot_disk, relay.as_mut())
        .unwrap_or_else(|e| fail(format_args!("{e}")));
    let mut from_disk = None;
    let mut root_files: alloc::vec::Vec<(&str, zeroize::Zeroizing<alloc::vec::Vec<u8>>)> = alloc::vec::Vec::new();
    if let (Some(secret), Some(boot)) = (&secret, &boot_volume) {
        if let (Some(m), Some(t)) = (&mut measured, &boot.token) {
            let id = secret.cluster_id(&t.measurement_salt);
            m.measure(&measure::cluster_id(&id.0)).unwrap_or_else(|e| fail(format_args!("TPM: {e}")));
            log!("tpm: extended the clusterID {} into PCR 15", hex::encode(id.0));
        }
        if let (true, Some(t)) = (platform_measures, &boot.token) {
            let id = secret.cluster_id(&t.measurement_salt);
            plat.measure(&measure::cluster_id(&id.0)).unwrap_or_else(|e| fail(format_args!("{e}")));
        }
        tsc::mark("disk-read");
        let disk = &mut disks[0];
        let start_tsc = cpu::rdtsc();
        let volume_key = measured.as_mut().and_then(|m| diskboot::systemd_volume_key(m, disk, boot));
        let verified = diskboot::load(disk, boot, secret, volume_key).unwrap_or_else(|e| fail(format_args!("{e}")));
        let us = tsc::micros(cpu::rdtsc()) - tsc::micros(start_tsc);
        log!(
            "bundle: {} bytes read, decrypted and verified in {} us ({} MB/s)",
            verified.bytes,
            us,
            verified.bytes / us.max(1)
        );
        let root_key =
            secret.disk_key(&verified.manifest.root_uuid).unwrap_or_else(|e| fail(format_args!("root volume: {e}")));
        root_files.push(("run/veil/keys/root.key", zeroize::Zeroizing::new(root_key.to_vec())));
        root_files
            .push(("run/veil/root.uuid", zeroize::Zeroizing::new(verified.manifest.root_uuid.as_bytes().to_vec())));
        log!("root: handing over the key of LUKS2 volume {} in the initrd", verified.manifest.root_uuid);
        from_disk = Some(verified);
        // A second disk is the state disk: formatted if blank, never touched otherwise.
        if let Some(state) = disks.get_mut(1) {
            match statedisk::prepare(state, secret) {
                Ok(statedisk::State::Volume { uuid, formatted_now }) => {
                    if formatted_now {
                        log!("state disk {}: blank; formatted LUKS2 volume {uuid} with its disk key", state.location);
                    } else {
                        log!("state disk {}: LUKS2 volume {uuid}", state.location);
                    }
                    let key = secret.disk_key(&uuid).unwrap_or_else(|e| fail(format_args!("state disk: {e}")));
                    root_files.push(("run/veil/keys/state.key", zeroize::Zeroizing::new(key.to_vec())));
                    root_files.push(("run/veil/state.uuid", zeroize::Zeroizing::new(uuid.into_bytes())));
                }
                Ok(statedisk::State::Foreign(why)) => log!("state disk {}: left untouched: {why}", state.location),
                Err(e) => fail(format_args!("state disk {}: {e}", state.location)),
            }
        }
    }
    drop(secret); // zeroized

    tsc::mark("linux");
    let files: alloc::vec::Vec<(&str, &[u8])> = root_files.iter().map(|(p, d)| (*p, d.as_slice())).collect();
    let firmware = concat!("veilboot ", env!("CARGO_PKG_VERSION"));
    let handoff = veil_agent::cpio::handoff_archive(firmware, plat.name(), &tsc::MARKS.lock(), &files);
    drop(files);
    drop(root_files); // zeroized: the key now lives only in the hand-off archive
    if platform_measures && let Some(t) = acpi.as_mut() {
        // The CCEL table and its log area, before the memory map for Linux is made; the log
        // is written once the last measurement is in.
        t.add_ccel(CCEL_AREA).unwrap_or_else(|e| fail(format_args!("{e}")));
    }
    if let Some(t) = acpi.as_mut() {
        plat.extend_acpi(t).unwrap_or_else(|e| fail(format_args!("{e}")));
    }
    let extras = plat.prepare_handoff(&e820).unwrap_or_else(|e| fail(format_args!("{e}")));
    let target = linux::Target { e820: &e820, heap: (start, size), acpi: acpi.as_ref(), extra_cpio: &handoff, extras };
    let prepared = match &mut from_disk {
        Some(v) => linux::prepare(&mut diskboot::BundleSource(v), &target, None),
        None => linux::prepare(&mut linux::FwCfgSource(&cfg), &target, Some(&mut *plat)),
    }
    .unwrap_or_else(|e| fail(format_args!("{e}")));
    drop(target);
    drop(handoff); // zeroized: the copy in the initrd is the one Linux gets
    let Some(kernel) = prepared else {
        log!("no kernel to boot (QEMU -kernel); boot stages done");
        tsc::mark("done");
        exit::exit(exit::Status::Success)
    };
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
    if platform_measures {
        if !separated {
            for sep in measure::separators() {
                plat.measure(&sep).unwrap_or_else(|e| fail(format_args!("{e}")));
            }
        }
        let log_bytes = plat.event_log().unwrap_or_default();
        match &acpi {
            Some(t) => t.write_ccel_log(&log_bytes).unwrap_or_else(|e| fail(format_args!("CC event log: {e}"))),
            None => fail(format_args!("CC event log: no ACPI tables to hand it over in")),
        }
        log!("{}: CC event log of {} bytes handed to Linux in the ACPI CCEL table", plat.name(), log_bytes.len());
        #[cfg(feature = "tdx-model")]
        tdxmodel::report(&log_bytes);
    }
    if let Some(m) = measured.take() {
        let events = m.extends;
        let log_bytes = m.finish();
        match &acpi {
            Some(t) => t.write_tpm_log(&log_bytes).unwrap_or_else(|e| fail(format_args!("TPM event log: {e}"))),
            None => fail(format_args!("TPM event log: no ACPI tables to hand it over in")),
        }
        log!(
            "tpm: event log of {events} measurements ({} bytes) handed to Linux in the ACPI TPM2 log area; locality released",
            log_bytes.len()
        );
    }
    match secrets::wipe_all() {
        Ok((n, bytes)) => log!("handoff: wiped {n} secret regions ({bytes} bytes), verified zero"),
        Err(n) => fail(format_args!("secret region {n} did not read back as zero after the wipe")),
    }
    plat.before_jump().unwrap_or_else(|e| fail(format_args!("before the jump to Linux: {e}")));
    #[cfg(feature = "snp-model")]
    snpmodel::audit_handoff(kernel.boot_params);
    #[cfg(feature = "tdx-model")]
    tdxmodel::audit_handoff(kernel.boot_params);
    tsc::mark("handoff");
    linux::jump(&kernel)
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
