//! `veil image build` and `veil recover`: the encrypted GPT disk veilboot boots from, and
//! getting a volume back without the firmware.
//!
//! Layout: GPT with `veil-boot` (LUKS2, 4096-byte sectors, the boot bundle: MAC'd manifest,
//! kernel, initrd) and `veil-root` (LUKS2, the ext4 root filesystem made from a directory
//! with `mke2fs -d`). Each volume's passphrase is its disk key derived from the master secret
//! for its UUID, exactly what the firmware derives.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use veil_agent::gpt::{self, Guid, NewPartition};
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::KdfLimits;
use veil_agent::luks2::format::{FormatOptions, HeaderWriter, random_uuid};
use zeroize::Zeroizing;

use crate::luks::{host_random, parse_size, report, stream, write_all_at};
use crate::secret;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build an encrypted GPT disk image veilboot boots from.
    Build(BuildArgs),
    /// Show a disk's partitions, each LUKS2 volume's tokens and the boot target its veil-boot
    /// header names; with --secret, whether that secret opens each volume.
    Inspect(crate::inspect::InspectArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// The Linux kernel (bzImage). Without --kernel and --initrd, --rootfs is a distribution's
    /// root: veil writes its crypttab, fstab and hand-over configuration, regenerates its
    /// initramfs with its own initramfs-tools or dracut (chroot: run as root) and takes the
    /// newest kernel and that initramfs from its /boot.
    #[arg(long, requires = "initrd")]
    kernel: Option<PathBuf>,
    /// The initrd (it must open the root volume with the key veilboot hands over in
    /// /cryptroot/keyfiles/veil-root.key).
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line (for a distribution's root, `root=UUID=<ext4 UUID> ro` is
    /// added when it names no root).
    #[arg(long, default_value = "console=ttyS0")]
    cmdline: String,
    /// Directory whose contents become the ext4 root filesystem.
    #[arg(long)]
    rootfs: PathBuf,
    /// The cluster's master secret (constellation-mastersecret.json or kms:// URI file).
    #[arg(long)]
    secret: PathBuf,
    /// The disk image to create (and OUT.init-data.toml beside it).
    #[arg(long)]
    out: PathBuf,
    /// Replace --out and its init-data file if they exist.
    #[arg(long)]
    force: bool,
    /// Size of the whole disk image; veil-root takes what veil-boot and the GPT leave
    /// (default: just enough for the root filesystem's contents plus a margin).
    #[arg(long, value_parser = parse_size, conflicts_with = "root_size")]
    size: Option<u64>,
    /// Size of the root filesystem instead (default: its contents plus a margin).
    #[arg(long, value_parser = parse_size)]
    root_size: Option<u64>,
    /// Constellation's measurementSalt (hex, 16-64 bytes) from which the firmware derives the
    /// clusterID it extends into PCR 15 (default: 32 random bytes, printed).
    #[arg(long)]
    measurement_salt: Option<String>,
    /// The bundle's version, in its MAC'd manifest and its init-data: raise it with each new
    /// kernel, initrd or command line so that a broker can refuse older bundles
    /// (`veil kbs serve --min-bundle-version`).
    #[arg(long, default_value_t = 1)]
    bundle_version: u64,
    /// Never seal the master secret locally: every boot asks the key broker (no boot opens a
    /// TPM or SEV-SNP sealed token), so a rolled-back disk or firmware meets the broker's
    /// checks (`--min-bundle-version`, `--snp-min-tcb`) each time. In the MAC'd manifest, so
    /// the host cannot clear it.
    #[arg(long)]
    never_seal: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RecoverArgs {
    /// The master secret.
    #[arg(long)]
    secret: PathBuf,
    /// The disk image.
    #[arg(long)]
    disk: PathBuf,
    /// The partition (GPT name): veil-root or veil-boot.
    #[arg(long, default_value = "veil-root")]
    part: String,
    /// Where to write the decrypted volume (mode 0600: it is the plaintext).
    #[arg(long, required_unless_present = "print_key")]
    out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long, requires = "out")]
    force: bool,
    /// Print the volume's disk key (hex) instead, for `cryptsetup open --key-file=-` after
    /// `xxd -r -p`. The key is secret: pipe it, do not store it.
    #[arg(long, conflicts_with = "out")]
    print_key: bool,
    /// Print one JSON object: with --print-key {"part", "uuid", "disk_key"}; with --out
    /// {"part", "uuid", "out", "bytes"}.
    #[arg(long)]
    json: bool,
}

const MIB: u64 = 1 << 20;
/// LUKS2 metadata + keyslots before the data (cryptsetup's default).
const LUKS_OVERHEAD: u64 = 16 * MIB;

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

/// Format a LUKS2 volume at `base` in `file` whose passphrase is the disk key for `uuid`.
/// `token`, if given, is added to the header (unbound to any keyslot).
fn format_volume(
    file: &File,
    base: u64,
    uuid: &str,
    secret: &MasterSecret,
    token: Option<veil_agent::json::Value>,
) -> Result<Zeroizing<Vec<u8>>> {
    let opts = FormatOptions { uuid: Some(uuid.to_string()), ..FormatOptions::default() };
    let passphrase = secret.disk_key(uuid)?;
    let mut volume_key = Zeroizing::new(vec![0u8; opts.key_size]);
    host_random(&mut volume_key);
    let mut writer = HeaderWriter::format(&opts, &volume_key, passphrase.as_ref(), &mut host_random)?;
    if let Some(t) = token {
        writer.add_token(t, &[], None)?;
    }
    write_all_at(file, base, writer.commit(&mut host_random)?)?;
    Ok(volume_key)
}

pub fn build(args: BuildArgs) -> Result<()> {
    // Nothing is written before every input is checked.
    let init_data_path = args.out.with_extension("init-data.toml");
    crate::outfile::check_free(&args.out, args.force, "--force")?;
    crate::outfile::check_free(&init_data_path, args.force, "--force")?;
    if !args.rootfs.is_dir() {
        crate::usage_bail!("--rootfs {}: not a directory", args.rootfs.display());
    }
    let secret = secret::load(&args.secret)?;
    let root_uuid = random_uuid(&mut host_random);
    let boot_uuid = random_uuid(&mut host_random);
    // A distribution's root (no --kernel/--initrd): its own kernel and regenerated initramfs,
    // and its ext4 filesystem made with the UUID its fstab names.
    // The state disk's UUID is chosen here and named in the MAC'd manifest: the firmware
    // formats a blank state disk with it and hands no key for a state disk with another (a
    // distribution's root names it in its crypttab).
    let state_uuid = random_uuid(&mut host_random);
    let (kernel_path, initrd_path, cmdline, fs_uuid) = match (&args.kernel, &args.initrd) {
        (Some(k), Some(i)) => (k.clone(), i.clone(), args.cmdline.clone(), None),
        _ => {
            let fs_uuid = random_uuid(&mut host_random);
            let p = crate::distro::prepare(&args.rootfs, &root_uuid, &state_uuid, &args.cmdline)?;
            (p.kernel, p.initrd, p.cmdline, Some(fs_uuid))
        }
    };
    let kernel = std::fs::read(&kernel_path).with_context(|| format!("reading {}", kernel_path.display()))?;
    veil_agent::linux::SetupHeader::parse(&kernel).with_context(|| format!("{}", kernel_path.display()))?;
    let initrd = std::fs::read(&initrd_path).with_context(|| format!("reading {}", initrd_path.display()))?;
    crate::initrd_check::warn_unless_fit(&initrd_path, &initrd, &cmdline);
    let measurement_salt = match &args.measurement_salt {
        Some(h) => {
            let salt =
                hex::decode(h).map_err(|e| crate::cli_error::usage(format!("--measurement-salt is not hex: {e}")))?;
            if !(16..=64).contains(&salt.len()) {
                crate::usage_bail!("--measurement-salt must be 16 to 64 bytes, not {}", salt.len());
            }
            salt
        }
        None => {
            let mut salt = vec![0u8; 32];
            host_random(&mut salt);
            salt
        }
    };
    let bound = veil_agent::bundle::Bound {
        measurement_salt: hex::encode(&measurement_salt),
        state_uuid: state_uuid.clone(),
        version: args.bundle_version,
        never_seal: args.never_seal,
    };
    let bundle = veil_agent::bundle::build(&secret, &kernel, &initrd, &cmdline, &root_uuid, Some(bound))?;
    let manifest = veil_agent::bundle::open_header(&secret, &bundle, u64::MAX)?;
    let bundle_token = veil_agent::bundle::token_json(&manifest, &measurement_salt);

    // The root filesystem.
    let tmp = tempfile::tempdir()?;
    let ext4 = tmp.path().join("root.ext4");
    let boot_len = LUKS_OVERHEAD + (bundle.len() as u64).div_ceil(MIB) * MIB;
    let needed = ((dir_size(&args.rootfs)? * 3 / 2 + 32 * MIB).div_ceil(MIB)) * MIB;
    let root_size = match (args.size, args.root_size) {
        (Some(total), _) => {
            let rest = total.saturating_sub(MIB + boot_len + LUKS_OVERHEAD + MIB) / MIB * MIB;
            if rest < needed {
                crate::usage_bail!(
                    "--size {total} leaves {rest} bytes for the root filesystem; its contents need about {needed}"
                );
            }
            rest
        }
        (None, Some(s)) => s,
        (None, None) => needed,
    };
    if args.size.is_none() && args.root_size.is_none() {
        eprintln!(
            "veil: root filesystem of {} MiB (its contents x1.5 + 32 MiB; --root-size or --size to choose)",
            root_size / MIB
        );
    }
    // mke2fs -d copies each file's owner: a tree unpacked without root belongs to its user.
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&args.rootfs)?);
    if owner != 0 {
        eprintln!(
            "veil: warning: {} is owned by uid {owner}, not root: the root filesystem keeps its files' owners (unpack it as root, or under fakeroot)",
            args.rootfs.display()
        );
    }
    eprintln!("veil: making the root filesystem from {} (mke2fs)", args.rootfs.display());
    let mut mke2fs = Command::new("mke2fs");
    // 4 KiB blocks: the LUKS2 volume has 4096-byte sectors, so dm-crypt exposes 4 KiB logical blocks.
    mke2fs.args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "veil-root"]);
    // A distribution's root: the filesystem UUID its fstab and the kernel's root= name.
    if let Some(u) = &fs_uuid {
        mke2fs.args(["-U", u]);
    }
    let st = mke2fs
        .arg("-d")
        .arg(&args.rootfs)
        .arg(&ext4)
        .arg(format!("{}k", root_size / 1024))
        .output()
        .context("running mke2fs (Debian package e2fsprogs)")?;
    if !st.status.success() {
        bail!(
            "mke2fs failed to build the root filesystem from {}: {}",
            args.rootfs.display(),
            String::from_utf8_lossy(&st.stderr).trim()
        );
    }

    // The disk: 1 MiB GPT alignment, veil-boot, veil-root, backup GPT.
    let root_len = LUKS_OVERHEAD + root_size;
    let disk_size = MIB + boot_len + root_len + MIB;
    let mut gbytes = [0u8; 16];
    let parts = [("veil-boot", boot_len), ("veil-root", root_len)].map(|(name, size)| {
        host_random(&mut gbytes);
        NewPartition {
            name: name.into(),
            type_guid: gpt::TYPE_LINUX_LUKS,
            guid: Guid::random_v4(gbytes),
            size: Some(size),
        }
    });
    host_random(&mut gbytes);
    let (writes, laid) = gpt::build(disk_size, Guid::random_v4(gbytes), &parts)?;
    let output = crate::outfile::Output::create(&args.out, args.force, crate::outfile::Access::Public, "--force")?;
    let out = output.file();
    let result = (|| -> Result<()> {
        out.set_len(disk_size)?;
        for (off, bytes) in writes {
            out.write_all_at(&bytes, off)?;
        }
        let (boot, root) = (&laid[0], &laid[1]);

        // veil-boot: the bundle.
        let vk = format_volume(out, boot.offset(), &boot_uuid, &secret, Some(bundle_token))?;
        let cipher = veil_agent::xts::SectorCipher::new(&vk, 4096)?;
        let mut data = Zeroizing::new(bundle.clone());
        data.resize(((bundle.len() as u64).div_ceil(4096) * 4096) as usize, 0);
        cipher.encrypt_sectors(0, &mut data)?;
        out.write_all_at(&data, boot.offset() + LUKS_OVERHEAD)?;

        // veil-root: the ext4 image, streamed.
        let vk = format_volume(out, root.offset(), &root_uuid, &secret, None)?;
        let cipher = veil_agent::xts::SectorCipher::new(&vk, 4096)?;
        let src = File::open(&ext4)?;
        let start = Instant::now();
        stream(&src, 0, out, root.offset() + LUKS_OVERHEAD, root_size, "veil-root", |pos, chunk| {
            cipher.encrypt_sectors(pos / 512, chunk).map_err(Into::into)
        })?;
        report("veil-root: encrypted", root_size, start);
        out.sync_all()?;
        Ok(())
    })();
    result?;
    output.commit()?;
    // The init-data document naming this boot target, beside the image, and its digest for a
    // confidential launch (SEV-SNP: QEMU's sev-snp-guest host-data=, base64 of 32 bytes; TDX:
    // tdx-guest mrconfigid=, base64 of 48 bytes).
    let init_data = veil_agent::bundle::init_data(&manifest);
    crate::outfile::write(&init_data_path, args.force, crate::outfile::Access::Public, init_data.as_bytes())?;
    let host_data = veil_agent::initdata::regularize(
        &veil_agent::initdata::digest(&init_data).map_err(|e| anyhow::anyhow!(e))?,
        32,
    );
    use base64::Engine;
    let host_data_b64 = base64::engine::general_purpose::STANDARD.encode(&host_data);
    // TDX: the same digest zero-padded to 48 bytes, QEMU's tdx-guest mrconfigid=.
    let mrconfigid = veil_agent::initdata::regularize(
        &veil_agent::initdata::digest(&init_data).map_err(|e| anyhow::anyhow!(e))?,
        48,
    );
    let mrconfigid_b64 = base64::engine::general_purpose::STANDARD.encode(&mrconfigid);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"disk": args.out.display().to_string(), "veil_boot_uuid": boot_uuid, "veil_root_uuid": root_uuid, "state_uuid": state_uuid, "bundle_version": args.bundle_version, "never_seal": args.never_seal, "bundle_bytes": bundle.len(), "measurement_salt": hex::encode(&measurement_salt), "cluster_id": hex::encode(secret.cluster_id(&measurement_salt).0), "init_data": init_data_path.display().to_string(), "snp_host_data": hex::encode(&host_data), "snp_host_data_base64": host_data_b64, "tdx_mrconfigid": hex::encode(&mrconfigid), "tdx_mrconfigid_base64": mrconfigid_b64})
        );
    } else {
        println!("veil-boot {boot_uuid}");
        println!("veil-root {root_uuid}");
        println!("measurement-salt {}", hex::encode(&measurement_salt));
        println!("init-data {}", init_data_path.display());
        println!("snp-host-data {} (QEMU sev-snp-guest host-data={host_data_b64})", hex::encode(&host_data));
        println!("tdx-mrconfigid {} (QEMU tdx-guest mrconfigid={mrconfigid_b64})", hex::encode(&mrconfigid));
    }
    Ok(())
}

pub fn recover(args: RecoverArgs) -> Result<()> {
    if let Some(out) = &args.out {
        crate::outfile::check_free(out, args.force, "--force")?;
    }
    let secret = secret::load(&args.secret)?;
    let mut win = crate::volfile::open(&args.disk, Some(&args.part), false)?;
    let (start, len) = (win.start, win.len);
    let volume = win.load()?;
    let key = secret.disk_key(volume.uuid())?;
    let uuid = volume.uuid().to_string();
    if args.print_key {
        let hex_key = Zeroizing::new(hex::encode(key.as_ref()));
        if args.json {
            // Built by hand: a serde_json::Value would keep a copy of the key it never zeroizes.
            let line = Zeroizing::new(format!(
                "{{\"part\":{},\"uuid\":{},\"disk_key\":\"{}\"}}",
                serde_json::to_string(&args.part)?,
                serde_json::to_string(&uuid)?,
                hex_key.as_str()
            ));
            println!("{}", line.as_str());
        } else {
            println!("{}", hex_key.as_str());
        }
        return Ok(());
    }
    let (_, vk) = volume
        .unlock(&mut win, key.as_ref(), &KdfLimits::default())
        .with_context(|| format!("{}: unlocking with the disk key", args.part))?;
    let (seg, cipher) = volume.data_cipher(&vk)?;
    let data_len = seg.len(len);
    let out_path = args.out.expect("clap requires --out without --print-key");
    let out = crate::outfile::Output::create(&out_path, args.force, crate::outfile::Access::Private, "--force")?;
    let src = File::open(&args.disk)?;
    let begin = Instant::now();
    stream(&src, start + seg.offset, out.file(), 0, data_len, "recover", |pos, chunk| {
        cipher.decrypt_sectors(seg.iv_sector(pos), chunk).map_err(Into::into)
    })?;
    out.commit()?;
    report("recovered", data_len, begin);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"part": args.part, "uuid": uuid, "out": out_path.display().to_string(), "bytes": data_len})
        );
    }
    Ok(())
}
