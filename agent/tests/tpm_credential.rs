//! The verifier's TPM2_MakeCredential (agent::tpm::credential) checked without a TPM: the
//! credential's length limit (at most one SHA-256 digest, TPM 2.0 Part 2 TPM2B_DIGEST) on both
//! sides of 32 bytes, and the RSA-OAEP padding drawing its own randomness from the caller's
//! source (a padding seed left at zero would make the encrypted secret a function of the
//! credential seed alone). The EK here is the test AK key (tests/data/test-pki), whose private
//! half decrypts the secret independently with the rsa crate. tests/tpm_swtpm.rs activates the
//! credential on a software TPM.

use rsa::pkcs1::DecodeRsaPrivateKey;
use sha2::Sha256;
use veil_agent::tpm::credential::make_credential;

const EK_PKCS1: &[u8] = include_bytes!("data/test-pki/tpm-ak.pkcs1.der");
const AK_NAME: [u8; 34] = [0x0B; 34];

fn ek() -> (rsa::PrivateKey, rsa::PublicKey) {
    let private = rsa::PrivateKey::from_pkcs1_der(EK_PKCS1).unwrap();
    let public = private.to_public_key();
    (private, public)
}

/// An RNG closure filling every request with `first` on its first call, `later` afterwards.
fn two_phase(first: u8, later: u8) -> impl FnMut(&mut [u8]) {
    let mut calls = 0;
    move |b: &mut [u8]| {
        b.fill(if calls == 0 { first } else { later });
        calls += 1;
    }
}

/// The `secret` (TPM2B_ENCRYPTED_SECRET) decrypted with the EK's private key: the seed.
fn decrypt_seed(private: &rsa::PrivateKey, secret: &[u8]) -> Vec<u8> {
    assert_eq!(usize::from(u16::from_be_bytes([secret[0], secret[1]])), secret.len() - 2);
    private.decrypt(rsa::Oaep::<Sha256>::new_with_label(&b"IDENTITY\0"[..]), &secret[2..]).unwrap()
}

#[test]
fn credentials_up_to_one_digest_long_are_made_and_longer_ones_refused() {
    let (private, ek) = ek();
    for len in [0, 1, 16, 31, 32] {
        let (blob, secret) = make_credential(&ek, &AK_NAME, &vec![0x42; len], &mut two_phase(0x11, 0x22))
            .unwrap_or_else(|e| panic!("a {len}-byte credential: {e}"));
        // credentialBlob = TPM2B(TPM2B(HMAC-SHA256) || AES-CFB(TPM2B(credential))).
        assert_eq!(blob.len(), 2 + 2 + 32 + 2 + len, "{len}-byte credential");
        assert_eq!(decrypt_seed(&private, &secret), [0x11; 32], "the seed is the caller's first 32 random bytes");
    }
    for len in [33, 64] {
        let e = make_credential(&ek, &AK_NAME, &vec![0x42; len], &mut two_phase(0x11, 0x22)).unwrap_err();
        assert!(e.contains("at most one SHA-256 digest"), "{len}-byte credential: {e}");
    }
}

#[test]
fn the_oaep_padding_draws_its_randomness_from_the_caller() {
    let (private, ek) = ek();
    let make = |later: u8| make_credential(&ek, &AK_NAME, &[0x42; 32], &mut two_phase(0x11, later)).unwrap();
    let (blob_a, secret_a) = make(0x22);
    let (blob_b, secret_b) = make(0x33);
    // Same credential seed, so the same blob; other padding randomness, so another ciphertext
    // of the same seed.
    assert_eq!(blob_a, blob_b);
    assert_ne!(secret_a, secret_b, "the OAEP padding seed must come from the caller's randomness");
    assert_eq!(decrypt_seed(&private, &secret_a), decrypt_seed(&private, &secret_b));
    assert_eq!(make(0x22), (blob_a, secret_a), "the same randomness gives the same output");
}
