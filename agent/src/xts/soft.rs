//! Portable XTS backend on RustCrypto's `aes`.
//!
//! The block cipher is driven through its multi-block `encrypt_blocks`/`decrypt_blocks`
//! so that its bitsliced (or, on hosts, AES-NI) implementation works on many blocks at a
//! time; `xts-mode`'s one-block-at-a-time loop is about 10x slower and is only used as a
//! test oracle. On `x86_64-unknown-none` this is the software AES (see .cargo/config.toml);
//! it is the fallback when no assembly path applies and the reference the others are
//! tested against.

use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256};

use super::{BLOCK, XtsBackend, XtsError, check_key, mul_alpha};

/// Blocks per batch handed to the AES implementation: 32 blocks = 512 bytes, one small
/// sector, enough for the bitsliced code's full width and small enough for the stack.
const BATCH: usize = 32;

// Both variants live inline: the backend is boxed once per volume, and boxing the larger
// schedule would only add an indirection to every block.
#[allow(clippy::large_enum_variant)]
enum Keys {
    Aes128 { data: Aes128, tweak: Aes128 },
    Aes256 { data: Aes256, tweak: Aes256 },
}

/// XTS-AES-128/256 on RustCrypto's `aes`. Key schedules are zeroized on drop (the `aes`
/// crate's `zeroize` feature).
pub struct SoftXts {
    keys: Keys,
}

impl SoftXts {
    /// Key an XTS instance from `key1 || key2` (32 or 64 bytes, distinct halves).
    pub fn new(key: &[u8]) -> Result<Self, XtsError> {
        let half = check_key(key)?;
        let (k1, k2) = key.split_at(half);
        let keys = if half == 16 {
            Keys::Aes128 {
                data: Aes128::new_from_slice(k1).map_err(|_| XtsError::KeyLength(key.len()))?,
                tweak: Aes128::new_from_slice(k2).map_err(|_| XtsError::KeyLength(key.len()))?,
            }
        } else {
            Keys::Aes256 {
                data: Aes256::new_from_slice(k1).map_err(|_| XtsError::KeyLength(key.len()))?,
                tweak: Aes256::new_from_slice(k2).map_err(|_| XtsError::KeyLength(key.len()))?,
            }
        };
        Ok(SoftXts { keys })
    }
}

/// XEX over whole blocks: `C = E(P ^ T) ^ T`, T multiplied by α after each block.
fn xex<F>(data: &mut [u8], tweak: &mut [u8; BLOCK], mut cipher_blocks: F)
where
    F: FnMut(&mut [Array<u8, aes::cipher::consts::U16>]),
{
    let mut blocks = [Array::<u8, aes::cipher::consts::U16>::default(); BATCH];
    let mut tweaks = [[0u8; BLOCK]; BATCH];
    for chunk in data.chunks_mut(BATCH * BLOCK) {
        let n = chunk.len() / BLOCK;
        for (i, src) in chunk.chunks_exact(BLOCK).enumerate() {
            tweaks[i] = *tweak;
            for (d, (s, t)) in blocks[i].iter_mut().zip(src.iter().zip(tweak.iter())) {
                *d = s ^ t;
            }
            mul_alpha(tweak);
        }
        cipher_blocks(&mut blocks[..n]);
        for (i, dst) in chunk.chunks_exact_mut(BLOCK).enumerate() {
            for (d, (b, t)) in dst.iter_mut().zip(blocks[i].iter().zip(tweaks[i].iter())) {
                *d = b ^ t;
            }
        }
    }
    // The batch buffers held plaintext or key stream material.
    for b in blocks.iter_mut() {
        b.fill(0);
    }
    tweaks = [[0u8; BLOCK]; BATCH];
    core::hint::black_box(&tweaks);
}

impl XtsBackend for SoftXts {
    fn name(&self) -> &'static str {
        "rustcrypto"
    }

    fn encrypt_tweak(&self, iv: &[u8; BLOCK]) -> [u8; BLOCK] {
        let mut block = Array::from(*iv);
        match &self.keys {
            Keys::Aes128 { tweak, .. } => tweak.encrypt_block(&mut block),
            Keys::Aes256 { tweak, .. } => tweak.encrypt_block(&mut block),
        }
        block.into()
    }

    fn encrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; BLOCK]) {
        match &self.keys {
            Keys::Aes128 { data: c, .. } => xex(data, tweak, |b| c.encrypt_blocks(b)),
            Keys::Aes256 { data: c, .. } => xex(data, tweak, |b| c.encrypt_blocks(b)),
        }
    }

    fn decrypt_blocks(&self, data: &mut [u8], tweak: &mut [u8; BLOCK]) {
        match &self.keys {
            Keys::Aes128 { data: c, .. } => xex(data, tweak, |b| c.decrypt_blocks(b)),
            Keys::Aes256 { data: c, .. } => xex(data, tweak, |b| c.decrypt_blocks(b)),
        }
    }
}
