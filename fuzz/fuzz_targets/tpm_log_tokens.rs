//! Untrusted TPM-related input other than TPM responses: a TCG2 event log (the host parses
//! logs it did not write) and the LUKS2 tokens the firmware reads from the unauthenticated
//! veil-boot header (veil-tpm2, systemd-tpm2, veil-bundle), and a quote's TPMS_ATTEST (what a
//! verifier parses), and the keys and EK certificate a broker parses from evidence.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::tpm::{Bank, eventlog, systemd, token};

fuzz_target!(|data: &[u8]| {
    if let Ok((banks, events)) = eventlog::parse(data) {
        for b in banks.into_iter().chain([Bank::Sha256]) {
            let _ = eventlog::replay(&events, b);
        }
    }
    if let Ok(json) = veil_agent::json::from_slice(data) {
        let _ = token::find(&json);
        let _ = systemd::find(&json);
        let _ = veil_agent::bundle::find_token(&json);
    }
    let _ = token::open_payload(data);
    let _ = veil_agent::tpm::quote::parse(data);
    // What a broker parses from evidence: TPM2B_PUBLIC keys and an EK certificate.
    let _ = veil_agent::tpm::duplicate::p256_point(data);
    let _ = veil_agent::tpm::credential::rsa_public_key(data);
    let modulus = rsa::BoxedUint::from_be_slice_vartime(&[0xC3; 256]);
    if let Ok(ek) = rsa::PublicKey::new(modulus, rsa::BoxedUint::from(65537u64)) {
        let _ = veil_agent::tpm::ekcert::verify(data, &ek, &[], data, 1_800_000_000);
    }
    let _ = veil_agent::tpm::quote::key_name(data);
});
