//! The root-of-trust seam: what measures the boot, proves it to a key broker and seals the
//! master secret, behind one trait for the three the firmware knows:
//!
//! | | measures | evidence | seals |
//! |---|---|---|---|
//! | TPM (plain VM, crate::platform::tpm) | PCRs + TCG2 event log | TPM quote | `veil-tpm2` (PolicyPCR) |
//! | AMD-SP (SEV-SNP) | nothing at run time: the launch digest covers the firmware, HOST_DATA the boot target | attestation report | `veil-snp` (derived key) |
//! | TDX module | RTMRs + CC event log | TD quote | nothing: always the broker |
//!
//! crate::boot::keysource (where the master secret comes from) and the pipeline's measurement
//! stages use this trait only: they never ask which platform they run on. The logic behind each
//! implementation (event logs, tokens, evidence formats) is agent's and host-tested there.
//! [`release_with_evidence`] is the broker exchange the SEV-SNP and TDX roots share (the TPM's
//! runs through agent's TPM client); the relay it talks over is crate::devices::relay.

use alloc::string::String;
use alloc::vec::Vec;

use veil_agent::json::Value;
use veil_agent::kbs::client::Relay;
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::VolumeKey;
use veil_agent::tpm::measure::Measurement;
use zeroize::Zeroizing;

use crate::devices::virtio::Disk;
use crate::devices::volume::BootVolume;
use crate::error::BootError;

/// A sealed token ready for the `veil-boot` header.
pub struct Sealed {
    /// The token's JSON.
    pub token: Value,
    /// The numbers of the tokens it replaces (this root's older ones).
    pub replaces: Vec<u32>,
    /// How it was sealed, for the log ("to SHA-256 PCRs ...").
    pub how: String,
}

/// A secret a sealed token gave, and whether the token must be sealed again (SEV-SNP: a token
/// of an older TCB than the committed one, or of the format without the TCB).
pub struct Unsealed {
    /// The secret.
    pub secret: MasterSecret,
    /// The token must be sealed again.
    pub stale: bool,
}

/// Why each sealed token of a header did not open: (token, reason).
pub type Unopened = Vec<(String, BootError)>;

/// The TPM, the AMD-SP or the TDX module, as the boot uses it.
pub trait RootOfTrust {
    /// Its name in logs ("tpm", "snp", "tdx").
    fn name(&self) -> &'static str;
    /// Does it keep run-time measurements (registers and an event log)?
    fn measures(&self) -> bool;
    /// Extend `m` into its registers and record it in its event log; nothing where the launch
    /// digest covers the boot (SEV-SNP).
    fn measure(&mut self, m: &Measurement<'_>) -> Result<(), BootError>;
    /// The launch's host-provided binding register by name (SEV-SNP HOST_DATA, TDX
    /// MRCONFIGID), or None where the launch has none (TPM).
    fn launch_host_data(&mut self) -> Result<Option<(&'static str, Vec<u8>)>, BootError> {
        Ok(None)
    }
    /// What the broker verifies, for the log ("TPM quote", "snp evidence").
    fn evidence_name(&self) -> &'static str;
    /// Fetch `resource` from the key broker behind `relay`, attesting with this root's
    /// evidence over what it measured so far; `init_data` is sent for the broker to check.
    fn remote_release(
        &mut self,
        relay: &mut dyn Relay,
        resource: &str,
        init_data: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>, BootError>;
    /// Open this root's sealed tokens in the boot volume's header: Ok(None) when there is
    /// none (a first boot, or no sealing at all), else the secret or every token's reason.
    fn unseal(&mut self, boot: &BootVolume) -> Result<Option<Unsealed>, Unopened>;
    /// Seal `secret` for later boots of this launch: the token (replacing this root's older
    /// ones), or None where this root cannot seal.
    fn seal(&mut self, boot: &BootVolume, secret: &MasterSecret) -> Result<Option<Sealed>, BootError>;
    /// The boot volume's key from a token the OS's own tools made (systemd-cryptenroll's
    /// `systemd-tpm2`), if this root opens one.
    fn volume_key(&mut self, _disk: &mut Disk, _boot: &BootVolume) -> Option<VolumeKey> {
        None
    }
    /// The hand-off: the event log into the ACPI table Linux reads it from, the device given
    /// back to the OS.
    fn publish(&mut self, acpi: Option<&crate::devices::acpi::Tables>) -> Result<(), BootError>;
}

/// Fetch `resource` from the broker behind `relay`, attesting as `tee` with the platform's own
/// evidence (`evidence(report_data)`: SEV-SNP reports, TDX quotes), `init_data` sent for the
/// broker to check; each protocol phase gets a timeline mark.
pub fn release_with_evidence(
    tee: veil_agent::kbs::evidence::Tee,
    init_data: Option<&str>,
    relay: &mut dyn Relay,
    resource: &str,
    evidence: &mut dyn FnMut(&[u8]) -> Result<Value, crate::error::BootError>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, crate::error::BootError> {
    use veil_agent::kbs::client;
    crate::arch::tsc::mark("kbs-auth");
    let mut phases = client::Phases::default();
    let mut random = |b: &mut [u8]| crate::arch::random::fill(b);
    let mut evidence =
        |report_data: &[u8]| evidence(report_data).map_err(|e| client::KbsError::Evidence(alloc::format!("{e}")));
    let r = client::remote_release_with_evidence(
        tee,
        init_data,
        relay,
        resource,
        &mut random,
        &crate::arch::cpu::rdtsc,
        &mut phases,
        &mut evidence,
    );
    for (at, stage) in
        [(phases.challenge, "kbs-report"), (phases.quote, "kbs-attest"), (phases.attested, "kbs-resource")]
    {
        if at != 0 {
            crate::arch::tsc::mark_at(at, stage);
        }
    }
    Ok(r?)
}
