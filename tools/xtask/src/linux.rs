//! The test Linux: a Debian cloud kernel (`apt-get download` + `dpkg-deb -x`, no install)
//! and a busybox-static initramfs built with veilboot's own cpio writer, whose /init prints
//! a marker, the CPU count, the virtio PCI devices and /veil/handoff.json, then powers off.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use veil_agent::cpio::CpioWriter;

use crate::{run, target_dir};

/// Marker the initramfs prints.
pub const MARKER: &str = "VEILBOOT INITRAMFS OK";

/// Kernel and initramfs for the tests.
pub struct TestLinux {
    /// The bzImage.
    pub kernel: PathBuf,
    /// The initramfs (uncompressed newc cpio).
    pub initrd: PathBuf,
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
cpus=$(/bin/busybox grep -c ^processor /proc/cpuinfo)
virtio=$(/bin/busybox cat /sys/bus/pci/devices/*/vendor 2>/dev/null | /bin/busybox grep -c 0x1af4)
echo "VEILBOOT INITRAMFS OK cpus=$cpus virtio-pci=$virtio"
if [ -f /veil/handoff.json ]; then
    echo "handoff.json: $(/bin/busybox cat /veil/handoff.json)"
else
    echo "handoff.json: missing"
fi
/bin/busybox poweroff -f
"#;

fn debian_package(dir: &Path, pkg: &str) -> Result<()> {
    let download = |dir: &Path| Command::new("apt-get").args(["download", pkg]).current_dir(dir).status();
    if !download(dir)?.success() {
        eprintln!("xtask: apt-get download {pkg} failed; refreshing the package lists");
        run(Command::new("apt-get").args(["update", "-q"]))?;
        if !download(dir)?.success() {
            bail!("apt-get download {pkg} failed");
        }
    }
    Ok(())
}

fn find_file(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
}

/// Fetch (once) and build the test kernel and initramfs.
pub fn prepare() -> Result<TestLinux> {
    let dir = target_dir().join("linux");
    std::fs::create_dir_all(&dir)?;
    let kernel_dir = dir.join("kernel/boot");
    if find_file(&kernel_dir, "vmlinuz-").is_none() {
        // linux-image-cloud-amd64 is a metapackage; download what it depends on.
        let deps =
            Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]).output().context("apt-cache")?;
        let text = String::from_utf8_lossy(&deps.stdout);
        let pkg = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
            .map(str::to_string)
            .context("cannot resolve linux-image-cloud-amd64 (apt-get update?)")?;
        eprintln!("xtask: fetching {pkg} (Debian, not installed: unpacked under target/linux)");
        debian_package(&dir, &pkg)?;
        let deb = find_file(&dir, "linux-image-").context("downloaded kernel package not found")?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.join("kernel")))?;
    }
    let busybox = dir.join("bb/bin/busybox");
    if !busybox.exists() {
        eprintln!("xtask: fetching busybox-static (Debian)");
        debian_package(&dir, "busybox-static")?;
        let deb = find_file(&dir, "busybox-static").context("downloaded busybox package not found")?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.join("bb")))?;
    }
    let kernel = find_file(&kernel_dir, "vmlinuz-").context("no vmlinuz in the kernel package")?;
    let mut w = CpioWriter::new();
    w.dir("bin", 0o755).dir("proc", 0o755).dir("sys", 0o755).dir("dev", 0o755);
    w.file("bin/busybox", 0o755, &std::fs::read(&busybox)?);
    w.file("init", 0o755, INIT.as_bytes());
    let initrd = dir.join("initramfs.cpio");
    // Rewritten on every call, while another xtask's QEMU may be reading it.
    crate::qemu::replace_file(&initrd, &w.finish())?;
    Ok(TestLinux { kernel, initrd })
}

/// A copy of the kernel with some setup-header bytes changed (bad-input tests).
pub fn patched_kernel(kernel: &Path, name: &str, patches: &[(usize, &[u8])]) -> Result<PathBuf> {
    let mut bytes = std::fs::read(kernel)?;
    for (at, b) in patches {
        bytes[*at..*at + b.len()].copy_from_slice(b);
    }
    let out = crate::qemu::session_dir()?.join(name);
    std::fs::write(&out, bytes)?;
    Ok(out)
}
