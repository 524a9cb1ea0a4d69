//! Boot from the encrypted disk: GPT -> `veil-boot` LUKS2 volume (opened with its disk key
//! from the master secret) -> boot bundle: the manifest's MAC is checked, every payload is
//! read in 256 KiB requests, four in flight while the previous chunk is decrypted, checked
//! against its SHA-384, and only then used.

use alloc::vec::Vec;

use veil_agent::bundle::{self, Manifest};
use veil_agent::io::Window;
use veil_agent::keys::MasterSecret;
use veil_agent::linux::{LinuxError, SetupHeader};
use veil_agent::luks2::{DataSegment, VolumeKey};
use veil_agent::xts::SectorCipher;

use crate::devices::virtio::Disk;
use crate::devices::volume::{BootVolume, LIMITS};
use crate::error::{At, BootError, BootErrorKind};

/// A verified bundle.
pub struct Verified {
    /// The bzImage.
    pub kernel: Vec<u8>,
    /// The initrd.
    pub initrd: Vec<u8>,
    /// The manifest.
    pub manifest: Manifest,
    /// Bytes read and decrypted.
    pub bytes: u64,
    /// The kernel's window, when it had to come from the heap (linux::reserve_window).
    pub kernel_window: Option<(u64, u64)>,
}

/// Room reserved after the initrd for the hand-off archive Linux gets appended to it (keys,
/// the boot timeline: a few KiB), so that it is appended in place.
const INITRD_SLACK: usize = 64 << 10;

/// Read `size` bytes at `offset` of the data segment of the volume at `part_start` on the disk
/// and decrypt them, into a buffer with `slack` bytes of spare capacity; the reads stay several
/// requests ahead of the decryption.
fn read_decrypt(
    disk: &mut Disk,
    part_start: u64,
    seg: &DataSegment,
    cipher: &SectorCipher,
    (offset, size): (u64, u64),
    slack: usize,
) -> Result<Vec<u8>, BootError> {
    let sector = u64::from(seg.sector_size);
    let aligned = size.div_ceil(sector) * sector;
    // The payload sizes come from the (authenticated) manifest, but RAM is whatever the VM
    // was given: too little is a precise refusal, not an allocation panic.
    let mut out = Vec::new();
    let capacity = (aligned as usize).saturating_add(slack);
    out.try_reserve_exact(capacity).map_err(|_| BootErrorKind::OutOfMemory(capacity))?;
    out.resize(aligned as usize, 0);
    disk.read_pipelined(part_start + seg.offset + offset, &mut out, |pos, chunk| {
        Ok(cipher.decrypt_sectors(seg.iv_sector(offset + pos), chunk)?)
    })?;
    out.truncate(size as usize);
    Ok(out)
}

/// The boot volume unlocked and its manifest's MAC verified: the proof that a master secret
/// is this disk's, before anything is sealed with it or read with it.
pub struct Opened {
    seg: DataSegment,
    cipher: SectorCipher,
    /// The MAC'd manifest.
    pub manifest: Manifest,
}

/// Unlock `boot` (with `volume_key` when a token of the OS's tools already produced it, else
/// with the disk key from `secret`) and verify the bundle header's MAC, which needs the master
/// secret either way. When the header carries a `veil-bundle` token (what was measured), the
/// MAC'd manifest must equal it.
pub fn unlock(
    disk: &mut Disk,
    boot: &BootVolume,
    secret: &MasterSecret,
    volume_key: Option<VolumeKey>,
) -> Result<Opened, BootError> {
    let (start, len, volume) = (boot.start, boot.len, &boot.volume);
    let volume_key = match volume_key {
        Some(k) => k,
        None => {
            let mut win = Window { dev: &mut *disk, start, len };
            let disk_key = secret.disk_key(volume.uuid()).at("veil-boot")?;
            let (slot, volume_key) = volume
                .unlock(&mut win, disk_key.as_ref(), &LIMITS)
                .at("veil-boot: LUKS2 unlock with the disk key failed")?;
            crate::log!("veil-boot: LUKS2 {} opened with keyslot {slot}", volume.uuid());
            volume_key
        }
    };
    let (seg, cipher) = volume.data_cipher(&volume_key).at("veil-boot")?;
    drop(volume_key);
    let data_len = seg.len(len);
    let header = read_decrypt(disk, start, &seg, &cipher, (0, bundle::HEADER_SIZE as u64), 0)?;
    let manifest = bundle::open_header(secret, &header, data_len)?;
    if let Some(t) = &boot.token
        && t.manifest != manifest
    {
        return Err(BootErrorKind::ManifestDiffersFromToken.into());
    }
    let Some(bound) = &manifest.bound else {
        return Err(BootErrorKind::UnboundBootVolume(
            "its MAC'd manifest binds no measurement salt, state disk or version (an image made before they were bound)",
        )
        .into());
    };
    if let Some(t) = &boot.token
        && hex::encode(&t.measurement_salt) != bound.measurement_salt
    {
        return Err(BootErrorKind::MeasurementSaltDiffers.into());
    }
    Ok(Opened { seg, cipher, manifest })
}

/// Read the payloads of an opened boot volume, each checked against its digest in the
/// manifest before it is used.
pub fn read_bundle(disk: &mut Disk, boot: &BootVolume, opened: Opened) -> Result<Verified, BootError> {
    let Opened { seg, cipher, manifest } = opened;
    let start = boot.start;
    // In a small VM the kernel's window comes from the heap, before the payloads cut it up.
    let head = (manifest.kernel.offset, manifest.kernel.size.min(4096));
    let kernel_window = read_decrypt(disk, start, &seg, &cipher, head, 0)
        .ok()
        .and_then(|head| SetupHeader::parse(&head).ok())
        .and_then(|hdr| {
            let kernel_size = manifest.kernel.size.saturating_sub(hdr.setup_size as u64);
            crate::boot::linux::reserve_window(&hdr, kernel_size)
        });
    let kernel = read_decrypt(disk, start, &seg, &cipher, (manifest.kernel.offset, manifest.kernel.size), 0)?;
    bundle::verify("kernel", &manifest.kernel, &kernel)?;
    let initrd =
        read_decrypt(disk, start, &seg, &cipher, (manifest.initrd.offset, manifest.initrd.size), INITRD_SLACK)?;
    bundle::verify("initrd", &manifest.initrd, &initrd)?;
    let bytes = manifest.kernel.size + manifest.initrd.size + bundle::HEADER_SIZE as u64;
    Ok(Verified { kernel, initrd, manifest, bytes, kernel_window })
}

/// A verified bundle as the kernel source; it hands its initrd buffer over.
pub struct BundleSource<'a>(pub &'a mut Verified);

impl crate::boot::linux::Source for BundleSource<'_> {
    fn setup(&mut self) -> Result<Option<Vec<u8>>, BootError> {
        let k = &self.0.kernel;
        let setup = SetupHeader::parse(k)?.setup_size;
        if setup >= k.len() {
            return Err(LinuxError::NotBzImage("the setup part runs past the image").into());
        }
        Ok(Some(k[..setup].to_vec()))
    }
    fn kernel_size(&mut self) -> Result<usize, BootError> {
        let setup = self.setup()?.map_or(0, |s| s.len());
        Ok(self.0.kernel.len() - setup)
    }
    fn read_kernel(&mut self, dst: &mut [u8]) -> Result<(), BootError> {
        let setup = self.setup()?.map_or(0, |s| s.len());
        dst.copy_from_slice(&self.0.kernel[setup..]);
        Ok(())
    }
    fn initrd_size(&mut self) -> Result<usize, BootError> {
        Ok(self.0.initrd.len())
    }
    fn reserved_window(&self) -> Option<(u64, u64)> {
        self.0.kernel_window
    }
    /// The buffer the initrd was decrypted into, handed over (no second copy of it).
    fn initrd(&mut self, _size: usize, extra: &[u8]) -> Result<&'static mut [u8], BootError> {
        let mut initrd = core::mem::take(&mut self.0.initrd);
        let padded = initrd.len().div_ceil(4) * 4;
        // In place when read_decrypt's slack holds the archive; else one reallocation.
        initrd
            .try_reserve_exact(padded + extra.len() - initrd.len())
            .map_err(|_| BootErrorKind::OutOfMemory(padded + extra.len()))?;
        initrd.resize(padded, 0);
        initrd.extend_from_slice(extra);
        Ok(initrd.leak())
    }
    fn cmdline(&mut self) -> Result<Vec<u8>, BootError> {
        Ok(self.0.manifest.cmdline.as_bytes().to_vec())
    }
}
