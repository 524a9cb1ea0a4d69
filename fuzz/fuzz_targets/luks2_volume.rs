//! A whole LUKS2 device: the input becomes the JSON area of a primary header whose checksum
//! is made right (so the fuzzer gets past it), followed by keyslot bytes; then load and try
//! to unlock every keyslot with tight KDF limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use veil_agent::luks2::{KdfLimits, Volume};

const HDR: usize = 0x4000;

fuzz_target!(|data: &[u8]| {
    let mut dev = vec![0u8; 2 * HDR + 64 * 1024];
    dev[..6].copy_from_slice(b"LUKS\xba\xbe");
    dev[6..8].copy_from_slice(&2u16.to_be_bytes());
    dev[8..16].copy_from_slice(&(HDR as u64).to_be_bytes());
    dev[72..78].copy_from_slice(b"sha256");
    let n = data.len().min(HDR - 4096);
    dev[4096..4096 + n].copy_from_slice(&data[..n]);
    let rest = &data[n..];
    let m = rest.len().min(dev.len() - 2 * HDR);
    dev[2 * HDR..2 * HDR + m].copy_from_slice(&rest[..m]);
    let sum = Sha256::digest(&dev[..HDR]);
    dev[448..480].copy_from_slice(&sum);
    let Ok(volume) = Volume::load(&mut dev.as_slice()) else { return };
    let limits = KdfLimits {
        max_memory_kib: 64,
        max_argon2_time: 2,
        max_argon2_lanes: 2,
        max_pbkdf2_iterations: 64,
        max_af_stripes: 64,
    };
    let slots: Vec<u32> = volume.metadata().keyslots.keys().copied().collect();
    for slot in slots {
        let _ = volume.unlock_keyslot(&mut dev.as_slice(), slot, b"passphrase", &limits);
    }
    let _ = volume.data_cipher(&[1u8; 64]);
});
