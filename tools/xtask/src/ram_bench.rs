//! `cargo xtask bench ram`: the least guest RAM each firmware needs to bring the same Debian
//! kernel and busybox initramfs to the initramfs marker (QEMU 7.2, TCG, q35), found by a binary
//! search over `-m` in 4 MiB steps, in the same run for veilboot, SeaBIOS, qboot and OVMF; and
//! veilboot's encrypted-disk boot (the development ROM with the demo disk).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Result;

use crate::linux;

/// Does a boot with `mib` MiB reach `marker`? QEMU is killed after `timeout`.
pub fn boots(fw: &[String], rest: &[String], mib: u64, marker: &str, timeout: Duration) -> Result<bool> {
    let out = Command::new("timeout")
        .arg(timeout.as_secs().to_string())
        .arg("qemu-system-x86_64")
        .args(["-machine", "q35", "-accel", "tcg", "-nodefaults", "-no-reboot", "-display", "none"])
        .args(["-monitor", "none", "-serial", "stdio", "-m", &format!("{mib}M")])
        // veilboot ends a failed boot through isa-debug-exit instead of halting until the timeout.
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(fw)
        .args(rest)
        .stderr(Stdio::null())
        .output()?;
    Ok(memchr::memmem::find(&out.stdout, marker.as_bytes()).is_some())
}

/// The least MiB in [lo, hi] (4 MiB steps) with which the boot reaches `marker`, assuming
/// more RAM never hurts; None if even `hi` does not.
fn least(fw: &[String], rest: &[String], marker: &str, lo: u64, hi: u64) -> Result<Option<u64>> {
    let t = Duration::from_secs(90);
    least_by(lo, hi, |mib| boots(fw, rest, mib, marker, t))
}

/// The least MiB in [lo, hi] (4 MiB steps) for which `boots` says yes (binary search).
pub fn least_by(lo: u64, hi: u64, mut boots: impl FnMut(u64) -> Result<bool>) -> Result<Option<u64>> {
    if !boots(hi)? {
        return Ok(None);
    }
    let (mut bad, mut good) = (lo / 4, hi / 4);
    while good - bad > 1 {
        let mid = (bad + good) / 2;
        if boots(mid * 4)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(Some(good * 4))
}

/// A boot whose arguments depend on the RAM size: `boots(mib)` says whether it reaches its
/// marker with `mib` MiB.
pub struct SizedBoot<'a> {
    /// The table's "boot path" cell.
    pub path: &'a str,
    /// The table's "firmware" cell.
    pub firmware: &'a str,
    /// Does it boot with this many MiB?
    pub boots: Box<dyn FnMut(u64) -> Result<bool> + 'a>,
}

/// The BENCHMARKS.md section. `models`: the SEV-SNP and TDX model ROMs' direct boots, whose
/// kernel hashes and TD HOB depend on the RAM size. `tpm_boot(mib)`: does the release ROM's TPM
/// boot (the demo disk sealed to a swtpm, unsealed locally) reach the root filesystem with
/// `mib` MiB?
pub fn section(
    release_rom: &Path,
    dev_rom: &Path,
    disk_args: &[String],
    models: Vec<SizedBoot<'_>>,
    tpm_boot: impl FnMut(u64) -> Result<bool>,
) -> Result<String> {
    let l = linux::prepare()?;
    let direct: Vec<String> = [
        "-kernel".to_string(),
        l.kernel.display().to_string(),
        "-initrd".into(),
        l.initrd.display().to_string(),
        "-append".into(),
        "console=ttyS0 panic=-1 quiet".into(),
    ]
    .to_vec();
    let bios = |p: &Path| vec!["-bios".to_string(), p.display().to_string()];
    let mut firmwares: Vec<(&str, Vec<String>)> = vec![
        ("veilboot", bios(release_rom)),
        ("SeaBIOS (QEMU default)", vec![]),
        ("qboot", bios(Path::new("/usr/share/qemu/qboot.rom"))),
    ];
    let ovmf = Path::new("/usr/share/ovmf/OVMF.fd");
    if ovmf.exists() {
        firmwares.push(("OVMF", bios(ovmf)));
    }
    let initrd_kib = std::fs::metadata(&l.initrd)?.len() / 1024;
    let mut out = format!(
        "## Least guest RAM\n\nCommand: `cargo xtask bench ram`. The least `-m` (4 MiB steps, binary search) with which each firmware brings the\nDebian cloud kernel and the {initrd_kib} KiB busybox initramfs to the initramfs marker under TCG (q35, 1 vCPU), in the same run.\nveilboot places its heap above the kernel's init_size (the initrd and 2 MiB), where SeaBIOS would leave RAM free.\n\n| boot path | firmware | least RAM |\n|---|---|---:|\n"
    );
    for (name, fw) in &firmwares {
        let m = least(fw, &direct, linux::MARKER, 32, 512)?;
        out.push_str(&format!(
            "| direct (-kernel/-initrd) | {name} | {} |\n",
            m.map(|m| format!("{m} MiB")).unwrap_or_else(|| String::from("not within 512 MiB"))
        ));
    }
    for mut model in models {
        let m = least_by(32, 512, &mut model.boots)?;
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            model.path,
            model.firmware,
            m.map(|m| format!("{m} MiB")).unwrap_or_else(|| String::from("not within 512 MiB"))
        ));
    }
    let m = least(&bios(dev_rom), disk_args, crate::demo_image::ROOT_MARKER, 32, 1024)?;
    out.push_str(&format!(
        "| encrypted disk (demo image, development key) | veilboot | {} |\n",
        m.map(|m| format!("{m} MiB")).unwrap_or_else(|| String::from("not within 1 GiB"))
    ));
    let m = least_by(32, 1024, tpm_boot)?;
    out.push_str(&format!(
        "| encrypted disk (demo image, sealed to a TPM: swtpm, unsealed locally) | veilboot | {} |\n",
        m.map(|m| format!("{m} MiB")).unwrap_or_else(|| String::from("not within 1 GiB"))
    ));
    out.push_str(
        "\nAn encrypted-disk boot's heap starts at 80 MiB when 32 MiB or more lie above (the kernel then runs at its\npreferred 16 MiB); in a smaller VM it starts at 12 MiB and the kernel's window (its init_size, here 51.5 MiB)\nis taken from the heap before the bundle is read, from the kernel's setup header. The initrd is handed to Linux\nin the buffer it was decrypted into. What remains is the kernel window, the bzImage and initrd (here 8 + 13 MiB)\nand about 4 MiB of the firmware's own. SeaBIOS, qboot and OVMF cannot boot this disk (its kernel is inside the\nLUKS2 volume).\n\nThe model ROMs run the firmware's SEV-SNP and TDX paths under TCG (the model answers PVALIDATE, the GHCB and TDCALL;\nthe kernel hashes and the TD HOB are made for each size tried). There the firmware's DMA memory (2 MiB for fw_cfg, and\n4 MiB for virtio when there is a virtio device) is shared with the host while the firmware runs and made private\nand validated or accepted again before Linux starts, so Linux gets the same RAM as on a plain VM; the model checks\nevery page of Linux's memory map at the hand-off.\n",
    );
    Ok(out)
}
