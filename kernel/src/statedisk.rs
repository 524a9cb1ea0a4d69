//! The state disk: a second virtio disk that Linux keeps its data on. A blank one (no
//! signature at all: its first and last MiB read as zeros) is formatted LUKS2 on first boot
//! with its disk key; a disk with anything on it is never touched. Its key is handed over
//! like the root key.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use veil_agent::io::ReadAt;
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::Volume;
use veil_agent::luks2::format::{FormatOptions, HeaderWriter};
use zeroize::Zeroizing;

use crate::error::{At, BootError};
use crate::virtio::Disk;

const PROBE: usize = 1 << 20;

/// What was found on the disk.
pub enum State {
    /// A LUKS2 volume: its UUID (formatted now, or earlier).
    Volume {
        /// The volume's UUID.
        uuid: String,
        /// Formatted by this boot (it was blank).
        formatted_now: bool,
    },
    /// Something else is on the disk; it was left alone.
    Foreign(String),
}

/// Inspect (and, if blank, format) the state disk.
pub fn prepare(disk: &mut Disk, secret: &MasterSecret) -> Result<State, BootError> {
    if let Ok(volume) = Volume::load(disk) {
        return Ok(State::Volume { uuid: volume.uuid().to_string(), formatted_now: false });
    }
    let probe = PROBE.min(disk.size as usize);
    let mut head = alloc::vec![0u8; probe];
    disk.read_at(0, &mut head)?;
    let mut tail = alloc::vec![0u8; probe];
    disk.read_at(disk.size - probe as u64, &mut tail)?;
    if let Some(sig) = veil_agent::disksig::signature(&head) {
        return Ok(State::Foreign(alloc::format!("it carries {sig}")));
    }
    if head.iter().chain(tail.iter()).any(|b| *b != 0) {
        return Ok(State::Foreign(String::from("its first or last MiB holds data (not blank)")));
    }
    if disk.size < 32 << 20 {
        return Ok(State::Foreign(alloc::format!("it is only {} bytes, too small for LUKS2 with data", disk.size)));
    }
    let opts = FormatOptions { uuid: None, ..FormatOptions::default() };
    let mut rng = |b: &mut [u8]| crate::random::fill(b);
    let uuid = veil_agent::luks2::format::random_uuid(&mut rng);
    let opts = FormatOptions { uuid: Some(uuid.clone()), ..opts };
    let passphrase = secret.disk_key(&uuid)?;
    let mut volume_key = Zeroizing::new(alloc::vec![0u8; opts.key_size]);
    loop {
        rng(&mut volume_key);
        if veil_agent::xts::check_key(&volume_key).is_ok() {
            break;
        }
    }
    let writer = HeaderWriter::format(&opts, &volume_key, passphrase.as_ref(), &mut rng)?;
    let writes: Vec<(u64, Zeroizing<Vec<u8>>)> = writer.commit(&mut rng)?;
    // Keyslot area, primary, secondary: each durable before the next, as cryptsetup syncs.
    for (offset, bytes) in &writes {
        disk.write_durably(*offset, bytes)?;
    }
    // Read it back: a volume that does not load was not written.
    let volume = Volume::load(disk).at("the new volume does not read back")?;
    Ok(State::Volume { uuid: volume.uuid().to_string(), formatted_now: true })
}
