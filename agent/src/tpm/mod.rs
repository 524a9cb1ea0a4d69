//! TPM 2.0 for the plain platform: the TIS transport state machine ([`tis`]), the commands
//! veilboot sends ([`command`]), the TCG2 crypto-agile event log ([`eventlog`]), PCR policy
//! digests ([`policy`]) and the measurement plan shared by the firmware and `veil measure`
//! ([`measure`]), so that both compute the same PCR values from the same inputs.

pub mod command;
#[cfg(feature = "std")]
pub mod credential;
#[cfg(feature = "std")]
pub mod duplicate;
#[cfg(feature = "std")]
pub mod ekcert;
pub mod eventlog;
pub mod measure;
pub mod policy;
pub mod quote;
pub mod systemd;
pub mod tis;
pub mod token;
pub mod wire;

use alloc::string::String;
use alloc::vec::Vec;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// A PCR bank (hash algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bank {
    /// TPM_ALG_SHA1.
    Sha1,
    /// TPM_ALG_SHA256.
    Sha256,
    /// TPM_ALG_SHA384.
    Sha384,
    /// TPM_ALG_SHA512.
    Sha512,
}

impl Bank {
    /// Every bank veilboot can extend.
    pub const ALL: [Bank; 4] = [Bank::Sha1, Bank::Sha256, Bank::Sha384, Bank::Sha512];

    /// The TPM_ALG_ID.
    pub fn alg_id(self) -> u16 {
        match self {
            Bank::Sha1 => 0x0004,
            Bank::Sha256 => 0x000B,
            Bank::Sha384 => 0x000C,
            Bank::Sha512 => 0x000D,
        }
    }

    /// The bank for a TPM_ALG_ID, if veilboot knows it.
    pub fn from_alg(alg: u16) -> Option<Bank> {
        Bank::ALL.into_iter().find(|b| b.alg_id() == alg)
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Bank::Sha1 => 20,
            Bank::Sha256 => 32,
            Bank::Sha384 => 48,
            Bank::Sha512 => 64,
        }
    }

    /// The name tools use (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Bank::Sha1 => "sha1",
            Bank::Sha256 => "sha256",
            Bank::Sha384 => "sha384",
            Bank::Sha512 => "sha512",
        }
    }

    /// Hash `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Bank::Sha1 => Sha1::digest(data).to_vec(),
            Bank::Sha256 => Sha256::digest(data).to_vec(),
            Bank::Sha384 => Sha384::digest(data).to_vec(),
            Bank::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// The PCR extend operation: H(old || digest).
    pub fn extend(self, old: &[u8], digest: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(old.len() + digest.len());
        buf.extend_from_slice(old);
        buf.extend_from_slice(digest);
        self.digest(&buf)
    }
}

/// The RSA modulus and exponent in a TPM2B_PUBLIC (exponent 0 means 65537).
pub fn rsa_public_parts(tpm2b_public: &[u8]) -> Result<(Vec<u8>, u32), String> {
    match tpm2b_public {
        [hi, lo, public @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == public.len() => {
            wire::rsa_public(public)
        }
        _ => Err(String::from("not a TPM2B_PUBLIC: its size field does not match its length")),
    }
}
