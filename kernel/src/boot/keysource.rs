//! Where the master secret comes from: one flow for every root of trust
//! (crate::platform::rot), in this order:
//! 1. the launch binding: the boot volume must have its `veil-bundle` token with the
//!    init-data naming its manifest (else it is refused before anything is unsealed or asked
//!    for), and where the launch carries the init-data's digest (SEV-SNP HOST_DATA, TDX
//!    MRCONFIGID) the two must match;
//! 2. local unseal: the root of trust's token in the `veil-boot` header (`veil-tpm2` through
//!    a PolicyPCR session over this boot's PCRs; `veil-snp` with the key the AMD-SP derives
//!    for this launch; TDX has none);
//! 3. else a key broker (Trustee KBS protocol) behind the host relay on virtio-console,
//!    attesting with the root of trust's evidence: remote release;
//! 4. else, in ROMs built with `insecure-dev-key` only and never on a confidential platform:
//!    fw_cfg `opt/veil/dev-master-secret` (development and tests);
//!
//! then the secret from 3 or 4, or from a stale token of 2 (SEV-SNP: sealed at an older TCB
//! than the committed one, or without the TCB), once it has opened `veil-boot` and the bundle
//! manifest's MAC verified (a relay can forge a broker reply: the JWE does not authenticate its
//! sender), is sealed for the next boot where the root of trust can seal. A secret that does
//! not open the volume leaves the header as it was. An image built `--never-seal` skips 2 and
//! the sealing: every boot asks the broker.
//!
//! When a sealed token exists but does not unseal (different PCRs: a new kernel, a tampered
//! bundle), the firmware asks the broker; if the broker refuses too, or none is configured, it
//! stops: it never boots with a key it did not obtain through attestation.

use alloc::string::String;

use veil_agent::kbs::client;
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::format::HeaderWriter;
use zeroize::Zeroizing;

use crate::devices::fwcfg::FwCfg;
use crate::devices::relay::Console;
use crate::devices::virtio::Disk;
use crate::devices::volume::BootVolume;
use crate::error::{At, BootError, BootErrorKind};
use crate::platform::Platform;
use crate::platform::rot::{RootOfTrust, Unopened};

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
/// MRCONFIGID). A volume without the `veil-bundle` token or its init-data is refused: with a
/// root of trust its boot target could be bound, so it must be (fail closed).
fn launch_binding(rot: &mut dyn RootOfTrust, boot: &BootVolume) -> Result<String, BootError> {
    use veil_agent::initdata;
    let Some(token) = &boot.token else {
        return Err(BootErrorKind::UnboundBootVolume("it has no veil-bundle token").into());
    };
    let Some(doc) = &token.init_data else {
        return Err(BootErrorKind::UnboundBootVolume("its veil-bundle token carries no init-data").into());
    };
    veil_agent::bundle::check_init_data(&token.manifest, doc).map_err(BootErrorKind::LaunchBinding)?;
    let Some((register, value)) = rot.launch_host_data()? else { return Ok(doc.clone()) };
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
    Ok(doc.clone())
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
    let start = crate::arch::cpu::rdtsc();
    let bytes = rot.remote_release(relay, client::DEFAULT_RESOURCE, init_data).at("remote key release")?;
    let secret = MasterSecret::parse(&bytes).at("remote key release: the released resource")?;
    let us = crate::arch::tsc::micros(crate::arch::cpu::rdtsc()) - crate::arch::tsc::micros(start);
    crate::log!(
        "kbs: the broker verified the {} and released the master secret ({} bytes, JWE to this boot's ephemeral key) in {us} us",
        rot.evidence_name(),
        bytes.len()
    );
    Ok(secret)
}

/// Is the boot volume's image built never to seal locally (`veil image build --never-seal`)?
/// Read from the manifest in the clear header: before the secret is obtained that copy is
/// unverified, but the manifest's MAC covers it and is verified before anything is sealed
/// (a host that clears it gets a manifest that does not verify), and a host that sets it only
/// sends the boot to the broker.
fn never_seals(boot: &BootVolume) -> bool {
    boot.token.as_ref().and_then(|t| t.manifest.bound.as_ref()).is_some_and(|b| b.never_seal)
}

/// Seal `secret` with `rot` into the boot volume's header, replacing `rot`'s older tokens;
/// nothing where `rot` cannot seal, or where the image never seals (every boot asks the
/// broker).
pub fn seal(
    rot: &mut dyn RootOfTrust,
    disk: &mut Disk,
    boot: &mut BootVolume,
    secret: &MasterSecret,
) -> Result<(), BootError> {
    if never_seals(boot) {
        crate::log!("the image is built --never-seal: nothing sealed, the next boot asks the broker");
        return Ok(());
    }
    let Some(sealed) = rot.seal(boot, secret)? else { return Ok(()) };
    let mut writer = HeaderWriter::edit(&boot.volume).at("veil-boot")?;
    for old in sealed.replaces {
        writer.remove_token(old).at("veil-boot")?;
    }
    let number = writer.add_token(sealed.token, &[], None).at("veil-boot")?;
    let mut rng = |buf: &mut [u8]| crate::arch::random::fill(buf);
    let writes = writer.commit(&mut rng).at("veil-boot")?;
    crate::devices::volume::write_header(disk, boot, &writes)?;
    crate::log!("{}: sealed the master secret {} in veil-boot token {number}", rot.name(), sealed.how);
    Ok(())
}

/// Where a master secret came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Source {
    /// The root of trust's sealed token: nothing to seal again.
    Sealed,
    /// The root of trust's sealed token, to be sealed again (SEV-SNP: an older TCB than the
    /// committed one, or the format without the TCB).
    SealedStale,
    /// The key broker, through the (untrusted) relay.
    Broker,
    /// fw_cfg, in development ROMs.
    Development,
}

impl Source {
    /// For messages.
    pub fn describe(self) -> &'static str {
        match self {
            Source::Sealed | Source::SealedStale => "the sealed token",
            Source::Broker => "the key broker (through the host's relay)",
            Source::Development => "the development source (fw_cfg)",
        }
    }
}

/// A master secret and where it came from.
pub struct Obtained {
    /// The secret.
    pub secret: MasterSecret,
    /// Its source.
    pub source: Source,
}

impl Obtained {
    /// Seal the secret for later boots when it came from outside (the broker, the development
    /// source) or from a stale token. Call only once it has opened `veil-boot` and its manifest MAC verified: a
    /// secret a relay forged must leave the header untouched.
    pub fn seal_if_new(
        &self,
        plat: &mut dyn Platform,
        disk: &mut Disk,
        boot: &mut BootVolume,
    ) -> Result<(), BootError> {
        if self.source == Source::Sealed {
            return Ok(());
        }
        let Some(rot) = plat.root_of_trust() else { return Ok(()) };
        crate::arch::tsc::mark("seal");
        seal(rot, disk, boot, &self.secret)
    }
}

/// The refusal when no source gave the secret: every sealed token's reason, if any.
fn none_found(sealed_failure: Option<Unopened>) -> Result<Option<Obtained>, BootError> {
    match sealed_failure {
        Some(tokens) => Err(BootErrorKind::SealedSecretUnopened { tokens, broker: None }.into()),
        None => Ok(None),
    }
}

/// The master secret for the boot volume (`boot`, when there is one), if some source provides
/// it (see the module documentation for the order). Nothing is written here: the caller checks
/// the secret against `veil-boot`, then seals it (Obtained::seal_if_new).
pub fn master_secret(
    cfg: &FwCfg,
    plat: &mut dyn Platform,
    boot: Option<&BootVolume>,
    relay: Option<&mut Console>,
) -> Result<Option<Obtained>, BootError> {
    let confidential = plat.is_confidential();
    if confidential && dev_secret_offered(cfg) {
        return Err(BootErrorKind::DevKeyRefused(plat.name()).into());
    }
    // The secret exists for the boot volume: without one (a direct boot) nothing asks for it.
    let Some(boot) = boot else { return Ok(None) };
    let development = |cfg: &FwCfg| -> Result<Option<Obtained>, BootError> {
        Ok(dev_secret(cfg)?.map(|secret| Obtained { secret, source: Source::Development }))
    };
    let Some(rot) = plat.root_of_trust() else { return development(cfg) };
    let init_data = launch_binding(rot, boot)?;
    let unsealed = if never_seals(boot) {
        crate::log!("the image is built --never-seal: no local unseal, the broker is asked");
        Ok(None)
    } else {
        rot.unseal(boot)
    };
    let sealed_failure = match unsealed {
        Ok(Some(u)) => {
            let source = if u.stale { Source::SealedStale } else { Source::Sealed };
            return Ok(Some(Obtained { secret: u.secret, source }));
        }
        Ok(None) => None,
        Err(why) => Some(why),
    };
    if let Some(relay) = relay {
        let secret = remote_release(rot, relay, Some(&init_data)).map_err(|e| match sealed_failure {
            Some(tokens) => BootErrorKind::SealedSecretUnopened { tokens, broker: Some(e) },
            None => BootErrorKind::BrokerRefused(e),
        })?;
        return Ok(Some(Obtained { secret, source: Source::Broker }));
    }
    match if confidential { None } else { development(cfg)? } {
        Some(obtained) => Ok(Some(obtained)),
        None => none_found(sealed_failure),
    }
}
