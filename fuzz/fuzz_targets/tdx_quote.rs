//! TD quotes, as a key broker receives them from a host: the parser and the signature checks
//! must refuse or accept, never panic or read out of bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use veil_agent::tdx::quote;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = quote::parse(data) {
        let mut pck = [4u8; 65];
        pck[1..].copy_from_slice(&q.attestation_key);
        let _ = q.verify_signatures(&pck);
        let _ = q.body.attributes();
    }
});
