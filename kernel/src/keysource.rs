//! Where the master secret comes from, in order:
//! 1. the TPM: a `veil-tpm2` token in the `veil-boot` header, unsealed through a PolicyPCR
//!    session over the PCRs measured this boot (local unseal, no network); on SEV-SNP, a
//!    `veil-snp` token opened with the key the AMD-SP derives for this launch;
//! 2. a key broker (Trustee KBS protocol) behind the host relay on virtio-console, when there
//!    is one and a TPM (or the SNP platform's reports) to attest with: remote release. The
//!    secret is then sealed (to this boot's PCRs, or with this launch's SNP key) into the
//!    header, so the next boot needs no broker;
//! 3. in ROMs built with `insecure-dev-key` only, on the plain platform only: fw_cfg
//!    `opt/veil/dev-master-secret` (development and tests). With a TPM present, the secret
//!    is then sealed to this boot's PCRs and stored as a `veil-tpm2` token, so the next boot
//!    unseals it locally.
//!
//! When a sealed token exists but does not unseal (different PCRs: a new kernel, a tampered
//! bundle), the firmware asks the broker; if the broker refuses too, or none is configured, it stops: it never boots with a key
//! it did not obtain through attestation.

use alloc::string::String;
use alloc::vec::Vec;

use veil_agent::kbs::client;
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::format::HeaderWriter;
use veil_agent::tpm::{measure, token};
use zeroize::Zeroizing;

use crate::diskboot::BootVolume;
use crate::error::{At, BootError, BootErrorKind};
use crate::fwcfg::FwCfg;
use crate::platform::{Kind, Platform};
use crate::tpm::MeasuredBoot;
use crate::virtio::{Console, Disk};

const DEV_SECRET: &str = "opt/veil/dev-master-secret";

/// Does fw_cfg offer the development secret (whether or not this ROM accepts it)?
pub fn dev_secret_offered(cfg: &FwCfg) -> bool {
    cfg.find(DEV_SECRET).is_some()
}

/// The development secret, if this build and platform accept it.
fn dev_secret(cfg: &FwCfg, kind: Kind) -> Result<Option<MasterSecret>, BootError> {
    if !dev_secret_offered(cfg) {
        return Ok(None);
    }
    if !cfg!(feature = "insecure-dev-key") {
        crate::log!("fw_cfg offers {DEV_SECRET}, but this ROM is not built with insecure-dev-key: ignored");
        return Ok(None);
    }
    if kind != Kind::Plain {
        return Err(BootErrorKind::DevKeyRefused(kind.name()).into());
    }
    crate::log!(
        "WARNING: INSECURE DEVELOPMENT KEY SOURCE: THE MASTER SECRET CAME FROM THE HOST (FW_CFG {DEV_SECRET}). THIS ROM MUST NEVER BOOT A REAL CLUSTER."
    );
    let bytes = Zeroizing::new(cfg.read_file(DEV_SECRET, 4096)?.unwrap_or_default());
    MasterSecret::parse(&bytes).map(Some).at(DEV_SECRET)
}

fn hex_pcrs(values: &[(u32, Vec<u8>)]) -> String {
    let parts: Vec<String> = values.iter().map(|(p, v)| alloc::format!("{p}={}", hex::encode(v))).collect();
    parts.join(" ")
}

/// Try every sealed token; Ok(None) when there is none, Err((token, reason) each) when all
/// failed.
fn unseal(tpm: &mut MeasuredBoot, boot: &BootVolume) -> Result<Option<MasterSecret>, Vec<(String, BootError)>> {
    let tokens = token::find(boot.volume.json());
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut why = Vec::new();
    for t in tokens {
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                crate::log!("tpm: veil-boot {e}: ignored");
                why.push((String::from("veil-boot"), BootErrorKind::Token(e).into()));
                continue;
            }
        };
        let start = crate::cpu::rdtsc();
        let unsealed = match &t.import_seed {
            Some(seed) => tpm.unseal_imported(&t.blob, seed, &t.pcrs),
            None => tpm.unseal(&t.blob, veil_agent::tpm::Bank::Sha256, &t.pcrs),
        };
        match unsealed {
            Ok(bytes) => {
                let us = crate::tsc::micros(crate::cpu::rdtsc()) - crate::tsc::micros(start);
                let how = if t.import_seed.is_some() { "imported (sealed offline by veil seal), " } else { "" };
                crate::log!(
                    "tpm: master secret unsealed from veil-boot token {} ({how}PolicyPCR over SHA-256 PCRs {:?}) in {us} us",
                    t.number,
                    t.pcrs
                );
                return token::open_payload(&bytes)
                    .map(Some)
                    .map_err(|e| alloc::vec![(alloc::format!("token {}", t.number), BootErrorKind::Token(e).into())]);
            }
            Err(e) => {
                let measured = tpm.read_pcrs(&t.pcrs).map(|v| hex_pcrs(&v)).unwrap_or_else(|e| alloc::format!("({e})"));
                crate::log!("tpm: veil-boot token {}: unseal failed: {e}", t.number);
                crate::log!("tpm: this boot measured SHA-256 PCRs {measured}");
                why.push((alloc::format!("token {}", t.number), e));
            }
        }
    }
    Err(why)
}

/// Seal `secret` to this boot's PCRs and store it as the `veil-tpm2` token (replacing any).
fn seal_into_header(
    tpm: &mut MeasuredBoot,
    disk: &mut Disk,
    boot: &mut BootVolume,
    secret: &MasterSecret,
) -> Result<u32, BootError> {
    let (blob, policy) = tpm.seal(&token::seal_payload(secret))?;
    let mut writer = HeaderWriter::edit(&boot.volume).at("veil-boot")?;
    for old in token::find(boot.volume.json()).into_iter().flatten() {
        writer.remove_token(old.number).at("veil-boot")?;
    }
    let number =
        writer.add_token(token::token_json(&measure::SEAL_PCRS, &policy, &blob, None), &[], None).at("veil-boot")?;
    let mut rng = |buf: &mut [u8]| crate::random::fill(buf);
    let writes = writer.commit(&mut rng).at("veil-boot")?;
    crate::diskboot::write_header(disk, boot, &writes)?;
    crate::log!(
        "tpm: sealed the master secret to SHA-256 PCRs {:?} (policy {}) in veil-boot token {number}",
        measure::SEAL_PCRS,
        hex::encode(policy)
    );
    Ok(number)
}

/// The master secret from the key broker behind `relay`.
fn remote_release(tpm: &mut MeasuredBoot, relay: &mut Console) -> Result<MasterSecret, BootError> {
    crate::log!(
        "kbs: asking the key broker behind the relay on virtio-console {} for {}",
        relay.location,
        client::DEFAULT_RESOURCE
    );
    let start = crate::cpu::rdtsc();
    let bytes = tpm.remote_release(relay, client::DEFAULT_RESOURCE).at("remote key release")?;
    let secret = MasterSecret::parse(&bytes).at("remote key release: the released resource")?;
    let us = crate::tsc::micros(crate::cpu::rdtsc()) - crate::tsc::micros(start);
    crate::log!(
        "kbs: the broker verified the TPM quote and released the master secret ({} bytes, JWE to this boot's ephemeral key) in {us} us",
        bytes.len()
    );
    Ok(secret)
}

/// Open a `veil-snp` (or later platforms') token with the platform's sealing key; Ok(None)
/// when there is no token.
fn unseal_platform(
    plat: &mut dyn Platform,
    boot: &BootVolume,
) -> Result<Option<MasterSecret>, Vec<(String, BootError)>> {
    use veil_agent::snp::seal;
    let tokens = seal::find(boot.volume.json());
    if tokens.is_empty() {
        return Ok(None);
    }
    let key = match plat.sealing_key() {
        Ok(Some(k)) => k,
        Ok(None) => return Ok(None),
        Err(e) => return Err(alloc::vec![(String::from("the sealing key"), e)]),
    };
    let mut why = Vec::new();
    for t in tokens {
        match t.and_then(|t| t.open(&key).map(|s| (t.number, s)).map_err(|e| alloc::format!("token {}: {e}", t.number)))
        {
            Ok((number, secret)) => {
                crate::log!(
                    "snp: master secret unsealed from veil-boot token {number} with this launch's derived key (VCEK root, measurement and policy)"
                );
                return Ok(Some(secret));
            }
            Err(e) => {
                crate::log!("snp: veil-boot {e}");
                why.push((String::from("veil-snp"), BootErrorKind::Token(e).into()));
            }
        }
    }
    Err(why)
}

/// Seal `secret` with the platform's sealing key into a `veil-snp` token (replacing any).
fn seal_platform(
    plat: &mut dyn Platform,
    disk: &mut Disk,
    boot: &mut BootVolume,
    secret: &MasterSecret,
) -> Result<(), BootError> {
    use veil_agent::snp::seal;
    let Some(key) = plat.sealing_key()? else { return Ok(()) };
    let mut nonce = [0u8; 12];
    crate::random::fill(&mut nonce);
    let mut writer = HeaderWriter::edit(&boot.volume).at("veil-boot")?;
    for old in seal::find(boot.volume.json()).into_iter().flatten() {
        writer.remove_token(old.number).at("veil-boot")?;
    }
    let number = writer.add_token(seal::token_json(&key, nonce, secret), &[], None).at("veil-boot")?;
    let mut rng = |buf: &mut [u8]| crate::random::fill(buf);
    let writes = writer.commit(&mut rng).at("veil-boot")?;
    crate::diskboot::write_header(disk, boot, &writes)?;
    crate::log!(
        "snp: sealed the master secret with this launch's derived key (fields {:#x}, VMPL {}) in veil-boot token {number}",
        seal::KEY_FIELDS,
        seal::KEY_VMPL
    );
    Ok(())
}

/// The master secret from the key broker behind `relay`, attesting with the platform's own
/// evidence (SNP reports).
fn remote_release_platform(
    plat: &mut dyn Platform,
    relay: &mut Console,
    init_data: Option<&str>,
) -> Result<MasterSecret, BootError> {
    let tee = plat.tee().expect("only called for platforms with evidence");
    crate::log!(
        "kbs: asking the key broker behind the relay on virtio-console {} for {} (tee {})",
        relay.location,
        client::DEFAULT_RESOURCE,
        tee.name()
    );
    crate::tsc::mark("kbs-auth");
    let start = crate::cpu::rdtsc();
    let mut phases = client::Phases::default();
    let mut random = |b: &mut [u8]| crate::random::fill(b);
    let mut evidence =
        |report_data: &[u8]| plat.evidence(report_data).map_err(|e| client::KbsError::Evidence(alloc::format!("{e}")));
    let r = client::remote_release_with_evidence(
        tee,
        init_data,
        relay,
        client::DEFAULT_RESOURCE,
        &mut random,
        &crate::cpu::rdtsc,
        &mut phases,
        &mut evidence,
    );
    for (at, stage) in
        [(phases.challenge, "kbs-report"), (phases.quote, "kbs-attest"), (phases.attested, "kbs-resource")]
    {
        if at != 0 {
            crate::tsc::mark_at(at, stage);
        }
    }
    let bytes = r.map_err(BootError::from).at("remote key release")?;
    let secret = MasterSecret::parse(&bytes).at("remote key release: the released resource")?;
    let us = crate::tsc::micros(crate::cpu::rdtsc()) - crate::tsc::micros(start);
    crate::log!(
        "kbs: the broker verified the {} evidence and released the master secret ({} bytes, JWE to this boot's ephemeral key) in {us} us",
        tee.name(),
        bytes.len()
    );
    Ok(secret)
}

/// The boot volume's init-data, checked: it names this volume's manifest, and the launch
/// carries its digest (SEV-SNP HOST_DATA, TDX MRCONFIGID). None when the image has no
/// init-data (made before it existed: the launch is then not bound to the disk, and the log
/// says so).
fn launch_binding(plat: &mut dyn Platform, boot: &BootVolume) -> Result<Option<String>, BootError> {
    use veil_agent::initdata;
    let Some(token) = &boot.token else { return Ok(None) };
    let Some(doc) = &token.init_data else {
        crate::log!("{}: this disk has no init-data: the launch is not bound to its boot target", plat.name());
        return Ok(None);
    };
    let named = initdata::manifest_sha384(doc).map_err(BootErrorKind::LaunchBinding)?;
    if named != veil_agent::bundle::manifest_sha384(&token.manifest) {
        return Err(BootErrorKind::LaunchBinding(String::from(
            "the init-data names another boot manifest than this disk's veil-bundle token",
        ))
        .into());
    }
    let Some((register, value)) = plat.launch_host_data()? else { return Ok(Some(doc.clone())) };
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
        plat.name(),
        hex::encode(&value)
    );
    Ok(Some(doc.clone()))
}

/// The master secret on a platform with evidence of its own (SEV-SNP): its sealed token,
/// else the broker (then sealed), else nothing. The launch's binding to the disk (init-data
/// and HOST_DATA) is checked first either way.
fn platform_secret(
    plat: &mut dyn Platform,
    boot: Option<(&mut Disk, &mut BootVolume)>,
    relay: Option<&mut Console>,
) -> Result<Option<MasterSecret>, BootError> {
    let mut boot = boot;
    let init_data = match boot.as_ref() {
        Some((_, b)) => launch_binding(plat, b)?,
        None => None,
    };
    let mut sealed_failure = None;
    if let Some((_, b)) = boot.as_mut() {
        match unseal_platform(plat, b) {
            Ok(Some(secret)) => return Ok(Some(secret)),
            Ok(None) if plat.name() == "tdx" => {
                crate::log!("tdx: no sealing key on TDX: the master secret comes from the key broker")
            }
            Ok(None) => crate::log!("{}: veil-boot has no veil-snp token (first boot)", plat.name()),
            Err(why) => sealed_failure = Some(why),
        }
    }
    let Some(relay) = relay else {
        return match sealed_failure {
            Some(tokens) => Err(BootErrorKind::SealedSecretUnopened { tokens, broker: None }.into()),
            None => Ok(None),
        };
    };
    let secret = remote_release_platform(plat, relay, init_data.as_deref()).map_err(|e| match sealed_failure {
        Some(tokens) => BootErrorKind::SealedSecretUnopened { tokens, broker: Some(e) },
        None => BootErrorKind::BrokerRefused(e),
    })?;
    if let Some((disk, b)) = boot {
        crate::tsc::mark("seal");
        seal_platform(plat, disk, b, &secret)?;
    }
    Ok(Some(secret))
}

/// The master secret, if some source provides it.
pub fn master_secret(
    cfg: &FwCfg,
    plat: &mut dyn Platform,
    kind: Kind,
    tpm: Option<&mut MeasuredBoot>,
    boot: Option<(&mut Disk, &mut BootVolume)>,
    relay: Option<&mut Console>,
) -> Result<Option<MasterSecret>, BootError> {
    if plat.tee().is_some() {
        if dev_secret_offered(cfg) {
            return Err(BootErrorKind::DevKeyRefused(kind.name()).into());
        }
        return platform_secret(plat, boot, relay);
    }
    let mut tpm = tpm;
    let mut boot = boot;
    let mut sealed_failure = None;
    if let (Some(t), Some((_, b))) = (tpm.as_deref_mut(), boot.as_mut()) {
        match unseal(t, b) {
            Ok(Some(secret)) => return Ok(Some(secret)),
            Ok(None) => crate::log!("tpm: veil-boot has no veil-tpm2 token (first boot)"),
            Err(why) => sealed_failure = Some(why),
        }
    }
    let from_broker = match (tpm.as_deref_mut(), relay) {
        (Some(t), Some(r)) => match remote_release(t, r) {
            Ok(secret) => Some(secret),
            Err(e) => {
                return Err(match sealed_failure {
                    Some(tokens) => BootErrorKind::SealedSecretUnopened { tokens, broker: Some(e) }.into(),
                    None => BootErrorKind::BrokerRefused(e).into(),
                });
            }
        },
        _ => None,
    };
    let secret = match from_broker {
        Some(s) => s,
        None => match dev_secret(cfg, kind)? {
            Some(s) => s,
            None => {
                return match sealed_failure {
                    Some(tokens) => Err(BootErrorKind::SealedSecretUnopened { tokens, broker: None }.into()),
                    None => Ok(None),
                };
            }
        },
    };
    if let (Some(t), Some((disk, b))) = (tpm, boot) {
        crate::tsc::mark("seal");
        seal_into_header(t, disk, b, &secret)?;
    }
    Ok(Some(secret))
}
