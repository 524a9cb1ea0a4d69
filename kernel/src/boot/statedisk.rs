//! The state disk: a second virtio disk that Linux keeps its data on. A blank one is
//! formatted LUKS2 on first boot with its disk key, under the UUID the image's MAC'd manifest
//! names, and so is one that holds nothing but that format cut short by a power loss; a LUKS2
//! volume's key is handed over when it carries that UUID and its keyslot opens with that key
//! (another node's or another image's state disk gets no key); anything else is never touched
//! (veil_agent::statedisk decides). Its key is handed over like the root key.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use veil_agent::io::ReadAt;
use veil_agent::keys::MasterSecret;
use veil_agent::luks2::Volume;
use veil_agent::luks2::format::HeaderWriter;
use veil_agent::statedisk::{self, Found, Keyslots};
use zeroize::Zeroizing;

use crate::devices::virtio::Disk;
use crate::error::{At, BootError};

/// Inspect (and, if blank or holding only an interrupted format of ours, format) the state
/// disk, logging what was found; the UUID of the volume whose key to hand over, if any.
pub fn prepare(disk: &mut Disk, secret: &MasterSecret, named: &str) -> Result<Option<String>, BootError> {
    let location = disk.location;
    if let Ok(volume) = Volume::load(disk) {
        let uuid = volume.uuid().to_string();
        if !uuid.eq_ignore_ascii_case(named) {
            crate::log!(
                "state disk {location}: LUKS2 volume {uuid} is not the state disk this image names ({named}): its key not handed over"
            );
            return Ok(None);
        }
        let key = secret.disk_key(&uuid)?;
        return Ok(match statedisk::check_keyslots(&volume, disk, key.as_ref(), &crate::devices::volume::LIMITS)? {
            Keyslots::Open(slot) => {
                crate::log!("state disk {location}: LUKS2 volume {uuid} (keyslot {slot} opens with its disk key)");
                crate::devices::volume::repair_other_copy(disk, (0, disk.size), &volume, "state disk");
                Some(uuid)
            }
            Keyslots::Unchecked(why) => {
                crate::log!("state disk {location}: LUKS2 volume {uuid} (its keyslots are not tried here: {why})");
                Some(uuid)
            }
            Keyslots::Refused(why) => {
                crate::log!("state disk {location}: LUKS2 volume {uuid} refused, its key not handed over: {why}");
                None
            }
        });
    }
    let mut probes: Vec<Vec<u8>> = Vec::new();
    for (offset, len) in statedisk::probes(disk.size) {
        let mut bytes = alloc::vec![0u8; len as usize];
        disk.read_at(offset, &mut bytes)?;
        probes.push(bytes);
    }
    let again = match statedisk::classify(disk.size, &probes[0], &probes[1], &probes[2]) {
        Found::Blank => None,
        Found::InterruptedFormat(what) => Some(what),
        Found::Foreign(why) => {
            crate::log!("state disk {location}: left untouched: {why}");
            return Ok(None);
        }
    };
    drop(probes);
    let mut rng = |b: &mut [u8]| crate::arch::random::fill(b);
    let uuid = String::from(named);
    let opts = statedisk::format_options(uuid.clone());
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
    match again {
        None => crate::log!("state disk {location}: blank; formatted LUKS2 volume {uuid} with its disk key"),
        Some(what) => crate::log!(
            "state disk {location}: held only an interrupted format of the firmware's ({what}); formatted LUKS2 volume {uuid} again with its disk key"
        ),
    }
    Ok(Some(volume.uuid().to_string()))
}
