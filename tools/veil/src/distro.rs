//! A distribution's own root for `veil image build --rootfs DIR` without `--kernel`/`--initrd`:
//! write what the root needs to open `veil-root` with the key veilboot hands over, let the
//! distribution's own initramfs generator rebuild its initramfs inside the root (chroot), and
//! take the newest kernel and that initramfs from `DIR/boot`.
//!
//! What is written (each file read by the distribution's tools on every regeneration, so a
//! kernel update inside the image keeps booting):
//! - `/etc/crypttab`: `veil-root UUID=<LUKS2 UUID> /cryptroot/keyfiles/veil-root.key` and
//!   [`ROOT_OPTIONS`] (the key path of `agent::handover`); `/etc/fstab`: `/` as
//!   `/dev/mapper/veil-root` (a name only the guest's device mapper creates: by filesystem UUID,
//!   which the command line makes public, a host's plaintext disk with that UUID could be
//!   mounted as `/` by a systemd initrd).
//! - The state disk the same way: `veil-state UUID=<state UUID> /cryptroot/keyfiles/veil-state.key`
//!   with [`STATE_OPTIONS`], opened in the initramfs (its key file is deleted at switch_root, so
//!   after it the volume could not be opened), and `/etc/fstab` mounts it at [`STATE_MOUNT`]
//!   (ext4, made on the first boot by [`STATE_MAKEFS_UNIT`], which the mount requires: the
//!   firmware formats the blank disk as LUKS2 only).
//! - initramfs-tools: `KEYFILE_PATTERN` in `/etc/cryptsetup-initramfs/conf-hook`, so the
//!   cryptroot hook keeps the root entry and names its key `/cryptroot/keyfiles/veil-root.key`
//!   (it would skip a root entry with any other key file); `initramfs` in the crypttab options
//!   puts the entry in the initramfs also where the build host's `/` is not `veil-root` (a
//!   chroot); `UMASK=0077` in `/etc/initramfs-tools/conf.d/veilboot`.
//! - dracut: `/etc/dracut.conf.d/90-veilboot.conf`: the `crypt` module, `/etc/crypttab` in the
//!   initrd (systemd-cryptsetup-generator reads it there), and a generic initrd (a chroot's
//!   host devices say nothing of the VM's).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use veil_agent::handover;

/// The initramfs generator a root uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    /// Debian's initramfs-tools with cryptsetup-initramfs (`update-initramfs`).
    InitramfsTools,
    /// dracut (with systemd in the root: a systemd initrd).
    Dracut,
}

impl Generator {
    fn name(self) -> &'static str {
        match self {
            Generator::InitramfsTools => "initramfs-tools (update-initramfs)",
            Generator::Dracut => "dracut",
        }
    }
}

/// The kernel and initramfs to put in the boot bundle.
pub struct Prepared {
    /// The kernel image in `DIR/boot`.
    pub kernel: PathBuf,
    /// Its initramfs, just regenerated.
    pub initrd: PathBuf,
    /// The kernel command line to boot it with (`root=` added when missing).
    pub cmdline: String,
}

fn exists_any(root: &Path, paths: &[&str]) -> bool {
    paths.iter().any(|p| root.join(p).exists())
}

/// Which generator `root` has, or why it cannot open a LUKS2 root (naming the package).
pub fn detect(root: &Path) -> Result<Generator> {
    let d = root.display();
    let cryptsetup = exists_any(root, &["usr/sbin/cryptsetup", "sbin/cryptsetup"]);
    if exists_any(root, &["usr/sbin/update-initramfs", "sbin/update-initramfs"]) {
        if !root.join("usr/share/initramfs-tools/hooks/cryptroot").exists() {
            bail!(
                "{d} cannot unlock a LUKS2 root: its initramfs-tools has no cryptsetup hook; install the package cryptsetup-initramfs in it"
            );
        }
        return Ok(Generator::InitramfsTools);
    }
    if exists_any(root, &["usr/bin/dracut", "usr/sbin/dracut", "sbin/dracut"]) {
        if !cryptsetup || !exists_any(root, &["usr/lib/dracut/modules.d/90crypt", "lib/dracut/modules.d/90crypt"]) {
            bail!(
                "{d} cannot unlock a LUKS2 root: dracut's crypt module needs cryptsetup; install the package cryptsetup in it"
            );
        }
        return Ok(Generator::Dracut);
    }
    bail!(
        "{d} has no initramfs generator: install cryptsetup-initramfs (initramfs-tools) or dracut and cryptsetup in it, \
         or give --kernel and --initrd"
    )
}

/// Compare two kernel release strings as versions (runs of digits by value).
fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then(x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The newest kernel in `root/boot` (`vmlinuz-RELEASE`): its release and path.
pub fn newest_kernel(root: &Path) -> Result<(String, PathBuf)> {
    let boot = root.join("boot");
    let mut releases: Vec<String> = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("vmlinuz-")).map(str::to_string))
        .collect();
    releases.sort_by(|a, b| compare_versions(a, b));
    let release = releases.pop().with_context(|| {
        format!(
            "no kernel in {} (vmlinuz-*): install a kernel package in the root, e.g. linux-image-cloud-amd64",
            boot.display()
        )
    })?;
    let path = boot.join(format!("vmlinuz-{release}"));
    Ok((release, path))
}

/// The lines of `text` without those `drop` selects, then `add`.
fn replace_lines(text: &str, drop: impl Fn(&str) -> bool, add: &[String]) -> String {
    let mut out: String = text.lines().filter(|l| !drop(l)).map(|l| format!("{l}\n")).collect();
    for l in add {
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn field(line: &str, n: usize) -> Option<&str> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    line.split_whitespace().nth(n)
}

/// The root entry's crypttab options: `luks`; `initramfs` (cryptsetup-initramfs: in the
/// initramfs even when the build host's `/` is not this volume, as in a chroot);
/// `tries=1,headless=true` (systemd-cryptsetup: when the key file is missing or does not open
/// the volume, give up instead of asking for a passphrase on the console, which is the host's:
/// a host that made a volume with the public UUID and a passphrase of its own could type it and
/// have the guest use its volume; cryptsetup-initramfs tries a key file once anyway);
/// `x-systemd.device-timeout=0` (systemd: wait for the volume as long as it takes, instead of
/// failing the root's unit after 90 s on a slow boot; the firmware has found the disk already).
/// Each family ignores the other's options (with a warning).
pub const ROOT_OPTIONS: &str = "luks,initramfs,tries=1,headless=true,x-systemd.device-timeout=0";

/// The state disk's crypttab options: those of the root. `initramfs` puts the entry in the
/// initramfs (cryptsetup-initramfs includes only the root's otherwise), where it is opened
/// with the key the firmware handed over; a systemd initrd opens every entry of the crypttab it
/// carries before it switches root (cryptsetup.target is ordered before sysinit.target). No
/// `nofail`: that drops the ordering, and a volume still opening at switch_root would find its
/// key deleted.
pub const STATE_OPTIONS: &str = ROOT_OPTIONS;

/// Where the state volume is mounted.
pub const STATE_MOUNT: &str = "/var/lib/veil-state";

/// The unit that makes the state volume's ext4 filesystem on its first boot (the firmware formats
/// a blank state disk as LUKS2 only), in `/etc/systemd/system`.
pub const STATE_MAKEFS_UNIT: &str = "veil-state-makefs.service";

/// Its text. Not fstab's `x-systemd.makefs`: udev marks an open dm-crypt volume that holds no
/// filesystem not ready (systemd's 99-systemd.rules, "still calling mke2fs"), and
/// systemd-makefs@.service is bound to that device unit, so on the first boot it would never
/// start and the mount would wait for ever (a distro boot showed it). This unit needs only the
/// volume opened in the initramfs; systemd-makefs leaves an existing filesystem alone, and
/// the change event makes udev probe the volume again, so its device unit appears and the
/// mount (ordered after this unit by `x-systemd.requires`) goes on.
const STATE_MAKEFS: &str =
    "# veilboot (veil image build): the state volume, opened in the initramfs, gets its ext4 here
[Unit]
Description=veilboot: make the state volume's filesystem on its first boot
DefaultDependencies=no
After=cryptsetup.target systemd-udev-trigger.service
Conflicts=shutdown.target
Before=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=infinity
ExecStart=/usr/lib/systemd/systemd-makefs ext4 /dev/mapper/veil-state
ExecStart=/usr/bin/udevadm trigger --settle --action=change /dev/mapper/veil-state
";

/// Its fstab options: the unit above before the mount. No `nofail`: it would take the mount
/// out of local-fs.target's order, so services (and the tests' marker unit) could start before
/// it is mounted, as a distro boot showed; the initramfs needs the volume anyway (its crypttab
/// entry has no `nofail` either).
/// `x-systemd.mount-timeout=infinity`: a required mount that times out drops the boot into
/// emergency mode; on a starved host a first mount took longer than systemd's default 90 s
/// (mount interrupted: "error -4 creating inode table initialization thread"), as the root's
/// crypttab entry waits however slow the boot (`x-systemd.device-timeout=0`).
const STATE_FSTAB_OPTIONS: &str =
    "defaults,x-systemd.requires=veil-state-makefs.service,x-systemd.mount-timeout=infinity";

const MARK: &str = "# veilboot: the key is handed over by the firmware in the initramfs, never stored here";

/// Every path under the root that [`configure`] writes or creates.
const WRITTEN: [&str; 7] = [
    "etc/crypttab",
    "etc/fstab",
    "etc/systemd/system/veil-state-makefs.service",
    "var/lib/veil-state",
    "etc/cryptsetup-initramfs/conf-hook",
    "etc/initramfs-tools/conf.d/veilboot",
    "etc/dracut.conf.d/90-veilboot.conf",
];

/// Refuse `rel` under `root` when it or a directory on the way is a symbolic link: veil runs
/// as root, and a link in the tree (`etc -> /etc`, `etc/fstab -> /etc/fstab`) would have it
/// write the build host's files.
fn refuse_symlinks(root: &Path, rel: &str) -> Result<()> {
    let mut path = root.to_path_buf();
    for part in rel.split('/') {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => bail!(
                "{} is a symbolic link: veil writes there as root and will not follow a link out of the root tree (replace it with the file or directory itself)",
                path.display()
            ),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(())
}

/// Write crypttab, fstab and the generator's hand-over configuration into `root`: the root
/// volume `luks_uuid`, mounted as `/`, and the state disk's volume `state_uuid`.
pub fn configure(root: &Path, generator: Generator, luks_uuid: &str, state_uuid: &str) -> Result<()> {
    for path in WRITTEN {
        refuse_symlinks(root, path)?;
    }
    let etc = root.join("etc");
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(String::new()) } else { Err(e) })
    };
    let crypttab = etc.join("crypttab");
    let text = read(&crypttab).with_context(|| format!("reading {}", crypttab.display()))?;
    let entry = format!("{} UUID={luks_uuid} /{} {ROOT_OPTIONS}", handover::ROOT_NAME, handover::ROOT_KEY);
    let state = format!("{} UUID={state_uuid} /{} {STATE_OPTIONS}", handover::STATE_NAME, handover::STATE_KEY);
    let ours = |l: &str| l == MARK || [Some(handover::ROOT_NAME), Some(handover::STATE_NAME)].contains(&field(l, 0));
    let text = replace_lines(&text, ours, &[MARK.into(), entry, state]);
    std::fs::write(&crypttab, text).with_context(|| format!("writing {}", crypttab.display()))?;

    let fstab = etc.join("fstab");
    let text = read(&fstab).with_context(|| format!("reading {}", fstab.display()))?;
    let state_device = format!("/dev/mapper/{}", handover::STATE_NAME);
    let text = replace_lines(
        &text,
        |l| [Some("/"), Some(STATE_MOUNT)].contains(&field(l, 1)) || field(l, 0) == Some(state_device.as_str()),
        &[
            format!("{} / ext4 defaults 0 1", root_device()),
            format!("{state_device} {STATE_MOUNT} ext4 {STATE_FSTAB_OPTIONS} 0 2"),
        ],
    );
    std::fs::write(&fstab, text).with_context(|| format!("writing {}", fstab.display()))?;
    std::fs::create_dir_all(root.join(STATE_MOUNT.trim_start_matches('/')))?;
    let units = etc.join("systemd/system");
    std::fs::create_dir_all(&units)?;
    std::fs::write(units.join(STATE_MAKEFS_UNIT), STATE_MAKEFS)?;

    match generator {
        Generator::InitramfsTools => {
            let pattern = format!("/{}/*.key", handover::KEY_DIR);
            let hook = etc.join("cryptsetup-initramfs/conf-hook");
            let text = read(&hook).with_context(|| format!("reading {}", hook.display()))?;
            for l in text.lines() {
                if let Some(v) = l.trim().strip_prefix("KEYFILE_PATTERN=") {
                    let v = v.trim_matches('"');
                    if v != pattern {
                        bail!(
                            "{} sets KEYFILE_PATTERN={v}; veilboot needs {pattern} there (cryptsetup-initramfs takes one pattern)",
                            hook.display()
                        );
                    }
                }
            }
            let text = replace_lines(
                &text,
                |l| l.trim().starts_with("KEYFILE_PATTERN=") || l == MARK,
                &[MARK.into(), format!("KEYFILE_PATTERN=\"{pattern}\"")],
            );
            std::fs::create_dir_all(hook.parent().expect("a parent"))?;
            std::fs::write(&hook, text).with_context(|| format!("writing {}", hook.display()))?;
            let conf = etc.join("initramfs-tools/conf.d/veilboot");
            std::fs::create_dir_all(conf.parent().expect("a parent"))?;
            std::fs::write(&conf, format!("{MARK}\nUMASK=0077\n"))?;
        }
        Generator::Dracut => {
            let conf = etc.join("dracut.conf.d/90-veilboot.conf");
            std::fs::create_dir_all(conf.parent().expect("a parent"))?;
            std::fs::write(
                &conf,
                format!(
                    "{MARK}\n# crypt: systemd-cryptsetup in the initrd; /etc/crypttab names the key veilboot hands over\nadd_dracutmodules+=\" crypt \"\ninstall_items+=\" /etc/crypttab \"\n# the image boots in a VM, not on the machine that builds it\nhostonly=\"no\"\n"
                ),
            )?;
        }
    }
    Ok(())
}

/// Rebuild the initramfs of kernel `release` inside `root` with its own generator, in a chroot
/// with /proc, /sys and /dev (a private mount namespace: nothing stays mounted afterwards).
pub fn regenerate(root: &Path, generator: Generator, release: &str) -> Result<PathBuf> {
    let initrd = format!("/boot/initrd.img-{release}");
    let command = match generator {
        Generator::InitramfsTools => {
            let mode = if root.join(initrd.trim_start_matches('/')).exists() { "-u" } else { "-c" };
            format!("update-initramfs {mode} -k {release}")
        }
        Generator::Dracut => format!("dracut --force {initrd} {release}"),
    };
    let script = format!(
        "set -e; cd \"$1\"; mount -t proc proc proc; mount -t sysfs sysfs sys; mount --rbind /dev dev; \
         exec chroot . /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin {command}"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(root)
        .output()
        .context("running unshare (util-linux) to chroot into the root")?;
    if !out.status.success() {
        bail!(
            "{command} inside {} failed ({}):\n{}{}",
            root.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = root.join(initrd.trim_start_matches('/'));
    if !path.exists() {
        bail!("{command} inside {} wrote no {initrd}", root.display());
    }
    Ok(path)
}

/// Everything `veil image build --rootfs DIR` does to a distribution's root before the image
/// is made. Needs root (chroot).
pub fn prepare(root: &Path, luks_uuid: &str, state_uuid: &str, cmdline: &str) -> Result<Prepared> {
    let generator = detect(root)?;
    // Only root can chroot and mount.
    if effective_uid() != 0 {
        bail!(
            "regenerating the initramfs inside {} needs root (chroot): run veil image build as root, or give --kernel and --initrd",
            root.display()
        );
    }
    let (release, kernel) = newest_kernel(root)?;
    eprintln!(
        "veil: {}: kernel {release}; writing crypttab, fstab and the {} hand-over configuration",
        root.display(),
        generator.name()
    );
    configure(root, generator, luks_uuid, state_uuid)?;
    eprintln!("veil: regenerating the initramfs of {release} inside the root with {}", generator.name());
    let started = std::time::Instant::now();
    let initrd = regenerate(root, generator, &release)?;
    eprintln!(
        "veil: {} ({} KiB) in {:.1} s",
        initrd.display(),
        std::fs::metadata(&initrd)?.len() / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(Prepared { kernel, initrd, cmdline: command_line(cmdline) })
}

/// The root filesystem's device: the name the guest's device mapper gives `veil-root`.
fn root_device() -> String {
    format!("/dev/mapper/{}", handover::ROOT_NAME)
}

/// The kernel command line: `cmdline` with `root=/dev/mapper/veil-root ro` unless it names a
/// root, and what makes a failed initramfs stop the VM instead of giving the console (the
/// host's) a root shell while the key files are there: `panic=-1` (initramfs-tools' `panic`
/// reboots, the kernel's too), `rd.shell=0 rd.emergency=reboot` (dracut), each unless
/// `cmdline` sets it (a developer's choice, which the README warns about).
pub fn command_line(cmdline: &str) -> String {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let has = |prefix: &str| words.iter().any(|w| w.starts_with(prefix));
    let mut out = Vec::new();
    if !has("root=") {
        out.push(format!("root={} ro", root_device()));
    }
    out.extend(words.iter().map(|w| w.to_string()));
    for (prefix, word) in [("panic=", "panic=-1"), ("rd.shell", "rd.shell=0"), ("rd.emergency=", "rd.emergency=reboot")]
    {
        if !has(prefix) {
            out.push(word.to_string());
        }
    }
    out.join(" ")
}

/// The effective user id, from /proc (no libc call needed for it).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:").and_then(|r| r.split_whitespace().nth(1)?.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_compare_as_versions() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64"), Less);
        assert_eq!(compare_versions("6.10.0-1-amd64", "6.9.0-1-amd64"), Greater);
        assert_eq!(compare_versions("6.1.0-57-cloud-amd64", "6.1.0-57-cloud-amd64"), Equal);
    }

    #[test]
    fn newest_kernel_and_missing_packages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        let err = newest_kernel(root).unwrap_err().to_string();
        assert!(err.contains("linux-image-cloud-amd64"), "{err}");
        for r in ["6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", "5.10.0-30-amd64"] {
            std::fs::write(root.join(format!("boot/vmlinuz-{r}")), b"").unwrap();
        }
        assert_eq!(newest_kernel(root).unwrap().0, "6.1.0-10-cloud-amd64");

        let err = detect(root).unwrap_err().to_string();
        assert!(err.contains("cryptsetup-initramfs") && err.contains("dracut"), "{err}");
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::write(root.join("usr/sbin/update-initramfs"), b"").unwrap();
        let err = detect(root).unwrap_err().to_string();
        assert!(err.contains("install the package cryptsetup-initramfs"), "{err}");
        std::fs::create_dir_all(root.join("usr/share/initramfs-tools/hooks")).unwrap();
        std::fs::write(root.join("usr/share/initramfs-tools/hooks/cryptroot"), b"").unwrap();
        assert_eq!(detect(root).unwrap(), Generator::InitramfsTools);
    }

    #[test]
    fn configuration_is_idempotent_and_keeps_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/cryptsetup-initramfs")).unwrap();
        std::fs::write(
            root.join("etc/crypttab"),
            "# <target name> <source device> <key file> <options>\nswap /dev/vdc /dev/urandom swap\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/fstab"), "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n/dev/vda1 / ext4 defaults 0 1\n")
            .unwrap();
        std::fs::write(root.join("etc/cryptsetup-initramfs/conf-hook"), "#KEYFILE_PATTERN=\n").unwrap();
        for _ in 0..2 {
            configure(
                root,
                Generator::InitramfsTools,
                "11111111-2222-4333-8444-555555555555",
                "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff",
            )
            .unwrap();
        }
        let crypttab = std::fs::read_to_string(root.join("etc/crypttab")).unwrap();
        assert!(crypttab.contains("swap /dev/vdc /dev/urandom swap\n"));
        assert_eq!(crypttab.matches("veil-root UUID=11111111-2222-4333-8444-555555555555 /cryptroot/keyfiles/veil-root.key luks,initramfs,tries=1,headless=true,x-systemd.device-timeout=0\n").count(), 1, "{crypttab}");
        assert_eq!(crypttab.matches("veil-state UUID=bbbbbbbb-cccc-4ddd-8eee-ffffffffffff /cryptroot/keyfiles/veil-state.key luks,initramfs,tries=1,headless=true,x-systemd.device-timeout=0\n").count(), 1, "{crypttab}");
        let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
        assert!(
            !fstab.contains("/dev/vda1") && fstab.matches("/dev/mapper/veil-root / ext4 defaults 0 1\n").count() == 1,
            "{fstab}"
        );
        assert_eq!(
            fstab
                .matches("/dev/mapper/veil-state /var/lib/veil-state ext4 defaults,x-systemd.requires=veil-state-makefs.service,x-systemd.mount-timeout=infinity 0 2\n")
                .count(),
            1,
            "{fstab}"
        );
        assert!(root.join("var/lib/veil-state").is_dir());
        let unit = std::fs::read_to_string(root.join("etc/systemd/system/veil-state-makefs.service")).unwrap();
        assert!(unit.contains("\nExecStart=/usr/lib/systemd/systemd-makefs ext4 /dev/mapper/veil-state\n"), "{unit}");
        assert!(!unit.contains("BindsTo") && !unit.contains(".device"), "{unit}");
        let hook = std::fs::read_to_string(root.join("etc/cryptsetup-initramfs/conf-hook")).unwrap();
        assert_eq!(hook.matches("\nKEYFILE_PATTERN=\"/cryptroot/keyfiles/*.key\"\n").count(), 1, "{hook}");
        std::fs::write(root.join("etc/cryptsetup-initramfs/conf-hook"), "KEYFILE_PATTERN=/etc/keys/*\n").unwrap();
        let err = configure(root, Generator::InitramfsTools, "u", "s").unwrap_err().to_string();
        assert!(err.contains("KEYFILE_PATTERN=/etc/keys/*"), "{err}");
    }

    /// A root tree whose `etc` or `etc/fstab` is a link out of it (to the build host's `/etc`,
    /// which veil, run as root, would rewrite): refused, nothing written through the link.
    #[test]
    fn links_out_of_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("host-etc");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("fstab"), "host\n").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();
        let err = configure(&root, Generator::Dracut, "u", "s").unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        std::fs::remove_file(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(outside.join("fstab"), root.join("etc/fstab")).unwrap();
        let err = configure(&root, Generator::Dracut, "u", "s").unwrap_err().to_string();
        assert!(err.contains("etc/fstab is a symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(outside.join("fstab")).unwrap(), "host\n");
        assert!(!root.join("etc/crypttab").exists());
    }

    /// The command line: the root by its device-mapper name, and a failed initramfs stops the VM
    /// rather than opening a shell on the host's console; what the caller set is kept.
    #[test]
    fn command_line_names_the_root_and_no_shell() {
        assert_eq!(
            command_line("console=ttyS0"),
            "root=/dev/mapper/veil-root ro console=ttyS0 panic=-1 rd.shell=0 rd.emergency=reboot"
        );
        assert_eq!(
            command_line("root=/dev/vda2 console=ttyS0 panic=5 rd.shell=1"),
            "root=/dev/vda2 console=ttyS0 panic=5 rd.shell=1 rd.emergency=reboot"
        );
    }
}
