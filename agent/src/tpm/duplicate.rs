//! Sealing to a TPM without touching it (`veil seal`): build a TPM2_Import blob for a sealed
//! data object from the public key of the VM's storage primary key alone (TPM 2.0 Part 1,
//! 23.3 "Duplication": outer wrapper only, ECC parent).
//!
//! - seed: ECDH between a fresh P-256 key and the parent's public point; KDFe(SHA-256, Z,
//!   "DUPLICATE", ephemeral x, parent x, 256 bits); the ephemeral point is the inSymSeed;
//! - the sensitive area (keyedhash, empty auth, a random seedValue, the secret) marshalled
//!   as TPM2B_SENSITIVE and encrypted with AES-128-CFB (zero IV) under
//!   KDFa(SHA-256, seed, "STORAGE", name, -, 128);
//! - outer HMAC-SHA256 under KDFa(SHA-256, seed, "INTEGRITY", -, -, 256) over
//!   encSensitive || name; duplicate = TPM2B(TPM2B_DIGEST(hmac) || encSensitive).
//!
//! The imported object has fixedTPM and fixedParent clear (Import requires it), noDA set,
//! no userWithAuth: only its PolicyPCR policy opens it. Host-only (std): the firmware imports,
//! it never builds these.

use aes::cipher::KeyIvInit;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::command::{SealedBlob, keyedhash_public};
use super::wire::{alg, tpm2b};
/// noDA: the only attribute of an imported sealed object.
pub const IMPORTED_ATTRIBUTES: u32 = 0x0000_0400;

/// What TPM2_Import takes besides the parent handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportBlob {
    /// TPM2B_PUBLIC of the object.
    pub public: Vec<u8>,
    /// TPM2B_PRIVATE: the duplicate.
    pub duplicate: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET: the ephemeral ECC point.
    pub seed: Vec<u8>,
}

impl ImportBlob {
    /// As a SealedBlob whose private part is the duplicate (what the token stores).
    pub fn as_sealed(&self) -> SealedBlob {
        SealedBlob { private: self.duplicate.clone(), public: self.public.clone() }
    }
}

/// KDFa (Part 1, 11.4.10.2) with SHA-256.
pub fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    let mut counter = 1u32;
    while out.len() * 8 < bits as usize {
        let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
        m.update(&counter.to_be_bytes());
        m.update(label.as_bytes());
        m.update(&[0]);
        m.update(context_u);
        m.update(context_v);
        m.update(&bits.to_be_bytes());
        out.extend_from_slice(&m.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bits as usize / 8);
    out
}

/// KDFe (Part 1, 11.4.10.3) with SHA-256.
pub fn kdfe(z: &[u8], label: &str, party_u: &[u8], party_v: &[u8], bits: u32) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    let mut counter = 1u32;
    while out.len() * 8 < bits as usize {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        h.update(label.as_bytes());
        h.update([0]);
        h.update(party_u);
        h.update(party_v);
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(bits as usize / 8);
    out
}

/// The ECC P-256 point of a key from its TPM2B_PUBLIC (what `tpm2_readpublic -o` writes):
/// the storage parent a blob is sealed to.
pub fn p256_point(tpm2b_public: &[u8]) -> Result<([u8; 32], [u8; 32]), String> {
    use tpm2_protocol::TpmUnmarshal;
    use tpm2_protocol::data::{Tpm2bPublic, TpmAlgId, TpmuPublicId};
    let (public, rest) = Tpm2bPublic::unmarshal(tpm2b_public).map_err(|e| {
        format!("not a TPM2B_PUBLIC ({e}): give the binary `tpm2_readpublic -c KEY.ctx -o FILE` writes, not a PEM")
    })?;
    if !rest.is_empty() {
        return Err(String::from("trailing bytes after the TPM2B_PUBLIC"));
    }
    let p = public.inner;
    if p.object_type != TpmAlgId::Ecc || p.name_alg != TpmAlgId::Sha256 {
        return Err(String::from(
            "the key must be ECC with name algorithm SHA-256 (as systemd's storage primary and veilboot's AK are)",
        ));
    }
    let TpmuPublicId::Ecc(point) = p.unique else {
        return Err(String::from("the key has no ECC point"));
    };
    let x: [u8; 32] = point.x.as_ref().try_into().map_err(|_| "the key's x is not 32 bytes (not P-256)")?;
    let y: [u8; 32] = point.y.as_ref().try_into().map_err(|_| "the key's y is not 32 bytes (not P-256)")?;
    Ok((x, y))
}

/// Build the import blob sealing `secret` to `policy` for the parent at (`x`, `y`), with
/// `random` supplying the ephemeral key and the seedValue.
pub fn seal_for_import(
    parent: ([u8; 32], [u8; 32]),
    policy: &[u8; 32],
    secret: &[u8],
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<ImportBlob, String> {
    if secret.len() > 128 {
        return Err(String::from("a sealed object holds at most 128 bytes"));
    }
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(&parent.0);
    sec1.extend_from_slice(&parent.1);
    let parent_key = p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| "the parent's point is not on P-256")?;
    let ephemeral = loop {
        let mut bytes = Zeroizing::new([0u8; 32]);
        random(bytes.as_mut());
        if let Ok(k) = p256::SecretKey::from_slice(bytes.as_ref()) {
            break k;
        }
    };
    let shared = ephemeral.diffie_hellman(&parent_key);
    let eph_point = ephemeral.public_key().to_sec1_bytes();
    let (ex, ey) = (&eph_point[1..33], &eph_point[33..65]);
    let seed = kdfe(shared.raw_secret_bytes(), "DUPLICATE", ex, &parent.0, 256);

    // Public area.
    let mut obfuscation = Zeroizing::new([0u8; 32]);
    random(obfuscation.as_mut());
    let unique: [u8; 32] = Sha256::new().chain_update(obfuscation.as_ref()).chain_update(secret).finalize().into();
    let area = keyedhash_public(IMPORTED_ATTRIBUTES, policy, &unique);
    let mut name = alg::SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&Sha256::digest(&area));

    // Sensitive area, as TPM2B_SENSITIVE.
    let mut sensitive = Zeroizing::new(Vec::new());
    sensitive.extend_from_slice(&alg::KEYEDHASH.to_be_bytes());
    sensitive.extend_from_slice(&tpm2b(&[])); // authValue
    sensitive.extend_from_slice(&tpm2b(obfuscation.as_ref())); // seedValue
    sensitive.extend_from_slice(&tpm2b(secret));
    let mut enc = Zeroizing::new(tpm2b(&sensitive));
    let sym = kdfa(&seed, "STORAGE", &name, &[], 128);
    cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym, &[0u8; 16])
        .expect("16-byte key and IV")
        .encrypt(&mut enc);
    let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&hmac_key).expect("any key length");
    m.update(&enc);
    m.update(&name);
    let outer = m.finalize().into_bytes();
    let mut dup = tpm2b(&outer);
    dup.extend_from_slice(&enc);

    let mut point = tpm2b(ex);
    point.extend_from_slice(&tpm2b(ey));
    Ok(ImportBlob { public: tpm2b(&area), duplicate: tpm2b(&dup), seed: tpm2b(&point) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_matches_the_tpm_spec_construction() {
        // KDFa with one HMAC block equals HMAC(key, 1 || label || 0 || u || v || bits).
        let key = [7u8; 32];
        let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        m.update(&[0, 0, 0, 1]);
        m.update(b"STORAGE\0nm");
        m.update(&[0, 0, 0, 128]);
        assert_eq!(kdfa(&key, "STORAGE", b"nm", b"", 128).as_slice(), &m.finalize().into_bytes()[..16]);
        assert_eq!(kdfa(&key, "X", b"", b"", 512).len(), 64);
    }

    #[test]
    fn refuses_points_off_the_curve_and_large_secrets() {
        let mut rng = |b: &mut [u8]| b.fill(3);
        assert!(seal_for_import(([1; 32], [2; 32]), &[0; 32], b"s", &mut rng).is_err());
        let k = p256::SecretKey::from_slice(&[5; 32]).unwrap().public_key().to_sec1_bytes();
        let p = (k[1..33].try_into().unwrap(), k[33..65].try_into().unwrap());
        assert!(seal_for_import(p, &[0; 32], &[0; 129], &mut rng).is_err());
        let blob = seal_for_import(p, &[0; 32], b"s", &mut rng).unwrap();
        assert_eq!(u16::from_be_bytes([blob.public[0], blob.public[1]]) as usize, blob.public.len() - 2);
    }
}
