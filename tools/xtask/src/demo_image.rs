//! The encrypted demo disk: a Debian kernel, an initramfs that opens the root volume with
//! cryptsetup (binaries and their libraries copied as mkinitramfs would, the virtio, dm-crypt
//! and xts modules loaded), and a root filesystem whose init prints `VEILBOOT ROOT OK` with
//! the clusterID and how fast dm-crypt reads the root volume, then powers off.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use veil_agent::cpio::CpioWriter;

use crate::{ensure_package, linux, run, target_dir};

/// What the root filesystem prints.
pub const ROOT_MARKER: &str = "VEILBOOT ROOT OK";

/// Modules the initramfs needs; their dependencies are added from each module's
/// `depends=` and everything is loaded in dependency order.
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ecb", "xts", "aesni-intel", "dm-crypt"];

const INITRD_INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin:/sbin
/bin/busybox mkdir -p /proc /sys /dev /newroot /run/cryptsetup /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in MODULE_LIST; do /bin/busybox insmod /lib/modules/$m.ko || echo "veil-initramfs: insmod $m failed"; done
if [ -e /sys/class/tpm/tpm0 ]; then
  # Measured boot: the PCRs as Linux reads them and the event log the firmware handed over.
  /bin/busybox mount -t securityfs securityfs /sys/kernel/security
  for b in sha256 sha384; do
    [ -d /sys/class/tpm/tpm0/pcr-$b ] || continue
    for p in 0 1 2 3 4 5 6 7 8 9 15; do echo "veil-tpm: pcr $b $p $(/bin/busybox cat /sys/class/tpm/tpm0/pcr-$b/$p)"; done
  done
  echo "veil-tpm: eventlog-begin"
  /bin/busybox base64 /sys/kernel/security/tpm0/binary_bios_measurements
  echo "veil-tpm: eventlog-end"
fi
uuid=$(/bin/busybox cat /veil/root.uuid 2>/dev/null)
[ -n "$uuid" ] || { echo "VEILBOOT ROOT FAILED: no root volume handed over"; /bin/busybox poweroff -f; }
dev=
i=0; while [ $i -lt 100 ]; do i=$((i+1))
  for d in /dev/vd*; do
    [ -b "$d" ] || continue
    [ "$(/sbin/cryptsetup luksUUID "$d" 2>/dev/null)" = "$uuid" ] && dev=$d
  done
  [ -n "$dev" ] && break
  /bin/busybox sleep 0.2
done
[ -n "$dev" ] || { echo "VEILBOOT ROOT FAILED: no disk holds LUKS2 volume $uuid"; /bin/busybox poweroff -f; }
echo "veil-initramfs: opening root volume $uuid on $dev with the key veilboot handed over"
export DM_DISABLE_UDEV=1
/sbin/cryptsetup open --disable-external-tokens --key-file /cryptroot/keyfiles/veil-root.key "$dev" root || { echo "VEILBOOT ROOT FAILED: cryptsetup open"; /bin/busybox poweroff -f; }
/bin/busybox rm -f /cryptroot/keyfiles/veil-root.key
/bin/busybox mount -t ext4 -o ro /dev/mapper/root /newroot || { echo "VEILBOOT ROOT FAILED: mount"; /bin/busybox poweroff -f; }
/bin/busybox mount --move /dev /newroot/dev
/bin/busybox umount /proc /sys
exec /bin/busybox switch_root /newroot /sbin/init
"#;

const ROOT_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "VEILBOOT ROOT OK clusterID=$(/bin/busybox cat /etc/veil/cluster-id)"
# dm-crypt reading the root volume it was mounted from: the peer of the firmware's bundle read.
t0=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
bytes=$(/bin/busybox dd if=/dev/mapper/root of=/dev/null bs=1M 2>/dev/null; /bin/busybox blockdev --getsize64 /dev/mapper/root)
t1=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
echo "veil-root: dm-crypt read $bytes bytes from $t0 to $t1 s (uptime)"
/bin/busybox poweroff -f
"#;

fn ldd_libs(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = line.split("=>").nth(1).unwrap_or(line).split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Add a file to the archive with its parent directories.
fn add_path(w: &mut CpioWriter, dirs: &mut Vec<String>, path: &str, perm: u32, data: &[u8]) {
    let path = path.trim_start_matches('/');
    let mut at = 0;
    while let Some(i) = path[at..].find('/') {
        let dir = path[..at + i].to_string();
        if !dirs.contains(&dir) {
            w.dir(&dir, 0o755);
            dirs.push(dir);
        }
        at += i + 1;
    }
    w.file(path, perm, data);
}

/// The cryptsetup initramfs.
fn build_initramfs(l: &linux::TestLinux, out: &Path) -> Result<()> {
    ensure_package("cryptsetup", "cryptsetup-bin")?;
    let cryptsetup = ["/usr/sbin/cryptsetup", "/sbin/cryptsetup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("cryptsetup not found")?;
    let modules_root = l.kernel.parent().unwrap().parent().unwrap().join("lib/modules");
    let release =
        std::fs::read_dir(&modules_root)?.flatten().next().context("no modules in the kernel package")?.path();
    let mut w = CpioWriter::new();
    let mut dirs = Vec::new();
    add_path(&mut w, &mut dirs, "bin/busybox", 0o755, &std::fs::read(target_dir().join("linux/bb/bin/busybox"))?);
    add_path(&mut w, &mut dirs, "sbin/cryptsetup", 0o755, &std::fs::read(&cryptsetup)?);
    for lib in ldd_libs(&cryptsetup)? {
        // Copy the file the link points to, under the name the binary asks for.
        add_path(
            &mut w,
            &mut dirs,
            &lib.to_string_lossy(),
            0o755,
            &std::fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?,
        );
    }
    let ordered = resolve_modules(&release, MODULES)?;
    for (name, bytes) in &ordered {
        add_path(&mut w, &mut dirs, &format!("lib/modules/{name}.ko"), 0o644, bytes);
    }
    let names: Vec<&str> = ordered.iter().map(|(n, _)| n.as_str()).collect();
    add_path(&mut w, &mut dirs, "init", 0o755, INITRD_INIT.replace("MODULE_LIST", &names.join(" ")).as_bytes());
    std::fs::write(out, w.finish())?;
    Ok(())
}

/// The `depends=` list of a module file (its .modinfo strings).
fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else { return Vec::new() };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(0);
    String::from_utf8_lossy(&rest[..end]).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// `wanted` and their dependencies, dependencies first (depth-first post-order).
fn resolve_modules(release: &Path, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
    fn visit(release: &Path, name: &str, out: &mut Vec<(String, Vec<u8>)>, stack: &mut Vec<String>) -> Result<()> {
        if out.iter().any(|(n, _)| n == name) || stack.iter().any(|n| n == name) {
            return Ok(());
        }
        // Module names use '_' and '-' interchangeably.
        let file = find_module(release, name)?
            .or(find_module(release, &name.replace('_', "-"))?)
            .or(find_module(release, &name.replace('-', "_"))?)
            .with_context(|| format!("module {name} not in the kernel package"))?;
        let bytes = std::fs::read(&file)?;
        stack.push(name.to_string());
        for dep in depends(&bytes) {
            visit(release, &dep, out, stack)?;
        }
        stack.pop();
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        if !out.iter().any(|(n, _)| *n == stem) {
            out.push((stem, bytes));
        }
        Ok(())
    }
    let mut out = Vec::new();
    for m in wanted {
        visit(release, m, &mut out, &mut Vec::new())?;
    }
    Ok(out)
}

fn find_module(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(found) = find_module(&p, name)? {
                return Ok(Some(found));
            }
        } else if p.file_name().is_some_and(|n| n == format!("{name}.ko").as_str()) {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Build the demo disk image for `secret` into `dir`; returns the image path.
pub fn build(veil: &Path, secret: &Path, dir: &Path) -> Result<PathBuf> {
    build_variant(veil, secret, dir, "disk.img", &[])
}

/// [`build`], with more `veil image build` options (`extra`), into `dir`/`name`.
pub fn build_variant(veil: &Path, secret: &Path, dir: &Path, name: &str, extra: &[&str]) -> Result<PathBuf> {
    ensure_package("mke2fs", "e2fsprogs")?;
    let l = linux::prepare()?;
    let initrd = dir.join("initramfs-cryptsetup.cpio");
    build_initramfs(&l, &initrd)?;
    let rootfs = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    for d in ["bin", "sbin", "proc", "dev", "etc/veil", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(target_dir().join("linux/bb/bin/busybox"), rootfs.join("bin/busybox"))?;
    std::fs::write(rootfs.join("sbin/init"), ROOT_INIT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(rootfs.join("sbin/init"), std::fs::Permissions::from_mode(0o755))?;
    // The clusterID for the default (all-zero) measurement salt.
    let out = Command::new(veil)
        .args(["secret", "show"])
        .arg(secret)
        .args(["--measurement-salt", &"00".repeat(32), "--json"])
        .output()?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).context("veil secret show")?;
    std::fs::write(rootfs.join("etc/veil/cluster-id"), doc["cluster_id"].as_str().unwrap_or("?"))?;
    let image = dir.join(name);
    let _ = std::fs::remove_file(&image);
    run(Command::new(veil)
        .args(["image", "build", "--kernel"])
        .arg(&l.kernel)
        .arg("--initrd")
        .arg(&initrd)
        .args(["--cmdline", "console=ttyS0 panic=-1 quiet"])
        .arg("--rootfs")
        .arg(&rootfs)
        .arg("--secret")
        .arg(secret)
        .args(["--measurement-salt", &"00".repeat(32), "--force"])
        .args(extra)
        .arg("--out")
        .arg(&image))?;
    if !image.exists() {
        bail!("veil image build wrote no image");
    }
    Ok(image)
}

/// QEMU arguments that attach `image` as the boot disk (no key source).
pub fn disk_args(image: &Path) -> Vec<String> {
    [
        "-smp",
        "2",
        "-m",
        "512M",
        "-drive",
        &format!("if=none,id=d0,format=raw,file={}", image.display()),
        "-device",
        "virtio-blk-pci,drive=d0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// QEMU arguments that boot `image` with the development key source.
pub fn boot_args(image: &Path, secret: &Path) -> Vec<String> {
    let mut a = disk_args(image);
    a.extend(["-fw_cfg".to_string(), format!("name=opt/veil/dev-master-secret,file={}", secret.display())]);
    a
}

/// As `boot_args`, with a second virtio disk as the state disk.
pub fn boot_args_with_state(image: &Path, secret: &Path, state: &Path) -> Vec<String> {
    let mut a = boot_args(image, secret);
    a.extend([
        "-drive".to_string(),
        format!("if=none,id=d1,format=raw,file={}", state.display()),
        "-device".to_string(),
        "virtio-blk-pci,drive=d1".to_string(),
    ]);
    a
}
