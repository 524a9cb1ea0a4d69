//! Hostile-host boots (issue 34) on the three ROMs whose paths differ: the plain test ROM, the
//! SEV-SNP model ROM and the TDX model ROM. The host chooses the kernel's setup header (QEMU's
//! -kernel) and the memory map (etc/e820, here its test substitute): a header whose unchecked
//! arithmetic wrapped put the firmware's heap over its own page tables, stacks and image
//! before anything was measured. Each boot here must stop with its precise error at the memory
//! stage, before the heap exists and so before any host data is written to it. And (issue 32
//! item 5) memory maps the launch disagrees with, on both model ROMs.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::{linux, qemu, tdx_test};

/// An e820 entry (20 bytes).
fn entry(addr: u64, len: u64, kind: u32) -> Vec<u8> {
    [addr.to_le_bytes().to_vec(), len.to_le_bytes().to_vec(), kind.to_le_bytes().to_vec()].concat()
}

/// The kernel-header and memory-map cases: (name, setup-header patches, e820, expected line).
fn cases() -> Vec<(&'static str, Vec<(usize, Vec<u8>)>, Vec<u8>, &'static str)> {
    let align = (0x230, 0x20_0000u32.to_le_bytes().to_vec());
    // The first RAM entry covers the firmware's own memory, as in the reproduction.
    let low = entry(0, 0x1000_0000, 1);
    vec![
        (
            // pref_address = u64::MAX rounded up to 2 MiB wrapped to 0.
            "pref-max",
            vec![align.clone(), (0x258, u64::MAX.to_le_bytes().to_vec())],
            low.clone(),
            "FATAL: kernel setup header: preferred address 0xffffffffffffffff rounded up to its alignment 0x200000 overflows 64 bits",
        ),
        (
            // 0xFFFF_FFFF_FFE0_0000 + 6 MiB (init_size; the kernel is larger) wrapped to 0x400000.
            "pref-wraps",
            vec![
                align.clone(),
                (0x258, 0xFFFF_FFFF_FFE0_0000u64.to_le_bytes().to_vec()),
                (0x260, 0x60_0000u32.to_le_bytes().to_vec()),
            ],
            low.clone(),
            "from load address 0xffffffffffe00000 reach past 4 GiB",
        ),
        (
            "init-size-huge",
            vec![
                align.clone(),
                (0x258, 0x100_0000u64.to_le_bytes().to_vec()),
                (0x260, 0xFFFF_F000u32.to_le_bytes().to_vec()),
            ],
            low,
            "FATAL: kernel setup header: 0xfffff000 bytes (init_size or kernel size) from load address 0x1000000 reach past 4 GiB",
        ),
        (
            // RAM claimed up to 4 GiB: the heap above the kernel would take the top 256 MiB,
            // over the ROM. Refused where the heap is checked (layout::check_heap).
            "e820-over-rom",
            vec![align],
            entry(0, 0x1_0000_0000, 1),
            // {rom}: the ROM's range, 4 GiB - its file's size to 4 GiB (linker/veilboot.ld).
            "FATAL: the heap 0xf0000000-0xffffffff would overlap the firmware's ROM at {rom}",
        ),
    ]
}

/// Boot each case on each ROM (`plain`: the test ROM; `snp`, `tdx`: the model ROMs).
pub fn kernel_header_tests(plain: &Path, snp: &Path, tdx: &Path) -> Result<()> {
    let t = Duration::from_secs(30);
    let l = linux::prepare()?;
    let dir = qemu::run_dir("hostile-kernel-header")?;
    let hob = dir.join("hostile-td-hob.bin");
    std::fs::write(&hob, tdx_test::td_hob(256 << 20))?;
    let mut failed = Vec::new();
    for (name, patches, e820, want) in cases() {
        let patches: Vec<(usize, &[u8])> = patches.iter().map(|(at, b)| (*at, b.as_slice())).collect();
        let kernel = linux::patched_kernel(&l.kernel, &format!("hostile-{name}"), &patches)?;
        let map = dir.join(format!("hostile-{name}-e820.bin"));
        std::fs::write(&map, &e820)?;
        let base = [
            "-kernel".to_string(),
            kernel.display().to_string(),
            "-initrd".into(),
            l.initrd.display().to_string(),
            "-append".into(),
            "console=ttyS0".into(),
            "-fw_cfg".into(),
            format!("name=opt/veil/test-e820,file={}", map.display()),
        ];
        let td = ["-fw_cfg".to_string(), format!("name=opt/veil/test-td-hob,file={}", hob.display())];
        for (rom, platform, extra) in [(plain, "plain", &[][..]), (snp, "sev-snp", &[][..]), (tdx, "tdx", &td[..])] {
            eprintln!("xtask: hostile test: {name} on the {platform} ROM stops at the memory stage");
            let args: Vec<String> = base.iter().chain(extra).cloned().collect();
            let rom_base = 0x1_0000_0000 - std::fs::metadata(rom)?.len();
            let want = want.replace("{rom}", &format!("{rom_base:#x}-0xffffffff"));
            let run = qemu::boot(rom, &format!("hostile-{name}-{platform}"), &args, t)?;
            // Nothing after the memory stage ran: no heap, so nothing the host sent was stored.
            let checked = run
                .expect_exit(qemu::EXIT_FAILURE)
                .and_then(|r| r.expect(&format!("on the {platform} platform")))
                .and_then(|r| r.expect(&want))
                .and_then(|r| match r.log.contains("heap: ") || r.log.contains("stage=pci") {
                    true => Err(anyhow::anyhow!("the boot went past the memory stage: {}", r.log_path.display())),
                    false => Ok(()),
                });
            if let Err(e) = checked {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                eprintln!("xtask: hostile test: {name} on the {platform} ROM: FAILED: {first}");
                failed.push(format!("{name} on the {platform} ROM: {e}"));
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{} hostile-host boots did not stop as they must:\n{}", failed.len(), failed.join("\n"));
    }
    Ok(())
}

/// Issue 32 item 5: the memory map (the host's etc/e820, here its test substitute) and the
/// launch disagree (TDX: the TD HOB, which lists the RAM the VMM added or left to accept;
/// SEV-SNP: the RAM the host backs and the pages the launch validated). Each boot is a guest
/// of 512 MiB and must stop with its precise line before Linux starts: (case, ROM, e820 map or
/// QEMU's own, the TD HOB, the line).
pub fn launch_disagreement_tests(snp: &Path, tdx: &Path) -> Result<()> {
    const MIB: u64 = 1 << 20;
    let t = Duration::from_secs(60);
    let l = linux::prepare()?;
    let dir = qemu::run_dir("hostile-e820-launch")?;
    let rom_base = |rom: &Path| -> Result<u64> { Ok(0x1_0000_0000 - std::fs::metadata(rom)?.len()) };
    // RAM 128 MiB beyond the 512 MiB QEMU has; RAM over the ROM (which the launch validated or
    // added), apart from the heap's entry.
    let beyond = [entry(0, 512 * MIB, 1), entry(512 * MIB, 128 * MIB, 1)].concat();
    let over_rom = |rom: &Path| -> Result<Vec<u8>> {
        let base = rom_base(rom)?;
        Ok([entry(0, 512 * MIB, 1), entry(base, 0x1_0000_0000 - base, 1)].concat())
    };
    let (snp_rom, tdx_rom) = (over_rom(snp)?, over_rom(tdx)?);
    let not_in_hob = "is not unaccepted in the TD HOB: refusing it";
    let hob = |mib: u64| Some(tdx_test::td_hob(mib * MIB));
    // The TDVF TempMem section (added by the VMM) listed as unaccepted instead of system memory.
    let mut temp_unaccepted = tdx_test::td_hob(512 * MIB);
    let at = (56..temp_unaccepted.len() - 48)
        .step_by(48)
        .find(|&at| temp_unaccepted[at + 32..at + 40] == 0x80_0000u64.to_le_bytes())
        .expect("td_hob lists TempMem");
    temp_unaccepted[at + 24..at + 28].copy_from_slice(&7u32.to_le_bytes());
    // A HOB that calls 1 MiB at 128 MiB system memory the VMM added, which it never added: left
    // unaccepted, Linux would take it as accepted RAM.
    let mut claimed = tdx_test::ADDED_SECTIONS.to_vec();
    claimed.push((128 * MIB, 129 * MIB));
    let claimed_added = tdx_test::td_hob_listing(512 * MIB, &claimed);
    // 512 MiB as two RAM entries split inside a page: the page across the split is in neither
    // entry's whole pages, so neither validated nor accepted, but Linux merges the entries and
    // uses it.
    let split = [entry(0, 256 * MIB + 0x800, 1), entry(256 * MIB + 0x800, 256 * MIB - 0x800, 1)].concat();
    let split_line = "FATAL: etc/e820: entry 0 (0x0+0x10000800) is RAM not in whole 4 KiB pages";
    // RAM in the last GiB of the address space, beyond any physical address width.
    let last_gib = [entry(0, 512 * MIB, 1), entry(0u64.wrapping_sub(1 << 30), (1 << 30) - 0x1000, 1)].concat();
    // RAM at 128 TiB: above it, an identity mapping is no canonical address (4-level paging).
    let at_128_tib = [entry(0, 512 * MIB, 1), entry(1 << 47, 2 * MIB, 1)].concat();
    // E820_TYPE_RESERVED_KERN (128), which Linux adds to its usable memory like RAM, beyond
    // QEMU's RAM: neither validated nor accepted.
    let reserved_kern = [entry(0, 512 * MIB, 1), entry(512 * MIB, 128 * MIB, 128)].concat();
    let kern_line = "FATAL: etc/e820: entry 1 (0x20000000+0x8000000) has a type other than 1-5";
    let cases: Vec<(&str, &Path, Option<&[u8]>, Option<Vec<u8>>, String)> = vec![
        (
            "e820-beyond-backed",
            snp,
            Some(&beyond),
            None,
            "FATAL: SEV-SNP memory: page state change failed with hypervisor error 0x10000000000".into(),
        ),
        ("e820-beyond-hob", tdx, Some(&beyond), hob(512), format!("FATAL: TDX: 0x20000000-0x27ffffff {not_in_hob}")),
        // The heap (the top 256 MiB of QEMU's 512) lies beyond what the TD HOB describes.
        (
            "hob-short-of-heap",
            tdx,
            None,
            hob(256),
            format!("FATAL: accepting the heap's memory: TDX: 0x10000000-0x1fffffff {not_in_hob}"),
        ),
        (
            "e820-ram-over-rom",
            snp,
            Some(&snp_rom),
            None,
            format!(
                "FATAL: SEV-SNP: validating {0:#x}-0xffffffff would overlap {0:#x}-0xffffffff, which the launch added: refusing it",
                rom_base(snp)?
            ),
        ),
        (
            "e820-ram-over-rom",
            tdx,
            Some(&tdx_rom),
            hob(512),
            format!("FATAL: TDX: {:#x}-0xffffffff {not_in_hob}", rom_base(tdx)?),
        ),
        // The HOB asks the TD to accept TempMem, which the VMM added.
        (
            "hob-tempmem-unaccepted",
            tdx,
            None,
            Some(temp_unaccepted),
            "FATAL: TDX: the TD HOB's unaccepted 0x800000-0x8fffff would overlap 0x800000-0x8fffff, which the launch added: refusing it".into(),
        ),
        ("hob-claims-added", tdx, None, Some(claimed_added), format!("FATAL: TDX: 0x8000000-0x80fffff {not_in_hob}")),
        ("e820-split-page", snp, Some(&split), None, split_line.into()),
        ("e820-split-page", tdx, Some(&split), hob(512), split_line.into()),
        (
            "e820-last-gib",
            snp,
            Some(&last_gib),
            None,
            "FATAL: SEV-SNP: memory up to 0xfffffffffffff000 is out of reach (heap: below 4 GiB, RAM: 128 TiB)".into(),
        ),
        (
            "e820-at-128-tib",
            snp,
            Some(&at_128_tib),
            None,
            "FATAL: SEV-SNP: memory up to 0x800000200000 is out of reach (heap: below 4 GiB, RAM: 128 TiB)".into(),
        ),
        ("e820-reserved-kern", snp, Some(&reserved_kern), None, kern_line.into()),
        ("e820-reserved-kern", tdx, Some(&reserved_kern), hob(512), kern_line.into()),
    ];
    let mut failed = Vec::new();
    for (name, rom, e820, td_hob, want) in cases {
        let platform = if rom == snp { "sev-snp" } else { "tdx" };
        eprintln!("xtask: hostile test: {name} on the {platform} model ROM stops before Linux");
        let mut args: Vec<String> = [
            "-kernel",
            &l.kernel.display().to_string(),
            "-initrd",
            &l.initrd.display().to_string(),
            "-append",
            "console=ttyS0",
            "-m",
            "512M",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(map) = e820 {
            let file = dir.join(format!("{name}-e820.bin"));
            std::fs::write(&file, map)?;
            args.extend(["-fw_cfg".to_string(), format!("name=opt/veil/test-e820,file={}", file.display())]);
        }
        if let Some(bytes) = td_hob {
            let file = dir.join(format!("{name}-td-hob.bin"));
            std::fs::write(&file, bytes)?;
            args.extend(["-fw_cfg".to_string(), format!("name=opt/veil/test-td-hob,file={}", file.display())]);
        }
        let run = qemu::boot(rom, &format!("hostile-{name}-{platform}"), &args, t)?;
        let checked = run
            .expect_exit(qemu::EXIT_FAILURE)
            // A TD HOB is refused as the platform comes up, before the banner names it.
            .and_then(|r| match want.contains("the TD HOB's") {
                true => Ok(r),
                false => r.expect(&format!("on the {platform} platform")),
            })
            .and_then(|r| r.expect(&want))
            .and_then(|r| match r.log.contains("Linux version") {
                true => Err(anyhow::anyhow!("Linux started: {}", r.log_path.display())),
                false => Ok(()),
            });
        if let Err(e) = checked {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            eprintln!("xtask: hostile test: {name} on the {platform} model ROM: FAILED: {first}");
            failed.push(format!("{name} on the {platform} model ROM: {e}"));
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} boots with a memory map the launch disagrees with did not stop:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

/// QEMU's WRITE_POINTER (here for `-device vmgenid`: the guest tells QEMU where the generation
/// ID lives) on both model ROMs: the write goes through the shared bounce buffer, since the
/// models' host, like hardware's, cannot reach private memory (on the old code the descriptor
/// sat on the private stack: the transfer never completed and the boot hung).
pub fn write_pointer_tests(snp: &Path, tdx: &Path) -> Result<()> {
    let t = Duration::from_secs(60);
    let dir = qemu::run_dir("hostile-write-pointer")?;
    let hob = dir.join("vmgenid-td-hob.bin");
    std::fs::write(&hob, tdx_test::td_hob(256 << 20))?;
    let td = ["-fw_cfg".to_string(), format!("name=opt/veil/test-td-hob,file={}", hob.display())];
    for (rom, platform, extra) in [(snp, "sev-snp", &[][..]), (tdx, "tdx", &td[..])] {
        eprintln!("xtask: hostile test: fw_cfg WRITE_POINTER (-device vmgenid) on the {platform} model ROM");
        let mut args = vec!["-device".to_string(), "vmgenid".to_string()];
        args.extend(extra.iter().cloned());
        qemu::boot(rom, &format!("vmgenid-{platform}"), &args, t)?
            .expect_exit(qemu::EXIT_SUCCESS)?
            .expect(&format!("on the {platform} platform"))?
            .expect("acpi: wrote a pointer back to QEMU's etc/vmgenid_addr (fw_cfg WRITE_POINTER)")?
            .expect("boot stages done")?;
    }
    Ok(())
}
