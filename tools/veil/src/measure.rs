//! `veil measure --platform snp`: the SEV-SNP launch digest (MEASUREMENT) of the ROM with a
//! number of vCPUs of a CPU model, with or without kernel hashes (veil_agent::snp::launch,
//! equal to sev-snp-measure's), printed in hex; `--out` writes a reference-values JSON.
//!
//! `veil measure --platform tpm`: the PCR values a veilboot ROM will produce when it boots a
//! given disk image, computed with the firmware's own measurement plan
//! (veil_agent::tpm::measure), written in Constellation's measurements JSON format
//! (`{"4": {"expected": "<hex>", "warnOnly": false}, ...}`), plus the policy digest the
//! master secret is sealed with.
//!
//! PCR 1 (the VMM's configuration: e820 map, ACPI tables) depends on QEMU's version and the
//! VM's size, so it is left out; PCR 15 is given as at attestation time (before the
//! clusterID is extended: zero) unless --after-unseal names the state after it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use veil_agent::bundle::BundleToken;
use veil_agent::gpt::Gpt;
use veil_agent::io::Window;
use veil_agent::luks2::Volume;
use veil_agent::tpm::Bank;
use veil_agent::tpm::measure::{self, Measurement};

/// A veilboot ROM is its contents rounded up to this (linker/veilboot.ld: ROM_SIZE), the
/// granule QEMU takes a -bios file in ...
const ROM_GRANULE: usize = 64 * 1024;
/// ... and at most this (the top 2 MiB below 4 GiB the firmware maps as its ROM).
const ROM_MAX: usize = 2 * 1024 * 1024;

#[derive(Clone, Copy, ValueEnum)]
pub enum Platform {
    /// A plain VM with a TPM 2.0 (SHA-256 PCRs).
    Tpm,
    /// An AMD SEV-SNP guest under QEMU (the launch digest).
    Snp,
    /// An Intel TDX guest: MRTD (the ROM as QEMU adds it), RTMR1 and RTMR2 (the boot target),
    /// RTMR3 (unused: zero), and RTMR0 (the VMM's configuration) given --td-hob and
    /// --vmm-config.
    Tdx,
}

/// The order in which QEMU adds a TD's pages and extends their contents.
#[derive(Clone, Copy, ValueEnum)]
pub enum PageOrder {
    /// Each page, then its extends (QEMU 9 and later).
    Interleaved,
    /// All pages, then all extends (QEMU 8).
    AddsFirst,
}

#[derive(Args)]
pub struct MeasureArgs {
    /// Which platform's measurement registers to predict.
    #[arg(long, value_enum)]
    platform: Platform,
    /// The firmware ROM (target/veilboot.fd).
    #[arg(long)]
    rom: PathBuf,
    /// The disk image (`veil image build`): its veil-boot header names the boot target
    /// (--platform tpm).
    #[arg(long, required_if_eq("platform", "tpm"))]
    image: Option<PathBuf>,
    /// SNP: the number of vCPUs (one VMSA each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    vcpus: u32,
    /// SNP: QEMU's CPU model (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin, ...),
    /// which sets the CPUID signature in each VMSA.
    #[arg(long, default_value = "EPYC-v4", conflicts_with = "vcpu_sig")]
    vcpu_type: String,
    /// SNP: the CPUID signature (leaf 1 EAX, e.g. 0xa00f11) instead of a CPU model.
    #[arg(long, value_parser = parse_hex_u64)]
    vcpu_sig: Option<u64>,
    /// SNP: the SEV features of the VMSAs (the guest policy's; QEMU's default 0x1, SNPActive).
    #[arg(long, value_parser = parse_hex_u64, default_value = "0x1")]
    guest_features: u64,
    /// SNP: the kernel QEMU boots with kernel-hashes=on (-kernel); TDX: the -kernel of a
    /// direct boot.
    #[arg(long, requires = "append")]
    kernel: Option<PathBuf>,
    /// SNP: its initrd (-initrd; none: an empty one is hashed, as QEMU does).
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// SNP: its command line (-append; may be empty).
    #[arg(long, requires = "kernel")]
    append: Option<String>,
    /// TDX: the TD HOB the VMM wrote (for RTMR0: it is the first configuration input the
    /// firmware measures). QEMU derives it from the VM's memory size.
    #[arg(long, value_name = "FILE", requires = "vmm_config")]
    td_hob: Option<PathBuf>,
    /// TDX: the VMM's fw_cfg files the firmware measures into RTMR0, as a directory tree named
    /// like fw_cfg (DIR/etc/e820, DIR/etc/table-loader, DIR/etc/acpi/tables, ...). Inside a
    /// guest of the same shape they are /sys/firmware/qemu_fw_cfg/by_name/<name>/raw (README).
    #[arg(long, value_name = "DIR", requires = "td_hob")]
    vmm_config: Option<PathBuf>,
    /// TDX: the order QEMU adds pages in, for MRTD.
    #[arg(long, value_enum, default_value = "interleaved")]
    page_order: PageOrder,
    /// Also predict PCR 15 after the clusterID was extended (needs the master secret).
    #[arg(long, value_name = "SECRET")]
    after_unseal: Option<PathBuf>,
    /// Write the measurements JSON (the reference-values JSON for snp and tdx) here instead of
    /// stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long, requires = "out")]
    force: bool,
    /// Print the document --out would write on stdout (tpm: the measurements JSON, which is
    /// also the default output; snp and tdx: the reference-values JSON instead of hex or text).
    #[arg(long)]
    json: bool,
    /// Print the seal policy digest (PolicyPCR over the sealed PCRs) on stderr too.
    #[arg(long)]
    policy: bool,
    /// Also write what a Trustee KBS operator loads into DIR: reference values, attestation
    /// and resource policies, and the kbs-client commands (kbs-admin.sh). Uses the values at
    /// attestation time (PCR 15 zero), whatever --after-unseal says.
    #[arg(long, value_name = "DIR")]
    trustee_dir: Option<PathBuf>,
    /// The VM's attestation key (PEM, from `veil tpm ak`), registered as the trusted_aks
    /// reference value in --trustee-dir.
    #[arg(long, value_name = "PEM", requires = "trustee_dir")]
    ak: Option<PathBuf>,
    /// The resource path the master secret is served at (--trustee-dir's script).
    #[arg(long, default_value = veil_agent::kbs::client::DEFAULT_RESOURCE)]
    resource: String,
}

/// The SHA-256 PCR values (without PCR 1 and 15) a ROM produces booting an image, and the
/// image's veil-bundle token.
pub fn predict(rom_path: &Path, image: &Path) -> Result<(BTreeMap<u32, Vec<u8>>, BundleToken)> {
    let rom = std::fs::read(rom_path).with_context(|| format!("reading {}", rom_path.display()))?;
    check_rom(rom_path, &rom)?;
    let mut disk = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let gpt = Gpt::read(&mut disk).with_context(|| format!("{}", image.display()))?;
    let part = gpt.by_name("veil-boot").with_context(|| format!("{}: no veil-boot partition", image.display()))?;
    let mut win = Window { dev: &mut disk, start: part.offset(), len: part.size() };
    let volume = Volume::load(&mut win).context("veil-boot")?;
    let token = veil_agent::bundle::find_token(volume.json())?.with_context(|| {
        format!("{}: veil-boot has no veil-bundle token (image made before measured boot?)", image.display())
    })?;
    let mut plan: Vec<Measurement<'_>> = vec![measure::rom(&rom)];
    plan.extend(measure::boot_target(&token.manifest));
    plan.extend(measure::separators());
    let mut pcrs = measure::predict(&plan, Bank::Sha256);
    pcrs.remove(&1);
    Ok((pcrs, token))
}

/// A veilboot ROM: a multiple of 64 KiB up to 2 MiB, with the GUID footer table at its end
/// (every byte of the file is measured, whatever its size). The development ROM is measured
/// with a warning: the host gives it its master secret.
pub fn check_rom(path: &Path, rom: &[u8]) -> Result<()> {
    if rom.is_empty() || !rom.len().is_multiple_of(ROM_GRANULE) || rom.len() > ROM_MAX {
        bail!(
            "{}: {} bytes; a veilboot ROM is a multiple of 64 KiB up to 2 MiB (target/veilboot.fd)",
            path.display(),
            rom.len()
        );
    }
    veil_agent::snp::ovmf::footer_entries(rom)
        .map_err(|e| anyhow::anyhow!("{}: not a veilboot ROM: {e}", path.display()))?;
    if rom.windows(DEV_KEY_MARKER.len()).any(|w| w == DEV_KEY_MARKER) {
        eprintln!(
            "veil: warning: {} is the development ROM (insecure-dev-key): it takes the master secret from the host; measure the release ROM for a real cluster",
            path.display()
        );
    }
    Ok(())
}

/// The warning only the development ROM carries (kernel/src/boot/keysource.rs; the release ROM is
/// checked free of it by `cargo xtask test`).
const DEV_KEY_MARKER: &[u8] = b"INSECURE DEVELOPMENT KEY SOURCE";

/// Write `text` to --out (never over a file without --force).
fn write_out(args: &MeasureArgs, text: &str) -> Result<()> {
    match &args.out {
        Some(path) => crate::outfile::write(path, args.force, crate::outfile::Access::Public, text.as_bytes()),
        None => Ok(()),
    }
}

/// The seal policy for predicted PCRs.
/// (PCR 15 is zero when the firmware unseals: the clusterID follows).
pub fn seal_policy(pcrs: &BTreeMap<u32, Vec<u8>>) -> Result<[u8; 32]> {
    let pcrs: Vec<(u32, Vec<u8>)> = pcrs.iter().map(|(p, v)| (*p, v.clone())).collect();
    measure::seal_policy(&pcrs).map_err(anyhow::Error::msg)
}

fn parse_hex_u64(s: &str) -> Result<u64, String> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    u64::from_str_radix(digits, 16).map_err(|e| format!("{s:?} is not a hexadecimal number: {e}"))
}

/// `--platform snp`: the launch digest, and with --out a reference-values file.
fn run_snp(args: &MeasureArgs) -> Result<()> {
    use veil_agent::snp::hashes::KernelHashes;
    use veil_agent::snp::launch::{self, Launch};
    let rom = std::fs::read(&args.rom).with_context(|| format!("reading {}", args.rom.display()))?;
    if args.image.is_some() {
        crate::usage_bail!(
            "--platform snp measures the ROM and a direct boot's --kernel/--initrd/--append; --image is not part of the launch digest (the disk is bound by init-data: HOST_DATA)"
        );
    }
    let vcpu_signature = match args.vcpu_sig {
        Some(sig) => u32::try_from(sig).map_err(|_| crate::cli_error::usage("--vcpu-sig is a 32-bit value"))?,
        None => launch::vcpu_signature(&args.vcpu_type).ok_or_else(|| {
            crate::cli_error::usage(format!("unknown --vcpu-type {:?}: use EPYC(-v1..v4), EPYC-Rome, EPYC-Milan, EPYC-Genoa, EPYC-Turin (or --vcpu-sig)", args.vcpu_type))
        })?,
    };
    let kernel_hashes = match &args.kernel {
        Some(k) => {
            let kernel = std::fs::read(k).with_context(|| format!("reading {}", k.display()))?;
            let initrd = match &args.initrd {
                Some(i) => std::fs::read(i).with_context(|| format!("reading {}", i.display()))?,
                None => Vec::new(),
            };
            Some(KernelHashes::of(&kernel, &initrd, args.append.as_deref().unwrap_or("").as_bytes()))
        }
        None => None,
    };
    let launch = Launch {
        rom: &rom,
        rom_digest: None,
        vcpus: args.vcpus,
        vcpu_signature,
        guest_features: args.guest_features,
        kernel_hashes,
    };
    let digest = hex::encode(launch::digest(&launch).with_context(|| args.rom.display().to_string())?);
    let doc = serde_json::json!({
        "platform": "snp",
        "launch_measurement": digest,
        "vcpus": args.vcpus,
        "vcpu_signature": format!("{vcpu_signature:#x}"),
        "guest_features": format!("{:#x}", args.guest_features),
        "kernel_hashes": kernel_hashes.is_some(),
    });
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    write_out(args, &text)?;
    if args.json {
        print!("{text}");
    } else {
        println!("{digest}");
    }
    Ok(())
}

/// `--platform tdx`: RTMR1 and RTMR2 after the boot target (a disk's, or -kernel, -append and
/// -initrd) and the separators, as the firmware extends them (agent::tdx::measure's mapping of
/// the same plan the TPM path uses).
fn run_tdx(args: &MeasureArgs) -> Result<()> {
    let mut plan: Vec<Measurement<'static>> = Vec::new();
    match (&args.image, &args.kernel) {
        (Some(image), None) => {
            let (_, token) = predict(&args.rom, image)?;
            plan.extend(measure::boot_target(&token.manifest));
        }
        (None, Some(k)) => {
            let kernel = std::fs::read(k).with_context(|| format!("reading {}", k.display()))?;
            let initrd = match &args.initrd {
                Some(i) => std::fs::read(i).with_context(|| format!("reading {}", i.display()))?,
                None => Vec::new(),
            };
            plan.push(measure::kernel(&veil_agent::bundle::sha384_hex(&kernel)));
            plan.push(measure::cmdline(args.append.as_deref().unwrap_or("")));
            plan.push(measure::initrd(&veil_agent::bundle::sha384_hex(&initrd)));
        }
        (Some(_), Some(_)) => crate::usage_bail!("--platform tdx measures --image or --kernel, not both"),
        (None, None) => crate::usage_bail!("--platform tdx needs --image, or --kernel with --append (and --initrd)"),
    }
    // RTMR0: the TD HOB, then the fw_cfg inputs in the order the firmware reads them.
    let config = match (&args.td_hob, &args.vmm_config) {
        (Some(hob), Some(dir)) => Some(vmm_config(hob, dir)?),
        _ => None,
    };
    let mut full: Vec<Measurement<'_>> = Vec::new();
    if let Some(config) = &config {
        full.extend(config.iter().map(|(name, bytes)| measure::config(name, bytes)));
    }
    full.extend(plan);
    full.extend(measure::separators());
    let rtmr = veil_agent::tdx::measure::predict(&full);
    let rom = std::fs::read(&args.rom).with_context(|| format!("reading {}", args.rom.display()))?;
    use veil_agent::tdx::tdvf;
    let order = match args.page_order {
        PageOrder::Interleaved => tdvf::PageOrder::Interleaved,
        PageOrder::AddsFirst => tdvf::PageOrder::AddsFirst,
    };
    let mrtd = tdvf::mrtd(&rom, order).map_err(|e| anyhow::anyhow!("{}: {e}", args.rom.display()))?;
    let mut doc = serde_json::json!({
        "platform": "tdx",
        "mrtd": hex::encode(mrtd),
        "rtmr1": hex::encode(rtmr[1]),
        "rtmr2": hex::encode(rtmr[2]),
        "rtmr3": hex::encode(rtmr[3]),
    });
    match &config {
        Some(_) => doc["rtmr0"] = serde_json::json!(hex::encode(rtmr[0])),
        None => doc["not_predicted"] = serde_json::json!("RTMR0 (TD HOB, ACPI and fw_cfg inputs of the VMM)"),
    }
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    write_out(args, &text)?;
    if config.is_none() {
        eprintln!(
            "veil: RTMR0 not predicted: it measures the VMM's configuration (TD HOB, e820, ACPI tables); \
             give --td-hob and --vmm-config, or take it from a reference boot's event log (veil verify --platform tdx)"
        );
    }
    if args.json {
        print!("{text}");
        return Ok(());
    }
    println!("MRTD {}", hex::encode(mrtd));
    if config.is_some() {
        println!("RTMR0 {}", hex::encode(rtmr[0]));
    }
    for (i, r) in rtmr.iter().enumerate().skip(1) {
        println!("RTMR{i} {}", hex::encode(r));
    }
    Ok(())
}

/// The inputs the firmware measures into RTMR0 on TDX, in its order: the TD HOB, etc/e820,
/// etc/table-loader, then each blob the loader allocates, in command order.
fn vmm_config(hob: &Path, dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let read = |name: &str| -> Result<Vec<u8>> {
        let path = dir.join(name);
        std::fs::read(&path).with_context(|| format!("--vmm-config: reading {} (fw_cfg {name})", path.display()))
    };
    // The firmware measures the whole TD HOB page of the TDVF metadata (4 KiB, zero after the
    // HOB list).
    let mut page = std::fs::read(hob).with_context(|| format!("reading {}", hob.display()))?;
    if page.len() > 4096 {
        bail!("{}: {} bytes; the TD HOB page is 4096", hob.display(), page.len());
    }
    page.resize(4096, 0);
    let mut inputs = vec![("td-hob".to_string(), page)];
    inputs.push(("etc/e820".to_string(), read("etc/e820")?));
    let loader = read("etc/table-loader")?;
    let commands = veil_agent::acpi_loader::parse(&loader).context("--vmm-config: etc/table-loader")?;
    inputs.push(("etc/table-loader".to_string(), loader));
    for c in commands {
        if let veil_agent::acpi_loader::Command::Allocate { file, .. } = c {
            let bytes = read(&file)?;
            inputs.push((file, bytes));
        }
    }
    Ok(inputs)
}

pub fn run(args: MeasureArgs) -> Result<()> {
    if let Platform::Snp = args.platform {
        return run_snp(&args);
    }
    if let Platform::Tdx = args.platform {
        return run_tdx(&args);
    }
    if let Some(path) = &args.out {
        crate::outfile::check_free(path, args.force, "--force")?;
    }
    let image = args.image.as_ref().context("--platform tpm needs --image")?;
    let (mut pcrs, token) = predict(&args.rom, image)?;
    if let Some(dir) = &args.trustee_dir {
        let mut at_attestation = pcrs.clone();
        at_attestation.insert(15, vec![0u8; 32]);
        let ak = match &args.ak {
            Some(path) => Some(
                crate::tpm::spki_from_pem(
                    &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
                )
                .with_context(|| format!("{}", path.display()))?,
            ),
            None => None,
        };
        crate::trustee::write(dir, &at_attestation, ak.as_deref(), &args.resource)?;
        eprintln!("veil measure: Trustee KBS material in {} (load it with kbs-admin.sh)", dir.display());
    }
    let mut pcr15 = vec![0u8; 32];
    if let Some(path) = &args.after_unseal {
        let secret = crate::secret::load(path)?;
        let id = secret.cluster_id(&token.measurement_salt);
        pcr15 = measure::predict(&[measure::cluster_id(&id.0)], Bank::Sha256)[&15].clone();
    }
    pcrs.insert(15, pcr15);

    let mut doc = serde_json::Map::new();
    for (p, v) in &pcrs {
        doc.insert(p.to_string(), serde_json::json!({"expected": hex::encode(v), "warnOnly": false}));
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(doc))? + "\n";
    write_out(&args, &text)?;
    if args.out.is_none() || args.json {
        print!("{text}");
    }
    if args.policy {
        eprintln!("seal policy (PolicyPCR sha256:{:?}): {}", measure::SEAL_PCRS, hex::encode(seal_policy(&pcrs)?));
    }
    Ok(())
}
