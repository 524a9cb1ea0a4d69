//! A quote's qualifiedSigner (TPM 2.0 Part 2, TPMS_ATTEST) must be the attestation key's
//! qualified name: a TPMS_ATTEST written here byte by byte from Part 2 and signed with a test
//! RSA key (tests/data/test-pki/tpm-ak.pkcs1.der) verifies when it names that key as an
//! endorsement-hierarchy primary, and is refused, for that reason, when it names the same key
//! in another hierarchy or another key, although the signature itself verifies. The same
//! hand-written quotes check the rest of what the verifier refuses (found by mutation testing,
//! `cargo xtask mutants tpm`): a signature scheme other than RSASSA-SHA256, PCR values given for
//! another selection than the quoted one, more than 16 selections, a malformed AK public area;
//! and that the selection bitmaps are read bit by bit (Part 2, TPMS_PCR_SELECTION).

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

/// TPMS_ATTEST of a quote with `count` as TPML_PCR_SELECTION.count followed by `selections`
/// (already marshalled TPMS_PCR_SELECTIONs) and the digest `pcr_digest`.
fn attest_with_selection(count: u32, selections: &[u8], pcr_digest: &[u8]) -> Vec<u8> {
    let mut a = attest(b"signer", b"nonce", 0, &[]);
    // Cut the generic quote back to its TPMS_CLOCK_INFO and firmwareVersion: everything before
    // the selection count (4 + 2 + (2+6) + (2+5) + 17 + 8 bytes).
    a.truncate(4 + 2 + 8 + 7 + 17 + 8);
    a.extend(count.to_be_bytes());
    a.extend(selections);
    a.extend(tpm2b(pcr_digest));
    a
}

#[test]
fn the_selection_bitmaps_are_read_bit_by_bit_and_at_most_16_selections() {
    // SHA-256: PCRs 0, 4 (byte 0 bits 0 and 4), 8, 9 (byte 1 bits 0, 1) and 23 (byte 2 bit 7);
    // SHA-1: a 4-byte bitmap with PCR 31 only; SHA-384: nothing selected.
    let selections =
        [&[0x00, 0x0B, 3, 0x11, 0x03, 0x80][..], &[0x00, 0x04, 4, 0x00, 0x00, 0x00, 0x80], &[0x00, 0x0C, 0]].concat();
    let info = quote::parse(&attest_with_selection(3, &selections, &[0xD1; 32])).unwrap();
    assert_eq!(
        info.pcr_select,
        vec![(Bank::Sha256, vec![0, 4, 8, 9, 23]), (Bank::Sha1, vec![31]), (Bank::Sha384, vec![])]
    );
    assert_eq!(info.pcr_digest, [0xD1; 32]);
    assert_eq!(info.qualified_signer, b"signer");
    assert_eq!(info.extra_data, b"nonce");
    assert_eq!(info.clock, (1234, 1, 0));

    // Part 2 bounds TPML_PCR_SELECTION at HASH_COUNT entries; veilboot takes up to 16.
    let empty_selection = [0x00, 0x0B, 0];
    let sixteen = quote::parse(&attest_with_selection(16, &empty_selection.repeat(16), &[])).unwrap();
    assert_eq!(sixteen.pcr_select.len(), 16);
    let e = quote::parse(&attest_with_selection(17, &empty_selection.repeat(17), &[])).unwrap_err();
    assert!(e.contains("17 PCR selections"), "{e}");

    // Exactly the attestation: one byte more or less is refused.
    let whole = attest_with_selection(3, &selections, &[0xD1; 32]);
    let e = quote::parse(&[&whole[..], &[0]].concat()).unwrap_err();
    assert!(e.contains("trailing bytes"), "{e}");
    let e = quote::parse(&whole[..whole.len() - 1]).unwrap_err();
    assert!(e.contains("truncated pcrDigest"), "{e}");
}

#[test]
fn the_signature_must_be_rsassa_sha256_over_exactly_the_quote() {
    let key = rsa::PrivateKey::from_pkcs1_der(AK_PKCS1).unwrap();
    let public = ak_public(&key);
    let name = quote::key_name(&public).unwrap();
    let (nonce, pcr_value) = ([0x5Au8; 32], [0x11u8; 32]);
    let pcrs = [(Bank::Sha256, 7u32, pcr_value.to_vec())];
    let message = attest(&qualified_name(RH_ENDORSEMENT, &name), &nonce, 7, &pcr_value);
    let signature = sign(&key, &message);
    quote::verify(&public, &message, &signature, &nonce, &pcrs).expect("the well-formed quote");
    // The same PKCS#1 v1.5 signature labelled with another scheme (RSAPSS, 0x0016) or another
    // hash (SHA-384, 0x000C), or followed by a byte.
    for (what, sig) in [
        ("RSAPSS", [&0x0016u16.to_be_bytes()[..], &signature[2..]].concat()),
        ("SHA-384", [&signature[..2], &0x000Cu16.to_be_bytes()[..], &signature[4..]].concat()),
    ] {
        let e = quote::verify(&public, &message, &sig, &nonce, &pcrs).unwrap_err();
        assert!(e.contains("not RSASSA with SHA-256"), "{what}: {e}");
    }
    let e = quote::verify(&public, &message, &[&signature[..], &[0]].concat(), &nonce, &pcrs).unwrap_err();
    assert!(e.contains("trailing bytes"), "{e}");
}

#[test]
fn the_pcr_values_must_be_given_for_exactly_the_quoted_selection() {
    let key = rsa::PrivateKey::from_pkcs1_der(AK_PKCS1).unwrap();
    let public = ak_public(&key);
    let name = quote::key_name(&public).unwrap();
    let (nonce, value) = ([0x5Au8; 32], vec![0x11u8; 32]);
    let message = attest(&qualified_name(RH_ENDORSEMENT, &name), &nonce, 7, &value);
    let signature = sign(&key, &message);
    quote::verify(&public, &message, &signature, &nonce, &[(Bank::Sha256, 7, value.clone())]).expect("PCR 7");
    // The quoted digest is SHA-256(value) in every case below but the last: only the selection
    // check can refuse them.
    for (what, given) in [
        ("another PCR of the bank", vec![(Bank::Sha256, 8, value.clone())]),
        ("the PCR of another bank", vec![(Bank::Sha1, 7, value.clone())]),
        ("the PCR and one more", vec![(Bank::Sha256, 7, value.clone()), (Bank::Sha256, 8, vec![])]),
        ("no PCR", vec![]),
    ] {
        let e = quote::verify(&public, &message, &signature, &nonce, &given).unwrap_err();
        assert!(e.contains("the quoted PCR selection differs"), "{what}: {e}");
    }
}

#[test]
fn the_key_name_needs_a_whole_sha256_named_public_area() {
    let key = rsa::PrivateKey::from_pkcs1_der(AK_PKCS1).unwrap();
    let public = ak_public(&key);
    assert!(quote::key_name(&public).is_ok());
    let mut longer_size = public.clone();
    longer_size[1] = longer_size[1].wrapping_add(1);
    let mut sha1_named = public.clone();
    sha1_named[5] = 0x04; // nameAlg (after size and type): TPM_ALG_SHA1
    assert_eq!(&public[4..6], &[0x00, 0x0B]);
    for (what, p) in [("size one too large", longer_size), ("SHA-1 name", sha1_named), ("one byte", vec![0])] {
        let e = quote::key_name(&p).unwrap_err();
        assert!(e.contains("public area"), "{what}: {e}");
    }
}
