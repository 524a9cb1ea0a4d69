//! The TDX model ROM under TCG: the firmware's real TDX path (TDCALL through the model's #UD
//! handler: TDG.VP.INFO, memory from the TD HOB, TDG.MEM.PAGE.ACCEPT, port I/O and MMIO
//! through TDG.VP.VMCALL, fw_cfg DMA through memory made shared with MapGPA) boots the Debian
//! kernel to its initramfs. The TD HOB is written here, byte by byte from the UEFI PI
//! specification's layout, not with the firmware's code.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::{linux, qemu, root, target_dir};

/// The model ROM's marker string (kernel/src/model/tdx.rs MARKER).
pub const MODEL_MARKER: &str = "veilboot TDX model ROM";
const APPEND: &str = "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 quiet";

/// A resource descriptor HOB (type 3, 48 bytes): header, owner GUID, type, attributes,
/// start, length.
fn resource(kind: u32, start: u64, len: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend(3u16.to_le_bytes());
    h.extend(48u16.to_le_bytes());
    h.extend(0u32.to_le_bytes());
    h.extend([0u8; 16]);
    h.extend(kind.to_le_bytes());
    h.extend(0u32.to_le_bytes());
    h.extend(start.to_le_bytes());
    h.extend(len.to_le_bytes());
    h
}

/// The ranges the VMM adds to the TD before it runs (TDH.MEM.PAGE.ADD): the ROM's TDVF
/// TempMem and TD HOB sections, from its TDVF metadata (boot.S).
pub const ADDED_SECTIONS: [(u64, u64); 3] = [(0x80_0000, 0x90_0000), (0x90_2000, 0x90_3000), (0xA0_0000, 0xC0_0000)];

/// The TD HOB QEMU would write for `ram` bytes: the PHIT, the pages the VMM adds (the ROM's
/// TDVF TempMem and TD HOB sections) as system memory, the rest as unaccepted memory (on q35,
/// 2 GiB below 4 GiB and the rest above once RAM reaches 2.75 GiB), the end-of-list HOB.
pub fn td_hob(ram: u64) -> Vec<u8> {
    td_hob_listing(ram, &ADDED_SECTIONS)
}

/// [`td_hob`] with `system_memory` (ascending, below 2 GiB) listed as the system memory the VMM
/// added, whether or not it did: a hostile VMM's HOB.
pub fn td_hob_listing(ram: u64, system_memory: &[(u64, u64)]) -> Vec<u8> {
    let low = if ram >= 0xB000_0000 { 0x8000_0000 } else { ram };
    let mut h = Vec::new();
    h.extend(1u16.to_le_bytes());
    h.extend(56u16.to_le_bytes());
    h.extend(0u32.to_le_bytes());
    h.extend(9u32.to_le_bytes()); // version
    h.extend([0u8; 44]);
    let mut at = 0;
    for &(a, b) in system_memory {
        if at < a {
            h.extend(resource(7, at, a - at));
        }
        h.extend(resource(0, a, b - a));
        at = b;
    }
    h.extend(resource(7, at, low - at));
    if ram > low {
        h.extend(resource(7, 0x1_0000_0000, ram - low));
    }
    h.extend([0xFF, 0xFF, 8, 0, 0, 0, 0, 0]);
    h
}

/// The firmware's CC event log (printed by the model ROM) replays, with the event-log parser
/// that replays a real TD's CCEL to its quote's RTMRs (agent/tests/tdx_ccel.rs), to the RTMRs
/// the model TDX module holds at the hand-off.
fn rtmrs_replay(log: &str) -> Result<()> {
    use veil_agent::tpm::{Bank, eventlog};
    let field = |name: &str| -> Result<Vec<u8>> {
        let hex = log
            .lines()
            .find_map(|l| l.split_once(&format!("{MODEL_MARKER}: {name} ")).map(|(_, h)| h.trim().to_string()))
            .ok_or_else(|| anyhow::anyhow!("the model ROM did not print {name}"))?;
        Ok(hex::decode(hex)?)
    };
    let ccel = field("CCEL")?;
    let (banks, events) = eventlog::parse(&ccel).map_err(|e| anyhow::anyhow!("the firmware's CC event log: {e}"))?;
    if banks != [Bank::Sha384] {
        bail!("the CC event log's banks are {banks:?}, not SHA-384 alone");
    }
    let replayed = eventlog::replay(&events, Bank::Sha384);
    for i in 0..4u32 {
        let held = field(&format!("RTMR{i}"))?;
        let want = replayed.get(&(i + 1)).cloned().unwrap_or_else(|| vec![0u8; 48]);
        if held != want {
            bail!(
                "RTMR{i}: the model holds {}, the CC event log replays to {}",
                hex::encode(&held),
                hex::encode(&want)
            );
        }
    }
    if !events.iter().any(|e| e.pcr == 3) || !events.iter().any(|e| e.pcr == 2) {
        bail!("the CC event log has no RTMR1/RTMR2 events (the boot target)");
    }
    eprintln!("xtask: tdx test: {} CC events replay to the model's RTMR0-3", events.len());
    Ok(())
}

/// `veil measure --platform tdx` for the same -kernel, -append and -initrd, TD HOB and fw_cfg
/// files predicts the RTMR0-3 the model TDX module holds after the boot.
fn predicted_rtmrs(log: &str, kernel: &Path, initrd: &Path, hob: &Path) -> Result<()> {
    let veil = target_dir().join("debug/veil");
    crate::run(crate::cargo().args(["build", "-q", "-p", "veil"]))?;
    // The VMM's fw_cfg files, as the model ROM printed what it measured, laid out as a guest's
    // /sys/firmware/qemu_fw_cfg/by_name would give them.
    let config = qemu::run_dir("tdx-vmm-config")?;
    let mut files = 0;
    for (name, hex) in log.lines().filter_map(|l| l.split_once(&format!("{MODEL_MARKER}: CONFIG "))?.1.split_once(' '))
    {
        let path = config.join(name);
        std::fs::create_dir_all(path.parent().expect("a file name"))?;
        std::fs::write(&path, hex::decode(hex.trim())?)?;
        files += 1;
    }
    if files < 3 {
        bail!("the model ROM printed {files} configuration inputs (e820, table loader and ACPI blobs expected)");
    }
    let out = std::process::Command::new(&veil)
        .args(["measure", "--platform", "tdx", "--rom"])
        .arg(target_dir().join("veilboot.fd"))
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .args(["--append", APPEND, "--td-hob"])
        .arg(hob)
        .arg("--vmm-config")
        .arg(&config)
        .current_dir(root())
        .output()?;
    if !out.status.success() {
        bail!("veil measure --platform tdx: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.lines().any(|l| l.strip_prefix("MRTD ").is_some_and(|h| h.len() == 96)) {
        bail!("veil measure --platform tdx printed no MRTD:\n{text}");
    }
    for i in 0..4 {
        let predicted = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("RTMR{i} ")))
            .ok_or_else(|| anyhow::anyhow!("veil measure printed no RTMR{i}"))?;
        let held = log
            .lines()
            .find_map(|l| l.split_once(&format!("{MODEL_MARKER}: RTMR{i} ")).map(|(_, h)| h.trim()))
            .ok_or_else(|| anyhow::anyhow!("the model ROM printed no RTMR{i}"))?;
        if predicted.trim() != held {
            bail!("RTMR{i}: veil measure predicts {predicted}, the model holds {held}");
        }
    }
    eprintln!(
        "xtask: tdx test: veil measure --platform tdx predicts RTMR0-3 (RTMR0 from the TD HOB and {files} fw_cfg files)"
    );
    Ok(())
}

/// QEMU arguments (all but `-m`) for a direct boot of `kernel` and `initrd` as a TD whose
/// TD HOB is the file `hob`.
fn td_args(kernel: &Path, initrd: &Path, hob: &Path) -> Vec<String> {
    [
        "-kernel",
        &kernel.display().to_string(),
        "-initrd",
        &initrd.display().to_string(),
        "-append",
        APPEND,
        "-fw_cfg",
        &format!("name=opt/veil/test-td-hob,file={}", hob.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// QEMU arguments (all but `-m`) for a direct boot of the Debian test kernel and initramfs on
/// the model ROM as a TD of `mib` MiB: the kernel as fw_cfg serves it at that size and the TD
/// HOB QEMU would write for it, both written to `dir`.
pub fn direct_boot_args(model_rom: &Path, dir: &Path, mib: u64) -> Result<Vec<String>> {
    let l = linux::prepare()?;
    let kernel = crate::snp_test::kernel_as_fw_cfg_serves_it(model_rom, &l.kernel, &l.initrd, dir, &format!("{mib}M"))?;
    let hob = dir.join(format!("td-hob-{mib}M.bin"));
    std::fs::write(&hob, td_hob(mib << 20))?;
    Ok(td_args(&kernel, &l.initrd, &hob))
}

/// Boot the TDX model ROM: Linux with an honest TD HOB; refusals with a malformed HOB and a
/// HOB that lists an added page as unaccepted.
pub fn model_boot_tests(release: &Path, model_rom: &Path) -> Result<()> {
    eprintln!("xtask: tdx test: the release ROM carries no TDX model");
    crate::check_release_rom_lacks(release, model_rom, "the TDX model", &[MODEL_MARKER])?;
    let t = Duration::from_secs(120);
    let l = linux::prepare()?;
    let dir = qemu::run_dir("tdx-boot")?;
    // The kernel as fw_cfg serves it (QEMU rewrites setup header fields outside SEV), so that
    // what the firmware measures is the file veil measure reads.
    let kernel = crate::snp_test::kernel_as_fw_cfg_serves_it(model_rom, &l.kernel, &l.initrd, &dir, "4608M")?;
    let args = |hob: &Path, ram: &str| -> Vec<String> {
        let mut a = td_args(&kernel, &l.initrd, hob);
        a.extend(["-m".to_string(), ram.to_string()]);
        a
    };
    eprintln!("xtask: tdx test: the model ROM boots Linux as a TD (TD HOB, accept, VMCALL I/O, fw_cfg DMA via MapGPA)");
    // 4.5 GiB: 2.5 GiB of it above 4 GiB, accepted there too.
    let big = dir.join("td-hob-4.5g.bin");
    std::fs::write(&big, td_hob(4608 << 20))?;
    // Two vCPUs: the second reaches Linux only through the ACPI multiprocessor wakeup mailbox
    // (the model starts it at the reset vector as a TD's APs start; Linux then finds the
    // MADT's wakeup structure and uses the mailbox instead of INIT/SIPI).
    let mut two = args(&big, "4608M");
    two.extend(["-smp".to_string(), "2".to_string()]);
    two.extend(["-fw_cfg".to_string(), "name=opt/veil/test-tdx-dump-config,string=1".to_string()]);
    let booted = qemu::boot(model_rom, "tdx-linux", &two, t)?;
    booted
        .expect("on the tdx platform")?
        .expect("made shared for DMA (shared bit set, MapGPA)")?
        .expect("tdx: application processors in the ACPI wakeup mailbox at 0x")?
        .expect("tdx: accepted the remaining")?
        // The fw_cfg DMA buffer is the VMM's until then; Linux must get it back as RAM, and
        // the model checks Linux's whole memory map against what is accepted and private.
        .expect("tdx: the 2 MiB shared for DMA made private and accepted again for Linux")?
        .expect(&format!("{MODEL_MARKER}: the "))?
        .expect("MiB Linux is given as RAM are all accepted and private")?
        .expect("Linux version")?
        .expect(&format!("{} cpus=2", linux::MARKER))?
        .expect("\"platform\":\"tdx\"")?;
    if booted.code != Some(0) {
        bail!(
            "QEMU exited with {:?} after the kernel powered off (expected 0); log {}",
            booted.code,
            booted.log_path.display()
        );
    }
    let accepted_mib: u64 = booted
        .log
        .lines()
        .find_map(|l| l.split_once("tdx: accepted the remaining ").and_then(|(_, r)| r.split(' ').next()?.parse().ok()))
        .unwrap_or(0);
    if accepted_mib < 4096 {
        bail!(
            "the firmware accepted {accepted_mib} MiB for Linux; with 4.5 GiB (2.5 above 4 GiB) it should be over 4096"
        );
    }
    rtmrs_replay(&booted.log)?;
    predicted_rtmrs(&booted.log, &kernel, &l.initrd, &big)?;

    eprintln!(
        "xtask: tdx test: a malformed TD HOB, a page the VMM added twice, an unusable GPAW and APs that never run are refused"
    );
    let hob = dir.join("td-hob.bin");
    std::fs::write(&hob, td_hob(512 << 20))?;
    let mut truncated = td_hob(512 << 20);
    truncated.truncate(truncated.len() - 8);
    let bad = dir.join("td-hob-truncated.bin");
    std::fs::write(&bad, truncated)?;
    qemu::boot(model_rom, "tdx-hob-truncated", &args(&bad, "512M"), t)?
        .expect("FATAL: TD HOB: the HOB at offset 0x188 has an impossible length")?
        .expect_exit(qemu::EXIT_FAILURE)?;
    for (how, want) in [
        (
            "added-twice",
            "TDG.MEM.PAGE.ACCEPT of 0x100000: accepted already (the VMM added the page twice, or kept it when it was made shared): refusing it",
        ),
        (
            "keeps-private",
            "FATAL: before the jump to Linux: TDX: TDG.MEM.PAGE.ACCEPT of 0x10000000: accepted already (the VMM added the page twice, or kept it when it was made shared): refusing it",
        ),
        ("gpaw", "FATAL: TDX: TDG.VP.INFO: a guest-physical address width of 40 (48 or 52 expected)"),
        (
            "aps-missing",
            "FATAL: TDX: 0 of 1 application processors reached the wakeup mailbox (the VMM did not run the others)",
        ),
    ] {
        let mut a = args(&hob, "512M");
        a.extend(["-smp".to_string(), "2".to_string()]);
        a.extend(["-fw_cfg".to_string(), format!("name=opt/veil/test-tdx-hostile,string={how}")]);
        qemu::boot(model_rom, &format!("tdx-hostile-{how}"), &a, t)?.expect(want)?.expect_exit(qemu::EXIT_FAILURE)?;
    }
    Ok(())
}
