//! `cargo xtask test distro`: whole Debian 12 systems, built from Debian's archive by
//! mmdebstrap with their own kernel, systemd and initramfs generator (initramfs-tools with
//! cryptsetup-initramfs; dracut, a systemd initrd), made into disks by
//! `veil image build --rootfs` alone and booted through the release ROM with swtpm to
//! systemd's multi-user.target: the first boot released by `veil kbs serve` (and sealed), the
//! second unsealed locally. System (a) then boots once through the SEV-SNP model ROM and once
//! through the TDX model ROM (each released by the broker through the relay). On those two
//! boots and on system (a)'s first release-ROM boot guest RAM is saved at the jump into Linux:
//! the root and state keys must be only in their hand-off files (crate::jump_scan). A unit on
//! the root prints what `/` is mounted from, the state volume (opened in the initramfs,
//! mounted, a line added to a file on it each boot) and every key file it can find on any
//! mounted filesystem, then powers off; the serial log must carry no key. The roots are cached
//! under target/distro (their name holds a digest of the recipe, so a new package set builds
//! anew and a second run builds nothing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{
    ensure_package, jump_scan, key_material, qemu, run, scan_for_keys, snp_test, target_dir, tdx_attest, tpm_test,
};
use veil_agent::handover;

/// How long one boot to multi-user.target may take under TCG (about a minute on an idle
/// 2-core machine; many times that when the machine is shared).
const BOOT_TIMEOUT: Duration = Duration::from_secs(1200);

/// What the unit on the root prints once multi-user.target is reached.
pub const MARKER: &str = "VEILBOOT DISTRO OK";
/// ... and the key files it found on the mounted filesystems.
const KEYFILES: &str = "VEILBOOT KEYFILES:";
/// ... and the SHA-256 of every regular file of a key's size (32 or 64 bytes raw, 64, 65, 128
/// or 129 as hex with or without a newline) on them, so a key copied under another name is
/// found by its content, not its name.
const KEY_SIZED: &str = "VEILBOOT KEY-SIZED FILES:";

/// The two test systems.
#[derive(Clone, Copy)]
pub enum Flavour {
    /// Debian 12 with initramfs-tools and cryptsetup-initramfs.
    InitramfsTools,
    /// Debian 12 with dracut (systemd in the initrd) and cryptsetup.
    Dracut,
}

impl Flavour {
    /// Short name (directories, logs).
    pub fn name(self) -> &'static str {
        match self {
            Flavour::InitramfsTools => "initramfs-tools",
            Flavour::Dracut => "dracut",
        }
    }

    /// The packages beside the minbase variant: the least that boots to multi-user.target
    /// from a LUKS2 root.
    fn packages(self) -> &'static str {
        match self {
            Flavour::InitramfsTools => "linux-image-cloud-amd64,systemd,systemd-sysv,udev,cryptsetup-initramfs",
            Flavour::Dracut => "linux-image-cloud-amd64,systemd,systemd-sysv,udev,dracut,cryptsetup",
        }
    }
}

/// mmdebstrap's arguments for `flavour` (the tarball path follows).
fn recipe(flavour: Flavour) -> Vec<String> {
    let mut a: Vec<String> = vec!["--variant=minbase".into(), format!("--include={}", flavour.packages())];
    // Documentation is no use in a test system: a smaller root is a faster image.
    for p in ["/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*"] {
        a.push(format!("--dpkgopt=path-exclude={p}"));
    }
    a.push("bookworm".into());
    a
}

/// The cached root of `flavour` (a tarball mmdebstrap wrote), built when missing.
pub fn cached_root(flavour: Flavour) -> Result<PathBuf> {
    use sha2::Digest;
    let args = recipe(flavour);
    let digest = hex::encode(&sha2::Sha256::digest(args.join("\n").as_bytes())[..6]);
    let dir = target_dir().join("distro");
    std::fs::create_dir_all(&dir)?;
    let tar = dir.join(format!("debian-12-{}-{digest}.tar", flavour.name()));
    if tar.is_dir() {
        // Left by a build that wrote a directory where the tarball belongs.
        std::fs::remove_dir_all(&tar)?;
    }
    if tar.is_file() {
        eprintln!("xtask: distro: {} root cached in {}", flavour.name(), tar.display());
        return Ok(tar);
    }
    ensure_package("mmdebstrap", "mmdebstrap")?;
    eprintln!("xtask: distro: building the Debian 12 {} root with mmdebstrap ({})", flavour.name(), flavour.packages());
    let started = Instant::now();
    // Per process: two xtasks building the same root each write their own, then rename.
    let partial = tar.with_extension(format!("{}.tar.partial", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    // The format is named: mmdebstrap picks it from the file name otherwise, and ".partial"
    // makes it write a directory.
    run(Command::new("mmdebstrap").arg("--format=tar").args(&args).arg(&partial).stdout(std::process::Stdio::null()))?;
    std::fs::rename(&partial, &tar)?;
    eprintln!("xtask: distro: {} root built in {:.0} s", flavour.name(), started.elapsed().as_secs_f64());
    Ok(tar)
}

/// The unit that reports from the booted system, and its script.
const MARKER_UNIT: &str = "[Unit]
Description=veilboot test: report the root and any key file left, then power off
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/veil-test-report

[Install]
WantedBy=multi-user.target
";

const MARKER_SCRIPT: &str = r#"#!/bin/sh
# Every mounted filesystem but /proc and /sys, searched for the key files the firmware hands over.
left=$(find / \( -path /proc -o -path /sys \) -prune -o \( -name 'veil-*.key' -o -name root.key -o -name state.key -o -path /cryptroot \) -print 2>/dev/null | tr '\n' ' ')
echo "VEILBOOT DISTRO OK multi-user.target=$(systemctl is-active multi-user.target) root=$(findmnt -n -o SOURCE,FSTYPE /) uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
echo "VEILBOOT KEYFILES: ${left:-none}" > /dev/ttyS0
sized=$(find / \( -path /proc -o -path /sys \) -prune -o -type f \( -size 32c -o -size 64c -o -size 65c -o -size 128c -o -size 129c \) -print0 2>/dev/null | xargs -0 -r sha256sum | cut -c1-64 | sort -u | tr '\n' ' ')
echo "VEILBOOT KEY-SIZED FILES: ${sized:-none}" > /dev/ttyS0
echo "VEILBOOT MOUNTS: $(findmnt -rn -o TARGET,FSTYPE | tr '\n' ' ')" > /dev/ttyS0
echo "VEILBOOT CMDLINE: $(cat /proc/cmdline)" > /dev/ttyS0
echo "VEILBOOT FAILED UNITS: $(systemctl --failed --no-legend --plain | tr '\n' ' ')" > /dev/ttyS0
# The state disk: opened in the initramfs (its key is gone now), its ext4 mounted; one line
# more in a file on it each boot.
if mountpoint -q /var/lib/veil-state; then echo boot >> /var/lib/veil-state/boots; sync; fi
echo "VEILBOOT STATE: veil-state=$(cryptsetup status veil-state >/dev/null 2>&1 && echo active || echo inactive) mount=$(findmnt -n -o SOURCE,FSTYPE /var/lib/veil-state | tr ' ' ,) boots=$(cat /var/lib/veil-state/boots 2>/dev/null | wc -l)" > /dev/ttyS0
systemctl poweroff
"#;

/// Unpack the cached root of `flavour` into `dir`/root and add the reporting unit.
fn fresh_root(flavour: Flavour, dir: &Path) -> Result<PathBuf> {
    let tar = cached_root(flavour)?;
    let rootfs = dir.join("root");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)?;
    }
    std::fs::create_dir_all(&rootfs)?;
    run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&rootfs))?;
    use std::os::unix::fs::PermissionsExt;
    let script = rootfs.join("usr/local/sbin/veil-test-report");
    std::fs::create_dir_all(script.parent().unwrap())?;
    std::fs::write(&script, MARKER_SCRIPT)?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(rootfs.join("etc/systemd/system/veil-test-report.service"), MARKER_UNIT)?;
    let wants = rootfs.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    let link = wants.join("veil-test-report.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/veil-test-report.service", link)?;
    Ok(rootfs)
}

/// A Debian system of `flavour` on an encrypted disk, made by `veil image build --rootfs`.
pub struct DistroDisk {
    /// Where everything of this system lives.
    pub dir: PathBuf,
    /// The master secret.
    pub secret: PathBuf,
    /// The disk image.
    pub image: PathBuf,
    /// A blank state disk.
    pub state: PathBuf,
}

/// Build the disk of `flavour` in the run directory `distro-<flavour>` (the cached roots stay
/// in target/distro).
pub fn build_disk(veil: &Path, flavour: Flavour) -> Result<DistroDisk> {
    ensure_package("mke2fs", "e2fsprogs")?;
    let dir = qemu::run_dir(&format!("distro-{}", flavour.name()))?;
    let rootfs = fresh_root(flavour, &dir)?;
    let secret = dir.join("constellation-mastersecret.json");
    let _ = std::fs::remove_file(&secret);
    run(Command::new(veil).args(["secret", "new", "--out"]).arg(&secret))?;
    let image = dir.join("disk.img");
    let _ = std::fs::remove_file(&image);
    eprintln!("xtask: distro: veil image build --rootfs for the {} system", flavour.name());
    let started = Instant::now();
    run(Command::new(veil)
        .args(["image", "build", "--rootfs"])
        .arg(&rootfs)
        // No panic= here: what veil image build adds by default is what boots.
        .args(["--cmdline", "console=ttyS0 quiet"])
        .arg("--secret")
        .arg(&secret)
        .arg("--out")
        .arg(&image)
        .arg("--force"))?;
    eprintln!("xtask: distro: {} disk built in {:.0} s", flavour.name(), started.elapsed().as_secs_f64());
    // The root was configured in place; its copy is in the image now.
    std::fs::remove_dir_all(&rootfs)?;
    let state = dir.join("state.img");
    std::fs::write(&state, vec![0u8; 64 << 20])?;
    Ok(DistroDisk { dir, secret, image, state })
}

/// Every test system's RAM (MiB), on every ROM: the model ROMs' TD HOB and the RAM saved at the
/// jump are this size.
const RAM_MIB: u64 = 512;

/// QEMU arguments for the system disk and the state disk.
pub fn disk_args(d: &DistroDisk) -> Vec<String> {
    [
        "-m".to_string(),
        format!("{RAM_MIB}M"),
        "-drive".into(),
        format!("if=none,id=d0,format=raw,file={}", d.image.display()),
        "-device".into(),
        "virtio-blk-pci,drive=d0".into(),
        "-drive".into(),
        format!("if=none,id=d1,format=raw,file={}", d.state.display()),
        "-device".into(),
        "virtio-blk-pci,drive=d1".into(),
    ]
    .to_vec()
}

/// Check one boot of a distribution system: multi-user.target reached on the dm-crypt root,
/// the state volume open and mounted (`boots` times so far, this one included), no key file
/// left on any mounted filesystem, no key in the log.
pub fn check_boot(r: &qemu::Run, keys: &[(String, Vec<u8>)], boots: usize) -> Result<()> {
    r.expect("stage=handoff")?.expect(MARKER)?;
    let state = r.log.lines().find_map(|l| l.split_once("VEILBOOT STATE:").map(|(_, v)| v.trim().to_string()));
    let want = format!("veil-state=active mount=/dev/mapper/veil-state,ext4 boots={boots}");
    if state.as_deref() != Some(want.as_str()) {
        bail!("the state volume: {state:?}, expected `{want}` (log {})", r.log_path.display());
    }
    let line = r.log.lines().find(|l| l.contains(MARKER)).unwrap_or_default();
    if !line.contains("multi-user.target=active") || !line.contains("root=/dev/mapper/veil-root ext4") {
        bail!("the system did not reach multi-user.target on the dm-crypt root: {line} (log {})", r.log_path.display());
    }
    // The root by its device-mapper name (a host's disk with the public filesystem UUID cannot
    // become `/`), and a failed initramfs reboots instead of giving the host's console a shell
    // while the key files are there (issue 35 review: veil image build adds these by default).
    let cmdline = r.log.lines().find_map(|l| l.split_once("VEILBOOT CMDLINE:").map(|(_, v)| v.trim().to_string()));
    let cmdline = cmdline.context("the report has no command line")?;
    for word in ["root=/dev/mapper/veil-root", "panic=-1", "rd.shell=0", "rd.emergency=reboot"] {
        if !cmdline.split_whitespace().any(|w| w == word) {
            bail!("the booted command line lacks {word}: {cmdline} (log {})", r.log_path.display());
        }
    }
    let sized = r.log.lines().find_map(|l| l.split_once(KEY_SIZED).map(|(_, v)| v.trim().to_string()));
    let sized = sized.context("the report has no digests of key-sized files")?;
    let digests: std::collections::HashSet<&str> = sized.split_whitespace().collect();
    if digests.is_empty() {
        bail!("the report lists no key-sized file digests at all (expected some, or `none`)");
    }
    for (name, key) in keys {
        let hex = hex::encode(key);
        for form in
            [key.clone(), hex.clone().into_bytes(), format!("{hex}\n").into_bytes(), hex.to_uppercase().into_bytes()]
        {
            if digests.contains(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&form)).as_str()) {
                bail!(
                    "a file on the booted system holds the {name} (found by its SHA-256; log {})",
                    r.log_path.display()
                );
            }
        }
    }
    let left = r.log.lines().find_map(|l| l.split_once(KEYFILES).map(|(_, v)| v.trim().to_string()));
    if left.as_deref() != Some("none") {
        bail!("key files left after switch_root: {left:?} (log {})", r.log_path.display());
    }
    // A unit that opens or mounts a volume must not have failed; others (a journald or getty
    // start timed out on a starved TCG host) are reported, not fatal.
    let failed = r.log.lines().find_map(|l| l.split_once("VEILBOOT FAILED UNITS:").map(|(_, v)| v.trim().to_string()));
    let failed = failed.context("the report has no list of failed units")?;
    if failed.split_whitespace().any(|u| u.contains("cryptsetup") || u.ends_with(".mount")) {
        bail!("a volume's unit failed on the way to multi-user.target: {failed} (log {})", r.log_path.display());
    }
    if !failed.is_empty() {
        eprintln!("xtask: distro: units that failed (not volumes): {failed}");
    }
    scan_for_keys(&format!("serial log {}", r.log_path.display()), r.log.as_bytes(), keys)
}

/// The state disk's key, once the firmware formatted it.
fn state_key(veil: &Path, d: &DistroDisk) -> Result<(String, Vec<u8>)> {
    let uuid = String::from_utf8_lossy(&Command::new("cryptsetup").arg("luksUUID").arg(&d.state).output()?.stdout)
        .trim()
        .to_string();
    let out =
        Command::new(veil).args(["derive", "disk-key", "--secret"]).arg(&d.secret).args(["--uuid", &uuid]).output()?;
    Ok(("state disk key".into(), hex::decode(String::from_utf8_lossy(&out.stdout).trim()).context("veil derive")?))
}

/// The model ROMs and sev-snp-measure, for one boot of system (a) through each.
pub struct Models<'a> {
    /// The SEV-SNP model ROM.
    pub snp: &'a Path,
    /// sev-snp-measure (its venv's python runs the hash table code).
    pub oracle: &'a Path,
    /// The TDX model ROM.
    pub tdx: &'a Path,
}

/// One boot's times, in seconds: QEMU start to the marker (wall clock, including any pause at
/// the jump for the RAM dump), the firmware's hand-off mark and Linux's uptime at the marker.
pub struct BootTime {
    /// System and boot path.
    pub what: String,
    pub wall: f64,
    pub handoff: f64,
    pub uptime: f64,
}

impl BootTime {
    fn of(what: String, r: &qemu::Run, wall: f64) -> BootTime {
        let handoff = r
            .log
            .lines()
            .find_map(|l| l.split_once("veil: t=")?.1.strip_suffix(" stage=handoff")?.trim().parse::<f64>().ok())
            .map_or(f64::NAN, |us| us / 1e6);
        let uptime = r
            .log
            .lines()
            .find(|l| l.contains(MARKER))
            .and_then(|l| l.split_once("uptime=")?.1.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN);
        BootTime { what, wall, handoff, uptime }
    }
}

/// Once a boot with `scan` has run: guest RAM at the jump into Linux holds the root and state
/// keys only in their hand-off files (crate::jump_scan).
fn check_at_jump(scan: jump_scan::JumpScan, r: &qemu::Run, keys: &[(String, Vec<u8>)], name: &str) -> Result<()> {
    let at = scan.finish();
    r.expect("stage=handoff")?;
    let at = at?;
    // The system disk, the state disk and the relay's console.
    jump_scan::check_devices_reset(&at, &["virtio-blk", "virtio-blk", "virtio-serial"])?;
    let key = |n: &str| -> Result<&[u8]> {
        Ok(keys.iter().find(|(k, _)| k == n).with_context(|| format!("no {n}"))?.1.as_slice())
    };
    jump_scan::check_handed_over_keys(
        &at,
        &[
            ("veil-root key", key("veil-root disk key")?, handover::ROOT_KEY),
            ("state disk key", key("state disk key")?, handover::STATE_KEY),
        ],
    )?;
    // Every other secret (the master key and salt, the measurement secret, veil-boot's disk
    // key) is wiped before the jump: nowhere in RAM, raw or as hex.
    let handed_over = ["veil-root disk key", "state disk key"];
    let others: Vec<(String, Vec<u8>)> =
        keys.iter().filter(|(n, _)| !handed_over.contains(&n.as_str())).cloned().collect();
    if others.len() + handed_over.len() != keys.len() || others.is_empty() {
        bail!("the key list is not the one this check expects: {:?}", keys.iter().map(|(n, _)| n).collect::<Vec<_>>());
    }
    scan_for_keys(&format!("guest RAM at the jump into Linux ({name})"), &at.memory, &others)?;
    eprintln!(
        "xtask: distro: {name}: guest RAM at the jump into Linux (entry {:#x}) holds the root and state keys only in \
         their hand-off files, and none of the {} other secrets",
        at.entry,
        others.len()
    );
    Ok(())
}

/// One boot of `d` through a model ROM, released by `broker` through the relay, with guest RAM
/// saved at the jump into Linux: the handed-over keys must be only in their hand-off files
/// (crate::jump_scan), then the boot must reach multi-user.target as on the release ROM.
#[allow(clippy::too_many_arguments)]
fn model_boot(
    veil: &Path,
    rom: &Path,
    name: &str,
    d: &DistroDisk,
    fw_cfg: &[(&str, &Path)],
    broker: &snp_test::Broker,
    keys: &[(String, Vec<u8>)],
    boots: usize,
) -> Result<(qemu::Run, f64)> {
    let runs = qemu::run_dir(&format!("{name}-jump"))?;
    let scan = jump_scan::JumpScan::new(rom, name, &runs, RAM_MIB << 20, BOOT_TIMEOUT)?;
    let mut args = disk_args(d);
    args.extend(scan.args.iter().cloned());
    let started = Instant::now();
    let r = snp_test::boot_with_relay(veil, rom, name, args, &d.dir, fw_cfg, Some(broker), BOOT_TIMEOUT)?;
    let wall = started.elapsed().as_secs_f64();
    check_at_jump(scan, &r, keys, name)?;
    check_boot(&r, keys, boots)?;
    Ok((r, wall))
}

/// Build and boot both systems through `release` with swtpm: released by the broker and
/// sealed, then unsealed locally; with `models`, system (a) then once through the SEV-SNP model
/// ROM (released by the broker, sealed) and once through the TDX model ROM (released by the
/// broker), both with guest RAM checked at the jump. Returns each boot's times.
pub fn tests(veil: &Path, release: &Path, models: Option<Models>) -> Result<Vec<BootTime>> {
    tpm_test::ensure_tools()?;
    let mut times = Vec::new();
    for flavour in [Flavour::InitramfsTools, Flavour::Dracut] {
        let d = build_disk(veil, flavour)?;
        let mut keys = key_material(veil, &d.secret, &d.image)?;
        let tpm = d.dir.join("tpm");
        tpm_test::provision(&tpm)?;
        let broker = tpm_test::start_broker(veil, release, &d.image, &d.secret, &tpm, &d.dir)?;
        eprintln!("xtask: distro: {}: first boot, released by veil kbs serve and sealed", flavour.name());
        // System (a)'s first boot also stops at the jump into Linux: the release ROM's TPM path
        // (a blank state disk formatted, its key derived) must leave no key copy either.
        let name = format!("distro-{}-first", flavour.name());
        let mut args = disk_args(&d);
        let scan = match flavour {
            Flavour::InitramfsTools => {
                let runs = qemu::run_dir(&format!("{name}-jump"))?;
                let scan = jump_scan::JumpScan::new(release, &name, &runs, RAM_MIB << 20, BOOT_TIMEOUT)?;
                args.extend(scan.args.iter().cloned());
                Some(scan)
            }
            Flavour::Dracut => None,
        };
        let started = Instant::now();
        let first = tpm_test::boot_with_broker_within(veil, release, &name, &tpm, &broker, &args, BOOT_TIMEOUT)?;
        let t1 = started.elapsed().as_secs_f64();
        drop(broker);
        first
            .expect("kbs: the broker verified the TPM quote and released the master secret")?
            .expect("tpm: sealed the master secret to SHA-256 PCRs")?;
        keys.push(state_key(veil, &d)?);
        if let Some(scan) = scan {
            check_at_jump(scan, &first, &keys, &name)?;
        }
        check_boot(&first, &keys, 1)?;
        times.push(BootTime::of(format!("{}: release ROM, broker", flavour.name()), &first, t1));
        eprintln!("xtask: distro: {}: second boot, unsealed with the TPM", flavour.name());
        let started = Instant::now();
        let second = tpm_test::boot_with_tpm_within(
            release,
            &format!("distro-{}-second", flavour.name()),
            &tpm,
            &disk_args(&d),
            BOOT_TIMEOUT,
        )?;
        let t2 = started.elapsed().as_secs_f64();
        second.expect("tpm: master secret unsealed from veil-boot token")?;
        check_boot(&second, &keys, 2)?;
        times.push(BootTime::of(format!("{}: release ROM, TPM unseal", flavour.name()), &second, t2));
        eprintln!(
            "xtask: distro: {}: multi-user.target in {t1:.0} s (first boot) and {t2:.0} s (second)",
            flavour.name()
        );
        let (Some(m), Flavour::InitramfsTools) = (&models, flavour) else { continue };
        // The same disk through the model ROMs: every platform hands the keys over the same way.
        let (veil_path, secret, image) = (veil.to_path_buf(), d.secret.clone(), d.image.clone());
        let snp_dir = d.dir.join("snp");
        std::fs::create_dir_all(&snp_dir)?;
        let snp =
            snp_test::Setup::for_image(m.snp, m.oracle, veil_path.clone(), snp_dir, secret.clone(), image.clone())?;
        eprintln!("xtask: distro: {}: SEV-SNP model ROM, released by veil kbs serve and sealed", flavour.name());
        let (r, wall) =
            model_boot(veil, m.snp, "distro-initramfs-tools-snp", &d, &snp.honest(), &snp.broker, &keys, 3)?;
        r.expect("kbs: the broker verified the snp evidence and released the master secret")?
            .expect("snp: sealed the master secret with this launch's derived key")?;
        times.push(BootTime::of(format!("{}: SEV-SNP model ROM, broker", flavour.name()), &r, wall));
        drop(snp);
        let tdx_dir = d.dir.join("tdx");
        std::fs::create_dir_all(&tdx_dir)?;
        let tdx = tdx_attest::Setup::for_image(m.tdx, veil_path, tdx_dir, secret, image, RAM_MIB << 20)?;
        eprintln!("xtask: distro: {}: TDX model ROM, released by veil kbs serve", flavour.name());
        let (r, wall) =
            model_boot(veil, m.tdx, "distro-initramfs-tools-tdx", &d, &tdx.honest(), &tdx.broker, &keys, 4)?;
        r.expect("kbs: the broker verified the tdx evidence and released the master secret")?;
        times.push(BootTime::of(format!("{}: TDX model ROM, broker", flavour.name()), &r, wall));
    }
    Ok(times)
}
