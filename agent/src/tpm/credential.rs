//! TPM2_MakeCredential done by a verifier in software (TPM 2.0 Part 1, 24 "Credential
//! Protection"): a credential bound to the attestation key's name and encrypted to the EK,
//! which only the TPM holding both can recover with TPM2_ActivateCredential. This is how a
//! key broker learns that the AK it verifies quotes with lives on the TPM its EK certificate
//! names. Host-only (std): RSA-OAEP to the TCG default RSA-2048 EK.
//!
//! seed: 32 random bytes, RSA-OAEP(SHA-256, label "IDENTITY\0") to the EK -> the `secret`;
//! encIdentity = AES-128-CFB(KDFa(seed, "STORAGE", AK name, 128), IV 0, TPM2B(credential));
//! outerHMAC = HMAC-SHA256(KDFa(seed, "INTEGRITY", 256), encIdentity || AK name);
//! credentialBlob = TPM2B(TPM2B(outerHMAC) || encIdentity).

use aes::cipher::KeyIvInit;
use hmac::{KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::duplicate::kdfa;
use super::wire::tpm2b;

/// The RSA public key in a TPM2B_PUBLIC (an EK or an attestation key).
pub fn rsa_public_key(tpm2b_public: &[u8]) -> Result<rsa::PublicKey, String> {
    let (modulus, e) = super::rsa_public_parts(tpm2b_public).map_err(|e| format!("key: {e}"))?;
    rsa::PublicKey::new(rsa::BoxedUint::from_be_slice_vartime(&modulus), rsa::BoxedUint::from(u64::from(e)))
        .map_err(|e| format!("key: {e}"))
}

/// MakeCredential: `credential` (at most 32 bytes) for the key named `ak_name`, to the EK.
/// Returns (credentialBlob as TPM2B_ID_OBJECT, secret as TPM2B_ENCRYPTED_SECRET).
pub fn make_credential(
    ek: &rsa::PublicKey,
    ak_name: &[u8],
    credential: &[u8],
    random: &mut dyn FnMut(&mut [u8]),
) -> Result<(Vec<u8>, Vec<u8>), String> {
    if credential.len() > 32 {
        return Err(String::from("a credential is at most one SHA-256 digest long"));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    random(seed.as_mut());
    let mut rng = RandomAdapter(random);
    let encrypted_seed = ek
        .encrypt(&mut rng, rsa::Oaep::<Sha256>::new_with_label(&b"IDENTITY\0"[..]), seed.as_ref())
        .map_err(|e| format!("RSA-OAEP to the EK: {e}"))?;
    let sym = kdfa(seed.as_ref(), "STORAGE", ak_name, &[], 128);
    let mut enc = Zeroizing::new(tpm2b(credential));
    cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym, &[0u8; 16])
        .expect("16-byte key and IV")
        .encrypt(&mut enc);
    let hmac_key = kdfa(seed.as_ref(), "INTEGRITY", &[], &[], 256);
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&hmac_key).expect("any key length");
    m.update(&enc);
    m.update(ak_name);
    let mut blob = tpm2b(&m.finalize().into_bytes());
    blob.extend_from_slice(&enc);
    Ok((tpm2b(&blob), tpm2b(&encrypted_seed)))
}

/// The caller's randomness as the RNG the rsa crate's OAEP padding wants.
struct RandomAdapter<'a>(&'a mut dyn FnMut(&mut [u8]));

impl rand_core::TryRng for RandomAdapter<'_> {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        (self.0)(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        (self.0)(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        (self.0)(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for RandomAdapter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::TryRng;

    /// rsa 0.10's OAEP draws its padding seed with try_fill_bytes only (tests/tpm_credential.rs
    /// checks that path); the word-sized draws TryRng also requires must come from the caller's
    /// source too, should a later rsa use them.
    #[test]
    fn every_draw_of_the_adapter_comes_from_the_callers_source() {
        let mut counter = 0u8;
        let mut source = |b: &mut [u8]| {
            b.iter_mut().for_each(|x| {
                counter += 1;
                *x = counter;
            })
        };
        let mut rng = RandomAdapter(&mut source);
        assert_eq!(rng.try_next_u32().unwrap(), u32::from_le_bytes([1, 2, 3, 4]));
        assert_eq!(rng.try_next_u64().unwrap(), u64::from_le_bytes([5, 6, 7, 8, 9, 10, 11, 12]));
        let mut bytes = [0u8; 3];
        rng.try_fill_bytes(&mut bytes).unwrap();
        assert_eq!(bytes, [13, 14, 15]);
    }
}
