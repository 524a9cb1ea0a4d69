//! `veil seal --platform tpm`: seal the master secret for a VM's TPM without access to it.
//! From the public key of the TPM's storage primary key (systemd's ECC template; get it with
//! `tpm2_createprimary ... -c srk.ctx && tpm2_readpublic -c srk.ctx -o srk.pub`) and the PCR
//! values the ROM will measure booting the image (as `veil measure` predicts them), build a
//! TPM2_Import blob and store it as the `veil-tpm2` token of the image's veil-boot header
//! (replacing any). On boot the firmware imports it, unseals it through a PolicyPCR session,
//! and needs no key source at all.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::format::HeaderWriter;
use veil_agent::luks2::{KdfLimits, Luks2ErrorKind, Volume};
use veil_agent::tpm::{duplicate, measure, token};

use crate::measure::Platform;
use crate::volfile::{self, VolumeFile};

/// Refuse unless `secret`'s disk key for the volume opens one of its keyslots.
pub fn check_opens(secret: &MasterSecret, volume: &Volume, vf: &mut VolumeFile, secret_path: &Path) -> Result<()> {
    let key = secret.disk_key(volume.uuid())?;
    match volume.unlock(vf, key.as_ref(), &KdfLimits::default()) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), Luks2ErrorKind::WrongPassphrase) => bail!(
            "{} does not open {} (its disk key opens no keyslot): it is not this disk's master secret; nothing was written",
            crate::secret::display_name(secret_path),
            vf.name
        ),
        Err(e) => Err(anyhow::Error::new(e).context(vf.name.clone())),
    }
}

#[derive(Args)]
pub struct SealArgs {
    /// The platform whose sealing to use.
    #[arg(long, value_enum)]
    platform: Platform,
    /// TPM2B_PUBLIC of the TPM's storage primary key (ECC P-256, systemd's template).
    #[arg(long, value_name = "FILE")]
    parent_public: PathBuf,
    /// The master secret to seal: the one the disk was built with (checked: it must open
    /// veil-boot).
    #[arg(long)]
    secret: PathBuf,
    /// The firmware ROM the VM boots (its measurement is part of the policy).
    #[arg(long)]
    rom: PathBuf,
    /// The disk image whose veil-boot header receives the token (changed in place).
    #[arg(long)]
    image: PathBuf,
    /// Print {"token": N, "pcrs": [...], "policy": HEX} instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub fn run(args: SealArgs) -> Result<()> {
    if let Platform::Snp | Platform::Tdx = args.platform {
        crate::usage_bail!(
            "--platform tpm only: an SNP sealing key is derived inside the guest by the AMD-SP (MSG_KEY_REQ), so it cannot be sealed to offline, and TDX has no sealing key"
        );
    }
    let secret = crate::secret::load(&args.secret)?;
    let public =
        std::fs::read(&args.parent_public).with_context(|| format!("reading {}", args.parent_public.display()))?;
    let parent = duplicate::p256_point(&public)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{}", args.parent_public.display()))?;
    let (pcrs, bundle) = crate::measure::predict(&args.rom, &args.image)?;
    // The firmware never unseals on an image built --never-seal (every boot asks the broker):
    // a token sealed here would never be used.
    if bundle.manifest.bound.as_ref().is_some_and(|b| b.never_seal) {
        anyhow::bail!(
            "{} was built --never-seal: its firmware asks the key broker on every boot and opens no sealed token; nothing was written",
            args.image.display()
        );
    }
    let policy = crate::measure::seal_policy(&pcrs)?;

    let mut vf = volfile::open(&args.image, Some("veil-boot"), true)?;
    let volume = vf.load()?;
    // The secret sealed must be the one that opens this disk: sealing another would replace a
    // working token with one whose secret opens nothing, and the next boot would stop.
    check_opens(&secret, &volume, &mut vf, &args.secret)?;
    // Bound to this volume and bundle, as the firmware seals (agent::tpm::token::binding).
    let binding = token::binding(volume.uuid(), &veil_agent::bundle::manifest_sha384(&bundle.manifest));
    let blob = duplicate::seal_for_import(
        parent,
        &policy,
        &token::seal_payload_bound(&secret, &binding),
        &mut crate::luks::host_random,
    )
    .map_err(anyhow::Error::msg)?;
    let mut writer = HeaderWriter::edit(&volume)?;
    for old in token::find(volume.json()).into_iter().flatten() {
        writer.remove_token(old.number)?;
    }
    let n = writer.add_token(
        token::token_json(&measure::SEAL_PCRS, &policy, &blob.as_sealed(), Some(&blob.seed)),
        &[],
        None,
    )?;
    vf.write(writer.commit(&mut crate::luks::host_random)?)?;
    if args.json {
        println!("{}", serde_json::json!({"token": n, "pcrs": measure::SEAL_PCRS, "policy": hex::encode(policy)}));
    } else {
        println!(
            "sealed to SHA-256 PCRs {:?} (policy {}) in veil-boot token {n} of {}",
            measure::SEAL_PCRS,
            hex::encode(policy),
            args.image.display()
        );
    }
    Ok(())
}
