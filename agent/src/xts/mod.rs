//! dm-crypt compatible `aes-xts-plain64` sector cipher (IEEE 1619 XTS-AES).
//!
//! The volume key is `key1 || key2` (32 bytes for AES-128, 64 for AES-256): key1 encrypts the
//! data, key2 the tweak. dm-crypt's `plain64` IV is the little-endian 64-bit sector number,
//! counted in 512-byte units whatever the sector size (LUKS2 volumes with 4096-byte sectors
//! do not set `iv_large_sectors`), zero-padded to 16 bytes; it wraps modulo 2^64.
//!
//! [`SectorCipher`] encrypts or decrypts a run of whole sectors in place in one call. The
//! block work is done by an [`XtsBackend`]: the portable RustCrypto one ([`soft`]), or the
//! AES-NI / VAES assembly of [`aesni`], each checked by [`selftest`] before use. [`encrypt_data_unit`] and
//! [`decrypt_data_unit`] handle a single data unit of any length of at least one block
//! (with ciphertext stealing), which dm-crypt never needs but the published vectors use.

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod aesni;
pub mod selftest;
pub mod soft;

use alloc::boxed::Box;
use core::fmt;

/// AES block length.
pub const BLOCK: usize = 16;

/// Why an XTS operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XtsError {
    /// The key is neither 32 bytes (AES-128-XTS) nor 64 bytes (AES-256-XTS).
    KeyLength(usize),
    /// key1 == key2: OpenSSL and FIPS-mode dm-crypt refuse such keys (XTS loses its
    /// security proof when the tweak and data keys coincide).
    DuplicateKeyHalves,
    /// The sector size is not a power of two between 512 and 4096 bytes.
    SectorSize(usize),
    /// The buffer is not a whole number of sectors.
    NotWholeSectors {
        /// Buffer length in bytes.
        len: usize,
        /// The cipher's sector size.
        sector_size: usize,
    },
    /// A data unit shorter than one AES block.
    DataUnitTooShort(usize),
}

impl fmt::Display for XtsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XtsError::KeyLength(n) => {
                write!(f, "XTS key is {n} bytes; aes-xts-plain64 takes 32 (AES-128) or 64 (AES-256)")
            }
            XtsError::DuplicateKeyHalves => {
                write!(f, "XTS key refused: its two halves are equal")
            }
            XtsError::SectorSize(n) => write!(f, "sector size {n} is not a power of two between 512 and 4096"),
            XtsError::NotWholeSectors { len, sector_size } => {
                write!(f, "buffer of {len} bytes is not a whole number of {sector_size}-byte sectors")
            }
            XtsError::DataUnitTooShort(n) => {
                write!(f, "XTS data unit of {n} bytes is shorter than one 16-byte block")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for XtsError {}

/// The block-level work of XTS, implemented once per instruction set.
///
/// The safe wrappers in this module check every length before calling a backend: `data`
/// is always a whole number of 16-byte blocks. A tweak is the running XTS tweak `T`
/// (already encrypted with key2), which the block functions advance past the last block.
pub trait XtsBackend: Send + Sync {
    /// Short name for logs and benchmarks (e.g. `rustcrypto`, `aesni`, `vaes512`).
    fn name(&self) -> &'static str;

    /// `T = AES-Enc(key2, iv)`.
    fn encrypt_tweak(&self, iv: &[u8; BLOCK]) -> [u8; BLOCK];

    /// XEX-encrypt whole blocks with consecutive tweaks starting at `tweak`.
    fn encrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; BLOCK]);

    /// XEX-decrypt whole blocks with consecutive tweaks starting at `tweak`.
    fn decrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; BLOCK]);

    /// Encrypt consecutive sectors: sector `i` of `data` uses IV `first_iv + i * iv_step`
    /// (mod 2^64). Backends with a faster multi-sector path override this.
    fn encrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        let mut iv = first_iv;
        for sector in data.chunks_exact_mut(sector_size) {
            let mut tweak = self.encrypt_tweak(&plain64_iv(iv));
            self.encrypt_blocks(sector, &mut tweak);
            iv = iv.wrapping_add(iv_step);
        }
    }

    /// Decrypt consecutive sectors; IVs as in [`XtsBackend::encrypt_sectors`].
    fn decrypt_sectors(&self, data: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        let mut iv = first_iv;
        for sector in data.chunks_exact_mut(sector_size) {
            let mut tweak = self.encrypt_tweak(&plain64_iv(iv));
            self.decrypt_blocks(sector, &mut tweak);
            iv = iv.wrapping_add(iv_step);
        }
    }
}

/// dm-crypt's `plain64` IV: the sector number, little-endian, zero-padded to a block.
pub fn plain64_iv(sector: u64) -> [u8; BLOCK] {
    let mut iv = [0u8; BLOCK];
    iv[..8].copy_from_slice(&sector.to_le_bytes());
    iv
}

/// Multiply a tweak by the primitive element α of GF(2^128) (IEEE 1619, little-endian).
#[inline(always)]
pub fn mul_alpha(tweak: &mut [u8; BLOCK]) {
    let t = u128::from_le_bytes(*tweak);
    let carry = (t >> 127) as u8;
    *tweak = ((t << 1) ^ u128::from(carry * 0x87)).to_le_bytes();
}

/// Check an XTS key: 32 or 64 bytes with distinct halves. Returns the AES key length.
pub fn check_key(key: &[u8]) -> Result<usize, XtsError> {
    if key.len() != 32 && key.len() != 64 {
        return Err(XtsError::KeyLength(key.len()));
    }
    let (k1, k2) = key.split_at(key.len() / 2);
    // Compare without an early exit: the halves are secret.
    let diff = k1.iter().zip(k2).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff == 0 {
        return Err(XtsError::DuplicateKeyHalves);
    }
    Ok(key.len() / 2)
}

/// Every backend this CPU offers for `key`, fastest first, including those the self-test
/// disabled (the self-test and benchmarks use this; everything else [`available_backends`]).
pub fn all_backends(key: &[u8]) -> Result<alloc::vec::Vec<Box<dyn XtsBackend>>, XtsError> {
    let mut v: alloc::vec::Vec<Box<dyn XtsBackend>> = alloc::vec::Vec::new();
    #[cfg(target_arch = "x86_64")]
    for width in [aesni::Width::Vaes512, aesni::Width::Vaes256, aesni::Width::AesNi] {
        if let Some(b) = aesni::AesNiXts::new(key, width)? {
            v.push(Box::new(b));
        }
    }
    v.push(Box::new(soft::SoftXts::new(key)?));
    Ok(v)
}

/// Every backend this CPU offers for `key` and the self-test did not disable, fastest first.
/// The first call runs the self-test ([`selftest::run`]) if nobody has yet, so no caller can be
/// handed a backend that was never checked.
pub fn available_backends(key: &[u8]) -> Result<alloc::vec::Vec<Box<dyn XtsBackend>>, XtsError> {
    if !SELF_TESTED.load(core::sync::atomic::Ordering::Acquire) {
        selftest::run();
    }
    let mut v = all_backends(key)?;
    v.retain(|b| !is_disabled(b.name()));
    Ok(v)
}

/// Has the self-test run (and disabled what failed)?
static SELF_TESTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Backend names, in the order of the bit masks below.
const NAMES: [&str; 4] = ["vaes512", "vaes256", "aesni", "rustcrypto"];

/// Backends that failed the known-answer self-test ([`selftest::run`]): one bit per NAMES
/// entry. Never handed out again.
static DISABLED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

fn disable(name: &str) {
    if let Some(i) = NAMES.iter().position(|n| *n == name) {
        DISABLED.fetch_or(1 << i, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Did the self-test disable the backend `name`?
pub fn is_disabled(name: &str) -> bool {
    NAMES
        .iter()
        .position(|n| *n == name)
        .is_some_and(|i| DISABLED.load(core::sync::atomic::Ordering::Relaxed) & (1 << i) != 0)
}

/// Backend the firmware chose (measured fastest, or forced by a test): an index into NAMES;
/// u8::MAX = none. Emulators invert the usual order: QEMU's TCG runs AES-NI far faster than
/// its VAES emulation.
static PREFERRED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(u8::MAX);

/// Why a backend cannot be preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreferError {
    /// No backend has that name.
    Unknown,
    /// This CPU (or its enabled vector state) cannot run it.
    Unavailable,
    /// It failed the known-answer self-test.
    FailedSelfTest,
}

impl fmt::Display for PreferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PreferError::Unknown => "no such XTS backend (known: vaes512, vaes256, aesni, rustcrypto)",
            PreferError::Unavailable => "this CPU does not offer it",
            PreferError::FailedSelfTest => "it failed the known-answer self-test",
        })
    }
}

/// Prefer the backend named `name` from now on, if this CPU has it and it passed the
/// self-test.
pub fn set_preferred(name: &str) -> Result<(), PreferError> {
    let i = NAMES.iter().position(|n| *n == name).ok_or(PreferError::Unknown)?;
    if is_disabled(name) {
        return Err(PreferError::FailedSelfTest);
    }
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    if !all_backends(&key).is_ok_and(|all| all.iter().any(|b| b.name() == name)) {
        return Err(PreferError::Unavailable);
    }
    PREFERRED.store(i as u8, core::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Time every available backend (see [`available_backends`]: run [`selftest::run`] first) on
/// `bytes` of 4096-byte sectors with `clock` (any monotonic counter) and prefer the fastest;
/// returns its name. The firmware calls this once at start-up.
pub fn select_fastest(clock: &dyn Fn() -> u64, bytes: usize) -> Option<&'static str> {
    let key: [u8; 64] = core::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(3));
    let all = available_backends(&key).ok()?;
    // The portable backend is only a candidate when there is nothing else.
    let hardware = all.len() > 1;
    let candidates: alloc::vec::Vec<_> = all.into_iter().filter(|b| !(hardware && b.name() == "rustcrypto")).collect();
    let name = if let [only] = candidates.as_slice() {
        // Nothing to compare: skip the measurement (it is on the boot path).
        only.name()
    } else {
        let mut buf = alloc::vec![0u8; bytes.div_ceil(4096).max(1) * 4096];
        let mut best: Option<(u64, &'static str)> = None;
        for backend in candidates {
            let name = backend.name();
            let cipher = SectorCipher::with_backend(backend, 4096).ok()?;
            let start = clock();
            cipher.encrypt_sectors(0, &mut buf).ok()?;
            let took = clock().saturating_sub(start);
            if best.is_none_or(|(t, _)| took < t) {
                best = Some((took, name));
            }
        }
        best?.1
    };
    set_preferred(name).ok()?;
    Some(name)
}

/// The preferred (else the fastest) backend this CPU and build offer for `key`, never one the
/// self-test disabled. With the `std` feature the environment variable VEIL_XTS_BACKEND
/// picks one (`rustcrypto`, `aesni`, `vaes256`, `vaes512`), so that tests exercise each
/// backend on a machine that has all of them.
pub fn best_backend(key: &[u8]) -> Result<Box<dyn XtsBackend>, XtsError> {
    #[cfg(feature = "std")]
    let cap = std::env::var("VEIL_XTS_BACKEND").ok();
    #[cfg(not(feature = "std"))]
    let cap: Option<alloc::string::String> = None;
    backend_preferring(key, cap.as_deref())
}

/// The backend named `name` if this CPU offers it and it passed the self-test, else the
/// preferred one, else the fastest.
pub fn backend_preferring(key: &[u8], name: Option<&str>) -> Result<Box<dyn XtsBackend>, XtsError> {
    let mut all = available_backends(key)?;
    let preferred = NAMES.get(PREFERRED.load(core::sync::atomic::Ordering::Relaxed) as usize).copied();
    for wanted in [name, preferred].into_iter().flatten() {
        if let Some(i) = all.iter().position(|b| b.name() == wanted) {
            return Ok(all.swap_remove(i));
        }
    }
    Ok(all.swap_remove(0))
}

/// `aes-xts-plain64` over whole sectors, in place.
pub struct SectorCipher {
    backend: Box<dyn XtsBackend>,
    sector_size: usize,
}

impl fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SectorCipher")
            .field("backend", &self.backend.name())
            .field("sector_size", &self.sector_size)
            .finish_non_exhaustive()
    }
}

impl SectorCipher {
    /// A sector cipher on the fastest available backend.
    pub fn new(key: &[u8], sector_size: usize) -> Result<Self, XtsError> {
        Self::with_backend(best_backend(key)?, sector_size)
    }

    /// A sector cipher on a given backend (tests and benchmarks compare backends this way).
    pub fn with_backend(backend: Box<dyn XtsBackend>, sector_size: usize) -> Result<Self, XtsError> {
        if !sector_size.is_power_of_two() || !(512..=4096).contains(&sector_size) {
            return Err(XtsError::SectorSize(sector_size));
        }
        Ok(SectorCipher { backend, sector_size })
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Sector size in bytes.
    pub fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn check(&self, len: usize) -> Result<u64, XtsError> {
        if !len.is_multiple_of(self.sector_size) {
            return Err(XtsError::NotWholeSectors { len, sector_size: self.sector_size });
        }
        Ok((self.sector_size / 512) as u64)
    }

    /// Encrypt `data` in place. `first_sector` is the IV of its first sector, in 512-byte
    /// units (dm-crypt's sector number plus the segment's `iv_tweak`); each following
    /// sector's IV is `sector_size / 512` higher.
    pub fn encrypt_sectors(&self, first_sector: u64, data: &mut [u8]) -> Result<(), XtsError> {
        let step = self.check(data.len())?;
        self.backend.encrypt_sectors(data, self.sector_size, first_sector, step);
        Ok(())
    }

    /// Decrypt `data` in place; sector numbering as in [`SectorCipher::encrypt_sectors`].
    pub fn decrypt_sectors(&self, first_sector: u64, data: &mut [u8]) -> Result<(), XtsError> {
        let step = self.check(data.len())?;
        self.backend.decrypt_sectors(data, self.sector_size, first_sector, step);
        Ok(())
    }
}

/// Encrypt one XTS data unit of any length >= 16 bytes with a full 128-bit IV, using
/// ciphertext stealing for a partial last block (IEEE 1619 section 5.3.2).
pub fn encrypt_data_unit(backend: &dyn XtsBackend, iv: &[u8; BLOCK], data: &mut [u8]) -> Result<(), XtsError> {
    if data.len() < BLOCK {
        return Err(XtsError::DataUnitTooShort(data.len()));
    }
    let mut tweak = backend.encrypt_tweak(iv);
    let tail = data.len() % BLOCK;
    if tail == 0 {
        backend.encrypt_blocks(data, &mut tweak);
        return Ok(());
    }
    // Full blocks before the last full one, then steal from it for the partial block.
    let last_full = data.len() - tail - BLOCK;
    backend.encrypt_blocks(&mut data[..last_full], &mut tweak);
    let mut cc = [0u8; BLOCK];
    cc.copy_from_slice(&data[last_full..last_full + BLOCK]);
    backend.encrypt_blocks(&mut cc, &mut tweak); // advances tweak to T_m
    let mut pp = cc;
    pp[..tail].copy_from_slice(&data[last_full + BLOCK..]);
    data[last_full + BLOCK..].copy_from_slice(&cc[..tail]);
    backend.encrypt_blocks(&mut pp, &mut tweak);
    data[last_full..last_full + BLOCK].copy_from_slice(&pp);
    Ok(())
}

/// Decrypt one XTS data unit; the inverse of [`encrypt_data_unit`].
pub fn decrypt_data_unit(backend: &dyn XtsBackend, iv: &[u8; BLOCK], data: &mut [u8]) -> Result<(), XtsError> {
    if data.len() < BLOCK {
        return Err(XtsError::DataUnitTooShort(data.len()));
    }
    let mut tweak = backend.encrypt_tweak(iv);
    let tail = data.len() % BLOCK;
    if tail == 0 {
        backend.decrypt_blocks(data, &mut tweak);
        return Ok(());
    }
    let last_full = data.len() - tail - BLOCK;
    backend.decrypt_blocks(&mut data[..last_full], &mut tweak);
    // The stolen block was encrypted with the tweak after this one.
    let t_prev = tweak;
    let mut t_next = tweak;
    mul_alpha(&mut t_next);
    let mut pp = [0u8; BLOCK];
    pp.copy_from_slice(&data[last_full..last_full + BLOCK]);
    backend.decrypt_blocks(&mut pp, &mut t_next);
    let mut cc = pp;
    cc[..tail].copy_from_slice(&data[last_full + BLOCK..]);
    data[last_full + BLOCK..].copy_from_slice(&pp[..tail]);
    let mut t = t_prev;
    backend.decrypt_blocks(&mut cc, &mut t);
    data[last_full..last_full + BLOCK].copy_from_slice(&cc);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    // With a clock that makes every measurement tie, the first hardware backend wins (the
    // portable one only when it is alone) and becomes the one best_backend hands out.
    #[test]
    fn select_fastest_prefers_hardware_and_records_the_choice() {
        let mut key = [7u8; 64];
        key[32..].fill(9);
        let names: Vec<&str> = available_backends(&key).unwrap().iter().map(|b| b.name()).collect();
        let ticks = core::cell::Cell::new(0u64);
        let clock = || {
            ticks.set(ticks.get() + 1);
            ticks.get()
        };
        let chosen = select_fastest(&clock, 4096).unwrap();
        assert_eq!(chosen, names[0]);
        assert!(chosen != "rustcrypto" || names.len() == 1);
        // Only the candidates were timed: two clock reads each.
        let timed = if names.len() == 1 { 0 } else { names.len() - 1 };
        assert_eq!(ticks.get(), 2 * timed as u64);
        #[cfg(feature = "std")]
        let forced = std::env::var("VEIL_XTS_BACKEND").is_ok();
        #[cfg(not(feature = "std"))]
        let forced = false;
        if !forced {
            assert_eq!(best_backend(&key).unwrap().name(), chosen);
        }
        // With a clock that makes each candidate quicker than the one before, the last wins
        // (in this test, not another: the choice is the process's).
        let candidates: Vec<&str> = names.iter().copied().filter(|n| names.len() == 1 || *n != "rustcrypto").collect();
        if candidates.len() > 1 {
            let reads = core::cell::Cell::new(0u64);
            let clock = || {
                let c = reads.get();
                reads.set(c + 1);
                let j = c / 2;
                1000 * j + if c % 2 == 1 { 100 - 10 * j } else { 0 }
            };
            let quickest = select_fastest(&clock, 4096).unwrap();
            assert_eq!(quickest, *candidates.last().unwrap());
            if !forced {
                assert_eq!(best_backend(&key).unwrap().name(), quickest);
            }
            assert_eq!(select_fastest(&|| 0, 4096), Some(candidates[0]));
        }
    }

    /// What the errors and the cipher say of themselves, and a name no backend has.
    #[test]
    fn errors_and_names_say_what_they_are() {
        assert!(XtsError::KeyLength(48).to_string().contains("XTS key is 48 bytes"));
        assert!(XtsError::SectorSize(1000).to_string().contains("sector size 1000"));
        assert!(PreferError::Unknown.to_string().contains("no such XTS backend"));
        assert_eq!(set_preferred("nope"), Err(PreferError::Unknown));
        let key: vec::Vec<u8> = (0..64).collect();
        let cipher = SectorCipher::with_backend(Box::new(soft::SoftXts::new(&key).unwrap()), 1024).unwrap();
        assert_eq!(cipher.sector_size(), 1024);
        let debug = alloc::format!("{cipher:?}");
        assert!(debug.contains("rustcrypto") && debug.contains("1024"), "{debug}");
    }

    // IEEE 1619-2007 Appendix B vector 2 (AES-128, 32-byte data unit, sector 0x3333333333).
    #[test]
    fn ieee1619_vector_2() {
        let mut key = [0x11u8; 32];
        key[16..].fill(0x22);
        let backend = soft::SoftXts::new(&key).unwrap();
        let mut data = [0x44u8; 32];
        encrypt_data_unit(&backend, &plain64_iv(0x33_3333_3333), &mut data).unwrap();
        assert_eq!(hex::encode(data), "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0");
    }

    // IEEE 1619-2007 Appendix B vector 10 (AES-256, 512-byte unit, sector 0xff): a whole
    // dm-crypt sector, checked through the sector API.
    #[test]
    fn ieee1619_vector_10_as_sector() {
        let key = hex::decode(concat!(
            "2718281828459045235360287471352662497757247093699959574966967627",
            "3141592653589793238462643383279502884197169399375105820974944592"
        ))
        .unwrap();
        let cipher = SectorCipher::new(&key, 512).unwrap();
        let mut data: vec::Vec<u8> = (0..512).map(|i| i as u8).collect();
        cipher.encrypt_sectors(0xff, &mut data).unwrap();
        assert_eq!(hex::encode(&data[..32]), "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b");
        assert_eq!(hex::encode(&data[480..]), "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151");
        cipher.decrypt_sectors(0xff, &mut data).unwrap();
        assert!(data.iter().enumerate().all(|(i, b)| *b == i as u8));
    }

    #[test]
    fn refuses_bad_keys_and_lengths() {
        assert_eq!(check_key(&[1; 48]), Err(XtsError::KeyLength(48)));
        assert_eq!(check_key(&[7; 64]), Err(XtsError::DuplicateKeyHalves));
        assert_eq!(check_key(&[7; 32]), Err(XtsError::DuplicateKeyHalves));
        assert!(SectorCipher::new(&[7; 64], 512).is_err());
        let key: vec::Vec<u8> = (0..64).collect();
        assert_eq!(SectorCipher::new(&key, 1000).unwrap_err(), XtsError::SectorSize(1000));
        assert_eq!(SectorCipher::new(&key, 8192).unwrap_err(), XtsError::SectorSize(8192));
        let cipher = SectorCipher::new(&key, 4096).unwrap();
        let mut buf = vec![0u8; 4096 + 512];
        assert_eq!(
            cipher.encrypt_sectors(0, &mut buf),
            Err(XtsError::NotWholeSectors { len: 4608, sector_size: 4096 })
        );
        assert!(buf.iter().all(|b| *b == 0), "a refused call must not touch the buffer");
        let backend = soft::SoftXts::new(&key).unwrap();
        assert_eq!(encrypt_data_unit(&backend, &[0; 16], &mut [0u8; 15]), Err(XtsError::DataUnitTooShort(15)));
    }

    #[test]
    fn large_sectors_use_512_byte_iv_units() {
        let key: vec::Vec<u8> = (0..64).collect();
        let big = SectorCipher::new(&key, 4096).unwrap();
        let small = SectorCipher::new(&key, 512).unwrap();
        let mut a = vec![0x5au8; 8192];
        let mut b = a.clone();
        big.encrypt_sectors(16, &mut a).unwrap();
        // Each 4096-byte sector is one XTS data unit with IV 16 and 24.
        let backend = soft::SoftXts::new(&key).unwrap();
        encrypt_data_unit(&backend, &plain64_iv(16), &mut b[..4096]).unwrap();
        encrypt_data_unit(&backend, &plain64_iv(24), &mut b[4096..]).unwrap();
        assert_eq!(a, b);
        // ...which is not what eight 512-byte sectors give.
        let mut c = vec![0x5au8; 4096];
        small.encrypt_sectors(16, &mut c).unwrap();
        assert_ne!(&a[..4096], &c[..]);
    }

    #[test]
    fn sector_numbers_wrap_like_plain64() {
        let key: vec::Vec<u8> = (0..32).collect();
        let cipher = SectorCipher::new(&key, 512).unwrap();
        let mut run = vec![0xc3u8; 1024];
        cipher.encrypt_sectors(u64::MAX, &mut run).unwrap();
        let mut last = vec![0xc3u8; 512];
        let mut first = vec![0xc3u8; 512];
        cipher.encrypt_sectors(u64::MAX, &mut last).unwrap();
        cipher.encrypt_sectors(0, &mut first).unwrap();
        assert_eq!(&run[..512], &last[..]);
        assert_eq!(&run[512..], &first[..]);
    }
}
