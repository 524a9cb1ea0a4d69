//! Where the master secret comes from: one flow for every root of trust
//! (crate::platform::rot), in this order:
//! 1. the launch binding: where the launch carries the digest of the disk's init-data
//!    (SEV-SNP HOST_DATA, TDX MRCONFIGID), it must match the boot volume's init-data, and
//!    that must name the manifest in its `veil-bundle` token;
//! 2. local unseal: the root of trust's token in the `veil-boot` header (`veil-tpm2` through
//!    a PolicyPCR session over this boot's PCRs; `veil-snp` with the key the AMD-SP derives
//!    for this launch; TDX has none);
//! 3. else a key broker (Trustee KBS protocol) behind the host relay on virtio-console,
//!    attesting with the root of trust's evidence: remote release;
//! 4. else, in ROMs built with `insecure-dev-key` only and never on a confidential platform:
//!    fw_cfg `opt/veil/dev-master-secret` (development and tests);
//!
//! then the secret from 3 or 4 is sealed for the next boot, where the root of trust can seal.
//!
//! When a sealed token exists but does not unseal (different PCRs: a new kernel, a tampered
//! bundle), the firmware asks the broker; if the broker refuses too, or none is configured, it
//! stops: it never boots with a key it did not obtain through attestation.

use alloc::string::String;

use veil_agent::kbs::client;
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::format::HeaderWriter;
use zeroize::Zeroizing;

use crate::diskboot::BootVolume;
use crate::error::{At, BootError, BootErrorKind};
use crate::fwcfg::FwCfg;
use crate::platform::Platform;
use crate::platform::rot::{RootOfTrust, Unopened};
use crate::virtio::{Console, Disk};

const DEV_SECRET: &str = "opt/veil/dev-master-secret";

/// Does fw_cfg offer the development secret (whether or not this ROM accepts it)?
pub fn dev_secret_offered(cfg: &FwCfg) -> bool {
    cfg.find(DEV_SECRET).is_some()
}

/// The development secret, if this build accepts it (the caller refuses it on confidential
/// platforms).
fn dev_secret(cfg: &FwCfg) -> Result<Option<MasterSecret>, BootError> {
    if !dev_secret_offered(cfg) {
        return Ok(None);
    }
    if !cfg!(feature = "insecure-dev-key") {
        crate::log!("fw_cfg offers {DEV_SECRET}, but this ROM is not built with insecure-dev-key: ignored");
        return Ok(None);
    }
    crate::log!(
        "WARNING: INSECURE DEVELOPMENT KEY SOURCE: THE MASTER SECRET CAME FROM THE HOST (FW_CFG {DEV_SECRET}). THIS ROM MUST NEVER BOOT A REAL CLUSTER."
    );
    let bytes = Zeroizing::new(cfg.read_file(DEV_SECRET, 4096)?.unwrap_or_default());
    MasterSecret::parse(&bytes).map(Some).at(DEV_SECRET)
}

/// The boot volume's init-data, checked: it names this volume's manifest, and the launch
/// carries its digest where the launch has a register for it (SEV-SNP HOST_DATA, TDX
/// MRCONFIGID). None when the image has no init-data (made before it existed: the launch is
/// then not bound to the disk, and the log says so).
fn launch_binding(rot: &mut dyn RootOfTrust, boot: &BootVolume) -> Result<Option<String>, BootError> {
    use veil_agent::initdata;
    let Some(token) = &boot.token else { return Ok(None) };
    let Some(doc) = &token.init_data else {
        crate::log!("{}: this disk has no init-data: the launch is not bound to its boot target", rot.name());
        return Ok(None);
    };
    let named = initdata::manifest_sha384(doc).map_err(BootErrorKind::LaunchBinding)?;
    if named != veil_agent::bundle::manifest_sha384(&token.manifest) {
        return Err(BootErrorKind::LaunchBinding(String::from(
            "the init-data names another boot manifest than this disk's veil-bundle token",
        ))
        .into());
    }
    let Some((register, value)) = rot.launch_host_data()? else { return Ok(Some(doc.clone())) };
    let want = initdata::regularize(&initdata::digest(doc).map_err(BootErrorKind::LaunchBinding)?, value.len());
    if value[..] != want[..] {
        return Err(BootErrorKind::LaunchBinding(alloc::format!(
            "{register} {} is not the digest {} of this disk's init-data: the launch was made for another boot target",
            hex::encode(&value),
            hex::encode(&want)
        ))
        .into());
    }
    crate::log!(
        "{}: {register} {} is the digest of this disk's init-data (boot target bound)",
        rot.name(),
        hex::encode(&value)
    );
    Ok(Some(doc.clone()))
}

/// The master secret from the key broker behind `relay`, attesting with `rot`'s evidence.
fn remote_release(
    rot: &mut dyn RootOfTrust,
    relay: &mut Console,
    init_data: Option<&str>,
) -> Result<MasterSecret, BootError> {
    crate::log!(
        "kbs: asking the key broker behind the relay on virtio-console {} for {} ({})",
        relay.location,
        client::DEFAULT_RESOURCE,
        rot.evidence_name()
    );
    let start = crate::cpu::rdtsc();
    let bytes = rot.remote_release(relay, client::DEFAULT_RESOURCE, init_data).at("remote key release")?;
    let secret = MasterSecret::parse(&bytes).at("remote key release: the released resource")?;
    let us = crate::tsc::micros(crate::cpu::rdtsc()) - crate::tsc::micros(start);
    crate::log!(
        "kbs: the broker verified the {} and released the master secret ({} bytes, JWE to this boot's ephemeral key) in {us} us",
        rot.evidence_name(),
        bytes.len()
    );
    Ok(secret)
}

/// Seal `secret` with `rot` into the boot volume's header, replacing `rot`'s older tokens;
/// nothing where `rot` cannot seal.
pub fn seal(
    rot: &mut dyn RootOfTrust,
    disk: &mut Disk,
    boot: &mut BootVolume,
    secret: &MasterSecret,
) -> Result<(), BootError> {
    let Some(sealed) = rot.seal(boot, secret)? else { return Ok(()) };
    let mut writer = HeaderWriter::edit(&boot.volume).at("veil-boot")?;
    for old in sealed.replaces {
        writer.remove_token(old).at("veil-boot")?;
    }
    let number = writer.add_token(sealed.token, &[], None).at("veil-boot")?;
    let mut rng = |buf: &mut [u8]| crate::random::fill(buf);
    let writes = writer.commit(&mut rng).at("veil-boot")?;
    crate::diskboot::write_header(disk, boot, &writes)?;
    crate::log!("{}: sealed the master secret {} in veil-boot token {number}", rot.name(), sealed.how);
    Ok(())
}

/// The refusal when no source gave the secret: every sealed token's reason, if any.
fn none_found(sealed_failure: Option<Unopened>) -> Result<Option<MasterSecret>, BootError> {
    match sealed_failure {
        Some(tokens) => Err(BootErrorKind::SealedSecretUnopened { tokens, broker: None }.into()),
        None => Ok(None),
    }
}

/// The master secret, if some source provides it (see the module documentation for the
/// order); with a boot volume, a secret from the broker or the development source is sealed
/// into its header.
pub fn master_secret(
    cfg: &FwCfg,
    plat: &mut dyn Platform,
    boot: Option<(&mut Disk, &mut BootVolume)>,
    relay: Option<&mut Console>,
) -> Result<Option<MasterSecret>, BootError> {
    let confidential = plat.is_confidential();
    if confidential && dev_secret_offered(cfg) {
        return Err(BootErrorKind::DevKeyRefused(plat.name()).into());
    }
    let Some(rot) = plat.root_of_trust() else { return dev_secret(cfg) };
    let init_data = match boot.as_ref() {
        Some((_, b)) => launch_binding(rot, b)?,
        None => None,
    };
    let mut sealed_failure = None;
    if let Some((_, b)) = boot.as_ref() {
        match rot.unseal(b) {
            Ok(Some(secret)) => return Ok(Some(secret)),
            Ok(None) => {}
            Err(why) => sealed_failure = Some(why),
        }
    }
    let secret = match relay {
        Some(relay) => remote_release(rot, relay, init_data.as_deref()).map_err(|e| match sealed_failure {
            Some(tokens) => BootErrorKind::SealedSecretUnopened { tokens, broker: Some(e) },
            None => BootErrorKind::BrokerRefused(e),
        })?,
        None => match if confidential { None } else { dev_secret(cfg)? } {
            Some(secret) => secret,
            None => return none_found(sealed_failure),
        },
    };
    if let Some((disk, b)) = boot {
        crate::tsc::mark("seal");
        seal(rot, disk, b, &secret)?;
    }
    Ok(Some(secret))
}
