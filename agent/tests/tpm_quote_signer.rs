//! A quote's qualifiedSigner (TPM 2.0 Part 2, TPMS_ATTEST) must be the attestation key's
//! qualified name: a TPMS_ATTEST written here byte by byte from Part 2 and signed with a test
//! RSA key (tests/data/test-pki/tpm-ak.pkcs1.der) verifies when it names that key as an
//! endorsement-hierarchy primary, and is refused, for that reason, when it names the same key
//! in another hierarchy or another key, although the signature itself verifies.

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};
use veil_agent::tpm::Bank;
use veil_agent::tpm::quote;

const AK_PKCS1: &[u8] = include_bytes!("data/test-pki/tpm-ak.pkcs1.der");
/// TPM_RH_ENDORSEMENT and TPM_RH_OWNER (Part 2, 7.4).
const RH_ENDORSEMENT: u32 = 0x4000_000B;
const RH_OWNER: u32 = 0x4000_0001;

fn tpm2b(b: &[u8]) -> Vec<u8> {
    [&(b.len() as u16).to_be_bytes()[..], b].concat()
}

/// The AK's TPM2B_PUBLIC: veilboot's AK template with the key's modulus as unique.
fn ak_public(key: &rsa::PrivateKey) -> Vec<u8> {
    let mut t = veil_agent::tpm::command::attestation_key_template();
    t.truncate(t.len() - 2); // the template's empty unique
    t.extend(tpm2b(&key.n().to_be_bytes()));
    tpm2b(&t)
}

/// TPMS_ATTEST of a quote (Part 2, 10.12.12): magic, type, qualifiedSigner, extraData,
/// TPMS_CLOCK_INFO, firmwareVersion, TPMS_QUOTE_INFO (TPML_PCR_SELECTION, pcrDigest).
fn attest(signer: &[u8], nonce: &[u8], pcr: u32, pcr_value: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend(0xFF54_4347u32.to_be_bytes()); // TPM_GENERATED_VALUE
    a.extend(0x8018u16.to_be_bytes()); // TPM_ST_ATTEST_QUOTE
    a.extend(tpm2b(signer));
    a.extend(tpm2b(nonce));
    a.extend(1234u64.to_be_bytes()); // clock
    a.extend(1u32.to_be_bytes()); // resetCount
    a.extend(0u32.to_be_bytes()); // restartCount
    a.push(1); // safe
    a.extend(0x2023_0101_0000_0000u64.to_be_bytes()); // firmwareVersion
    a.extend(1u32.to_be_bytes()); // one selection
    a.extend(0x000Bu16.to_be_bytes()); // SHA-256 bank
    a.push(3);
    let mut bitmap = [0u8; 3];
    bitmap[pcr as usize / 8] |= 1 << (pcr % 8);
    a.extend(bitmap);
    a.extend(tpm2b(&Sha256::digest(pcr_value)));
    a
}

/// TPMT_SIGNATURE: RSASSA (0x0014), SHA-256 (0x000B), the PKCS#1 v1.5 signature.
fn sign(key: &rsa::PrivateKey, message: &[u8]) -> Vec<u8> {
    let sig = key.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message)).unwrap();
    [&0x0014u16.to_be_bytes()[..], &0x000Bu16.to_be_bytes(), &tpm2b(&sig)].concat()
}

/// QN of a primary (Part 1, 16): nameAlg || SHA-256(hierarchy handle || Name).
fn qualified_name(hierarchy: u32, name: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(hierarchy.to_be_bytes());
    h.update(name);
    [&[0x00, 0x0B][..], &h.finalize()].concat()
}

#[test]
fn the_quote_must_name_the_attestation_key_as_its_signer() {
    let key = rsa::PrivateKey::from_pkcs1_der(AK_PKCS1).unwrap();
    let public = ak_public(&key);
    let name = [&[0x00, 0x0B][..], &Sha256::digest(&public[2..])].concat();
    assert_eq!(quote::key_name(&public).unwrap(), name);
    let (nonce, pcr_value) = ([0x5Au8; 32], [0x11u8; 32]);
    let pcrs = [(Bank::Sha256, 7u32, pcr_value.to_vec())];
    let verify = |signer: &[u8]| {
        let message = attest(signer, &nonce, 7, &pcr_value);
        quote::verify(&public, &message, &sign(&key, &message), &nonce, &pcrs)
    };
    let info = verify(&qualified_name(RH_ENDORSEMENT, &name)).expect("the AK named as an endorsement primary");
    assert_eq!(info.extra_data, nonce);
    let other_key = [&[0x00, 0x0B][..], &[0x42; 32]].concat();
    for (what, signer) in [
        ("the AK in the owner hierarchy", qualified_name(RH_OWNER, &name)),
        ("another key", qualified_name(RH_ENDORSEMENT, &other_key)),
        ("the AK's bare name", name.clone()),
    ] {
        let e = verify(&signer).expect_err(what);
        assert!(e.contains("signed by a key other than the attestation key presented"), "{what}: {e}");
    }
}
