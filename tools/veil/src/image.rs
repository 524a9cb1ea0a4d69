//! `veil image build` and `veil recover`: the encrypted GPT disk veilboot boots from, and
//! getting a volume back without the firmware.
//!
//! Layout: GPT with `veil-boot` (LUKS2, 4096-byte sectors, the boot bundle: MAC'd manifest,
//! kernel, initrd) and `veil-root` (LUKS2, the ext4 root filesystem made from a directory
//! with `mke2fs -d`). Each volume's passphrase is its disk key derived from the master secret
//! for its UUID, exactly what the firmware derives.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use veil_agent::gpt::{self, Gpt, Guid, NewPartition};
use veil_agent::io::Window;
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::format::{FormatOptions, HeaderWriter, random_uuid};
use veil_agent::luks2::{KdfLimits, Volume};
use zeroize::Zeroizing;

use crate::luks::{host_random, parse_size, report, stream, write_all_at};
use crate::secret;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build an encrypted GPT disk image veilboot boots from.
    Build(BuildArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// The Linux kernel (bzImage).
    #[arg(long)]
    kernel: PathBuf,
    /// The initrd (it must open the root volume with the key veilboot hands over in
    /// /cryptroot/keyfiles/veil-root.key).
    #[arg(long)]
    initrd: PathBuf,
    /// The kernel command line.
    #[arg(long, default_value = "console=ttyS0")]
    cmdline: String,
    /// Directory whose contents become the ext4 root filesystem.
    #[arg(long)]
    rootfs: PathBuf,
    /// The cluster's master secret (constellation-mastersecret.json or kms:// URI file).
    #[arg(long)]
    secret: PathBuf,
    /// The disk image to create (must not exist).
    #[arg(long)]
    out: PathBuf,
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
    /// Where to write the decrypted volume (must not exist).
    #[arg(long, required_unless_present = "print_key")]
    out: Option<PathBuf>,
    /// Print the volume's disk key (hex) instead, for `cryptsetup open --key-file=-` after
    /// `xxd -r -p`. The key is secret: pipe it, do not store it.
    #[arg(long)]
    print_key: bool,
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

fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist)", path.display()))
}

pub fn build(args: BuildArgs) -> Result<()> {
    let secret = secret::load(&args.secret)?;
    let kernel = std::fs::read(&args.kernel).with_context(|| format!("reading {}", args.kernel.display()))?;
    veil_agent::linux::SetupHeader::parse(&kernel).with_context(|| format!("{}", args.kernel.display()))?;
    let initrd = std::fs::read(&args.initrd).with_context(|| format!("reading {}", args.initrd.display()))?;
    let root_uuid = random_uuid(&mut host_random);
    let boot_uuid = random_uuid(&mut host_random);
    let bundle = veil_agent::bundle::build(&secret, &kernel, &initrd, &args.cmdline, &root_uuid)?;
    let manifest = veil_agent::bundle::open_header(&secret, &bundle, u64::MAX)?;
    let measurement_salt = match &args.measurement_salt {
        Some(h) => {
            let salt = hex::decode(h).context("--measurement-salt must be hex")?;
            if !(16..=64).contains(&salt.len()) {
                bail!("--measurement-salt must be 16 to 64 bytes, not {}", salt.len());
            }
            salt
        }
        None => {
            let mut salt = vec![0u8; 32];
            host_random(&mut salt);
            salt
        }
    };
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
                bail!("--size {total} leaves {rest} bytes for the root filesystem; its contents need about {needed}");
            }
            rest
        }
        (None, Some(s)) => s,
        (None, None) => needed,
    };
    let st = Command::new("mke2fs")
        // 4 KiB blocks: the LUKS2 volume has 4096-byte sectors, so dm-crypt exposes 4 KiB logical blocks.
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "veil-root", "-d"])
        .arg(&args.rootfs)
        .arg(&ext4)
        .arg(format!("{}k", root_size / 1024))
        .status()
        .context("running mke2fs (Debian package e2fsprogs)")?;
    if !st.success() {
        bail!("mke2fs failed to build the root filesystem from {}", args.rootfs.display());
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
    let out = create_new(&args.out)?;
    let result = (|| -> Result<()> {
        out.set_len(disk_size)?;
        for (off, bytes) in writes {
            out.write_all_at(&bytes, off)?;
        }
        let (boot, root) = (&laid[0], &laid[1]);

        // veil-boot: the bundle.
        let vk = format_volume(&out, boot.offset(), &boot_uuid, &secret, Some(bundle_token))?;
        let cipher = veil_agent::xts::SectorCipher::new(&vk, 4096)?;
        let mut data = Zeroizing::new(bundle.clone());
        data.resize(((bundle.len() as u64).div_ceil(4096) * 4096) as usize, 0);
        cipher.encrypt_sectors(0, &mut data)?;
        out.write_all_at(&data, boot.offset() + LUKS_OVERHEAD)?;

        // veil-root: the ext4 image, streamed.
        let vk = format_volume(&out, root.offset(), &root_uuid, &secret, None)?;
        let cipher = veil_agent::xts::SectorCipher::new(&vk, 4096)?;
        let src = File::open(&ext4)?;
        let start = Instant::now();
        stream(&src, 0, &out, root.offset() + LUKS_OVERHEAD, root_size, "veil-root", |pos, chunk| {
            cipher.encrypt_sectors(pos / 512, chunk).map_err(Into::into)
        })?;
        report("veil-root: encrypted", root_size, start);
        out.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&args.out);
        return Err(e);
    }
    // The init-data document naming this boot target, beside the image, and its digest for a
    // confidential launch (SEV-SNP: QEMU's sev-snp-guest host-data=, base64 of 32 bytes; TDX:
    // tdx-guest mrconfigid=, base64 of 48 bytes).
    let init_data = veil_agent::initdata::document(&veil_agent::bundle::manifest_sha384(&manifest));
    let init_data_path = args.out.with_extension("init-data.toml");
    std::fs::write(&init_data_path, &init_data).with_context(|| format!("writing {}", init_data_path.display()))?;
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
            serde_json::json!({"disk": args.out.display().to_string(), "veil_boot_uuid": boot_uuid, "veil_root_uuid": root_uuid, "bundle_bytes": bundle.len(), "measurement_salt": hex::encode(&measurement_salt), "cluster_id": hex::encode(secret.cluster_id(&measurement_salt).0), "init_data": init_data_path.display().to_string(), "snp_host_data": hex::encode(&host_data), "snp_host_data_base64": host_data_b64, "tdx_mrconfigid": hex::encode(&mrconfigid), "tdx_mrconfigid_base64": mrconfigid_b64})
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
    let secret = secret::load(&args.secret)?;
    let mut disk = File::open(&args.disk).with_context(|| format!("cannot open {}", args.disk.display()))?;
    let gpt = Gpt::read(&mut disk).with_context(|| format!("{}", args.disk.display()))?;
    let part = gpt
        .by_name(&args.part)
        .with_context(|| format!("{}: no partition named {}", args.disk.display(), args.part))?;
    let (start, len) = (part.offset(), part.size());
    let mut win = Window { dev: &mut disk, start, len };
    let volume = Volume::load(&mut win).with_context(|| args.part.to_string())?;
    let key = secret.disk_key(volume.uuid())?;
    if args.print_key {
        println!("{}", Zeroizing::new(hex::encode(key.as_ref())).as_str());
        return Ok(());
    }
    let (_, vk) = volume
        .unlock(&mut win, key.as_ref(), &KdfLimits::default())
        .with_context(|| format!("{}: unlocking with the disk key", args.part))?;
    let (seg, cipher) = volume.data_cipher(&vk)?;
    let data_len = seg.len(len);
    let out_path = args.out.expect("clap requires --out without --print-key");
    let out = create_new(&out_path)?;
    let src = File::open(&args.disk)?;
    let begin = Instant::now();
    let r = stream(&src, start + seg.offset, &out, 0, data_len, "recover", |pos, chunk| {
        cipher.decrypt_sectors(seg.iv_sector(pos), chunk).map_err(Into::into)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&out_path);
        return r;
    }
    report("recovered", data_len, begin);
    Ok(())
}
