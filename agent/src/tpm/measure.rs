//! The measurement plan of the plain platform: which bytes go into which PCR, as which event,
//! in which order. The firmware follows it while booting and `veil measure` replays it on the
//! host from the ROM and the disk image, so both must call these functions and nothing else.
//!
//! Following the TCG PC Client convention:
//! - PCR 0  EV_S_CRTM_CONTENTS  the firmware ROM (veilboot measures itself: under QEMU's
//!   `-bios` nothing runs before it)
//! - PCR 1  EV_PLATFORM_CONFIG_FLAGS  each fw_cfg input the firmware used ("fw_cfg <name>":
//!   the e820 map, the ACPI table loader and its blobs, `opt/veil/*` settings). It depends on
//!   the VMM's version and the VM's size, so measurements mark it warn-only and sealing skips it.
//! - PCR 4  EV_IPL  the kernel, named by its SHA-384 from the boot bundle's manifest
//! - PCR 8  EV_IPL  the kernel command line
//! - PCR 9  EV_IPL  the initrd, named by its SHA-384
//! - PCR 0..7  EV_SEPARATOR  (four zero bytes) once the boot target is measured
//! - PCR 15 EV_COMPACT_HASH  the clusterID, after the master secret is known: the extend
//!   digest is H(clusterID), so PCR 15 = SHA256(0^32 || SHA256(clusterID)) as in Constellation.
//!
//! The kernel, command line and initrd are measured before the master secret is unsealed
//! (the seal policy covers them), from the manifest kept in clear in the `veil-boot` LUKS2
//! header; after decryption the firmware boots them only if they equal that manifest.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

use super::Bank;
use super::eventlog::{self, Event, EventLog};

/// PCRs a sealed master secret is bound to (SHA-256 bank): the firmware and the boot target,
/// and PCR 15 at zero. PCR 15 is zero while the firmware unseals and holds the clusterID from
/// before the hand-off on (the firmware extends it whenever it has the secret, and the OS
/// cannot reset it), so the booted OS can never satisfy the policy again: the sealed secret
/// opens for the firmware only.
pub const SEAL_PCRS: [u32; 5] = [0, 4, 8, 9, CLUSTER_ID_PCR];
/// PCRs a verifier must match exactly; the others the plan touches are warn-only.
pub const ENFORCED_PCRS: [u32; 4] = [0, 4, 8, 9];
/// The clusterID PCR.
pub const CLUSTER_ID_PCR: u32 = 15;

/// One measurement: `event_data` goes into the log, H(`measured`) into the PCR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement<'a> {
    /// PCR index.
    pub pcr: u32,
    /// Event type.
    pub event_type: u32,
    /// What the log says.
    pub event_data: Vec<u8>,
    /// What is hashed into the PCR.
    pub measured: Measured<'a>,
}

/// The bytes a measurement hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measured<'a> {
    /// The event data itself.
    EventData,
    /// Other bytes (the ROM, a config file).
    Bytes(&'a [u8]),
}

impl Measurement<'_> {
    /// The extend digest for `bank`.
    pub fn digest(&self, bank: Bank) -> Vec<u8> {
        match self.measured {
            Measured::EventData => bank.digest(&self.event_data),
            Measured::Bytes(b) => bank.digest(b),
        }
    }
}

/// PCR 0: the firmware ROM image.
pub fn rom(rom: &[u8]) -> Measurement<'_> {
    Measurement {
        pcr: 0,
        event_type: eventlog::EV_S_CRTM_CONTENTS,
        event_data: b"veilboot firmware ROM".to_vec(),
        measured: Measured::Bytes(rom),
    }
}

/// PCR 1: a fw_cfg file the firmware used.
pub fn config<'a>(name: &str, contents: &'a [u8]) -> Measurement<'a> {
    Measurement {
        pcr: 1,
        event_type: eventlog::EV_PLATFORM_CONFIG_FLAGS,
        event_data: format!("fw_cfg {name}").into_bytes(),
        measured: Measured::Bytes(contents),
    }
}

/// PCR 4: the kernel, by the SHA-384 (hex) of its bytes.
pub fn kernel(sha384_hex: &str) -> Measurement<'static> {
    Measurement {
        pcr: 4,
        event_type: eventlog::EV_IPL,
        event_data: format!("veil-boot kernel sha384:{sha384_hex}").into_bytes(),
        measured: Measured::EventData,
    }
}

/// PCR 8: the kernel command line.
pub fn cmdline(cmdline: &str) -> Measurement<'static> {
    Measurement {
        pcr: 8,
        event_type: eventlog::EV_IPL,
        event_data: cmdline.as_bytes().to_vec(),
        measured: Measured::EventData,
    }
}

/// PCR 9: the initrd, by the SHA-384 (hex) of its bytes.
pub fn initrd(sha384_hex: &str) -> Measurement<'static> {
    Measurement {
        pcr: 9,
        event_type: eventlog::EV_IPL,
        event_data: format!("veil-boot initrd sha384:{sha384_hex}").into_bytes(),
        measured: Measured::EventData,
    }
}

/// PCRs 0..7: the separators that close the pre-boot measurements.
pub fn separators() -> Vec<Measurement<'static>> {
    (0..8)
        .map(|pcr| Measurement {
            pcr,
            event_type: eventlog::EV_SEPARATOR,
            event_data: alloc::vec![0; 4],
            measured: Measured::EventData,
        })
        .collect()
}

/// PCR 15: the clusterID.
pub fn cluster_id(id: &[u8; 32]) -> Measurement<'static> {
    Measurement {
        pcr: CLUSTER_ID_PCR,
        event_type: eventlog::EV_COMPACT_HASH,
        event_data: id.to_vec(),
        measured: Measured::EventData,
    }
}

/// The boot target of a bundle manifest, in plan order (kernel, command line, initrd).
pub fn boot_target(manifest: &crate::bundle::Manifest) -> Vec<Measurement<'static>> {
    alloc::vec![kernel(&manifest.kernel.sha384), cmdline(&manifest.cmdline), initrd(&manifest.initrd.sha384)]
}

/// The seal policy (PolicyPCR over [`SEAL_PCRS`], SHA-256 bank) for the PCR values before
/// the master secret is known: `pcrs` holds at least PCRs 0, 4, 8 and 9 (a prediction or the
/// TPM's values); PCR 15 must be zero there or absent (then taken as zero). Refused when PCR
/// 15 is already extended: a token sealed then would open after the hand-off.
pub fn seal_policy(pcrs: &[(u32, Vec<u8>)]) -> Result<[u8; 32], alloc::string::String> {
    let zero = alloc::vec![0u8; 32];
    let mut values = Vec::with_capacity(SEAL_PCRS.len());
    for p in SEAL_PCRS {
        let v = match pcrs.iter().find(|(q, _)| *q == p) {
            Some((_, v)) => v,
            None if p == CLUSTER_ID_PCR => &zero,
            None => return Err(format!("no value for PCR {p}")),
        };
        if p == CLUSTER_ID_PCR && *v != zero {
            return Err(format!(
                "PCR {CLUSTER_ID_PCR} is already extended: a token sealed now would open after the hand-off; not sealed"
            ));
        }
        values.push(v.clone());
    }
    Ok(super::policy::policy_pcr(Bank::Sha256, &SEAL_PCRS, &values))
}

/// Record `m` in `log` with a digest for each of the log's banks; returns those digests
/// (what the firmware extends).
pub fn record(log: &mut EventLog, m: &Measurement<'_>) -> Vec<(Bank, Vec<u8>)> {
    let digests: Vec<(Bank, Vec<u8>)> = log.banks().iter().map(|b| (*b, m.digest(*b))).collect();
    log.record(m.pcr, m.event_type, &digests, &m.event_data);
    digests
}

/// The PCR values of `bank` after `plan` (PCRs the plan does not touch are left out).
pub fn predict(plan: &[Measurement<'_>], bank: Bank) -> BTreeMap<u32, Vec<u8>> {
    let events: Vec<Event> = plan
        .iter()
        .map(|m| Event {
            pcr: m.pcr,
            event_type: m.event_type,
            digests: alloc::vec![(bank, m.digest(bank))],
            data: Vec::new(),
        })
        .collect();
    eventlog::replay(&events, bank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_id_pcr_is_constellations() {
        // Constellation: PCR 15 = SHA256(0^32 || SHA256(clusterID)).
        let id = [7u8; 32];
        let p = predict(&[cluster_id(&id)], Bank::Sha256);
        let inner = Bank::Sha256.digest(&id);
        assert_eq!(p[&15], Bank::Sha256.digest(&[&[0u8; 32][..], &inner].concat()));
    }

    #[test]
    fn seal_policy_covers_pcr_15_at_zero_and_refuses_it_extended() {
        let mut pcrs: Vec<(u32, Vec<u8>)> = [0u32, 4, 8, 9].iter().map(|p| (*p, alloc::vec![*p as u8; 32])).collect();
        let policy = seal_policy(&pcrs).unwrap();
        let mut values: Vec<Vec<u8>> = pcrs.iter().map(|(_, v)| v.clone()).collect();
        values.push(alloc::vec![0; 32]);
        assert_eq!(policy, crate::tpm::policy::policy_pcr(Bank::Sha256, &SEAL_PCRS, &values));
        assert!(SEAL_PCRS.contains(&CLUSTER_ID_PCR) && !ENFORCED_PCRS.contains(&CLUSTER_ID_PCR));
        pcrs.push((15, alloc::vec![0; 32]));
        assert_eq!(seal_policy(&pcrs).unwrap(), policy);
        pcrs[4].1 = predict(&[cluster_id(&[1; 32])], Bank::Sha256)[&15].clone();
        assert!(seal_policy(&pcrs).unwrap_err().contains("already extended"));
        pcrs.remove(4);
        pcrs.remove(1);
        assert!(seal_policy(&pcrs).unwrap_err().contains("PCR 4"));
    }

    #[test]
    fn plan_recorded_in_a_log_replays_to_the_prediction() {
        let rom_bytes = alloc::vec![0x90u8; 4096];
        let mut plan = alloc::vec![rom(&rom_bytes), config("etc/e820", b"map")];
        plan.extend([kernel("aa"), cmdline("console=ttyS0"), initrd("bb")]);
        plan.extend(separators());
        let banks = [Bank::Sha256, Bank::Sha384];
        let mut log = EventLog::new(&banks);
        for m in &plan {
            record(&mut log, m);
        }
        let (_, events) = eventlog::parse(log.as_bytes()).unwrap();
        for bank in banks {
            assert_eq!(eventlog::replay(&events, bank), predict(&plan, bank));
        }
        // The separator reaches all of PCR 0..7 and nothing measured the others.
        assert_eq!(predict(&plan, Bank::Sha256).keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        // A different kernel changes PCR 4 and only PCR 4.
        let mut other = plan.clone();
        other[2] = kernel("ab");
        let (a, b) = (predict(&plan, Bank::Sha256), predict(&other, Bank::Sha256));
        assert!(a.keys().all(|k| (a[k] == b[k]) == (*k != 4)));
    }
}
