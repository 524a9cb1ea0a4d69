//! The primitives LUKS2 names by string: hashes for PBKDF2 and the anti-forensic splitter,
//! the passphrase KDFs (with cost limits), the AF splitter itself, and the keyslot-area
//! ciphers (aes-xts-plain64, and aes-cbc-essiv:sha256 which older cryptsetup volumes use).
//!
//! Host builds (feature `every-kdf`) open whatever cryptsetup writes. The firmware opens the
//! keyslots written for it: PBKDF2 and AF over SHA-256 (`veil`) or SHA-512 (systemd-cryptenroll's
//! TPM2 keyslots), an aes-xts-plain64 area. The key it opens them with is a 256-bit HKDF
//! output, so a memory-hard KDF adds nothing there but ROM bytes and up to 64 MiB of heap;
//! other keyslots are refused by name.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use sha2::Digest;
use zeroize::Zeroizing;

use super::{Luks2Error, Luks2ErrorKind};
use crate::xts::SectorCipher;

/// Upper bounds on what a keyslot may make us compute, set by the caller (the firmware has
/// little memory; a hostile header must not make it spin for hours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfLimits {
    /// Largest Argon2 memory cost accepted, in KiB.
    pub max_memory_kib: u32,
    /// Largest Argon2 time cost accepted.
    pub max_argon2_time: u32,
    /// Largest Argon2 lane count accepted.
    pub max_argon2_lanes: u32,
    /// Largest PBKDF2 iteration count accepted (keyslot and digest).
    pub max_pbkdf2_iterations: u32,
    /// Largest AF stripe count accepted.
    pub max_af_stripes: u32,
}

impl Default for KdfLimits {
    /// cryptsetup's own ceilings: 4 GiB Argon2 memory, 4 lanes... generous but finite.
    fn default() -> Self {
        KdfLimits {
            max_memory_kib: 4 * 1024 * 1024,
            max_argon2_time: 1000,
            max_argon2_lanes: 16,
            max_pbkdf2_iterations: 50_000_000,
            max_af_stripes: 4000,
        }
    }
}

/// Appended to the refusal of a hash, KDF or cipher: in the firmware build, what it opens
/// instead; nothing in host builds, which open everything cryptsetup writes.
#[cfg(not(feature = "every-kdf"))]
const FIRMWARE_SUBSET: &str = " (the firmware opens PBKDF2-SHA256/512 keyslots with aes-xts-plain64 areas, as veil and systemd-cryptenroll make them)";
#[cfg(feature = "every-kdf")]
const FIRMWARE_SUBSET: &str = "";

macro_rules! with_hash {
    ($name:expr, $h:ident => $body:expr) => {
        match $name {
            #[cfg(feature = "every-kdf")]
            "sha1" => {
                type $h = sha1::Sha1;
                Ok($body)
            }
            "sha256" => {
                type $h = sha2::Sha256;
                Ok($body)
            }
            #[cfg(feature = "every-kdf")]
            "sha384" => {
                type $h = sha2::Sha384;
                Ok($body)
            }
            "sha512" => {
                type $h = sha2::Sha512;
                Ok($body)
            }
            other => Err(Luks2Error::from(Luks2ErrorKind::Unsupported(format!("hash `{other}`{FIRMWARE_SUBSET}")))),
        }
    };
}

/// PBKDF2-HMAC with the hash LUKS names.
pub fn pbkdf2(hash: &str, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) -> Result<(), Luks2Error> {
    with_hash!(hash, H => pbkdf2::pbkdf2_hmac::<H>(password, salt, iterations, out))
}

fn check_kdf(kdf: &super::Kdf, limits: &KdfLimits) -> Result<(), Luks2Error> {
    use super::Kdf;
    match kdf {
        Kdf::Pbkdf2 { iterations, .. } if *iterations > limits.max_pbkdf2_iterations => {
            Err(Luks2ErrorKind::KdfTooCostly(format!(
                "PBKDF2 with {iterations} iterations (limit {})",
                limits.max_pbkdf2_iterations
            ))
            .into())
        }
        Kdf::Argon2 { time, memory_kib, cpus, .. } => {
            if *memory_kib > limits.max_memory_kib {
                return Err(Luks2ErrorKind::KdfTooCostly(format!(
                    "Argon2 with {memory_kib} KiB of memory (limit {} KiB)",
                    limits.max_memory_kib
                ))
                .into());
            }
            if *time > limits.max_argon2_time || *cpus > limits.max_argon2_lanes || *cpus == 0 || *time == 0 {
                return Err(Luks2ErrorKind::KdfTooCostly(format!(
                    "Argon2 with time {time} and {cpus} lanes (limits {} and {})",
                    limits.max_argon2_time, limits.max_argon2_lanes
                ))
                .into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Derive a keyslot's area key from the passphrase.
pub fn derive_area_key(
    kdf: &super::Kdf,
    passphrase: &[u8],
    out: &mut [u8],
    limits: &KdfLimits,
) -> Result<(), Luks2Error> {
    use super::Kdf;
    check_kdf(kdf, limits)?;
    match kdf {
        Kdf::Pbkdf2 { hash, iterations, salt } => pbkdf2(hash, passphrase, salt, *iterations, out),
        #[cfg(feature = "every-kdf")]
        Kdf::Argon2 { id, time, memory_kib, cpus, salt } => {
            let algorithm = if *id { argon2::Algorithm::Argon2id } else { argon2::Algorithm::Argon2i };
            let params = argon2::Params::new(*memory_kib, *time, *cpus, Some(out.len()))
                .map_err(|e| Luks2ErrorKind::Unsupported(format!("Argon2 parameters: {e}")))?;
            argon2::Argon2::new(algorithm, argon2::Version::V0x13, params)
                .hash_password_into(passphrase, salt, out)
                .map_err(|e| Luks2ErrorKind::Unsupported(format!("Argon2: {e}")).into())
        }
        #[cfg(not(feature = "every-kdf"))]
        Kdf::Argon2 { id, .. } => {
            let name = if *id { "argon2id" } else { "argon2i" };
            Err(Luks2ErrorKind::Unsupported(format!("KDF `{name}`{FIRMWARE_SUBSET}")).into())
        }
        Kdf::Other(name) => Err(Luks2ErrorKind::Unsupported(format!("KDF `{name}`")).into()),
    }
}

/// The LUKS1 AF diffuser: hash each digest-sized chunk with its big-endian index prepended.
fn diffuse<H: Digest>(block: &mut [u8]) {
    let size = <H as Digest>::output_size();
    for (i, chunk) in block.chunks_mut(size).enumerate() {
        let mut h = H::new();
        h.update((i as u32).to_be_bytes());
        h.update(&*chunk);
        let out = h.finalize();
        chunk.copy_from_slice(&out[..chunk.len()]);
    }
}

/// AF-merge `stripes` stripes of `key_len` bytes into the key.
pub fn af_merge(material: &[u8], key_len: usize, stripes: u32, hash: &str) -> Result<Zeroizing<Vec<u8>>, Luks2Error> {
    let stripes = stripes as usize;
    if stripes == 0 || material.len() < key_len * stripes {
        return Err(Luks2ErrorKind::Metadata(format!(
            "AF material of {} bytes is too short for {stripes} stripes",
            material.len()
        ))
        .into());
    }
    let mut acc = Zeroizing::new(vec![0u8; key_len]);
    let merge = |acc: &mut [u8]| -> Result<(), Luks2Error> {
        for stripe in material.chunks_exact(key_len).take(stripes - 1) {
            acc.iter_mut().zip(stripe).for_each(|(a, s)| *a ^= s);
            with_hash!(hash, H => diffuse::<H>(acc))?;
        }
        Ok(())
    };
    merge(&mut acc)?;
    let last = &material[(stripes - 1) * key_len..stripes * key_len];
    acc.iter_mut().zip(last).for_each(|(a, s)| *a ^= s);
    Ok(acc)
}

/// AF-split `key` into `stripes` stripes; `random` fills the first stripes - 1.
pub fn af_split(
    key: &[u8],
    stripes: u32,
    hash: &str,
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<Zeroizing<Vec<u8>>, Luks2Error> {
    let stripes = stripes as usize;
    let len = key.len();
    let mut out = Zeroizing::new(vec![0u8; len * stripes]);
    random(&mut out[..len * (stripes - 1)]);
    let mut acc = Zeroizing::new(vec![0u8; len]);
    for stripe in out[..len * (stripes - 1)].chunks_exact(len) {
        acc.iter_mut().zip(stripe).for_each(|(a, s)| *a ^= s);
        with_hash!(hash, H => diffuse::<H>(&mut acc))?;
    }
    for (i, b) in out[len * (stripes - 1)..].iter_mut().enumerate() {
        *b = acc[i] ^ key[i];
    }
    Ok(out)
}

/// Decrypt or encrypt a keyslot area (512-byte sectors numbered from 0).
pub fn crypt_area(encryption: &str, key: &[u8], data: &mut [u8], encrypt: bool) -> Result<(), Luks2Error> {
    match encryption {
        "aes-xts-plain64" => {
            let cipher = SectorCipher::new(key, 512).map_err(Luks2ErrorKind::Xts)?;
            let r = if encrypt { cipher.encrypt_sectors(0, data) } else { cipher.decrypt_sectors(0, data) };
            r.map_err(|e| Luks2ErrorKind::Xts(e).into())
        }
        #[cfg(feature = "every-kdf")]
        "aes-cbc-essiv:sha256" if !encrypt => cbc_essiv_sha256_decrypt(key, data),
        other => Err(Luks2ErrorKind::Unsupported(format!("keyslot cipher `{other}`{FIRMWARE_SUBSET}")).into()),
    }
}

/// AES-CBC with ESSIV(SHA-256) IVs, decrypt only: IV of sector n = AES-256(SHA256(key), n).
#[cfg(feature = "every-kdf")]
fn cbc_essiv_sha256_decrypt(key: &[u8], data: &mut [u8]) -> Result<(), Luks2Error> {
    use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
    use alloc::string::String;
    if !data.len().is_multiple_of(512) {
        return Err(Luks2ErrorKind::Metadata(String::from("keyslot area is not whole sectors")).into());
    }
    let salt = Zeroizing::new(<[u8; 32]>::from(sha2::Sha256::digest(key)));
    let essiv = aes::Aes256::new_from_slice(salt.as_ref()).expect("32-byte key");
    fn run<C: BlockCipherDecrypt<BlockSize = aes::cipher::consts::U16>>(c: &C, essiv: &aes::Aes256, data: &mut [u8]) {
        for (n, sector) in data.chunks_exact_mut(512).enumerate() {
            let mut iv = Array::from([0u8; 16]);
            iv[..8].copy_from_slice(&(n as u64).to_le_bytes());
            essiv.encrypt_block(&mut iv);
            let mut prev: [u8; 16] = iv.into();
            for block in sector.chunks_exact_mut(16) {
                let ct: [u8; 16] = block.try_into().expect("16 bytes");
                let mut b = Array::from(ct);
                c.decrypt_block(&mut b);
                for (d, (x, p)) in block.iter_mut().zip(b.iter().zip(prev.iter())) {
                    *d = x ^ p;
                }
                prev = ct;
            }
        }
    }
    match key.len() {
        16 => run(&aes::Aes128::new_from_slice(key).expect("16"), &essiv, data),
        32 => run(&aes::Aes256::new_from_slice(key).expect("32"), &essiv, data),
        n => return Err(Luks2ErrorKind::Unsupported(format!("aes-cbc-essiv with a {n}-byte key")).into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::luks2::Kdf;
    use alloc::string::String;

    /// The firmware's limits (kernel/src/devices/volume.rs: 64 MiB, 10 passes, 4 lanes, 10
    /// million PBKDF2 iterations).
    const FIRMWARE: KdfLimits = KdfLimits {
        max_memory_kib: 64 * 1024,
        max_argon2_time: 10,
        max_argon2_lanes: 4,
        max_pbkdf2_iterations: 10_000_000,
        max_af_stripes: 4000,
    };

    fn pbkdf2(iterations: u32) -> Kdf {
        Kdf::Pbkdf2 { hash: String::from("sha256"), iterations, salt: alloc::vec![0x5A; 32] }
    }

    fn argon2(time: u32, memory_kib: u32, cpus: u32) -> Kdf {
        Kdf::Argon2 { id: true, time, memory_kib, cpus, salt: alloc::vec![0x5A; 32] }
    }

    /// check_kdf's verdict: None when the keyslot may be opened, else the KdfTooCostly reason.
    fn refusal(kdf: &Kdf) -> Option<String> {
        match check_kdf(kdf, &FIRMWARE).map_err(Luks2Error::into_kind) {
            Ok(()) => None,
            Err(Luks2ErrorKind::KdfTooCostly(why)) => Some(why),
            Err(other) => panic!("{kdf:?}: {other:?}"),
        }
    }

    /// A keyslot costing exactly the caller's limit is opened; one iteration, KiB, pass or lane
    /// more is refused, each on its own, and so are zero passes or lanes (RFC 9106 3.1: t and p
    /// are at least 1), before any KDF work.
    #[test]
    fn kdf_costs_up_to_the_limits_are_accepted_and_one_more_is_refused() {
        assert_eq!(refusal(&pbkdf2(10_000_000)), None);
        assert_eq!(refusal(&pbkdf2(1)), None);
        assert_eq!(refusal(&pbkdf2(10_000_001)).as_deref(), Some("PBKDF2 with 10000001 iterations (limit 10000000)"));
        assert_eq!(refusal(&argon2(10, 64 * 1024, 4)), None);
        assert_eq!(refusal(&argon2(1, 1024, 1)), None);
        assert_eq!(
            refusal(&argon2(10, 64 * 1024 + 1, 4)).as_deref(),
            Some("Argon2 with 65537 KiB of memory (limit 65536 KiB)")
        );
        for (time, cpus) in [(11, 4), (10, 5), (10, 0), (0, 4)] {
            assert_eq!(
                refusal(&argon2(time, 64 * 1024, cpus)).as_deref(),
                Some(alloc::format!("Argon2 with time {time} and {cpus} lanes (limits 10 and 4)").as_str()),
                "time {time}, {cpus} lanes"
            );
        }
    }

    /// af_merge is given the keyslot area as read, in whole 512-byte sectors: material longer
    /// than stripes x key length merges to the key, shorter material or zero stripes is refused
    /// (not read past, no stripe count underflow).
    #[test]
    fn af_merge_takes_whole_sectors_and_refuses_short_material() {
        let key = [0x42u8; 32];
        let mut n = 0u8;
        let mut rng = |b: &mut [u8]| {
            b.iter_mut().for_each(|x| {
                n = n.wrapping_add(37);
                *x = n;
            })
        };
        let split = af_split(&key, 3, "sha256", &mut rng).unwrap();
        assert_eq!(split.len(), 96);
        let mut sector = split.to_vec();
        sector.resize(512, 0xEE);
        assert_eq!(&af_merge(&split, 32, 3, "sha256").unwrap()[..], &key);
        assert_eq!(&af_merge(&sector, 32, 3, "sha256").unwrap()[..], &key, "a whole sector read");
        for (what, material, stripes) in [("one byte short", &split[..95], 3), ("zero stripes", &sector[..], 0)] {
            match af_merge(material, 32, stripes, "sha256").map_err(Luks2Error::into_kind) {
                Err(Luks2ErrorKind::Metadata(why)) => assert!(why.contains("too short"), "{what}: {why}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    /// LUKS1 AF split (the LUKS2 keyslots' "luks1" AF): stripes 1 to n-1 are random, taken
    /// from the caller's source as they come, and only the last is derived from the key, so
    /// that all n stripes are needed to recover it.
    #[test]
    fn af_split_takes_every_stripe_but_the_last_from_the_random_source() {
        let key: Vec<u8> = (0..64u8).collect();
        let mut drawn = Vec::new();
        let mut n = 0u8;
        let mut rng = |b: &mut [u8]| {
            b.iter_mut().for_each(|x| {
                n = n.wrapping_add(1);
                *x = n;
            });
            drawn.extend_from_slice(b);
        };
        let split = af_split(&key, 4000, "sha512", &mut rng).unwrap();
        assert_eq!(split.len(), 64 * 4000);
        assert!(drawn.len() >= 64 * 3999);
        assert_eq!(&split[..64 * 3999], &drawn[..64 * 3999], "stripes 1 to 3999 are the random bytes");
        assert_eq!(&af_merge(&split, 64, 4000, "sha512").unwrap()[..], &key[..]);
    }
}
