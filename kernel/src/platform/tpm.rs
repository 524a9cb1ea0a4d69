//! The plain platform's TPM: the TIS registers at 0xFED40000 (locality 0, polled), driven by
//! veil_agent::tpm::tis, and measured boot on top of it: every measurement is extended into
//! each active PCR bank and recorded in the TCG2 event log that Linux gets through the ACPI
//! TPM2 table. Sealing and unsealing of the master secret live here too, and the TPM's part
//! of remote key release (attestation to a key broker): the plain platform's root of trust
//! (crate::platform::rot).

use alloc::string::String;
use alloc::vec::Vec;

use veil_agent::io::Window;
use veil_agent::kbs::client::{self, Phases, Relay};
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::VolumeKey;
use veil_agent::tpm::Bank;
use veil_agent::tpm::command::{self, SealedBlob, Tpm, Transport, TransportError};
use veil_agent::tpm::eventlog::EventLog;
use veil_agent::tpm::measure::{self, Measurement};
use veil_agent::tpm::tis::{Clock, Tis, TisRegisters};
use veil_agent::tpm::token;
use zeroize::Zeroizing;

use crate::devices::virtio::Disk;
use crate::devices::volume::{BootVolume, LIMITS};
use crate::error::{At, BootError, BootErrorKind};
use crate::platform::rot::{RootOfTrust, Sealed, Unopened, Unsealed};

/// Locality 0 of the TIS interface (PC Client PTP).
const TIS_BASE: u64 = 0xFED4_0000;

/// MMIO access to the TIS page (uncached: the MTRRs make 0xC0000000-4 GiB UC).
struct Mmio;

/// Size of one locality's TIS register page.
const TIS_PAGE: u32 = 0x1000;

/// The address of the `width`-byte register at `offset`. The offset comes through a safe
/// trait from agent's state machine, so it is checked here: inside the page and aligned to
/// the access width, or the firmware stops (a bug, never a device's doing).
fn register(offset: u32, width: u32) -> u64 {
    assert!(
        offset.is_multiple_of(width) && offset <= TIS_PAGE - width,
        "TIS register offset {offset:#x} outside the page"
    );
    TIS_BASE + u64::from(offset)
}

impl TisRegisters for Mmio {
    fn read8(&mut self, offset: u32) -> u8 {
        // SAFETY: `register` keeps the address inside the TIS page, which is identity mapped
        // device memory: the access reaches the TPM and no memory the firmware owns.
        unsafe { core::ptr::read_volatile(register(offset, 1) as *const u8) }
    }
    fn read32(&mut self, offset: u32) -> u32 {
        // SAFETY: as read8; `register` also checked the 4-byte alignment.
        unsafe { core::ptr::read_volatile(register(offset, 4) as *const u32) }
    }
    fn write8(&mut self, offset: u32, value: u8) {
        // SAFETY: as read8; a TIS register write makes the TPM access no memory.
        unsafe { core::ptr::write_volatile(register(offset, 1) as *mut u8, value) }
    }
    fn write32(&mut self, offset: u32, value: u32) {
        // SAFETY: as write8, 4-byte aligned.
        unsafe { core::ptr::write_volatile(register(offset, 4) as *mut u32, value) }
    }
}

struct TscClock;

impl Clock for TscClock {
    fn now_us(&mut self) -> u64 {
        crate::arch::tsc::micros(crate::arch::cpu::rdtsc())
    }
}

struct TisTransport(Tis<Mmio, TscClock>);

impl Transport for TisTransport {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(self.0.transact(command)?)
    }
}

/// Measured boot in progress.
pub struct MeasuredBoot {
    tpm: Tpm<TisTransport>,
    log: EventLog,
    /// Number of extends so far.
    pub extends: usize,
    /// The storage primary key, created on first use and kept loaded until `finish`: seal,
    /// import and every unseal (veil-tpm2 and systemd-tpm2 tokens) share one CreatePrimary.
    primary: Option<u32>,
}

impl MeasuredBoot {
    /// Find the TPM, start it and open the event log. None when there is no TPM.
    pub fn start() -> Result<Option<MeasuredBoot>, BootError> {
        let tis = match Tis::open(Mmio, TscClock) {
            Ok(t) => t,
            Err(veil_agent::tpm::tis::TisError::Absent) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut tis = tis;
        let did_vid = tis.did_vid();
        let mut tpm = Tpm::new(TisTransport(tis));
        let started = tpm.startup_clear()?;
        let banks = tpm.active_banks()?;
        if banks.is_empty() {
            return Err(BootErrorKind::NoKnownPcrBank.into());
        }
        let names: Vec<&str> = banks.iter().map(|b| b.name()).collect();
        crate::log!(
            "tpm: TIS at {TIS_BASE:#x}, vendor {:#06x} device {:#06x}; {}; PCR banks {}",
            did_vid & 0xFFFF,
            did_vid >> 16,
            if started { "started (TPM2_Startup CLEAR)" } else { "already started" },
            names.join(", ")
        );
        Ok(Some(MeasuredBoot { log: EventLog::new(&banks), tpm, extends: 0, primary: None }))
    }

    /// Extend and log one measurement.
    pub fn measure(&mut self, m: &Measurement<'_>) -> Result<(), BootError> {
        let digests = measure::record(&mut self.log, m);
        self.tpm.pcr_extend(m.pcr, &digests)?;
        self.extends += 1;
        Ok(())
    }

    /// Current SHA-256 values of `pcrs`, for messages and sealing.
    pub fn read_pcrs(&mut self, pcrs: &[u32]) -> Result<Vec<(u32, Vec<u8>)>, BootError> {
        self.tpm.pcr_read(Bank::Sha256, pcrs).map_err(BootError::from)
    }

    fn primary(&mut self) -> Result<u32, BootError> {
        if let Some(handle) = self.primary {
            return Ok(handle);
        }
        let handle = self.tpm.create_primary(&command::storage_primary_template())?;
        self.primary = Some(handle);
        Ok(handle)
    }

    /// Seal `secret` to the current values of measure::SEAL_PCRS (PCR 15 still zero: see
    /// measure::seal_policy); returns the blob and the policy digest.
    pub fn seal(&mut self, secret: &[u8]) -> Result<(SealedBlob, [u8; 32]), BootError> {
        let values = self.read_pcrs(&measure::SEAL_PCRS)?;
        let policy = measure::seal_policy(&values).map_err(BootErrorKind::Token)?;
        let primary = self.primary()?;
        let blob = self.tpm.create_sealed(primary, &policy, secret)?;
        Ok((blob, policy))
    }

    /// Import an object `veil seal` made offline for this TPM's storage primary key, then
    /// unseal it like any other.
    pub fn unseal_imported(
        &mut self,
        blob: &SealedBlob,
        seed: &[u8],
        pcrs: &[u32],
    ) -> Result<Zeroizing<Vec<u8>>, BootError> {
        let primary = self.primary()?;
        let private = self.tpm.import(primary, &blob.public, &blob.private, seed)?;
        let loaded = SealedBlob { private, public: blob.public.clone() };
        self.unseal(&loaded, Bank::Sha256, pcrs)
    }

    /// Unseal `blob` (under the storage primary key) through a PolicyPCR session over `pcrs`
    /// of `bank`.
    pub fn unseal(&mut self, blob: &SealedBlob, bank: Bank, pcrs: &[u32]) -> Result<Zeroizing<Vec<u8>>, BootError> {
        let primary = self.primary()?;
        let object = self.tpm.load(primary, blob)?;
        let mut nonce = [0u8; 32];
        crate::arch::random::fill(&mut nonce);
        let out = (|| {
            let session = self.tpm.start_policy_session(&nonce)?;
            let r = self.tpm.policy_pcr(session, bank, pcrs).and_then(|()| self.tpm.unseal(object, session));
            if r.is_err() {
                let _ = self.tpm.flush(session); // a failed Unseal leaves the session open
            }
            r.map_err(BootError::from)
        })();
        let _ = self.tpm.flush(object);
        out
    }

    /// Fetch `resource` from the key broker behind `relay`, attesting with this TPM (the
    /// quote covers the PCRs measured so far). Each protocol phase gets a timeline mark.
    pub fn remote_release(&mut self, relay: &mut dyn Relay, resource: &str) -> Result<Zeroizing<Vec<u8>>, BootError> {
        crate::arch::tsc::mark("kbs-keys");
        let mut phases = Phases::default();
        let mut random = |b: &mut [u8]| crate::arch::random::fill(b);
        let r =
            client::remote_release(&mut self.tpm, relay, resource, &mut random, &crate::arch::cpu::rdtsc, &mut phases);
        if let Some(ak) = phases.ak_description() {
            crate::log!("kbs: attestation key {ak}");
        }
        for (at, stage) in [
            (phases.keys, "kbs-auth"),
            (phases.challenge, "kbs-quote"),
            (phases.quote, "kbs-attest"),
            (phases.attested, "kbs-resource"),
        ] {
            if at != 0 {
                crate::arch::tsc::mark_at(at, stage);
            }
        }
        r.map_err(BootError::from)
    }

    /// Flush the storage primary and give the TPM's locality back for the OS driver;
    /// returns the final event log.
    pub fn finish(&mut self) -> Vec<u8> {
        if let Some(handle) = self.primary.take() {
            let _ = self.tpm.flush(handle);
        }
        self.tpm.transport_mut().0.release_locality();
        self.log.as_bytes().to_vec()
    }
}

fn hex_pcrs(values: &[(u32, Vec<u8>)]) -> String {
    let parts: Vec<String> = values.iter().map(|(p, v)| alloc::format!("{p}={}", hex::encode(v))).collect();
    parts.join(" ")
}

impl RootOfTrust for MeasuredBoot {
    fn name(&self) -> &'static str {
        "tpm"
    }

    fn measures(&self) -> bool {
        true
    }

    fn measure(&mut self, m: &Measurement<'_>) -> Result<(), BootError> {
        MeasuredBoot::measure(self, m)
    }

    fn evidence_name(&self) -> &'static str {
        "TPM quote"
    }

    fn remote_release(
        &mut self,
        relay: &mut dyn Relay,
        resource: &str,
        _init_data: Option<&str>,
    ) -> Result<Zeroizing<Vec<u8>>, BootError> {
        MeasuredBoot::remote_release(self, relay, resource)
    }

    /// Every `veil-tpm2` token, through a PolicyPCR session over the PCRs measured this boot.
    fn unseal(&mut self, boot: &BootVolume) -> Result<Option<Unsealed>, Unopened> {
        let tokens = token::find(boot.volume.json());
        if tokens.is_empty() {
            crate::log!("tpm: veil-boot has no veil-tpm2 token (first boot)");
            return Ok(None);
        }
        let binding = boot.binding().map_err(|e| alloc::vec![(String::from("veil-boot"), e)])?;
        let mut why = Vec::new();
        for t in tokens {
            let t = match t.and_then(|t| t.closes_at_handoff().map(|()| t)) {
                Ok(t) => t,
                Err(e) => {
                    crate::log!("tpm: veil-boot {e}: ignored");
                    why.push((String::from("veil-boot"), BootErrorKind::Token(e).into()));
                    continue;
                }
            };
            let start = crate::arch::cpu::rdtsc();
            let unsealed = match &t.import_seed {
                Some(seed) => self.unseal_imported(&t.blob, seed, &t.pcrs),
                None => MeasuredBoot::unseal(self, &t.blob, Bank::Sha256, &t.pcrs),
            };
            match unsealed {
                Ok(bytes) => {
                    let us = crate::arch::tsc::micros(crate::arch::cpu::rdtsc()) - crate::arch::tsc::micros(start);
                    let how = if t.import_seed.is_some() { "imported (sealed offline by veil seal), " } else { "" };
                    crate::log!(
                        "tpm: master secret unsealed from veil-boot token {} ({how}PolicyPCR over SHA-256 PCRs {:?}) in {us} us",
                        t.number,
                        t.pcrs
                    );
                    let unsealed = token::open_payload_bound(&bytes, &binding);
                    return unsealed.map(|secret| Some(Unsealed { secret, stale: false })).map_err(|e| {
                        alloc::vec![(alloc::format!("token {}", t.number), BootErrorKind::Token(e).into())]
                    });
                }
                Err(e) => {
                    let measured =
                        self.read_pcrs(&t.pcrs).map(|v| hex_pcrs(&v)).unwrap_or_else(|e| alloc::format!("({e})"));
                    crate::log!("tpm: veil-boot token {}: unseal failed: {e}", t.number);
                    crate::log!("tpm: this boot measured SHA-256 PCRs {measured}");
                    why.push((alloc::format!("token {}", t.number), e));
                }
            }
        }
        Err(why)
    }

    /// A `veil-tpm2` token sealed to this boot's values of measure::SEAL_PCRS.
    fn seal(&mut self, boot: &BootVolume, secret: &MasterSecret) -> Result<Option<Sealed>, BootError> {
        let (blob, policy) = MeasuredBoot::seal(self, &token::seal_payload_bound(secret, &boot.binding()?))?;
        Ok(Some(Sealed {
            token: token::token_json(&measure::SEAL_PCRS, &policy, &blob, None),
            replaces: token::find(boot.volume.json()).into_iter().flatten().map(|t| t.number).collect(),
            how: alloc::format!("to SHA-256 PCRs {:?} (policy {})", measure::SEAL_PCRS, hex::encode(policy)),
        }))
    }

    fn volume_key(&mut self, disk: &mut Disk, boot: &BootVolume) -> Option<VolumeKey> {
        systemd_volume_key(self, disk, boot)
    }

    fn publish(&mut self, acpi: Option<&crate::devices::acpi::Tables>) -> Result<(), BootError> {
        let events = self.extends;
        let log_bytes = self.finish();
        match acpi {
            Some(t) => t.write_tpm_log(&log_bytes).at("TPM event log")?,
            None => return Err(BootErrorKind::NoAcpiForLog("TPM event log").into()),
        }
        crate::log!(
            "tpm: event log of {events} measurements ({} bytes) handed to Linux in the ACPI TPM2 log area; locality released",
            log_bytes.len()
        );
        Ok(())
    }
}

/// Open the boot volume through a `systemd-tpm2` token (systemd-cryptenroll): unseal its
/// object under the same storage primary key, base64 it, and open its keyslot with that
/// passphrase. Returns the volume key, or None (with the reasons logged) when no token works.
pub fn systemd_volume_key(tpm: &mut MeasuredBoot, disk: &mut Disk, boot: &BootVolume) -> Option<VolumeKey> {
    for token in veil_agent::tpm::systemd::find(boot.volume.json()) {
        let t = match token {
            Ok(t) => t,
            Err(e) => {
                crate::log!("veil-boot: {e}: skipped");
                continue;
            }
        };
        let unsealed = match tpm.unseal(&t.blob, t.bank, &t.pcrs) {
            Ok(u) => u,
            Err(e) => {
                crate::log!("veil-boot: systemd-tpm2 token {}: unseal failed: {e}", t.number);
                continue;
            }
        };
        let passphrase = veil_agent::tpm::systemd::passphrase(&unsealed);
        let mut win = Window { dev: disk, start: boot.start, len: boot.len };
        for slot in &t.keyslots {
            match boot.volume.unlock_keyslot(&mut win, *slot, &passphrase, &LIMITS) {
                Ok(key) => {
                    crate::log!(
                        "veil-boot: systemd-tpm2 token {} unsealed (PolicyPCR {} PCRs {:?}); its passphrase opens keyslot {slot}",
                        t.number,
                        t.bank.name(),
                        t.pcrs
                    );
                    return Some(key);
                }
                Err(e) => crate::log!("veil-boot: systemd-tpm2 token {}: keyslot {slot}: {e}", t.number),
            }
        }
    }
    None
}
