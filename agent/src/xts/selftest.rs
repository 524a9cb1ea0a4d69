//! Known-answer self-test of every XTS backend, run before any of them is used, as
//! cryptographic modules do: a backend whose output differs from the expected bytes is
//! disabled for the rest of the run and never selected.
//!
//! Why it exists: an emulator can run an instruction wrongly. QEMU 7.2's TCG computes the
//! upper 128-bit lane of a VEX.256 VAESENC/VAESDEC from the lower lane's state (the *LAST
//! forms and the lower lane are right), so the `vaes256` backend encrypts every second block
//! wrongly there; a firmware that picked it would fail to open its disk. The test catches any
//! such fault in whichever backend, on whichever CPU or emulator.
//!
//! The cases: AES-128 and AES-256, 512-, 1024- and 4096-byte sectors, runs of several sectors
//! (every backend on whole sectors, the path the firmware takes; the VAES-512 hand-over from one
//! sector's tweaks to the next), a run across the 2^64 sector wrap, and
//! IEEE 1619 vector 10. The expected values are SHA-256 digests of the ciphertexts, computed
//! by an independent implementation (Python `cryptography`, i.e. OpenSSL; see
//! `expected_digests_come_from_the_oracle` for the script and a second check against
//! RustCrypto `xts-mode`).

use alloc::vec::Vec;
use core::fmt;

use sha2::{Digest, Sha256};

use alloc::boxed::Box;

use super::{SectorCipher, XtsBackend, XtsError};

/// One known-answer case: key pattern, sector size, first sector, sector count and the
/// SHA-256 of the ciphertext.
struct Case {
    key_len: usize,
    key_mul: u8,
    key_add: u8,
    sector_size: usize,
    first_sector: u64,
    sectors: usize,
    sha256: &'static str,
}

const CASES: [Case; 3] = [
    Case {
        key_len: 32,
        key_mul: 0x1d,
        key_add: 0x11,
        sector_size: 512,
        first_sector: 0x1234,
        sectors: 3,
        sha256: "57b2e0624d06009c98867fe9cd4dfccc5fe732956daed497ef19f42f9b952fed",
    },
    Case {
        key_len: 64,
        key_mul: 0x3b,
        key_add: 0x07,
        sector_size: 4096,
        first_sector: u64::MAX - 7,
        sectors: 2,
        sha256: "56b5c2c22a26e058dce2ffffc6449c3f5c0a023517c54ce65f0bb498f0946573",
    },
    Case {
        key_len: 64,
        key_mul: 0x3b,
        key_add: 0x07,
        sector_size: 1024,
        first_sector: 7,
        sectors: 1,
        sha256: "2975f0327a2d497055d08831524ea4e61929c1b0d58e23e2480439cc5c7d4854",
    },
];

/// IEEE 1619-2007 Appendix B vector 10: AES-256, one 512-byte data unit (sector 0xff) of the
/// bytes 0..=255 twice; the first and last 32 bytes of the ciphertext.
const IEEE1619_V10_KEY: &str = "27182818284590452353602874713526624977572470936999595749669676273141592653589793238462643383279502884197169399375105820974944592";
const IEEE1619_V10_HEAD: &str = "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b";
const IEEE1619_V10_TAIL: &str = "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151";

/// Why a backend failed its self-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfTestFailure {
    /// Encryption gave other bytes than the known answer (`case` indexes the cases; 3 is
    /// IEEE 1619 vector 10).
    WrongCiphertext {
        /// Which case.
        case: usize,
        /// Sector size of that case.
        sector_size: usize,
    },
    /// Decryption did not give the plaintext back.
    WrongPlaintext {
        /// Which case.
        case: usize,
        /// Sector size of that case.
        sector_size: usize,
    },
    /// The backend refused a valid key or sector size.
    Refused(XtsError),
}

impl fmt::Display for SelfTestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelfTestFailure::WrongCiphertext { case, sector_size } => {
                write!(f, "case {case} ({sector_size}-byte sectors): wrong ciphertext")
            }
            SelfTestFailure::WrongPlaintext { case, sector_size } => {
                write!(f, "case {case} ({sector_size}-byte sectors): decryption does not invert encryption")
            }
            SelfTestFailure::Refused(e) => write!(f, "refused a valid key: {e}"),
        }
    }
}

/// The outcome for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The backend's name.
    pub backend: &'static str,
    /// Ok, or the first failure.
    pub result: Result<(), SelfTestFailure>,
}

fn pattern_key(len: usize, mul: u8, add: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(mul).wrapping_add(add)).collect()
}

fn pattern_plaintext(len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (j.wrapping_mul(0x9d).wrapping_add((j >> 8).wrapping_mul(0x35)).wrapping_add(0x5a)) as u8)
        .collect()
}

/// Run every case on every backend this CPU offers (disabled ones included), record the
/// failures so that no failed backend is handed out again, and return one verdict per
/// backend in `available_backends` order. `available_backends` calls this on first use; the
/// firmware calls it itself to log the verdicts.
pub fn run() -> Vec<Verdict> {
    let verdicts = run_with(&super::all_backends);
    for v in &verdicts {
        if v.result.is_err() {
            super::disable(v.backend);
        }
    }
    super::SELF_TESTED.store(true, core::sync::atomic::Ordering::Release);
    verdicts
}

/// The backends `make` builds for a key, each through every case; one verdict per name.
fn run_with(make: &dyn Fn(&[u8]) -> Result<Vec<Box<dyn XtsBackend>>, XtsError>) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut record =
        |name: &'static str, result: Result<(), SelfTestFailure>| match verdicts.iter_mut().find(|v| v.backend == name)
        {
            Some(v) => {
                if v.result.is_ok() {
                    v.result = result;
                }
            }
            None => verdicts.push(Verdict { backend: name, result }),
        };
    for (index, case) in CASES.iter().enumerate() {
        let key = zeroize::Zeroizing::new(pattern_key(case.key_len, case.key_mul, case.key_add));
        let plain = pattern_plaintext(case.sector_size * case.sectors);
        let mut expected = [0u8; 32];
        hex::decode_to_slice(case.sha256, &mut expected).expect("a literal digest");
        let Ok(backends) = make(&key) else { continue };
        for backend in backends {
            let name = backend.name();
            let result = (|| {
                let cipher = SectorCipher::with_backend(backend, case.sector_size).map_err(SelfTestFailure::Refused)?;
                let mut data = plain.clone();
                cipher.encrypt_sectors(case.first_sector, &mut data).map_err(SelfTestFailure::Refused)?;
                if Sha256::digest(&data)[..] != expected {
                    return Err(SelfTestFailure::WrongCiphertext { case: index, sector_size: case.sector_size });
                }
                cipher.decrypt_sectors(case.first_sector, &mut data).map_err(SelfTestFailure::Refused)?;
                if data != plain {
                    return Err(SelfTestFailure::WrongPlaintext { case: index, sector_size: case.sector_size });
                }
                Ok(())
            })();
            record(name, result);
        }
    }
    let key = zeroize::Zeroizing::new(hex::decode(IEEE1619_V10_KEY).expect("a literal key"));
    if let Ok(backends) = make(&key) {
        for backend in backends {
            let name = backend.name();
            let result = (|| {
                let cipher = SectorCipher::with_backend(backend, 512).map_err(SelfTestFailure::Refused)?;
                let plain: Vec<u8> = (0..512).map(|i| i as u8).collect();
                let mut data = plain.clone();
                cipher.encrypt_sectors(0xff, &mut data).map_err(SelfTestFailure::Refused)?;
                if hex::encode(&data[..32]) != IEEE1619_V10_HEAD || hex::encode(&data[480..]) != IEEE1619_V10_TAIL {
                    return Err(SelfTestFailure::WrongCiphertext { case: CASES.len(), sector_size: 512 });
                }
                cipher.decrypt_sectors(0xff, &mut data).map_err(SelfTestFailure::Refused)?;
                if data != plain {
                    return Err(SelfTestFailure::WrongPlaintext { case: CASES.len(), sector_size: 512 });
                }
                Ok(())
            })();
            record(name, result);
        }
    }
    verdicts
}

/// The plaintext and key of every case, for tests that check the literals against an
/// oracle: (key, sector size, first sector, plaintext, expected SHA-256).
#[cfg(test)]
pub(crate) fn cases() -> Vec<(Vec<u8>, usize, u64, Vec<u8>, &'static str)> {
    CASES
        .iter()
        .map(|c| {
            (
                pattern_key(c.key_len, c.key_mul, c.key_add),
                c.sector_size,
                c.first_sector,
                pattern_plaintext(c.sector_size * c.sectors),
                c.sha256,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The literal digests, recomputed with RustCrypto `xts-mode` one block at a time (the
    /// second independent oracle; the first made them):
    ///
    /// ```python
    /// from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    /// def enc(k, iv, d): e = Cipher(algorithms.AES(k), modes.XTS(iv)).encryptor(); return e.update(d) + e.finalize()
    /// # per sector s: iv = (s mod 2^64).to_bytes(8, 'little') + bytes(8); sha256 of the concatenation
    /// ```
    #[test]
    fn expected_digests_come_from_the_oracle() {
        use aes::cipher::KeyInit;
        for (key, sector_size, first, plain, digest) in cases() {
            let mut data = plain.clone();
            let half = key.len() / 2;
            let tweak = |i: u128| {
                xts_mode::get_tweak_default(first.wrapping_add(i as u64 * (sector_size as u64 / 512)) as u128)
            };
            if half == 16 {
                let x = xts_mode::Xts128::new(
                    aes::Aes128::new_from_slice(&key[..half]).unwrap(),
                    aes::Aes128::new_from_slice(&key[half..]).unwrap(),
                );
                x.encrypt_area(&mut data, sector_size, 0, tweak);
            } else {
                let x = xts_mode::Xts128::new(
                    aes::Aes256::new_from_slice(&key[..half]).unwrap(),
                    aes::Aes256::new_from_slice(&key[half..]).unwrap(),
                );
                x.encrypt_area(&mut data, sector_size, 0, tweak);
            }
            assert_eq!(hex::encode(Sha256::digest(&data)), digest, "{sector_size}-byte sectors from {first:#x}");
        }
    }

    #[test]
    fn every_backend_of_this_cpu_passes() {
        let verdicts = run();
        assert!(verdicts.iter().any(|v| v.backend == "rustcrypto"), "{verdicts:?}");
        for v in &verdicts {
            assert_eq!(v.result, Ok(()), "{}", v.backend);
        }
    }

    /// A backend that is wrong in one block of each call (as QEMU 7.2 runs vaes256: every
    /// second block) fails with the first case named; the correct one beside it passes.
    #[test]
    fn a_backend_wrong_in_one_block_fails() {
        use super::super::soft::SoftXts;
        struct SecondBlockWrong(SoftXts);
        impl XtsBackend for SecondBlockWrong {
            fn name(&self) -> &'static str {
                "second-block-wrong"
            }
            fn encrypt_tweak(&self, iv: &[u8; 16]) -> [u8; 16] {
                self.0.encrypt_tweak(iv)
            }
            fn encrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; 16]) {
                self.0.encrypt_blocks(data, tweak);
                if let Some(b) = data.get_mut(16) {
                    *b ^= 1;
                }
            }
            fn decrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; 16]) {
                self.0.decrypt_blocks(data, tweak);
            }
        }
        let make = |key: &[u8]| -> Result<Vec<Box<dyn XtsBackend>>, XtsError> {
            Ok(alloc::vec![
                Box::new(SoftXts::new(key)?) as Box<dyn XtsBackend>,
                Box::new(SecondBlockWrong(SoftXts::new(key)?))
            ])
        };
        let verdicts = run_with(&make);
        assert_eq!(
            verdicts,
            alloc::vec![
                Verdict { backend: "rustcrypto", result: Ok(()) },
                Verdict {
                    backend: "second-block-wrong",
                    result: Err(SelfTestFailure::WrongCiphertext { case: 0, sector_size: 512 })
                }
            ]
        );
        // A backend whose decryption does not invert its encryption.
        struct NoDecrypt(SoftXts);
        impl XtsBackend for NoDecrypt {
            fn name(&self) -> &'static str {
                "no-decrypt"
            }
            fn encrypt_tweak(&self, iv: &[u8; 16]) -> [u8; 16] {
                self.0.encrypt_tweak(iv)
            }
            fn encrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; 16]) {
                self.0.encrypt_blocks(data, tweak);
            }
            fn decrypt_blocks(&self, _data: &mut [u8], _tweak: &mut [u8; 16]) {}
        }
        let make = |key: &[u8]| -> Result<Vec<Box<dyn XtsBackend>>, XtsError> {
            Ok(alloc::vec![Box::new(NoDecrypt(SoftXts::new(key)?)) as Box<dyn XtsBackend>])
        };
        assert_eq!(run_with(&make)[0].result, Err(SelfTestFailure::WrongPlaintext { case: 0, sector_size: 512 }));
        // A backend wrong only in the last block of sector 0xff, IEEE 1619 vector 10's, which
        // no digest case encrypts: the vector's check catches it on its tail alone.
        struct WrongTailOfSectorFf(SoftXts, core::sync::atomic::AtomicBool);
        impl XtsBackend for WrongTailOfSectorFf {
            fn name(&self) -> &'static str {
                "wrong-tail-of-sector-ff"
            }
            fn encrypt_tweak(&self, iv: &[u8; 16]) -> [u8; 16] {
                self.1.store(*iv == crate::xts::plain64_iv(0xff), core::sync::atomic::Ordering::Relaxed);
                self.0.encrypt_tweak(iv)
            }
            fn encrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; 16]) {
                self.0.encrypt_blocks(data, tweak);
                if self.1.load(core::sync::atomic::Ordering::Relaxed) && data.len() == 512 {
                    data[511] ^= 1;
                }
            }
            fn decrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; 16]) {
                self.0.decrypt_blocks(data, tweak);
            }
        }
        let make =
            |key: &[u8]| -> Result<Vec<Box<dyn XtsBackend>>, XtsError> {
                Ok(alloc::vec![
                    Box::new(WrongTailOfSectorFf(SoftXts::new(key)?, Default::default())) as Box<dyn XtsBackend>
                ])
            };
        let failure = SelfTestFailure::WrongCiphertext { case: CASES.len(), sector_size: 512 };
        assert_eq!(run_with(&make)[0].result, Err(failure));
        assert_eq!(
            alloc::format!("{failure}"),
            alloc::format!("case {} (512-byte sectors): wrong ciphertext", CASES.len())
        );
    }
}
