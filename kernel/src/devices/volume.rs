//! The LUKS2 volumes on the virtio disks, before any key: `veil-boot` found by its GPT name
//! with its header read ([`BootVolume`], what the roots of trust unseal from and seal into),
//! header writes made durable one range at a time, the second header copy repaired as
//! cryptsetup does, and what the firmware lets a keyslot's KDF cost. Parsing is agent's
//! (veil_agent::gpt, veil_agent::luks2, veil_agent::bundle).

use alloc::vec::Vec;

use veil_agent::bundle::{self, BundleToken};
use veil_agent::gpt::Gpt;
use veil_agent::io::Window;
use veil_agent::luks2::{KdfLimits, Volume};

use crate::devices::virtio::Disk;
use crate::error::{At, BootError, BootErrorKind};

/// What the firmware allows a keyslot to cost (its heap is small and time is boot time).
pub const LIMITS: KdfLimits = KdfLimits {
    max_memory_kib: 64 * 1024,
    max_argon2_time: 10,
    max_argon2_lanes: 4,
    max_pbkdf2_iterations: 10_000_000,
    max_af_stripes: 4000,
};

/// The `veil-boot` volume before it is unlocked: where it is, its LUKS2 header, and the
/// boot bundle's manifest as the `veil-bundle` token states it in the clear (unverified).
pub struct BootVolume {
    /// Partition start on the disk (bytes).
    pub start: u64,
    /// Partition length (bytes).
    pub len: u64,
    /// The LUKS2 header.
    pub volume: Volume,
    /// The manifest from the header's `veil-bundle` token, if it has one.
    pub token: Option<BundleToken>,
}

impl BootVolume {
    /// What tokens sealed for this volume are bound to (agent::tpm::token::binding): its UUID
    /// and the manifest its `veil-bundle` token states (which the MAC'd one must equal).
    pub fn binding(&self) -> Result<[u8; 32], BootError> {
        let t = self.token.as_ref().ok_or(BootErrorKind::UnboundBootVolume("it has no veil-bundle token"))?;
        Ok(veil_agent::tpm::token::binding(self.volume.uuid(), &bundle::manifest_sha384(&t.manifest)))
    }
}

/// Find `veil-boot` on `disk` and read its LUKS2 header (no key needed).
pub fn open(disk: &mut Disk) -> Result<BootVolume, BootError> {
    let location = disk.location;
    let gpt = Gpt::read(disk).at(alloc::format!("disk {location}"))?;
    if gpt.used_backup {
        crate::log!("disk: primary GPT damaged; using the backup");
    }
    let part = gpt.by_name("veil-boot").ok_or(BootErrorKind::NoBootPartition)?;
    let (start, len) = (part.offset(), part.size());
    let mut win = Window { dev: disk, start, len };
    let volume = Volume::load(&mut win).map_err(BootErrorKind::BootVolumeUnreadable)?;
    let token = bundle::find_token(volume.json()).at("veil-boot")?;
    Ok(BootVolume { start, len, volume, token })
}

/// Write header byte ranges (offsets within the partition) of the boot volume, each made
/// durable before the next is written (the writer's order: keyslot areas, the primary copy,
/// the secondary copy; so a power cut leaves at most one copy torn), then read the header
/// back to check that it still loads.
pub fn write_header(
    disk: &mut Disk,
    boot: &mut BootVolume,
    writes: &[(u64, zeroize::Zeroizing<Vec<u8>>)],
) -> Result<(), BootError> {
    for (offset, bytes) in writes {
        if offset + bytes.len() as u64 > boot.len {
            return Err(BootErrorKind::HeaderWriteOutOfRange.into());
        }
        disk.write_durably(boot.start + offset, bytes).at("veil-boot: writing the header")?;
    }
    let mut win = Window { dev: disk, start: boot.start, len: boot.len };
    boot.volume = Volume::load(&mut win).at("veil-boot: the header just written does not load")?;
    Ok(())
}

/// Once `volume` (at `start`, `len` bytes, on `disk`) is trusted (a keyslot opened with its
/// key; for `veil-boot` also the bundle's MAC checked), rewrite its second header copy from
/// the one in use when that was missing, damaged or older, durably, as cryptsetup does when it
/// loads such a header, and say so. A failure is logged: the boot goes on from the good copy.
pub fn repair_other_copy(disk: &mut Disk, (start, len): (u64, u64), volume: &Volume, what: &str) {
    let mut rng = |b: &mut [u8]| crate::arch::random::fill(b);
    let mut win = Window { dev: &mut *disk, start, len };
    let repaired =
        volume.repair_other_copy(&mut win, &mut rng).map_err(BootError::from).and_then(|write| match write {
            Some((offset, bytes)) => disk.write_durably(start + offset, &bytes).map(|()| true).map_err(BootError::from),
            None => Ok(false),
        });
    let (used, other) = if volume.header().secondary { ("secondary", "primary") } else { ("primary", "secondary") };
    match repaired {
        Ok(false) => {}
        Ok(true) => crate::log!(
            "{what}: the {other} LUKS2 header copy was missing, damaged or older; rewrote it from the {used} (sequence id {})",
            volume.header().seqid
        ),
        Err(e) => crate::log!("{what}: the {other} LUKS2 header copy is stale, and rewriting it failed: {e}"),
    }
}
